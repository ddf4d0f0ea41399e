//! Flow keys: what identifies a connection, in which orientation, and its hash.
//!
//! A [`PacketKey`] is a packet's identity in the packet's own orientation (source first). The
//! table stores keys in the initiator's orientation and matches a packet against both
//! orientations, which tells the packet's direction; the hash combines the two `(address, port)`
//! ends symmetrically, so both directions of a connection hash alike. The same function with a fixed seed is [`owner_hash`](super::owner_hash).

use crate::classify::FlowKey;
use moat_wire::icmp::{icmpv4_type, icmpv6_type};
use moat_wire::ip::protocol;
use moat_wire::{IcmpMessage, IpSummary, QuotedPacket, QuotedTransport, Transport, VlanTags};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What besides addresses and protocol tells flows apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// TCP, UDP, SCTP: the two ports.
    Ports = 0,
    /// ICMP/ICMPv6 echo: the identifier, on the requester's side of the key.
    Echo = 1,
    /// Any other protocol: addresses and protocol only.
    Generic = 2,
    /// Later fragments (no transport header): addresses and protocol, apart from the protocol's
    /// own connections so that no state machine sees a packet without its header.
    Fragment = 3,
}

impl KeyKind {
    pub(crate) fn from_bits(bits: u8) -> KeyKind {
        match bits & KEY_KIND_MASK {
            0 => KeyKind::Ports,
            1 => KeyKind::Echo,
            2 => KeyKind::Generic,
            _ => KeyKind::Fragment,
        }
    }
}

/// Bits of [`PacketKey::meta`]: the kind, and the address family.
pub(crate) const KEY_KIND_MASK: u8 = 0b011;
pub(crate) const KEY_V6: u8 = 0b100;
/// Every bit of `meta` that is part of the key.
pub(crate) const KEY_META_MASK: u8 = KEY_KIND_MASK | KEY_V6;

/// A packet's flow identity in the packet's orientation.
///
/// Addresses are two native-endian words each (an IPv4 address sits in the low word, the family is
/// in `meta`, so an IPv6 packet can never match an IPv4 flow). Echo flows put the identifier in
/// the requester's port slot and 0 in the other: a request A→B and its reply B→A are one flow,
/// while a request B→A with the same identifier is a different one (as in Linux conntrack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PacketKey {
    pub src: [u64; 2],
    pub dst: [u64; 2],
    pub src_port: u16,
    pub dst_port: u16,
    /// VLAN ids (outer << 12 | inner, 0 = untagged) << 8 | IP protocol.
    pub vlan_proto: u32,
    /// Kind and family bits (`KEY_*`).
    pub meta: u8,
}

/// What a packet is to the tracker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Identity {
    /// A packet of a connection or pseudo-connection.
    Flow(PacketKey),
    /// An ICMP/ICMPv6 error: it belongs to the connection its quote names.
    Error(QuotedPacket),
    /// ICMP types that are not connections (neighbour and router discovery, timestamps, …):
    /// decided by policy packet by packet.
    Untracked,
}

/// The identity of `ip` as seen on `vlan`.
#[inline]
pub(crate) fn identify(ip: &IpSummary, vlan: &VlanTags) -> Identity {
    let (kind, src_port, dst_port) = match ip.transport {
        Transport::Tcp { src_port, dst_port, .. }
        | Transport::Udp { src_port, dst_port }
        | Transport::Sctp { src_port, dst_port, .. } => (KeyKind::Ports, src_port, dst_port),
        Transport::Icmp(icmp) => match icmp.message {
            IcmpMessage::EchoRequest { identifier, .. } => (KeyKind::Echo, identifier, 0),
            IcmpMessage::EchoReply { identifier, .. } => (KeyKind::Echo, 0, identifier),
            IcmpMessage::Error(quote) => return Identity::Error(quote),
            IcmpMessage::Other => return Identity::Untracked,
        },
        Transport::Unknown => (KeyKind::Generic, 0, 0),
        Transport::NotInspected => (KeyKind::Fragment, 0, 0),
    };
    Identity::Flow(PacketKey::new(ip.src, ip.dst, src_port, dst_port, ip.protocol, kind, vlan_ids(vlan)))
}

/// The key of the connection an ICMP error quotes, in the quoted packet's orientation (echo quotes
/// are taken as requests). `None` when the quote does not name a connection (ports cut off).
pub(crate) fn quoted_key(quote: &QuotedPacket, vlan: &VlanTags) -> Option<PacketKey> {
    let (kind, src_port, dst_port) = match quote.transport {
        QuotedTransport::Ports { src_port, dst_port } => (KeyKind::Ports, src_port, dst_port),
        QuotedTransport::Echo { identifier, .. } => (KeyKind::Echo, identifier, 0),
        QuotedTransport::Unavailable => match quote.protocol {
            protocol::TCP | protocol::UDP | protocol::SCTP | protocol::ICMP | protocol::ICMPV6 => return None,
            _ => (KeyKind::Generic, 0, 0),
        },
    };
    Some(PacketKey::new(quote.src, quote.dst, src_port, dst_port, quote.protocol, kind, vlan_ids(vlan)))
}

/// 24 bits of VLAN ids: outer << 12 | inner. A single tag is the outer one; VLAN id 0 (a
/// priority-only tag) counts as untagged, as 802.1Q defines it. TPID and priority bits are not part
/// of the identity: they may be rewritten on the way without changing the connection.
#[inline]
pub(crate) fn vlan_ids(vlan: &VlanTags) -> u32 {
    let outer = vlan.outer.map_or(0, |t| u32::from(t.vid()));
    let inner = vlan.inner.map_or(0, |t| u32::from(t.vid()));
    (outer << 12) | inner
}

#[inline]
fn words(addr: IpAddr) -> ([u64; 2], bool) {
    match addr {
        IpAddr::V4(a) => ([0, u64::from(a.to_bits())], false),
        IpAddr::V6(a) => (split(a.to_bits()), true),
    }
}

#[inline]
fn split(x: u128) -> [u64; 2] {
    [high(x), low(x)]
}

#[inline]
#[allow(clippy::cast_possible_truncation)] // the low half is what is wanted
fn low(x: u128) -> u64 {
    x as u64
}

#[inline]
fn high(x: u128) -> u64 {
    low(x >> 64)
}

/// The address of two key words.
pub(crate) fn address(words: [u64; 2], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from_bits((u128::from(words[0]) << 64) | u128::from(words[1])))
    } else {
        IpAddr::V4(Ipv4Addr::from_bits(u32::try_from(words[1]).unwrap_or(0)))
    }
}

impl PacketKey {
    #[inline]
    pub(crate) fn new(
        src: IpAddr,
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        protocol: u8,
        kind: KeyKind,
        vlan_ids: u32,
    ) -> PacketKey {
        let (src, v6) = words(src);
        let (dst, _) = words(dst);
        let meta = kind as u8 | if v6 { KEY_V6 } else { 0 };
        PacketKey { src, dst, src_port, dst_port, vlan_proto: (vlan_ids << 8) | u32::from(protocol), meta }
    }

    pub(crate) fn kind(&self) -> KeyKind {
        KeyKind::from_bits(self.meta)
    }

    pub(crate) fn is_v6(&self) -> bool {
        self.meta & KEY_V6 != 0
    }

    pub(crate) fn protocol(&self) -> u8 {
        u8::try_from(self.vlan_proto & 0xff).unwrap_or(0)
    }

    /// What policy sees of the packet this key came from. Echo flows are classified as the request
    /// that opens them (ICMP type 8 or ICMPv6 128, code 0), as a stateless filter would see it.
    pub(crate) fn policy_key(&self) -> FlowKey {
        let v6 = self.is_v6();
        let (src_port, dst_port, icmp) = match self.kind() {
            KeyKind::Ports => (self.src_port, self.dst_port, None),
            KeyKind::Echo => {
                let request = if v6 { icmpv6_type::ECHO_REQUEST } else { icmpv4_type::ECHO_REQUEST };
                (0, 0, Some((request, 0)))
            }
            KeyKind::Generic | KeyKind::Fragment => (0, 0, None),
        };
        FlowKey {
            src: address(self.src, v6),
            dst: address(self.dst, v6),
            protocol: self.protocol(),
            src_port,
            dst_port,
            icmp,
        }
    }

    /// Symmetric hash of the key: equal for both orientations. Each end (address, port) is hashed
    /// on its own and the two are added, which is symmetric without comparing the ends (a
    /// comparison would be a branch the direction of each packet makes unpredictable).
    #[inline]
    pub(crate) fn hash(&self, seed: &HashSeed) -> u64 {
        let s = &seed.0;
        // Every operand carries a seed word, so with a secret seed no input can zero a product on
        // purpose; the two ends' products are independent and issue in parallel.
        let end = |addr: [u64; 2], port: u16| fold(fold(addr[0] ^ s[0], addr[1] ^ s[1]) ^ s[2], u64::from(port) ^ s[3]);
        let ends = end(self.src, self.src_port).wrapping_add(end(self.dst, self.dst_port));
        let rest = (u64::from(self.vlan_proto) << 8) | u64::from(self.meta & KEY_META_MASK);
        fold(ends ^ s[1], rest ^ s[0])
    }
}

/// The 64×64→128-bit product folded to 64 bits (the core of foldhash and wyhash): each output bit
/// depends on many input bits, at the cost of one multiplication.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    low(p) ^ high(p)
}

/// Four seed words for [`PacketKey::hash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HashSeed([u64; 4]);

impl HashSeed {
    /// The seed every process uses for the owner hash, so that workers, threads and processes agree.
    pub(crate) const OWNER: HashSeed =
        HashSeed([0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89]);

    /// Seed words derived from one value (a splitmix64 sequence, so that close values give
    /// unrelated seeds).
    pub(crate) fn from_u64(mut x: u64) -> HashSeed {
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            // Odd words keep a product from collapsing when an input word is zero.
            (z ^ (z >> 31)) | 1
        };
        HashSeed([next(), next(), next(), next()])
    }

    /// A seed from the operating system's randomness (through std's `RandomState`): a table's
    /// bucket layout is then unknown to an attacker who would craft colliding keys.
    pub(crate) fn random() -> HashSeed {
        use std::hash::BuildHasher;
        HashSeed::from_u64(std::collections::hash_map::RandomState::new().hash_one(0x6d6f_6174_u64))
    }
}
