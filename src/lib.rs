//! Support library of the `moat` binary: the network-namespace lab used by the demo, the end-to-end
//! tests and the end-to-end benchmarks.
#![forbid(unsafe_code)]

pub mod lab;
pub mod watch;
