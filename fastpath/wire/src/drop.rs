//! Why a frame was dropped by the parser, and per-reason counters.
//!
//! Every malformed frame maps to exactly one [`DropReason`]; the dataplane counts them per worker
//! and exports them as a Prometheus label ([`DropReason::name`]). Reasons are values, not errors
//! with context: the hot path only needs a small integer to bump a counter.

use core::fmt;

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident = $index:literal => $name:literal, )+) => {
        /// Why the parser refused a frame. Each variant has a stable snake_case [`name`](Self::name)
        /// used as a metric label, and a dense [`index`](Self::index) for counter arrays.
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DropReason {
            $( $(#[$doc])* $variant = $index, )+
        }

        impl DropReason {
            /// Every reason, in index order.
            pub const ALL: [DropReason; DropReason::COUNT] = [$(DropReason::$variant,)+];

            /// The metric label: stable, snake_case.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)+ }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the 14-byte Ethernet header.
    EthernetTruncated = 0 => "ethernet_truncated",
    /// A VLAN TPID not followed by the 4 bytes of its tag.
    VlanTruncated = 1 => "vlan_truncated",
    /// A third VLAN tag. Dropped rather than bridged: an unparsed tag could hide an IP packet.
    TooManyVlanTags = 2 => "too_many_vlan_tags",
    /// A service tag (0x88a8/0x9100) inside another tag: 802.1ad puts the S-tag outermost.
    VlanBadTagOrder = 3 => "vlan_bad_tag_order",
    /// ARP header shorter than its own address lengths say.
    ArpTruncated = 4 => "arp_truncated",
    /// ARP that is not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    ArpMalformed = 5 => "arp_malformed",
    /// IPv4 header, options or total length reach past the frame.
    Ipv4Truncated = 6 => "ipv4_truncated",
    /// Ethertype 0x0800 with an IP version other than 4.
    Ipv4BadVersion = 7 => "ipv4_bad_version",
    /// IHL below 5 (20 bytes).
    Ipv4BadHeaderLength = 8 => "ipv4_bad_header_length",
    /// Total length smaller than the header length.
    Ipv4BadTotalLength = 9 => "ipv4_bad_total_length",
    /// Header checksum mismatch.
    Ipv4BadChecksum = 10 => "ipv4_bad_checksum",
    /// An option whose length byte is missing, below 2 or past the options area.
    Ipv4BadOptions = 11 => "ipv4_bad_options",
    /// Loose or strict source route option (RFC 791): the destination address is not the final
    /// one, so policy would match the wrong host. Linux drops these by default as well.
    Ipv4SourceRoute = 12 => "ipv4_source_route",
    /// IPv6 fixed header or payload length reach past the frame.
    Ipv6Truncated = 13 => "ipv6_truncated",
    /// Ethertype 0x86dd with an IP version other than 6.
    Ipv6BadVersion = 14 => "ipv6_bad_version",
    /// An extension header reaches past the IPv6 payload.
    Ipv6ExtensionTruncated = 15 => "ipv6_extension_truncated",
    /// More extension headers than [`crate::ipv6::MAX_EXTENSION_HEADERS`].
    Ipv6ExtensionChainTooLong = 16 => "ipv6_extension_chain_too_long",
    /// A Hop-by-Hop or Destination Options TLV that overruns its header.
    Ipv6BadOptions = 17 => "ipv6_bad_options",
    /// Hop-by-Hop options not directly after the fixed header (RFC 8200 §4.3).
    Ipv6HopByHopNotFirst = 18 => "ipv6_hop_by_hop_not_first",
    /// A second Fragment header in the same chain: the chain after it cannot be trusted.
    Ipv6DuplicateFragmentHeader = 19 => "ipv6_duplicate_fragment_header",
    /// Routing header type 0 with segments left (deprecated by RFC 5095): the destination
    /// address is not the final one.
    Ipv6RoutingType0 = 20 => "ipv6_routing_type0",
    /// A first fragment that does not hold the whole transport header (RFC 1858 tiny fragment)
    /// or, for IPv6, the whole header chain up to it (RFC 7112).
    FragmentTooShort = 21 => "fragment_too_short",
    /// A later fragment whose offset lands inside the transport header of the first fragment
    /// (RFC 1858 overlap attack, generalised; RFC 5722 forbids overlaps for IPv6).
    FragmentOverlap = 22 => "fragment_overlap",
    /// A fragment with more-fragments set whose length is not a multiple of 8 (RFC 791, RFC 8200).
    FragmentBadLength = 23 => "fragment_bad_length",
    /// Offset plus length beyond the largest datagram (65535): the "ping of death".
    FragmentOversized = 24 => "fragment_oversized",
    /// TCP segment shorter than 20 bytes or than its data offset.
    TcpTruncated = 25 => "tcp_truncated",
    /// TCP data offset below 5 (20 bytes).
    TcpBadDataOffset = 26 => "tcp_bad_data_offset",
    /// UDP datagram shorter than its 8-byte header.
    UdpTruncated = 27 => "udp_truncated",
    /// UDP length field below 8 or beyond the IP payload.
    UdpBadLength = 28 => "udp_bad_length",
    /// SCTP packet shorter than its 12-byte common header.
    SctpTruncated = 29 => "sctp_truncated",
    /// ICMP or ICMPv6 message shorter than 8 bytes.
    IcmpTruncated = 30 => "icmp_truncated",
    /// An ICMP error whose quoted packet does not start with a complete IP header of the
    /// same version: it cannot be matched to a connection.
    IcmpBadQuote = 31 => "icmp_bad_quote",
    /// An 802.3 length-framed frame whose LLC/SNAP header (RFC 1042, 802.1H) carries IPv4, IPv6,
    /// ARP or a VLAN tag: bridging it as non-IP would let IP bypass policy for receivers that
    /// accept that encapsulation.
    LlcSnapEncapsulation = 32 => "llc_snap_encapsulation",
}

impl DropReason {
    /// Number of reasons; counter arrays are `[_; DropReason::COUNT]`.
    pub const COUNT: usize = 33;

    /// Dense index in `0..COUNT` (the discriminant).
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason with this index, if any.
    pub fn from_index(index: usize) -> Option<DropReason> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::error::Error for DropReason {}

/// Plain per-reason counters, meant to live in one worker (no atomics: one writer). Aggregate
/// snapshots of several workers with [`merge`](Self::merge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl Default for DropCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl DropCounters {
    /// All zero.
    pub const fn new() -> Self {
        Self { counts: [0; DropReason::COUNT] }
    }

    /// Count one frame dropped for `reason`.
    #[inline]
    pub fn record(&mut self, reason: DropReason) {
        if let Some(c) = self.counts.get_mut(reason.index()) {
            *c = c.wrapping_add(1);
        }
    }

    /// Frames dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts.get(reason.index()).copied().unwrap_or(0)
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.wrapping_add(c))
    }

    /// Add another worker's counts to these.
    pub fn merge(&mut self, other: &DropCounters) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.wrapping_add(*theirs);
        }
    }

    /// `(reason, count)` for every reason, in index order (zeros included, so a metric series
    /// exists from the start).
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().zip(self.counts.iter()).map(|(&r, &c)| (r, c))
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_match_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(DropReason::from_index(i), Some(*r));
        }
        assert_eq!(DropReason::from_index(DropReason::COUNT), None);
    }

    #[test]
    fn names_are_unique_snake_case() {
        for (i, a) in DropReason::ALL.iter().enumerate() {
            let n = a.name();
            assert!(!n.is_empty());
            assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{n}");
            for b in &DropReason::ALL[i + 1..] {
                assert_ne!(n, b.name());
            }
        }
    }

    #[test]
    fn counters_record_merge_iterate() {
        let mut a = DropCounters::new();
        a.record(DropReason::TcpTruncated);
        a.record(DropReason::TcpTruncated);
        let mut b = DropCounters::default();
        b.record(DropReason::IcmpBadQuote);
        a.merge(&b);
        assert_eq!(a.get(DropReason::TcpTruncated), 2);
        assert_eq!(a.get(DropReason::IcmpBadQuote), 1);
        assert_eq!(a.total(), 3);
        assert_eq!(a.iter().count(), DropReason::COUNT);
        assert_eq!(a.iter().filter(|(_, c)| *c > 0).count(), 2);
    }
}
