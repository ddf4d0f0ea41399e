//! XDP redirector loader. (Being written.)
