//! moat fastpath. (Being written.)
