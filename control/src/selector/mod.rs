//! Calico selector language. (Being written.)
