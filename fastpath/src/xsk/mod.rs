//! The AF_XDP boundary: UMEM, rings, sockets and frame ownership.
//!
//! This module is moat's own thin layer over the kernel's AF_XDP socket API (`socket`, `setsockopt`,
//! `mmap`, `bind`, `poll`, `sendto`), rather than xsk-rs or libxdp; ARCHITECTURE.md explains why. It is
//! the only place in the fastpath where `unsafe` is allowed (`ring.rs`, `mmap.rs`, `socket.rs`), and
//! every block carries a `// SAFETY:` argument. Everything above it — workers, parsing, policy — is
//! safe code that moves [`Frame`] values around.

mod frame;
mod mmap;
mod ring;
mod socket;

pub use frame::{Census, Frame, FramePool, Owner};
pub use socket::{BindMode, BindPolicy, SocketStats, Umem, UmemConfig, XskSocket, socket_stats_of, wait_readable};
