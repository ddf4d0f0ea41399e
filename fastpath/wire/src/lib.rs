//! # moat-wire: zero-copy, panic-free packet parsing for the moat fastpath
//!
//! [`parse_frame`] turns one Ethernet frame into a [`FrameSummary`] (VLAN tags, ARP or IP
//! addresses, fragment position, transport ports/flags/ICMP identifiers, the connection an ICMP
//! error quotes) or a [`DropReason`]. Each layer is also a standalone zero-copy view in the style
//! of smoltcp's `wire` module: [`EthernetFrame`], [`VlanHeader`], [`ArpPacket`], [`Ipv4Packet`],
//! [`Ipv6Packet`] with its extension headers, [`TcpPacket`], [`UdpPacket`], [`SctpPacket`] and
//! [`IcmpPacket`], each with its field ranges as consts in a `field` module.
//! [`builder`] writes frames for tests, benchmarks and the traffic generator.
//!
//! ```
//! use moat_wire::builder::{FrameSpec, Ipv4Spec, NetworkSpec, TransportSpec, build_frame};
//! use moat_wire::{DropCounters, Network, TcpFlags, Transport, parse_frame};
//!
//! let spec = FrameSpec::new(NetworkSpec::Ipv4(Ipv4Spec::new(
//!     [10, 0, 0, 1].into(),
//!     [10, 0, 0, 2].into(),
//!     TransportSpec::tcp(40000, 443, TcpFlags::SYN),
//! )));
//! let mut buf = [0u8; 128];
//! let len = build_frame(&spec, &mut buf).unwrap();
//!
//! let mut drops = DropCounters::new();
//! match parse_frame(&buf[..len]) {
//!     Ok(summary) => {
//!         let Network::Ip(ip) = summary.network else { unreachable!() };
//!         assert!(matches!(ip.transport, Transport::Tcp { dst_port: 443, .. }));
//!     }
//!     Err(reason) => drops.record(reason),
//! }
//! assert_eq!(drops.total(), 0);
//! ```
//!
//! ## Invariants
//!
//! 1. **No panic on any input.** Nothing indexes or slices a buffer directly
//!    (`clippy::indexing_slicing`, `panic`, `unreachable`, `unwrap_used` and `expect_used` are
//!    denied); every read goes through `bytes`, which returns zero or an empty slice out of range.
//!    Length arithmetic only adds values read from 8- and 16-bit fields in `usize`, and the few
//!    subtractions are checked or saturating. Property tests and a cargo-fuzz target exercise this
//!    with overflow checks on.
//! 2. **No allocation, no dependencies.** The crate is `#![no_std]` without `alloc`: it could not
//!    allocate if it tried. Parsing returns a `Copy` summary by value.
//! 3. **No unsafe code** (`#![forbid(unsafe_code)]`).
//! 4. **Views never panic, checked views never lie.** Every accessor works on any buffer
//!    (`new_unchecked` over a short buffer reads zeros); after `new_checked` every field the
//!    accessors read is inside the buffer, so values are the packet's own.
//! 5. **Bounded work.** Per frame: at most two VLAN tags, at most
//!    [`ipv6::MAX_EXTENSION_HEADERS`] extension headers, 40 bytes of IPv4 options, one level
//!    of ICMP quote. No loop depends on attacker-chosen counts beyond these bounds.
//! 6. **Fail closed.** Anything that could hide an IP packet from policy (a third VLAN tag, a
//!    broken extension chain, a fragment that overlaps the inspected transport header, a source
//!    route, IP in LLC/SNAP) is a drop with a named reason, never `Network::Other`. Only
//!    EtherTypes that are not IPv4, IPv6, ARP or a VLAN TPID are reported as `Other` for bridging.
//!
//! ## Decisions
//!
//! - The IPv4 header checksum is verified: XDP sees frames before any kernel check, the header
//!   is already in L1 cache (5–15 word additions), and a packet its receiver will discard must
//!   not create or change connection state here. Transport checksums are not verified: they cost a
//!   pass over the whole payload, and traffic from a local veth peer legitimately carries partial
//!   checksums (CHECKSUM_PARTIAL offload), so they would be "wrong" exactly on container paths.
//! - VLAN: 0x8100, 0x88a8 and 0x9100 are accepted as the outer TPID, only 0x8100 as the inner.
//!   Tags stripped by NIC offload are not in the frame; carrying them is the AF_XDP layer's job.
//! - Fragments: a first fragment must hold the whole transport header (and for IPv6 the whole
//!   extension chain); later fragments are reported with [`Transport::NotInspected`] and the
//!   fragment id so the dataplane can apply the first fragment's verdict. Trailing bytes after
//!   the IP length (Ethernet padding) are allowed; an IP length past the frame is truncation.
//! - Flag combinations, port zero, martian addresses and the like are policy or connection
//!   tracking decisions, not parsing: the parser reports them faithfully
//!   ([`tcp::TcpFlags::is_valid_combination`] is provided for conntrack).

#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::indexing_slicing, clippy::panic, clippy::unreachable, clippy::string_slice)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

mod bytes;
mod view;

pub mod arp;
pub mod builder;
pub mod checksum;
pub mod drop;
pub mod ethernet;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
mod parse;
pub mod sctp;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket};
pub use bytes::Field;
pub use drop::{DropCounters, DropReason};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, VlanHeader, VlanTag, VlanTags};
pub use icmp::{IcmpPacket, Icmpv4Message, Icmpv6Message};
pub use ip::{IpProtocol, IpVersion};
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6AuthHeader, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet};
pub use parse::{
    ArpSummary, Fragment, FrameSummary, IcmpMessage, IcmpSummary, IpSummary, Network, QuotedPacket, QuotedTransport,
    Transport, parse_frame,
};
pub use sctp::SctpPacket;
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;
