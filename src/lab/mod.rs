//! The network-namespace lab: real topologies of namespaces and veth pairs for the demo, the end-to-end tests
//! and the end-to-end benchmarks.
//!
//! Invariants this module keeps:
//! - Everything a [`Lab`] creates lives inside network namespaces whose names start with
//!   `<prefix>-<pid>-<n>-`, where `<pid>` is the creating process and `<n>` a per-process counter. Veth pairs are
//!   created directly inside their namespaces (`ip link add … netns A type veth peer … netns B`), so nothing is
//!   ever created in the root namespace and interface names (≤ 15 bytes) only need to be unique inside their
//!   namespace. Two labs (two tests of one process, or a test run and a demo) never collide.
//! - Dropping a [`Lab`] kills the processes left in its namespaces and deletes the namespaces (which deletes their
//!   interfaces), also while a test unwinds from a panic. A run that was killed outright leaves debris that
//!   [`cleanup_stale`] removes: it deletes only namespaces whose creating process is gone, so it is safe to call while
//!   other labs are live.
//! - Code runs inside a namespace either as a command (`ip netns exec`, [`Netns::command`]) or as a Rust closure on
//!   a dedicated thread that has called `setns(CLONE_NEWNET)` ([`Netns::run_in`], [`Netns::spawn_in`]); the calling
//!   thread's namespace never changes. Sockets created in such a closure stay in that namespace wherever they are
//!   used afterwards.
//!
//! - Hosts compute their transmit checksums in software ([`disable_tx_checksum`], `ethtool -K IF tx off` done over
//!   netlink): veth checksum offload would hand the dataplane frames with unfinished TCP/UDP checksums, which a
//!   real NIC never puts on a wire.
//!
//! Requires root (CAP_SYS_ADMIN and CAP_NET_ADMIN), iproute2 (`ip`, `tc`) and iputils `ping`.

mod ethtool;
mod moat;
mod netns;
pub mod probe;
mod topology;

pub use ethtool::disable_tx_checksum;
pub use moat::{AgentOptions, AgentProcess, MoatOptions, MoatProcess, MoatStats, WorkerStats, http_get};
pub use netns::{Lab, Netns, NsThread, cleanup_stale, run_checked};
pub use topology::{Host, MacAddr, Neighbour, WireTopology};

/// Prefix of everything the lab creates unless told otherwise.
pub const DEFAULT_PREFIX: &str = "mt";

/// Why the lab cannot run on this machine, or `None` when it can (root, `ip` present, namespaces work).
///
/// Tests use this to skip loudly instead of failing on a machine without privileges.
pub fn unavailable_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".to_owned());
    }
    match Lab::new() {
        Err(err) => Some(format!("cannot set up a lab: {err:#}")),
        Ok(mut lab) => match lab.add_netns("probe") {
            Ok(_) => None,
            Err(err) => Some(format!("`ip netns add` does not work here: {err:#}")),
        },
    }
}
