//! Parsing throughput. (Being written.)
fn main() {}
