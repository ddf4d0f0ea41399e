//! moat control plane. (Being written.)
#![forbid(unsafe_code)]

pub mod selector;
