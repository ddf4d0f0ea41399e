//! moat's dataplane.
//!
//! Data flow per frame: the XDP redirector (`moat-bpf`) puts it on the AF_XDP socket of its RX queue
//! ([`xsk`]); a [`worker`] parses it (`moat-wire`), consults the current [`RuleTable`] for IP traffic,
//! and either transmits it unchanged on the other interface of its wire pair — the frame never leaves
//! the UMEM both sockets share — or drops it and counts the reason.
//!
//! Invariants:
//! - Only [`xsk`] contains `unsafe` code.
//! - No allocation, locking, logging or system call per packet: workers touch shared memory once per
//!   batch (ring indices, the table pointer, counters) and make at most one `sendto` per batch.
//! - Every frame is owned by exactly one party at a time (see [`xsk::FramePool`]).
//! - A worker reads the rule table once per batch; a table swap is never seen half-applied.

pub mod classify;
pub mod conntrack;
pub mod control_link;
pub mod dataplane;
pub mod pktgen;
pub mod stats;
pub mod worker;
pub mod xsk;

pub use classify::{Admission, FlowKey, RuleTable, TableHandle, Verdict};
