//! [`parse_frame`]: one Ethernet frame in, everything the dataplane decides on out.
//!
//! The walk is Ethernet → up to two VLAN tags → ARP | IPv4 | IPv6 (extension chain) → TCP | UDP |
//! SCTP | ICMP | ICMPv6, each layer through its checked view. The rules that are policy rather
//! than structure, and why each one is here, are on the [`DropReason`] variants.

use core::net::{IpAddr, Ipv4Addr};

use crate::DropReason;
use crate::arp::{ArpOperation, ArpPacket};
use crate::bytes::{rest, span};
use crate::ethernet::{
    self, EthernetAddress, EthernetFrame, VLAN_HEADER_LEN, VlanHeader, VlanTag, VlanTags, ethertype,
};
use crate::icmp::{self, IcmpPacket, icmpv4_type, icmpv6_type};
use crate::ip::{IpVersion, min_transport_len, protocol};
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{self, Ipv6AuthHeader, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, MAX_EXTENSION_HEADERS};
use crate::sctp::SctpPacket;
use crate::tcp::{TcpFlags, TcpPacket};
use crate::udp::UdpPacket;

/// Largest IP datagram; a fragment reaching past it is the "ping of death".
const MAX_DATAGRAM_LEN: usize = 65_535;

/// What the dataplane needs from one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSummary {
    /// VLAN tags, outermost first.
    pub vlan: VlanTags,
    /// What is above Ethernet.
    pub network: Network,
    /// Length of the frame as received (Ethernet padding included, FCS excluded).
    pub frame_len: usize,
    /// Offset of the network header (after the tags) in the frame.
    pub l3_offset: usize,
}

/// The network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Ethernet/IPv4 ARP.
    Arp(ArpSummary),
    /// IPv4 or IPv6.
    Ip(IpSummary),
    /// Neither IP nor ARP (LLDP, 802.3 length-framed LLC such as STP, ...): the dataplane bridges
    /// these. `ethertype` is the raw value after the tags, below 0x0600 an 802.3 length.
    Other {
        /// Raw EtherType.
        ethertype: u16,
    },
}

/// A validated Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSummary {
    /// Request, reply or other.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: EthernetAddress,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: EthernetAddress,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// A whole datagram (IPv6 atomic fragments, RFC 6946, count as whole).
    NotFragmented,
    /// Offset 0 with more fragments to come: carries the transport header.
    First,
    /// Offset > 0: carries no transport header; match it through the first fragment's verdict
    /// (by source, destination, protocol and [`IpSummary::fragment_id`]).
    Later,
}

/// An IPv4 or IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpSummary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (for IPv6 the header's, i.e. the next hop of a Routing header).
    pub dst: IpAddr,
    /// Upper-layer protocol: IPv4 protocol, or the IPv6 next header after the extension chain
    /// (for a later fragment: the Fragment header's next header).
    pub protocol: u8,
    /// Fragment position.
    pub fragment: Fragment,
    /// Fragment identification (IPv4: 16 bits widened); 0 when not fragmented.
    pub fragment_id: u32,
    /// Fragment offset in bytes; 0 unless `fragment` is `Later`.
    pub fragment_offset: u16,
    /// More fragments follow this one.
    pub more_fragments: bool,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Offset in the frame of the IP payload after all extension headers: the transport header,
    /// or the fragment data of a later fragment.
    pub payload_offset: usize,
    /// Length of that payload, Ethernet padding excluded.
    pub payload_len: usize,
    /// Transport header, as far as it is inspected.
    pub transport: Transport,
}

impl IpSummary {
    /// IPv4 or IPv6.
    pub fn version(&self) -> IpVersion {
        match self.src {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }
}

/// The transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Control bits.
        flags: TcpFlags,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// SCTP.
    Sctp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Verification tag.
        verification_tag: u32,
    },
    /// ICMP in IPv4 or ICMPv6 in IPv6.
    Icmp(IcmpSummary),
    /// Another protocol (GRE, ESP, AH in IPv4, No Next Header, ICMP in the wrong IP version,
    /// ...): match on addresses and protocol only.
    Unknown,
    /// A later fragment: no transport header present.
    NotInspected,
}

impl Transport {
    /// `(src_port, dst_port)` for TCP, UDP and SCTP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            Transport::Tcp { src_port, dst_port, .. }
            | Transport::Udp { src_port, dst_port }
            | Transport::Sctp { src_port, dst_port, .. } => Some((src_port, dst_port)),
            _ => None,
        }
    }
}

/// An ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpSummary {
    /// ICMP (V4) or ICMPv6 (V6): the type numbers differ.
    pub version: IpVersion,
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// What the type means to a connection tracker.
    pub message: IcmpMessage,
}

/// The part of an ICMP message a connection tracker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpMessage {
    /// Echo request (ICMP 8, ICMPv6 128).
    EchoRequest {
        /// Identifier: the "port" of an echo flow.
        identifier: u16,
        /// Sequence number.
        sequence: u16,
    },
    /// Echo reply (ICMP 0, ICMPv6 129).
    EchoReply {
        /// Identifier.
        identifier: u16,
        /// Sequence number.
        sequence: u16,
    },
    /// An error quoting the packet that caused it (ICMP 3, 4, 5, 11, 12; ICMPv6 1–4). The quote
    /// is the offending packet as its sender sent it, so the tracked connection is the reverse
    /// of the quote's direction relative to this message.
    Error(QuotedPacket),
    /// Any other type (router and neighbour discovery, timestamps, ...).
    Other,
}

/// The packet quoted inside an ICMP error, as far as the quote goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedPacket {
    /// Source of the quoted packet.
    pub src: IpAddr,
    /// Destination of the quoted packet.
    pub dst: IpAddr,
    /// Its protocol (IPv6: after the extension headers the quote holds; if the quote ends inside
    /// the chain, the next header where it ends).
    pub protocol: u8,
    /// Its transport identifiers, when quoted.
    pub transport: QuotedTransport,
}

/// Transport identifiers of a quoted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotedTransport {
    /// TCP, UDP or SCTP ports (the first 4 bytes of the quoted transport header).
    Ports {
        /// Source port of the quoted packet.
        src_port: u16,
        /// Destination port of the quoted packet.
        dst_port: u16,
    },
    /// A quoted echo request or reply.
    Echo {
        /// Identifier.
        identifier: u16,
        /// Sequence number.
        sequence: u16,
    },
    /// Not in the quote: too short, a later fragment, or a protocol without identifiers.
    Unavailable,
}

/// Parse one Ethernet frame into everything the dataplane needs. Never panics, never allocates.
///
/// `Err` means drop the frame and count the reason. `Ok` does not mean "allow": it means the
/// frame is well-formed enough for policy to decide.
pub fn parse_frame(frame: &[u8]) -> Result<FrameSummary, DropReason> {
    let (vlan, ethertype, l3_offset) = parse_link(frame)?;
    let l3 = rest(frame, l3_offset);
    let network = match ethertype {
        ethertype::IPV4 => Network::Ip(parse_ipv4(l3, l3_offset)?),
        ethertype::IPV6 => Network::Ip(parse_ipv6(l3, l3_offset)?),
        ethertype::ARP => Network::Arp(parse_arp(l3)?),
        length @ ..=ethernet::MAX_8023_LENGTH => {
            // 802.3 length framing (STP, LLC): bridged, unless SNAP hides an IP stack inside.
            if ethernet::snap_ethertype(l3).is_some_and(is_policy_ethertype) {
                return Err(DropReason::LlcSnapEncapsulation);
            }
            Network::Other { ethertype: length }
        }
        other => Network::Other { ethertype: other },
    };
    Ok(FrameSummary { vlan, network, frame_len: frame.len(), l3_offset })
}

/// EtherTypes that policy must see: IP, ARP and VLAN tags (which may carry IP).
fn is_policy_ethertype(ethertype: u16) -> bool {
    matches!(ethertype, ethertype::IPV4 | ethertype::IPV6 | ethertype::ARP) || ethernet::is_outer_tpid(ethertype)
}

/// Ethernet header and VLAN tags: returns the tags, the EtherType after them and the offset of
/// what follows.
///
/// Tag rules: the first tag may use 0x8100, 0x88a8 or 0x9100; a second tag must be 0x8100 (a
/// service tag inside another tag is [`DropReason::VlanBadTagOrder`]); a third tag of any kind
/// is [`DropReason::TooManyVlanTags`]. Frames with more tags are dropped, not bridged as
/// "other": an unparsed tag could hide an IP packet from policy.
#[inline]
fn parse_link(frame: &[u8]) -> Result<(VlanTags, u16, usize), DropReason> {
    let eth = EthernetFrame::new_checked(frame)?;
    let mut ethertype = eth.ethertype_raw();
    let mut offset = ethernet::HEADER_LEN;
    let mut tags = VlanTags::NONE;
    if ethernet::is_outer_tpid(ethertype) {
        let outer = VlanHeader::new_checked(rest(frame, offset))?;
        tags.outer = Some(VlanTag { tpid: ethertype, tci: outer.tci() });
        ethertype = outer.ethertype_raw();
        offset += VLAN_HEADER_LEN;
        if ethernet::is_service_tpid(ethertype) {
            return Err(DropReason::VlanBadTagOrder);
        }
        if ethertype == ethertype::VLAN {
            let inner = VlanHeader::new_checked(rest(frame, offset))?;
            tags.inner = Some(VlanTag { tpid: ethertype, tci: inner.tci() });
            ethertype = inner.ethertype_raw();
            offset += VLAN_HEADER_LEN;
            if ethernet::is_outer_tpid(ethertype) {
                return Err(DropReason::TooManyVlanTags);
            }
        }
    }
    Ok((tags, ethertype, offset))
}

fn parse_arp(data: &[u8]) -> Result<ArpSummary, DropReason> {
    let arp = ArpPacket::new_checked(data)?;
    if !arp.is_ethernet_ipv4() {
        return Err(DropReason::ArpMalformed);
    }
    Ok(ArpSummary {
        operation: arp.operation(),
        sender_mac: arp.sender_mac(),
        sender_ip: arp.sender_ip(),
        target_mac: arp.target_mac(),
        target_ip: arp.target_ip(),
    })
}

/// IPv4: lengths, header checksum, options, fragment rules, then the transport header.
///
/// The header checksum is verified: XDP sees frames before any kernel check, the header is
/// already in L1 cache (5–15 word additions), and a packet with a bad checksum is one the receiver drops,
/// so letting it create connection state would let an attacker insert state the endpoint never
/// sees. Transport checksums are not verified: they cover the whole payload (a cache miss per
/// line for big frames), and traffic from a local veth peer carries partial checksums
/// (CHECKSUM_PARTIAL offload), so they would be wrong on exactly the test and container paths.
#[inline]
fn parse_ipv4(data: &[u8], l3_offset: usize) -> Result<IpSummary, DropReason> {
    let ip = Ipv4Packet::new_checked(data)?;
    if !ip.verify_checksum() {
        return Err(DropReason::Ipv4BadChecksum);
    }
    ip.check_options()?;
    let protocol = ip.protocol_raw();
    let payload = ip.payload();
    let offset = ip.frag_offset();
    let more = ip.more_frags();
    let fragment = fragment_kind(offset, more);
    if fragment != Fragment::NotFragmented {
        check_fragment(IpVersion::V4, protocol, usize::from(offset), more, payload.len(), ip.header_len())?;
    }
    let transport = match fragment {
        Fragment::Later => Transport::NotInspected,
        Fragment::First => parse_transport(IpVersion::V4, protocol, payload, true)?,
        Fragment::NotFragmented => parse_transport(IpVersion::V4, protocol, payload, false)?,
    };
    let fragmented = fragment != Fragment::NotFragmented;
    Ok(IpSummary {
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        protocol,
        fragment,
        fragment_id: if fragmented { u32::from(ip.ident()) } else { 0 },
        fragment_offset: offset,
        more_fragments: more,
        ttl: ip.ttl(),
        payload_offset: l3_offset + ip.header_len(),
        payload_len: payload.len(),
        transport,
    })
}

#[inline]
fn fragment_kind(offset: u16, more: bool) -> Fragment {
    match (offset, more) {
        (0, false) => Fragment::NotFragmented,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    }
}

/// Rules for a real fragment (not an atomic one).
///
/// - A fragment with more to come must hold a multiple of 8 bytes (RFC 791, RFC 8200 §4.5).
/// - `unfragmentable + offset + len` must fit a datagram: IPv4 counts its header, IPv6 the
///   extension headers before the Fragment header (the fixed header is not in payload length).
/// - A later fragment must not start inside the transport header the first fragment carried:
///   that is the RFC 1858 overlap attack (rewriting ports or flags after the filter looked),
///   generalised from "TCP offset 1" to every protocol whose header the parser inspects, because
///   the parser requires that whole header in the first fragment.
fn check_fragment(
    version: IpVersion,
    protocol: u8,
    offset: usize,
    more: bool,
    len: usize,
    unfragmentable: usize,
) -> Result<(), DropReason> {
    if more && len % 8 != 0 {
        return Err(DropReason::FragmentBadLength);
    }
    if unfragmentable + offset + len > MAX_DATAGRAM_LEN {
        return Err(DropReason::FragmentOversized);
    }
    if offset > 0 && offset < min_transport_len(version, protocol) {
        return Err(DropReason::FragmentOverlap);
    }
    Ok(())
}

/// Where an IPv6 extension chain ended.
struct ChainEnd {
    protocol: u8,
    /// Offset of the upper-layer data in the IPv6 payload.
    offset: usize,
    fragment: Fragment,
    fragment_id: u32,
    fragment_offset: u16,
    more_fragments: bool,
}

/// IPv6: lengths, the extension chain, fragment rules, then the transport header.
#[inline]
fn parse_ipv6(data: &[u8], l3_offset: usize) -> Result<IpSummary, DropReason> {
    let ip = Ipv6Packet::new_checked(data)?;
    let payload = ip.payload();
    let end = walk_ipv6_chain(ip.next_header_raw(), payload)?;
    let upper = rest(payload, end.offset);
    let transport = match end.fragment {
        Fragment::Later => Transport::NotInspected,
        Fragment::First => parse_transport(IpVersion::V6, end.protocol, upper, true)?,
        Fragment::NotFragmented => parse_transport(IpVersion::V6, end.protocol, upper, false)?,
    };
    Ok(IpSummary {
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        protocol: end.protocol,
        fragment: end.fragment,
        fragment_id: end.fragment_id,
        fragment_offset: end.fragment_offset,
        more_fragments: end.more_fragments,
        ttl: ip.hop_limit(),
        payload_offset: l3_offset + ipv6::HEADER_LEN + end.offset,
        payload_len: upper.len(),
        transport,
    })
}

/// Walk Hop-by-Hop, Routing, Fragment, Destination Options and AH headers until an upper-layer
/// protocol (ESP and No Next Header end the chain as protocols too). Bounded by
/// [`MAX_EXTENSION_HEADERS`]: every iteration either consumes a header or returns.
fn walk_ipv6_chain(first: u8, payload: &[u8]) -> Result<ChainEnd, DropReason> {
    let mut next = first;
    let mut offset = 0usize;
    let mut headers = 0usize;
    let mut seen_fragment = false;
    let mut end = ChainEnd {
        protocol: first,
        offset: 0,
        fragment: Fragment::NotFragmented,
        fragment_id: 0,
        fragment_offset: 0,
        more_fragments: false,
    };
    loop {
        let is_extension = matches!(
            next,
            protocol::HOP_BY_HOP
                | protocol::IPV6_ROUTING
                | protocol::IPV6_FRAGMENT
                | protocol::IPV6_DESTINATION_OPTIONS
                | protocol::AH
        );
        if !is_extension {
            end.protocol = next;
            end.offset = offset;
            return Ok(end);
        }
        if next == protocol::HOP_BY_HOP && headers != 0 {
            return Err(DropReason::Ipv6HopByHopNotFirst);
        }
        headers += 1;
        if headers > MAX_EXTENSION_HEADERS {
            return Err(DropReason::Ipv6ExtensionChainTooLong);
        }
        // In a first fragment the whole chain must be present (RFC 7112): running out of bytes
        // there is a tiny first fragment; anywhere else the header itself is truncated.
        let truncated = if end.fragment == Fragment::First {
            DropReason::FragmentTooShort
        } else {
            DropReason::Ipv6ExtensionTruncated
        };
        let here = rest(payload, offset);
        match next {
            protocol::IPV6_FRAGMENT => {
                if seen_fragment {
                    return Err(DropReason::Ipv6DuplicateFragmentHeader);
                }
                seen_fragment = true;
                let frag = Ipv6FragmentHeader::new_checked(here).map_err(|_| truncated)?;
                let unfragmentable = offset;
                offset += ipv6::FRAGMENT_HEADER_LEN;
                next = frag.next_header_raw();
                let frag_offset = frag.frag_offset();
                let more = frag.more_frags();
                let kind = fragment_kind(frag_offset, more);
                if kind != Fragment::NotFragmented {
                    let len = payload.len().saturating_sub(offset);
                    check_fragment(IpVersion::V6, next, usize::from(frag_offset), more, len, unfragmentable)?;
                    end.fragment = kind;
                    end.fragment_id = frag.ident();
                    end.fragment_offset = frag_offset;
                    end.more_fragments = more;
                }
                if kind == Fragment::Later {
                    // The rest of the chain and the transport header are in the first fragment.
                    end.protocol = next;
                    end.offset = offset;
                    return Ok(end);
                }
            }
            protocol::AH => {
                let ah = Ipv6AuthHeader::new_checked(here).map_err(|_| truncated)?;
                offset += ah.header_len();
                next = ah.next_header_raw();
            }
            _ => {
                let ext = Ipv6ExtHeader::new_checked(here).map_err(|_| truncated)?;
                match next {
                    protocol::IPV6_ROUTING => {
                        if ext.routing_type() == 0 && ext.segments_left() > 0 {
                            return Err(DropReason::Ipv6RoutingType0);
                        }
                    }
                    _ => ext.check_options()?,
                }
                offset += ext.header_len();
                next = ext.next_header_raw();
            }
        }
    }
}

/// The transport header of a whole datagram or a first fragment. In a first fragment a header
/// that does not fit is [`DropReason::FragmentTooShort`] (RFC 1858 tiny fragment), and length
/// fields that describe the whole datagram (UDP length) are not compared with the fragment.
// Inlined so the transport summary is built in place instead of returned through memory.
#[inline(always)]
fn parse_transport(
    version: IpVersion,
    proto: u8,
    segment: &[u8],
    first_fragment: bool,
) -> Result<Transport, DropReason> {
    let short = |reason: DropReason| {
        if first_fragment && segment.len() < min_transport_len(version, proto) {
            DropReason::FragmentTooShort
        } else {
            reason
        }
    };
    match (version, proto) {
        (_, protocol::TCP) => {
            let tcp = TcpPacket::new_checked(segment).map_err(|r| {
                // Options cut off by the fragment boundary are a tiny fragment too.
                if first_fragment && r == DropReason::TcpTruncated { DropReason::FragmentTooShort } else { r }
            })?;
            Ok(Transport::Tcp {
                src_port: tcp.src_port(),
                dst_port: tcp.dst_port(),
                flags: tcp.flags(),
                seq: tcp.seq_number(),
                ack: tcp.ack_number(),
            })
        }
        (_, protocol::UDP) => {
            let udp = UdpPacket::new_unchecked(segment);
            if first_fragment { udp.check_header() } else { udp.check_len() }.map_err(short)?;
            Ok(Transport::Udp { src_port: udp.src_port(), dst_port: udp.dst_port() })
        }
        (_, protocol::SCTP) => {
            let sctp = SctpPacket::new_checked(segment).map_err(short)?;
            Ok(Transport::Sctp {
                src_port: sctp.src_port(),
                dst_port: sctp.dst_port(),
                verification_tag: sctp.verification_tag(),
            })
        }
        (IpVersion::V4, protocol::ICMP) | (IpVersion::V6, protocol::ICMPV6) => {
            let icmp = IcmpPacket::new_checked(segment).map_err(short)?;
            Ok(Transport::Icmp(parse_icmp(version, &icmp)?))
        }
        _ => Ok(Transport::Unknown),
    }
}

// Kept out of line: ICMP is a small share of traffic and its quote parsing is most of the code.
#[inline(never)]
fn parse_icmp(version: IpVersion, icmp: &IcmpPacket<&[u8]>) -> Result<IcmpSummary, DropReason> {
    let icmp_type = icmp.msg_type();
    let echo = (icmp.echo_ident(), icmp.echo_seq_no());
    let message = match (version, icmp_type) {
        (IpVersion::V4, icmpv4_type::ECHO_REQUEST) | (IpVersion::V6, icmpv6_type::ECHO_REQUEST) => {
            IcmpMessage::EchoRequest { identifier: echo.0, sequence: echo.1 }
        }
        (IpVersion::V4, icmpv4_type::ECHO_REPLY) | (IpVersion::V6, icmpv6_type::ECHO_REPLY) => {
            IcmpMessage::EchoReply { identifier: echo.0, sequence: echo.1 }
        }
        (
            IpVersion::V4,
            icmpv4_type::DST_UNREACHABLE
            | icmpv4_type::SOURCE_QUENCH
            | icmpv4_type::REDIRECT
            | icmpv4_type::TIME_EXCEEDED
            | icmpv4_type::PARAM_PROBLEM,
        ) => IcmpMessage::Error(parse_quote_v4(icmp.body())?),
        (
            IpVersion::V6,
            icmpv6_type::DST_UNREACHABLE
            | icmpv6_type::PACKET_TOO_BIG
            | icmpv6_type::TIME_EXCEEDED
            | icmpv6_type::PARAM_PROBLEM,
        ) => IcmpMessage::Error(parse_quote_v6(icmp.body())?),
        _ => IcmpMessage::Other,
    };
    Ok(IcmpSummary { version, icmp_type, code: icmp.msg_code(), message })
}

/// The IPv4 packet quoted by an ICMP error: a complete header is required (without it the error
/// cannot be tied to anything), everything after it is lenient. RFC 792 promises 8 bytes of the
/// transport header, RFC 1812 routers send more, and the quoted total length describes the
/// original packet, not the quote. The quoted checksum is not verified: NATs on the way back may
/// rewrite the quote.
fn parse_quote_v4(quote: &[u8]) -> Result<QuotedPacket, DropReason> {
    let ip = Ipv4Packet::new_unchecked(quote);
    let header_len = ip.header_len();
    if quote.len() < crate::ipv4::HEADER_LEN
        || ip.version() != 4
        || header_len < crate::ipv4::HEADER_LEN
        || quote.len() < header_len
    {
        return Err(DropReason::IcmpBadQuote);
    }
    let total = usize::from(ip.total_len()).max(header_len);
    let upper = span(quote, header_len, total);
    let protocol = ip.protocol_raw();
    let transport = if ip.frag_offset() == 0 {
        quoted_transport(IpVersion::V4, protocol, upper)
    } else {
        QuotedTransport::Unavailable
    };
    Ok(QuotedPacket { src: IpAddr::V4(ip.src_addr()), dst: IpAddr::V4(ip.dst_addr()), protocol, transport })
}

/// The IPv6 packet quoted by an ICMPv6 error: the fixed header is required, the extension chain
/// is followed as far as the quote goes (lengths only, bounded like the main walk).
fn parse_quote_v6(quote: &[u8]) -> Result<QuotedPacket, DropReason> {
    let ip = Ipv6Packet::new_unchecked(quote);
    if quote.len() < ipv6::HEADER_LEN || ip.version() != 6 {
        return Err(DropReason::IcmpBadQuote);
    }
    let payload = span(quote, ipv6::HEADER_LEN, ipv6::HEADER_LEN + usize::from(ip.payload_len()));
    let mut next = ip.next_header_raw();
    let mut offset = 0usize;
    let mut transport = QuotedTransport::Unavailable;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let here = rest(payload, offset);
        match next {
            protocol::HOP_BY_HOP | protocol::IPV6_ROUTING | protocol::IPV6_DESTINATION_OPTIONS => {
                let Ok(ext) = Ipv6ExtHeader::new_checked(here) else { break };
                offset += ext.header_len();
                next = ext.next_header_raw();
            }
            protocol::AH => {
                let Ok(ah) = Ipv6AuthHeader::new_checked(here) else { break };
                offset += ah.header_len();
                next = ah.next_header_raw();
            }
            protocol::IPV6_FRAGMENT => {
                let Ok(frag) = Ipv6FragmentHeader::new_checked(here) else { break };
                offset += ipv6::FRAGMENT_HEADER_LEN;
                next = frag.next_header_raw();
                if frag.frag_offset() != 0 {
                    break;
                }
            }
            upper => {
                transport = quoted_transport(IpVersion::V6, upper, here);
                break;
            }
        }
    }
    Ok(QuotedPacket { src: IpAddr::V6(ip.src_addr()), dst: IpAddr::V6(ip.dst_addr()), protocol: next, transport })
}

/// Ports or echo identifiers from the start of a quoted transport header, if the quote has them.
fn quoted_transport(version: IpVersion, proto: u8, upper: &[u8]) -> QuotedTransport {
    match (version, proto) {
        (_, protocol::TCP | protocol::UDP | protocol::SCTP) if upper.len() >= 4 => {
            // All three start with source and destination port.
            let udp = UdpPacket::new_unchecked(upper);
            QuotedTransport::Ports { src_port: udp.src_port(), dst_port: udp.dst_port() }
        }
        (IpVersion::V4, protocol::ICMP) | (IpVersion::V6, protocol::ICMPV6) if upper.len() >= icmp::HEADER_LEN => {
            let icmp = IcmpPacket::new_unchecked(upper);
            let is_echo = match version {
                IpVersion::V4 => matches!(icmp.msg_type(), icmpv4_type::ECHO_REQUEST | icmpv4_type::ECHO_REPLY),
                IpVersion::V6 => matches!(icmp.msg_type(), icmpv6_type::ECHO_REQUEST | icmpv6_type::ECHO_REPLY),
            };
            if is_echo {
                QuotedTransport::Echo { identifier: icmp.echo_ident(), sequence: icmp.echo_seq_no() }
            } else {
                QuotedTransport::Unavailable
            }
        }
        _ => QuotedTransport::Unavailable,
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
