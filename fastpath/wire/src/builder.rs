//! Frame builder for tests, benchmarks and the traffic generator: Ethernet (+ VLAN tags) /
//! ARP | IPv4 | IPv6 (+ extension headers) / TCP | UDP | SCTP | ICMP | ICMPv6 with correct
//! checksums, written into a caller-supplied buffer (an AF_XDP TX frame, a stack array): no
//! allocation.
//!
//! The builder writes what the spec says, including nonsense the parser must refuse (bad options,
//! fragments at odd offsets, raw payloads under any protocol number), so tests can make every
//! malformed frame on purpose; [`samples::malformed`] does that for each
//! [`DropReason`](crate::DropReason).
//!
//! Checksums: IPv4 header, TCP/UDP/ICMPv6 with the pseudo-header, ICMPv4, SCTP CRC32c. For a
//! fragment the transport checksum covers only this fragment's bytes (the builder cannot see the
//! rest of the datagram), so it is wrong for the reassembled datagram; IPv6 pseudo-headers use the
//! fixed header's destination even when a Routing header is present.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::arp::ArpOperation;
use crate::checksum;
use crate::ethernet::{EthernetAddress, VlanTags, ethertype};
use crate::ip::{IpVersion, protocol};
use crate::tcp::TcpFlags;

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The output buffer is smaller than the frame.
    BufferTooSmall,
    /// A length field would overflow (IPv4 total length, IPv6 payload length, UDP length).
    TooLong,
    /// A spec field cannot be encoded (the message says which).
    Invalid(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BufferTooSmall => f.write_str("output buffer too small for the frame"),
            BuildError::TooLong => f.write_str("packet too long for its length field"),
            BuildError::Invalid(what) => write!(f, "cannot encode: {what}"),
        }
    }
}

impl core::error::Error for BuildError {}

/// A whole Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameSpec<'a> {
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// VLAN tags, written outer first with their own TPIDs. `inner` without `outer` is invalid.
    pub vlan: VlanTags,
    /// What follows the tags.
    pub network: NetworkSpec<'a>,
    /// Zero-pad the frame to at least this length (60 is the Ethernet minimum without FCS);
    /// 0 for none.
    pub pad_to: usize,
}

impl<'a> FrameSpec<'a> {
    /// Locally administered MACs 02:00:00:00:00:01 → 02:00:00:00:00:02, untagged, unpadded.
    pub const fn new(network: NetworkSpec<'a>) -> Self {
        Self {
            dst_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x02]),
            src_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            vlan: VlanTags::NONE,
            network,
            pad_to: 0,
        }
    }
}

/// What follows the Ethernet header and tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkSpec<'a> {
    /// Ethernet/IPv4 ARP.
    Arp(ArpSpec),
    /// IPv4.
    Ipv4(Ipv4Spec<'a>),
    /// IPv6.
    Ipv6(Ipv6Spec<'a>),
    /// Any EtherType with raw bytes.
    Other {
        /// EtherType written after the tags.
        ethertype: u16,
        /// Bytes after it.
        payload: &'a [u8],
    },
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSpec {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender MAC.
    pub sender_mac: EthernetAddress,
    /// Sender IP.
    pub sender_ip: Ipv4Addr,
    /// Target MAC.
    pub target_mac: EthernetAddress,
    /// Target IP.
    pub target_ip: Ipv4Addr,
}

/// An IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Spec<'a> {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// TTL.
    pub ttl: u8,
    /// DSCP/ECN byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// DF flag.
    pub dont_fragment: bool,
    /// MF flag.
    pub more_fragments: bool,
    /// Fragment offset in bytes; must be a multiple of 8.
    pub fragment_offset: u16,
    /// Raw options, written as given; length must be a multiple of 4, at most 40.
    pub options: &'a [u8],
    /// The payload.
    pub transport: TransportSpec<'a>,
}

impl<'a> Ipv4Spec<'a> {
    /// TTL 64, DF set, no options, not fragmented.
    pub const fn new(src: Ipv4Addr, dst: Ipv4Addr, transport: TransportSpec<'a>) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_fragment: true,
            more_fragments: false,
            fragment_offset: 0,
            options: &[],
            transport,
        }
    }
}

/// An IPv6 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Spec<'a> {
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
    /// Extension headers, in order, between the fixed header and the transport.
    pub extensions: &'a [Ipv6ExtensionSpec],
    /// The upper layer.
    pub transport: TransportSpec<'a>,
}

impl<'a> Ipv6Spec<'a> {
    /// Hop limit 64, no extension headers.
    pub const fn new(src: Ipv6Addr, dst: Ipv6Addr, transport: TransportSpec<'a>) -> Self {
        Self { src, dst, hop_limit: 64, traffic_class: 0, flow_label: 0, extensions: &[], transport }
    }
}

/// An IPv6 extension header. Option areas are filled with valid padding, other bodies with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ipv6ExtensionSpec {
    /// Hop-by-Hop options, `(len + 1) * 8` bytes.
    HopByHop {
        /// Length field.
        len: u8,
    },
    /// Destination options, `(len + 1) * 8` bytes.
    DestinationOptions {
        /// Length field.
        len: u8,
    },
    /// Routing header, `(len + 1) * 8` bytes.
    Routing {
        /// Routing type.
        routing_type: u8,
        /// Segments left.
        segments_left: u8,
        /// Length field.
        len: u8,
    },
    /// Fragment header.
    Fragment {
        /// Offset in bytes; must be a multiple of 8.
        offset: u16,
        /// M flag.
        more: bool,
        /// Identification.
        ident: u32,
    },
    /// Authentication header, `(len + 2) * 4` bytes.
    Authentication {
        /// Length field.
        len: u8,
    },
}

impl Ipv6ExtensionSpec {
    /// Its next-header number.
    pub const fn protocol(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => protocol::HOP_BY_HOP,
            Self::DestinationOptions { .. } => protocol::IPV6_DESTINATION_OPTIONS,
            Self::Routing { .. } => protocol::IPV6_ROUTING,
            Self::Fragment { .. } => protocol::IPV6_FRAGMENT,
            Self::Authentication { .. } => protocol::AH,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match *self {
            Self::HopByHop { len } | Self::DestinationOptions { len } | Self::Routing { len, .. } => {
                (usize::from(len) + 1) * 8
            }
            Self::Fragment { .. } => crate::ipv6::FRAGMENT_HEADER_LEN,
            Self::Authentication { len } => (usize::from(len) + 2) * 4,
        }
    }

    /// Never empty; here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The transport layer (or raw bytes under any protocol number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportSpec<'a> {
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Control bits.
        flags: TcpFlags,
        /// Window.
        window: u16,
        /// Raw options; length must be a multiple of 4, at most 40.
        options: &'a [u8],
        /// Data.
        payload: &'a [u8],
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Data.
        payload: &'a [u8],
    },
    /// SCTP common header followed by raw chunks.
    Sctp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Verification tag.
        verification_tag: u32,
        /// Raw chunks.
        chunks: &'a [u8],
    },
    /// ICMP under IPv4, ICMPv6 under IPv6 (protocol number and checksum follow the IP version).
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// The 4 type-specific header bytes (echo: identifier, sequence).
        rest_of_header: [u8; 4],
        /// Body (for errors: the quoted packet).
        body: &'a [u8],
    },
    /// Raw bytes under any protocol number: later fragments, unknown protocols, broken headers.
    Raw {
        /// Protocol / next header.
        protocol: u8,
        /// The bytes.
        payload: &'a [u8],
    },
}

impl<'a> TransportSpec<'a> {
    /// An echo request (ICMP 8 / ICMPv6 128).
    pub const fn echo_request(version: IpVersion, identifier: u16, sequence: u16, body: &'a [u8]) -> Self {
        Self::echo(version, true, identifier, sequence, body)
    }

    /// An echo reply (ICMP 0 / ICMPv6 129).
    pub const fn echo_reply(version: IpVersion, identifier: u16, sequence: u16, body: &'a [u8]) -> Self {
        Self::echo(version, false, identifier, sequence, body)
    }

    const fn echo(version: IpVersion, request: bool, identifier: u16, sequence: u16, body: &'a [u8]) -> Self {
        let icmp_type = match (version, request) {
            (IpVersion::V4, true) => crate::icmp::icmpv4_type::ECHO_REQUEST,
            (IpVersion::V4, false) => crate::icmp::icmpv4_type::ECHO_REPLY,
            (IpVersion::V6, true) => crate::icmp::icmpv6_type::ECHO_REQUEST,
            (IpVersion::V6, false) => crate::icmp::icmpv6_type::ECHO_REPLY,
        };
        let i = identifier.to_be_bytes();
        let s = sequence.to_be_bytes();
        Self::Icmp { icmp_type, code: 0, rest_of_header: [i[0], i[1], s[0], s[1]], body }
    }

    /// A TCP segment with no options and no data.
    pub const fn tcp(src_port: u16, dst_port: u16, flags: TcpFlags) -> Self {
        Self::Tcp { src_port, dst_port, seq: 0, ack: 0, flags, window: 65_535, options: &[], payload: &[] }
    }

    /// The protocol number this transport is carried under.
    pub const fn protocol(&self, version: IpVersion) -> u8 {
        match (self, version) {
            (Self::Tcp { .. }, _) => protocol::TCP,
            (Self::Udp { .. }, _) => protocol::UDP,
            (Self::Sctp { .. }, _) => protocol::SCTP,
            (Self::Icmp { .. }, IpVersion::V4) => protocol::ICMP,
            (Self::Icmp { .. }, IpVersion::V6) => protocol::ICMPV6,
            (Self::Raw { protocol, .. }, _) => *protocol,
        }
    }
}

/// Sequential writer over the caller's buffer: every write is bounds-checked and fails with
/// [`BuildError::BufferTooSmall`] instead of panicking.
struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), BuildError> {
        let end = self.len.checked_add(bytes.len()).ok_or(BuildError::BufferTooSmall)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BuildError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn zeros(&mut self, n: usize) -> Result<(), BuildError> {
        let end = self.len.checked_add(n).ok_or(BuildError::BufferTooSmall)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BuildError::BufferTooSmall)?;
        dst.fill(0);
        self.len = end;
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), BuildError> {
        self.put(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), BuildError> {
        self.put(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), BuildError> {
        self.put(&v.to_be_bytes())
    }

    /// Overwrite already-written bytes (length and checksum fields).
    fn patch(&mut self, at: usize, bytes: &[u8]) -> Result<(), BuildError> {
        let end = at.checked_add(bytes.len()).ok_or(BuildError::BufferTooSmall)?;
        if end > self.len {
            return Err(BuildError::BufferTooSmall);
        }
        let dst = self.buf.get_mut(at..end).ok_or(BuildError::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }

    fn written(&self, from: usize) -> &[u8] {
        self.buf.get(from..self.len).unwrap_or(&[])
    }
}

/// Write `spec` into `buf`; returns the frame length.
pub fn build_frame(spec: &FrameSpec<'_>, buf: &mut [u8]) -> Result<usize, BuildError> {
    let mut w = Writer::new(buf);
    w.put(&spec.dst_mac.0)?;
    w.put(&spec.src_mac.0)?;
    match (spec.vlan.outer, spec.vlan.inner) {
        (None, None) => {}
        (Some(outer), inner) => {
            w.u16(outer.tpid)?;
            w.u16(outer.tci)?;
            if let Some(inner) = inner {
                w.u16(inner.tpid)?;
                w.u16(inner.tci)?;
            }
        }
        (None, Some(_)) => return Err(BuildError::Invalid("inner VLAN tag without an outer tag")),
    }
    match &spec.network {
        NetworkSpec::Arp(arp) => {
            w.u16(ethertype::ARP)?;
            write_arp(&mut w, arp)?;
        }
        NetworkSpec::Ipv4(ip) => {
            w.u16(ethertype::IPV4)?;
            write_ipv4(&mut w, ip)?;
        }
        NetworkSpec::Ipv6(ip) => {
            w.u16(ethertype::IPV6)?;
            write_ipv6(&mut w, ip)?;
        }
        NetworkSpec::Other { ethertype, payload } => {
            w.u16(*ethertype)?;
            w.put(payload)?;
        }
    }
    if w.len < spec.pad_to {
        w.zeros(spec.pad_to - w.len)?;
    }
    Ok(w.len)
}

/// Write an IPv4 packet (no Ethernet header) into `buf`, e.g. to quote it in an ICMP error.
pub fn build_ipv4(spec: &Ipv4Spec<'_>, buf: &mut [u8]) -> Result<usize, BuildError> {
    let mut w = Writer::new(buf);
    write_ipv4(&mut w, spec)?;
    Ok(w.len)
}

/// Write an IPv6 packet (no Ethernet header) into `buf`.
pub fn build_ipv6(spec: &Ipv6Spec<'_>, buf: &mut [u8]) -> Result<usize, BuildError> {
    let mut w = Writer::new(buf);
    write_ipv6(&mut w, spec)?;
    Ok(w.len)
}

fn write_arp(w: &mut Writer<'_>, arp: &ArpSpec) -> Result<(), BuildError> {
    w.u16(1)?;
    w.u16(ethertype::IPV4)?;
    w.put(&[6, 4])?;
    w.u16(u16::from(arp.operation))?;
    w.put(&arp.sender_mac.0)?;
    w.put(&arp.sender_ip.octets())?;
    w.put(&arp.target_mac.0)?;
    w.put(&arp.target_ip.octets())
}

/// Which pseudo-header the transport checksum uses.
#[derive(Clone, Copy)]
enum Pseudo {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Pseudo {
    fn version(self) -> IpVersion {
        match self {
            Pseudo::V4(..) => IpVersion::V4,
            Pseudo::V6(..) => IpVersion::V6,
        }
    }

    fn sum(self, protocol: u8, len: usize) -> Result<u64, BuildError> {
        Ok(match self {
            Pseudo::V4(s, d) => {
                let len = u16::try_from(len).map_err(|_| BuildError::TooLong)?;
                checksum::pseudo_header_v4(s, d, protocol, len)
            }
            Pseudo::V6(s, d) => {
                let len = u32::try_from(len).map_err(|_| BuildError::TooLong)?;
                checksum::pseudo_header_v6(s, d, protocol, len)
            }
        })
    }
}

fn write_ipv4(w: &mut Writer<'_>, ip: &Ipv4Spec<'_>) -> Result<(), BuildError> {
    if ip.options.len() % 4 != 0 || ip.options.len() > 40 {
        return Err(BuildError::Invalid("IPv4 options length must be a multiple of 4, at most 40"));
    }
    if ip.fragment_offset % 8 != 0 {
        return Err(BuildError::Invalid("IPv4 fragment offset must be a multiple of 8"));
    }
    let start = w.len;
    let header_len = crate::ipv4::HEADER_LEN + ip.options.len();
    let ihl = u8::try_from(header_len / 4).map_err(|_| BuildError::TooLong)?;
    let protocol = ip.transport.protocol(IpVersion::V4);
    let flags = (u16::from(ip.dont_fragment) << 14) | (u16::from(ip.more_fragments) << 13);
    w.u8(0x40 | ihl)?;
    w.u8(ip.tos)?;
    w.u16(0)?; // total length, patched below
    w.u16(ip.ident)?;
    w.u16(flags | (ip.fragment_offset >> 3))?;
    w.u8(ip.ttl)?;
    w.u8(protocol)?;
    w.u16(0)?; // checksum, patched below
    w.put(&ip.src.octets())?;
    w.put(&ip.dst.octets())?;
    w.put(ip.options)?;
    write_transport(w, &ip.transport, Pseudo::V4(ip.src, ip.dst))?;
    let total = u16::try_from(w.len - start).map_err(|_| BuildError::TooLong)?;
    w.patch(start + 2, &total.to_be_bytes())?;
    let sum = checksum::internet(span_of(w, start, start + header_len));
    w.patch(start + 10, &sum.to_be_bytes())
}

fn span_of<'w>(w: &'w Writer<'_>, from: usize, to: usize) -> &'w [u8] {
    crate::bytes::span(w.written(0), from, to)
}

fn write_ipv6(w: &mut Writer<'_>, ip: &Ipv6Spec<'_>) -> Result<(), BuildError> {
    let start = w.len;
    let upper = ip.transport.protocol(IpVersion::V6);
    let first = ip.extensions.first().map_or(upper, Ipv6ExtensionSpec::protocol);
    let tc = u32::from(ip.traffic_class);
    w.u32((6 << 28) | (tc << 20) | (ip.flow_label & 0x000f_ffff))?;
    w.u16(0)?; // payload length, patched below
    w.u8(first)?;
    w.u8(ip.hop_limit)?;
    w.put(&ip.src.octets())?;
    w.put(&ip.dst.octets())?;
    for (i, ext) in ip.extensions.iter().enumerate() {
        let next = ip.extensions.get(i + 1).map_or(upper, Ipv6ExtensionSpec::protocol);
        write_extension(w, ext, next)?;
    }
    write_transport(w, &ip.transport, Pseudo::V6(ip.src, ip.dst))?;
    let payload_len = u16::try_from(w.len - start - crate::ipv6::HEADER_LEN).map_err(|_| BuildError::TooLong)?;
    w.patch(start + 4, &payload_len.to_be_bytes())
}

fn write_extension(w: &mut Writer<'_>, ext: &Ipv6ExtensionSpec, next: u8) -> Result<(), BuildError> {
    match *ext {
        Ipv6ExtensionSpec::HopByHop { len } | Ipv6ExtensionSpec::DestinationOptions { len } => {
            w.put(&[next, len])?;
            // Fill the options area (always >= 6 bytes) with one PadN option.
            let area = ext.len() - 2;
            let pad = u8::try_from(area - 2).map_err(|_| BuildError::TooLong)?;
            w.put(&[1, pad])?;
            w.zeros(area - 2)
        }
        Ipv6ExtensionSpec::Routing { routing_type, segments_left, len } => {
            w.put(&[next, len, routing_type, segments_left])?;
            w.zeros(ext.len() - 4)
        }
        Ipv6ExtensionSpec::Fragment { offset, more, ident } => {
            if offset % 8 != 0 {
                return Err(BuildError::Invalid("IPv6 fragment offset must be a multiple of 8"));
            }
            w.put(&[next, 0])?;
            w.u16(offset | u16::from(more))?;
            w.u32(ident)
        }
        Ipv6ExtensionSpec::Authentication { len } => {
            w.put(&[next, len])?;
            w.zeros(ext.len() - 2)
        }
    }
}

fn write_transport(w: &mut Writer<'_>, t: &TransportSpec<'_>, pseudo: Pseudo) -> Result<(), BuildError> {
    let start = w.len;
    let version = pseudo.version();
    let protocol = t.protocol(version);
    match *t {
        TransportSpec::Tcp { src_port, dst_port, seq, ack, flags, window, options, payload } => {
            if options.len() % 4 != 0 || options.len() > 40 {
                return Err(BuildError::Invalid("TCP options length must be a multiple of 4, at most 40"));
            }
            let data_offset =
                u16::try_from((crate::tcp::HEADER_LEN + options.len()) / 4).map_err(|_| BuildError::TooLong)?;
            w.u16(src_port)?;
            w.u16(dst_port)?;
            w.u32(seq)?;
            w.u32(ack)?;
            w.u16((data_offset << 12) | flags.bits())?;
            w.u16(window)?;
            w.u16(0)?; // checksum
            w.u16(0)?; // urgent pointer
            w.put(options)?;
            w.put(payload)?;
            let sum = transport_checksum(w, start, pseudo, protocol)?;
            w.patch(start + 16, &sum.to_be_bytes())
        }
        TransportSpec::Udp { src_port, dst_port, payload } => {
            let len = u16::try_from(crate::udp::HEADER_LEN + payload.len()).map_err(|_| BuildError::TooLong)?;
            w.u16(src_port)?;
            w.u16(dst_port)?;
            w.u16(len)?;
            w.u16(0)?;
            w.put(payload)?;
            let sum = transport_checksum(w, start, pseudo, protocol)?;
            // 0 means "no checksum" in UDP; a computed 0 is sent as its one's-complement twin.
            let sum = if sum == 0 { 0xffff } else { sum };
            w.patch(start + 6, &sum.to_be_bytes())
        }
        TransportSpec::Sctp { src_port, dst_port, verification_tag, chunks } => {
            w.u16(src_port)?;
            w.u16(dst_port)?;
            w.u32(verification_tag)?;
            w.u32(0)?;
            w.put(chunks)?;
            // RFC 9260 appendix A: the CRC32c goes on the wire least significant byte first.
            let crc = checksum::crc32c(w.written(start));
            w.patch(start + 8, &crc.to_le_bytes())
        }
        TransportSpec::Icmp { icmp_type, code, rest_of_header, body } => {
            w.put(&[icmp_type, code, 0, 0])?;
            w.put(&rest_of_header)?;
            w.put(body)?;
            let sum = match version {
                IpVersion::V4 => checksum::internet(w.written(start)),
                IpVersion::V6 => transport_checksum(w, start, pseudo, protocol)?,
            };
            w.patch(start + 2, &sum.to_be_bytes())
        }
        TransportSpec::Raw { payload, .. } => w.put(payload),
    }
}

fn transport_checksum(w: &Writer<'_>, start: usize, pseudo: Pseudo, protocol: u8) -> Result<u16, BuildError> {
    let segment = w.written(start);
    let acc = pseudo.sum(protocol, segment.len())? + checksum::sum(segment);
    Ok(!checksum::fold(acc))
}

pub mod samples {
    //! Ready-made frames: a realistic traffic mix for benchmarks and fuzz seeds, and one
    //! malformed frame per [`DropReason`] for tests, fuzz seeds and the traffic generator.

    use core::net::{Ipv4Addr, Ipv6Addr};

    use super::{
        ArpSpec, BuildError, FrameSpec, Ipv4Spec, Ipv6ExtensionSpec, Ipv6Spec, NetworkSpec, TransportSpec, build_frame,
        build_ipv4,
    };
    use crate::DropReason;
    use crate::arp::ArpOperation;
    use crate::checksum;
    use crate::ethernet::{EthernetAddress, VlanTag, VlanTags, ethertype};
    use crate::ip::{IpVersion, protocol};
    use crate::tcp::TcpFlags;

    /// A named frame of the traffic mix with its share (out of the sum of weights).
    #[derive(Clone, Copy, Debug)]
    pub struct Sample {
        /// Short name, usable as a benchmark id.
        pub name: &'static str,
        /// Relative frequency in the mix.
        pub weight: u32,
        /// The frame.
        pub spec: FrameSpec<'static>,
    }

    /// Client address used by the samples.
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    /// Server address used by the samples.
    pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
    /// Client address used by the samples.
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    /// Server address used by the samples.
    pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 1);

    static DATA: [u8; 1460] = [0x5a; 1460];
    /// MSS 1460, SACK permitted, timestamps, NOP, window scale 7: what Linux puts in a SYN.
    static SYN_OPTIONS: [u8; 20] = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
    /// NOP, NOP, timestamps: what Linux puts in every segment of an established connection.
    static TS_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1];
    /// A DNS query for an A record of "example.com".
    static DNS_QUERY: [u8; 29] = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o',
        b'm', 0, 0, 1, 0, 1,
    ];

    const fn v4(transport: TransportSpec<'static>) -> NetworkSpec<'static> {
        NetworkSpec::Ipv4(Ipv4Spec::new(CLIENT_V4, SERVER_V4, transport))
    }

    const fn v6(transport: TransportSpec<'static>) -> NetworkSpec<'static> {
        NetworkSpec::Ipv6(Ipv6Spec::new(CLIENT_V6, SERVER_V6, transport))
    }

    const fn tcp(flags: TcpFlags, options: &'static [u8], payload: &'static [u8]) -> TransportSpec<'static> {
        TransportSpec::Tcp {
            src_port: 40_000,
            dst_port: 443,
            seq: 1_000,
            ack: 2_000,
            flags,
            window: 502,
            options,
            payload,
        }
    }

    const fn sample(name: &'static str, weight: u32, spec: FrameSpec<'static>) -> Sample {
        Sample { name, weight, spec }
    }

    const fn padded(mut spec: FrameSpec<'static>) -> FrameSpec<'static> {
        spec.pad_to = 60;
        spec
    }

    const fn split(data: &'static [u8], at: usize) -> (&'static [u8], &'static [u8]) {
        data.split_at(at)
    }

    /// Number of samples in [`traffic_mix`].
    pub const MIX_LEN: usize = 11;

    /// An IMIX-like mix of what a node firewall sees: mostly small TCP control segments and full
    /// data segments, DNS, some IPv6, tagged frames, ping, fragments and ARP. Weights sum to 32.
    pub fn traffic_mix() -> [Sample; MIX_LEN] {
        let syn = TransportSpec::Tcp {
            src_port: 40_000,
            dst_port: 443,
            seq: 1_000,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 64_240,
            options: &SYN_OPTIONS,
            payload: &[],
        };
        let mut vlan = FrameSpec::new(v4(tcp(TcpFlags::ACK, &TS_OPTIONS, split(&DATA, 200).0)));
        vlan.vlan = VlanTags { outer: Some(VlanTag::customer(100)), inner: None };
        let (first_part, later_part) = split(&DATA, 1_200);
        let mut first = Ipv4Spec::new(
            CLIENT_V4,
            SERVER_V4,
            TransportSpec::Udp { src_port: 5_000, dst_port: 4_789, payload: first_part },
        );
        first.dont_fragment = false;
        first.more_fragments = true;
        first.ident = 0x4242;
        let mut later = first;
        later.more_fragments = false;
        later.fragment_offset = 1_208;
        later.transport = TransportSpec::Raw { protocol: protocol::UDP, payload: later_part };
        let arp = ArpSpec {
            operation: ArpOperation::Request,
            sender_mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            sender_ip: CLIENT_V4,
            target_mac: EthernetAddress([0; 6]),
            target_ip: SERVER_V4,
        };
        let mut arp_frame = padded(FrameSpec::new(NetworkSpec::Arp(arp)));
        arp_frame.dst_mac = EthernetAddress::BROADCAST;
        [
            sample("ipv4_tcp_syn", 4, FrameSpec::new(v4(syn))),
            sample("ipv4_tcp_ack", 8, padded(FrameSpec::new(v4(tcp(TcpFlags::ACK, &TS_OPTIONS, &[]))))),
            sample(
                "ipv4_tcp_1500",
                8,
                FrameSpec::new(v4(tcp(TcpFlags::ACK | TcpFlags::PSH, &TS_OPTIONS, split(&DATA, 1_448).0))),
            ),
            sample(
                "ipv4_udp_dns",
                3,
                FrameSpec::new(v4(TransportSpec::Udp { src_port: 53_000, dst_port: 53, payload: &DNS_QUERY })),
            ),
            sample("ipv6_tcp_ack", 3, FrameSpec::new(v6(tcp(TcpFlags::ACK, &TS_OPTIONS, &[])))),
            sample(
                "ipv6_udp_quic",
                1,
                FrameSpec::new(v6(TransportSpec::Udp {
                    src_port: 50_000,
                    dst_port: 443,
                    payload: split(&DATA, 1_200).0,
                })),
            ),
            sample("vlan_ipv4_tcp", 1, vlan),
            sample(
                "ipv4_icmp_echo",
                1,
                FrameSpec::new(v4(TransportSpec::echo_request(IpVersion::V4, 7, 1, split(&DATA, 56).0))),
            ),
            sample("ipv4_fragment_first", 1, FrameSpec::new(NetworkSpec::Ipv4(first))),
            sample("ipv4_fragment_later", 1, FrameSpec::new(NetworkSpec::Ipv4(later))),
            sample("arp_request", 1, arp_frame),
        ]
    }

    /// A frame from the client to the server over IPv4 (defaults of [`Ipv4Spec::new`]).
    pub(crate) fn base_v4(transport: TransportSpec<'_>) -> FrameSpec<'_> {
        FrameSpec::new(NetworkSpec::Ipv4(Ipv4Spec::new(CLIENT_V4, SERVER_V4, transport)))
    }

    /// A frame from the client to the server over IPv6 with these extension headers.
    pub(crate) fn base_v6<'a>(extensions: &'a [Ipv6ExtensionSpec], transport: TransportSpec<'a>) -> FrameSpec<'a> {
        let mut ip = Ipv6Spec::new(CLIENT_V6, SERVER_V6, transport);
        ip.extensions = extensions;
        FrameSpec::new(NetworkSpec::Ipv6(ip))
    }

    fn v4_with<'a>(transport: TransportSpec<'a>, edit: impl FnOnce(&mut Ipv4Spec<'a>)) -> FrameSpec<'a> {
        let mut ip = Ipv4Spec::new(CLIENT_V4, SERVER_V4, transport);
        edit(&mut ip);
        FrameSpec::new(NetworkSpec::Ipv4(ip))
    }

    const UDP: TransportSpec<'static> = TransportSpec::Udp { src_port: 1_234, dst_port: 53, payload: &[] };
    const L3: usize = crate::ethernet::HEADER_LEN;

    /// Set a byte of the frame (a no-op outside it).
    fn poke(buf: &mut [u8], at: usize, value: u8) {
        if let Some(b) = buf.get_mut(at) {
            *b = value;
        }
    }

    /// Recompute the IPv4 header checksum after editing the header at `l3`, so the edit and not
    /// the checksum is what the parser trips on.
    fn fix_ipv4_checksum(buf: &mut [u8], l3: usize) {
        let header_len = usize::from(buf.get(l3).copied().unwrap_or(0) & 0x0f) * 4;
        poke(buf, l3 + 10, 0);
        poke(buf, l3 + 11, 0);
        let sum = checksum::internet(crate::bytes::span(buf, l3, l3 + header_len)).to_be_bytes();
        poke(buf, l3 + 10, sum[0]);
        poke(buf, l3 + 11, sum[1]);
    }

    /// Write a frame that the parser drops with exactly `reason`; returns its length.
    /// Each arm says what is wrong with the frame.
    pub fn malformed(reason: DropReason, buf: &mut [u8]) -> Result<usize, BuildError> {
        use DropReason::*;
        let raw = |protocol: u8, payload: &'static [u8]| TransportSpec::Raw { protocol, payload };
        let other = |ethertype: u16, payload: &'static [u8]| FrameSpec::new(NetworkSpec::Other { ethertype, payload });
        let len = match reason {
            // 13 bytes: one short of the Ethernet header.
            EthernetTruncated => {
                let n = build_frame(&other(0x88cc, &[]), buf)?;
                n - 1
            }
            // A C-tag TPID followed by only 2 bytes.
            VlanTruncated => build_frame(&other(ethertype::VLAN, &[0, 1]), buf)?,
            // S-tag, C-tag, then a third TPID.
            TooManyVlanTags => {
                let mut f = other(ethertype::VLAN, &[0, 3, 0x08, 0x00]);
                f.vlan = VlanTags { outer: Some(VlanTag::service(1)), inner: Some(VlanTag::customer(2)) };
                build_frame(&f, buf)?
            }
            // C-tag outside, S-tag inside.
            VlanBadTagOrder => {
                let mut f = other(ethertype::SERVICE_VLAN, &[0, 2, 0x08, 0x00]);
                f.vlan = VlanTags { outer: Some(VlanTag::customer(1)), inner: None };
                build_frame(&f, buf)?
            }
            // ARP cut after 20 bytes.
            ArpTruncated => {
                build_frame(&other(ethertype::ARP, &[0, 1, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), buf)?
            }
            // Hardware type 6 (IEEE 802) instead of Ethernet.
            ArpMalformed => {
                let arp = ArpSpec {
                    operation: ArpOperation::Request,
                    sender_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
                    sender_ip: CLIENT_V4,
                    target_mac: EthernetAddress([0; 6]),
                    target_ip: SERVER_V4,
                };
                let n = build_frame(&FrameSpec::new(NetworkSpec::Arp(arp)), buf)?;
                poke(buf, L3 + 1, 6);
                n
            }
            // IPv4 header cut after 10 bytes.
            Ipv4Truncated => build_frame(&base_v4(UDP), buf)?.min(L3 + 10),
            // Version 5.
            Ipv4BadVersion => {
                let n = build_frame(&base_v4(UDP), buf)?;
                poke(buf, L3, 0x55);
                fix_ipv4_checksum(buf, L3);
                n
            }
            // IHL 4 (16 bytes).
            Ipv4BadHeaderLength => {
                let n = build_frame(&base_v4(UDP), buf)?;
                poke(buf, L3, 0x44);
                n
            }
            // Total length 19 < header length 20.
            Ipv4BadTotalLength => {
                let n = build_frame(&base_v4(UDP), buf)?;
                poke(buf, L3 + 2, 0);
                poke(buf, L3 + 3, 19);
                fix_ipv4_checksum(buf, L3);
                n
            }
            // TTL changed after the checksum was computed.
            Ipv4BadChecksum => {
                let n = build_frame(&base_v4(UDP), buf)?;
                poke(buf, L3 + 8, 1);
                n
            }
            // Record route option with length 1.
            Ipv4BadOptions => build_frame(&v4_with(UDP, |ip| ip.options = &[7, 1, 0, 0]), buf)?,
            // Loose source route.
            Ipv4SourceRoute => build_frame(&v4_with(UDP, |ip| ip.options = &[131, 3, 4, 0]), buf)?,
            // IPv6 fixed header cut after 30 bytes.
            Ipv6Truncated => build_frame(&base_v6(&[], UDP), buf)?.min(L3 + 30),
            // Version 4 under EtherType IPv6.
            Ipv6BadVersion => {
                let n = build_frame(&base_v6(&[], UDP), buf)?;
                poke(buf, L3, 0x40);
                n
            }
            // Next header Hop-by-Hop, but only 4 payload bytes.
            Ipv6ExtensionTruncated => build_frame(&base_v6(&[], raw(protocol::HOP_BY_HOP, &[17, 0, 1, 0])), buf)?,
            // Nine Destination Options headers.
            Ipv6ExtensionChainTooLong => {
                const NINE: [Ipv6ExtensionSpec; 9] = [Ipv6ExtensionSpec::DestinationOptions { len: 0 }; 9];
                build_frame(&base_v6(&NINE, UDP), buf)?
            }
            // PadN claiming 5 data bytes where 4 remain.
            Ipv6BadOptions => build_frame(&base_v6(&[], raw(protocol::HOP_BY_HOP, &[17, 0, 1, 5, 0, 0, 0, 0])), buf)?,
            // Destination Options, then Hop-by-Hop.
            Ipv6HopByHopNotFirst => build_frame(
                &base_v6(
                    &[Ipv6ExtensionSpec::DestinationOptions { len: 0 }, Ipv6ExtensionSpec::HopByHop { len: 0 }],
                    UDP,
                ),
                buf,
            )?,
            // Two (atomic) Fragment headers.
            Ipv6DuplicateFragmentHeader => build_frame(
                &base_v6(
                    &[
                        Ipv6ExtensionSpec::Fragment { offset: 0, more: false, ident: 1 },
                        Ipv6ExtensionSpec::Fragment { offset: 0, more: false, ident: 2 },
                    ],
                    UDP,
                ),
                buf,
            )?,
            // Routing type 0 with one segment left.
            Ipv6RoutingType0 => build_frame(
                &base_v6(&[Ipv6ExtensionSpec::Routing { routing_type: 0, segments_left: 1, len: 2 }], UDP),
                buf,
            )?,
            // First fragment carrying 8 bytes of a TCP header.
            FragmentTooShort => build_frame(
                &v4_with(raw(protocol::TCP, &[0; 8]), |ip| {
                    ip.dont_fragment = false;
                    ip.more_fragments = true;
                }),
                buf,
            )?,
            // TCP fragment at offset 8: would rewrite the flags the first fragment showed.
            FragmentOverlap => build_frame(
                &v4_with(raw(protocol::TCP, &[0; 8]), |ip| {
                    ip.dont_fragment = false;
                    ip.fragment_offset = 8;
                }),
                buf,
            )?,
            // More fragments follow, but this one holds 11 bytes.
            FragmentBadLength => build_frame(
                &v4_with(TransportSpec::Udp { src_port: 1, dst_port: 2, payload: &[0; 3] }, |ip| {
                    ip.dont_fragment = false;
                    ip.more_fragments = true;
                }),
                buf,
            )?,
            // Last fragment at offset 65528 with 16 bytes: past 65535.
            FragmentOversized => build_frame(
                &v4_with(raw(protocol::ICMP, &[0; 16]), |ip| {
                    ip.dont_fragment = false;
                    ip.fragment_offset = 65_528;
                }),
                buf,
            )?,
            // 10 bytes under protocol TCP.
            TcpTruncated => build_frame(&base_v4(raw(protocol::TCP, &[0; 10])), buf)?,
            // Data offset 4.
            TcpBadDataOffset => {
                let n = build_frame(&base_v4(TransportSpec::tcp(1, 2, TcpFlags::SYN)), buf)?;
                poke(buf, L3 + 20 + 12, 0x40);
                n
            }
            // 4 bytes under protocol UDP.
            UdpTruncated => build_frame(&base_v4(raw(protocol::UDP, &[0; 4])), buf)?,
            // UDP length 100 in an 8-byte datagram.
            UdpBadLength => {
                let n = build_frame(&base_v4(UDP), buf)?;
                poke(buf, L3 + 20 + 5, 100);
                n
            }
            // 8 bytes under protocol SCTP.
            SctpTruncated => build_frame(&base_v4(raw(protocol::SCTP, &[0; 8])), buf)?,
            // 4 bytes under protocol ICMP.
            IcmpTruncated => build_frame(&base_v4(raw(protocol::ICMP, &[8, 0, 0, 0])), buf)?,
            // IPv4 in RFC 1042 LLC/SNAP behind an 802.3 length.
            LlcSnapEncapsulation => {
                build_frame(&other(28, &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00, 0x45, 0, 0, 20]), buf)?
            }
            // Destination unreachable quoting 10 bytes: not even an IPv4 header.
            IcmpBadQuote => build_frame(
                &base_v4(TransportSpec::Icmp { icmp_type: 3, code: 1, rest_of_header: [0; 4], body: &[0x45; 10] }),
                buf,
            )?,
        };
        Ok(len)
    }

    /// An ICMP port-unreachable from the server quoting a UDP datagram the client sent, with the
    /// quote cut to `quote_len` bytes (28 is the RFC 792 minimum). Returns the frame length.
    pub fn icmp_port_unreachable(quote_len: usize, buf: &mut [u8]) -> Result<usize, BuildError> {
        let mut quoted = [0u8; 128];
        let inner = Ipv4Spec::new(
            CLIENT_V4,
            SERVER_V4,
            TransportSpec::Udp { src_port: 33_434, dst_port: 33_435, payload: &[0; 32] },
        );
        let n = build_ipv4(&inner, &mut quoted)?;
        let quote = quoted.get(..quote_len.min(n)).unwrap_or(&[]);
        let error = TransportSpec::Icmp { icmp_type: 3, code: 3, rest_of_header: [0; 4], body: quote };
        build_frame(&FrameSpec::new(NetworkSpec::Ipv4(Ipv4Spec::new(SERVER_V4, CLIENT_V4, error))), buf)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::ethernet::VlanTag;

    fn frame_len(spec: &FrameSpec<'_>) -> usize {
        build_frame(spec, &mut [0u8; 4096]).unwrap()
    }

    #[test]
    fn every_short_buffer_is_an_error_not_a_panic() {
        for s in samples::traffic_mix() {
            let n = frame_len(&s.spec);
            let mut buf = [0u8; 2048];
            for size in 0..n {
                assert_eq!(build_frame(&s.spec, &mut buf[..size]), Err(BuildError::BufferTooSmall), "{}", s.name);
            }
            assert_eq!(build_frame(&s.spec, &mut buf[..n]), Ok(n));
        }
    }

    #[test]
    fn transport_checksums_verify_with_pseudo_header() {
        let src6 = samples::CLIENT_V6;
        let dst6 = samples::SERVER_V6;
        let payload = [7u8; 33]; // odd length
        for transport in [
            TransportSpec::Tcp {
                src_port: 1,
                dst_port: 2,
                seq: 3,
                ack: 4,
                flags: TcpFlags::ACK,
                window: 5,
                options: &[1, 1, 1, 1],
                payload: &payload,
            },
            TransportSpec::Udp { src_port: 1, dst_port: 2, payload: &payload },
            TransportSpec::echo_request(IpVersion::V6, 1, 2, &payload),
        ] {
            let mut buf = [0u8; 256];
            let n = build_ipv6(&Ipv6Spec::new(src6, dst6, transport), &mut buf).unwrap();
            let segment = &buf[40..n];
            let len = u32::try_from(segment.len()).unwrap();
            let acc =
                checksum::pseudo_header_v6(src6, dst6, transport.protocol(IpVersion::V6), len) + checksum::sum(segment);
            assert_eq!(checksum::fold(acc), 0xffff, "{transport:?}");

            let transport4 = match transport {
                TransportSpec::Icmp { .. } => TransportSpec::echo_request(IpVersion::V4, 1, 2, &payload),
                other => other,
            };
            let (s4, d4) = (samples::CLIENT_V4, samples::SERVER_V4);
            let n = build_ipv4(&Ipv4Spec::new(s4, d4, transport4), &mut buf).unwrap();
            assert_eq!(checksum::internet(&buf[..20]), 0, "IPv4 header checksum");
            let segment = &buf[20..n];
            let pseudo = match transport4 {
                TransportSpec::Icmp { .. } => 0, // ICMPv4 has no pseudo-header
                _ => checksum::pseudo_header_v4(
                    s4,
                    d4,
                    transport4.protocol(IpVersion::V4),
                    u16::try_from(segment.len()).unwrap(),
                ),
            };
            assert_eq!(checksum::fold(pseudo + checksum::sum(segment)), 0xffff, "{transport4:?}");
        }
    }

    #[test]
    fn invalid_specs_are_refused() {
        let udp = TransportSpec::Udp { src_port: 1, dst_port: 2, payload: &[] };
        let mut ip = Ipv4Spec::new(samples::CLIENT_V4, samples::SERVER_V4, udp);
        ip.options = &[1, 1, 1];
        assert!(matches!(build_ipv4(&ip, &mut [0; 128]), Err(BuildError::Invalid(_))));
        ip.options = &[];
        ip.fragment_offset = 9;
        assert!(matches!(build_ipv4(&ip, &mut [0; 128]), Err(BuildError::Invalid(_))));
        let mut f = FrameSpec::new(NetworkSpec::Ipv4(Ipv4Spec::new(samples::CLIENT_V4, samples::SERVER_V4, udp)));
        f.vlan = VlanTags { outer: None, inner: Some(VlanTag::customer(1)) };
        assert!(matches!(build_frame(&f, &mut [0; 128]), Err(BuildError::Invalid(_))));
        let big = [0u8; 65_535];
        let huge =
            Ipv4Spec::new(samples::CLIENT_V4, samples::SERVER_V4, TransportSpec::Raw { protocol: 17, payload: &big });
        let mut out = std::vec![0u8; 70_000];
        assert_eq!(build_ipv4(&huge, &mut out), Err(BuildError::TooLong));
        let tcp = TransportSpec::Tcp {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 0,
            options: &[0; 44],
            payload: &[],
        };
        assert!(matches!(
            build_ipv4(&Ipv4Spec::new(samples::CLIENT_V4, samples::SERVER_V4, tcp), &mut [0; 128]),
            Err(BuildError::Invalid(_))
        ));
        assert_eq!(std::format!("{}", BuildError::BufferTooSmall), "output buffer too small for the frame");
    }

    #[test]
    fn padding_and_extension_layout() {
        let mut f = FrameSpec::new(NetworkSpec::Other { ethertype: 0x88cc, payload: &[1, 2, 3] });
        f.pad_to = 60;
        let mut buf = [0xffu8; 64];
        assert_eq!(build_frame(&f, &mut buf), Ok(60));
        assert!(buf[17..60].iter().all(|&b| b == 0));
        let exts = [
            Ipv6ExtensionSpec::HopByHop { len: 1 },
            Ipv6ExtensionSpec::Routing { routing_type: 4, segments_left: 0, len: 0 },
            Ipv6ExtensionSpec::Fragment { offset: 16, more: true, ident: 9 },
            Ipv6ExtensionSpec::Authentication { len: 1 },
        ];
        let mut ip =
            Ipv6Spec::new(samples::CLIENT_V6, samples::SERVER_V6, TransportSpec::Raw { protocol: 59, payload: &[] });
        ip.extensions = &exts;
        let mut out = [0u8; 256];
        let n = build_ipv6(&ip, &mut out).unwrap();
        assert_eq!(n, 40 + 16 + 8 + 8 + 12);
        assert_eq!(out[6], 0); // Hop-by-Hop first
        assert_eq!((out[40], out[41], out[42], out[43]), (43, 1, 1, 12)); // next Routing, PadN(12)
        assert_eq!((out[56], out[58], out[59]), (44, 4, 0));
        assert_eq!((out[64], out[66], out[67]), (51, 0, 16 | 1));
        assert_eq!((out[72], out[73]), (59, 1));
        assert!(exts.iter().all(|e| !e.is_empty()));
    }
}
