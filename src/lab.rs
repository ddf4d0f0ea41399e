//! Network-namespace lab. (Being written.)
