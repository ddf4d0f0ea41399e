//! Zero-copy packet views for the moat fastpath. (Being written.)
#![forbid(unsafe_code)]
