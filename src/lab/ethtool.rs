//! Lab hosts compute their TCP/UDP checksums in software (`ethtool -K IF tx off`).
//!
//! Why the lab needs it: a veth advertises checksum offload, so a locally generated TCP or UDP packet leaves
//! the sending namespace as CHECKSUM_PARTIAL, its checksum field holding only the pseudo-header sum, to be
//! finished "by hardware". The normal receive path trusts such a packet. An XDP program on the receiving veth
//! sees the raw bytes instead, and a frame that AF_XDP takes to user space and transmits on another interface
//! arrives at the far host with the unfinished checksum, which the far host drops. Real NICs put complete
//! checksums on the wire, so this is a property of the lab, not of the dataplane.

use super::netns::Netns;
use anyhow::{Context, Result};

/// Switches off transmit checksum offload of `ifname` in `ns` (needs Debian's `ethtool`, which
/// `./dev.sh` installs).
pub fn disable_tx_checksum(ns: &Netns, ifname: &str) -> Result<()> {
    ns.exec("ethtool", &["--offload", ifname, "tx", "off"])
        .map(drop)
        .with_context(|| format!("switching off tx checksum offload of {ifname} in namespace {}", ns.name()))
}
