//! Property tests of `parse_frame`:
//! 1. arbitrary bytes never panic and every `Ok` satisfies the summary invariants;
//! 2. frames built from random fields parse back to exactly those fields;
//! 3. every truncation of a valid frame gives the reason of the layer it cuts (or `Ok` when it
//!    only cuts padding), also when the IP length fields are fixed up so the cut lands in the
//!    extension chain or transport header;
//! 4. random bit flips never panic.

// In tests a panic is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use moat_wire::builder::{
    ArpSpec, FrameSpec, Ipv4Spec, Ipv6ExtensionSpec as Ext, Ipv6Spec, NetworkSpec, TransportSpec, build_frame,
    build_ipv4, build_ipv6,
};
use moat_wire::{
    ArpOperation, ArpSummary, DropReason, EthernetAddress, Fragment, FrameSummary, IcmpMessage, IcmpSummary, IpSummary,
    IpVersion, Network, QuotedPacket, QuotedTransport, TcpFlags, Transport, VlanTag, VlanTags, parse_frame,
};
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------------------------------------
// Generated frame descriptions (owned, so the builder's borrowed specs can point into them).

#[derive(Clone, Debug)]
struct Gen {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vlan: VlanTags,
    pad_to: usize,
    net: GenNet,
}

#[derive(Clone, Debug)]
enum GenNet {
    Arp(ArpSpec),
    Ip(GenIp),
    Other { ethertype: u16, len: usize },
}

#[derive(Clone, Debug)]
struct GenIp {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ident: u32,
    /// IPv4 options (valid, padded to a multiple of 4).
    options: Vec<u8>,
    /// IPv6 extension headers before the transport (a Fragment header, if any, is last).
    exts: Vec<Ext>,
    frag: GenFrag,
    l4: GenL4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GenFrag {
    None,
    First,
    /// Offset in bytes, more fragments.
    Later(u16, bool),
}

#[derive(Clone, Debug)]
enum GenL4 {
    Tcp { sp: u16, dp: u16, seq: u32, ack: u32, flags: u16, window: u16, opt_words: usize, len: usize },
    Udp { sp: u16, dp: u16, len: usize },
    Sctp { sp: u16, dp: u16, vtag: u32, len: usize },
    Echo { request: bool, id: u16, seq: u16, len: usize },
    IcmpOther { ty: u8, code: u8 },
    IcmpError { ty: u8, code: u8, inner: Inner, quote_extra: usize },
    Raw { protocol: u8, len: usize },
}

#[derive(Clone, Debug)]
struct Inner {
    kind: u8, // 0 TCP, 1 UDP, 2 echo request
    sp: u16,
    dp: u16,
}

const FILL: [u8; 2048] = [0xa5; 2048];

fn v4_addr() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)))
}

fn v6_addr() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 16]>().prop_map(|o| IpAddr::V6(Ipv6Addr::from(o)))
}

fn arb_vlan() -> impl Strategy<Value = VlanTags> {
    let outer_tpid = select(vec![0x8100u16, 0x88a8, 0x9100]);
    prop_oneof![
        2 => Just(VlanTags::NONE),
        1 => (outer_tpid.clone(), any::<u16>())
            .prop_map(|(tpid, tci)| VlanTags { outer: Some(VlanTag { tpid, tci }), inner: None }),
        1 => (outer_tpid, any::<u16>(), any::<u16>()).prop_map(|(tpid, a, b)| VlanTags {
            outer: Some(VlanTag { tpid, tci: a }),
            inner: Some(VlanTag { tpid: 0x8100, tci: b }),
        }),
    ]
}

fn arb_ipv4_options() -> impl Strategy<Value = Vec<u8>> {
    let option = select(vec![vec![1u8], vec![148, 4, 0, 0], vec![7, 7, 4, 0, 0, 0, 0], vec![68, 4, 5, 0]]);
    prop::collection::vec(option, 0..6).prop_map(|opts| {
        let mut out = Vec::new();
        for o in opts {
            if out.len() + o.len() <= 40 {
                out.extend(o);
            }
        }
        while out.len() % 4 != 0 {
            out.push(0); // END, then zeros
        }
        out
    })
}

fn arb_exts() -> impl Strategy<Value = Vec<Ext>> {
    let middle = prop_oneof![
        (0u8..3).prop_map(|len| Ext::DestinationOptions { len }),
        (select(vec![2u8, 3, 4, 253]), any::<u8>(), 0u8..3)
            .prop_map(|(routing_type, segments_left, len)| Ext::Routing { routing_type, segments_left, len }),
        // RH0 is fine once no segments are left.
        (0u8..3).prop_map(|len| Ext::Routing { routing_type: 0, segments_left: 0, len }),
        (1u8..6).prop_map(|len| Ext::Authentication { len }),
    ];
    (any::<bool>(), 0u8..3, prop::collection::vec(middle, 0..4)).prop_map(|(hbh, hbh_len, mid)| {
        let mut v = Vec::new();
        if hbh {
            v.push(Ext::HopByHop { len: hbh_len });
        }
        v.extend(mid);
        v
    })
}

fn arb_l4(v6: bool, fragmented: bool) -> BoxedStrategy<GenL4> {
    let tcp =
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>(), 0u16..0x200, any::<u16>(), 0usize..=10, 0usize..200)
            .prop_map(|(sp, dp, seq, ack, flags, window, opt_words, len)| GenL4::Tcp {
                sp,
                dp,
                seq,
                ack,
                flags,
                window,
                opt_words,
                len,
            });
    let udp = (any::<u16>(), any::<u16>(), 0usize..300).prop_map(|(sp, dp, len)| GenL4::Udp { sp, dp, len });
    let sctp = (any::<u16>(), any::<u16>(), any::<u32>(), 0usize..64).prop_map(|(sp, dp, vtag, len)| GenL4::Sctp {
        sp,
        dp,
        vtag,
        len,
    });
    let echo = (any::<bool>(), any::<u16>(), any::<u16>(), 0usize..64)
        .prop_map(|(request, id, seq, len)| GenL4::Echo { request, id, seq, len });
    if fragmented {
        return prop_oneof![tcp, udp, sctp, echo].boxed();
    }
    let other_types = if v6 { vec![130u8, 133, 134, 135, 136, 137] } else { vec![9u8, 10, 13, 14, 42] };
    let error_types = if v6 { vec![1u8, 2, 3, 4] } else { vec![3u8, 4, 5, 11, 12] };
    let raw_protocols = if v6 { vec![47u8, 50, 59, 89, 103, 253, 1] } else { vec![47u8, 50, 59, 89, 103, 253, 58, 51] };
    let other = (select(other_types), any::<u8>()).prop_map(|(ty, code)| GenL4::IcmpOther { ty, code });
    let inner = (0u8..3, any::<u16>(), any::<u16>()).prop_map(|(kind, sp, dp)| Inner { kind, sp, dp });
    let error = (select(error_types), any::<u8>(), inner, 0usize..40)
        .prop_map(|(ty, code, inner, quote_extra)| GenL4::IcmpError { ty, code, inner, quote_extra });
    let raw = (select(raw_protocols), 0usize..100).prop_map(|(protocol, len)| GenL4::Raw { protocol, len });
    prop_oneof![3 => tcp, 3 => udp, 1 => sctp, 1 => echo, 1 => other, 2 => error, 1 => raw].boxed()
}

fn arb_ip() -> impl Strategy<Value = GenIp> {
    let frag = prop_oneof![
        4 => Just(GenFrag::None),
        1 => Just(GenFrag::First),
        // Offsets from 24 (past every inspected header) to well below 65535.
        1 => (3u16..7000, any::<bool>()).prop_map(|(units, more)| GenFrag::Later(units * 8, more)),
    ];
    (any::<bool>(), frag).prop_flat_map(|(v6, frag)| {
        let addrs = if v6 { (v6_addr(), v6_addr()).boxed() } else { (v4_addr(), v4_addr()).boxed() };
        let later_protocol = select(vec![6u8, 17, 132, if v6 { 58 } else { 1 }, 47]);
        (
            addrs,
            any::<u8>(),
            any::<u32>(),
            arb_ipv4_options(),
            arb_exts(),
            arb_l4(v6, frag != GenFrag::None),
            later_protocol,
            0usize..64,
        )
            .prop_map(move |((src, dst), ttl, ident, options, exts, l4, later_protocol, later_len)| {
                let l4 = match frag {
                    // A fragment with more to follow holds a multiple of 8 bytes.
                    GenFrag::Later(_, more) => {
                        GenL4::Raw { protocol: later_protocol, len: if more { later_len & !7 } else { later_len } }
                    }
                    _ => l4,
                };
                GenIp {
                    v6,
                    src,
                    dst,
                    ttl,
                    ident: if v6 { ident } else { ident & 0xffff },
                    options: if v6 { Vec::new() } else { options },
                    exts: if v6 { exts } else { Vec::new() },
                    frag,
                    l4,
                }
            })
    })
}

fn arb_gen() -> impl Strategy<Value = Gen> {
    let arp = (select(vec![1u16, 2, 3, 9]), any::<[u8; 6]>(), any::<[u8; 4]>(), any::<[u8; 6]>(), any::<[u8; 4]>())
        .prop_map(|(op, sm, si, tm, ti)| {
            GenNet::Arp(ArpSpec {
                operation: ArpOperation::from(op),
                sender_mac: EthernetAddress(sm),
                sender_ip: Ipv4Addr::from(si),
                target_mac: EthernetAddress(tm),
                target_ip: Ipv4Addr::from(ti),
            })
        });
    let other = (any::<u16>(), 0usize..100)
        .prop_filter("not IP, ARP or a TPID", |(t, _)| {
            !matches!(*t, 0x0800 | 0x86dd | 0x0806 | 0x8100 | 0x88a8 | 0x9100)
        })
        .prop_map(|(ethertype, len)| GenNet::Other { ethertype, len });
    let net = prop_oneof![1 => arp, 1 => other, 6 => arb_ip().prop_map(GenNet::Ip)];
    (any::<[u8; 6]>(), any::<[u8; 6]>(), arb_vlan(), select(vec![0usize, 0, 60, 64, 128]), net)
        .prop_map(|(dst_mac, src_mac, vlan, pad_to, net)| Gen { dst_mac, src_mac, vlan, pad_to, net })
}

// ---------------------------------------------------------------------------------------------
// Building a generated frame and predicting its summary independently of the parser.

/// Layout facts the truncation properties need.
#[derive(Debug)]
struct Layout {
    l3: usize,
    /// End of the network-layer packet (start of padding).
    net_end: usize,
    /// IPv6 extension headers as `(start, end)` frame offsets.
    exts: Vec<(usize, usize)>,
    /// Transport header start (frame offset), for IP packets.
    transport: usize,
}

fn fill(n: usize) -> &'static [u8] {
    &FILL[..n]
}

/// Bytes the ICMP error quotes, and what the parser should find in them.
fn quote(ip: &GenIp, inner: &Inner, extra: usize, buf: &mut [u8]) -> (usize, QuotedPacket) {
    let version = if ip.v6 { IpVersion::V6 } else { IpVersion::V4 };
    let transport = match inner.kind {
        0 => TransportSpec::tcp(inner.sp, inner.dp, TcpFlags::SYN),
        1 => TransportSpec::Udp { src_port: inner.sp, dst_port: inner.dp, payload: fill(8) },
        _ => TransportSpec::echo_request(version, inner.sp, inner.dp, fill(8)),
    };
    // The quoted packet went from dst to src: the error travels back.
    let (n, header) = match (ip.dst, ip.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (build_ipv4(&Ipv4Spec::new(s, d, transport), buf).unwrap(), 20),
        (IpAddr::V6(s), IpAddr::V6(d)) => (build_ipv6(&Ipv6Spec::new(s, d, transport), buf).unwrap(), 40),
        _ => unreachable!("generator keeps versions consistent"),
    };
    let len = (header + extra).min(n);
    let avail = len - header;
    let (protocol, qt) = match inner.kind {
        0 | 1 => (
            if inner.kind == 0 { 6 } else { 17 },
            if avail >= 4 {
                QuotedTransport::Ports { src_port: inner.sp, dst_port: inner.dp }
            } else {
                QuotedTransport::Unavailable
            },
        ),
        _ => (
            if ip.v6 { 58 } else { 1 },
            if avail >= 8 {
                QuotedTransport::Echo { identifier: inner.sp, sequence: inner.dp }
            } else {
                QuotedTransport::Unavailable
            },
        ),
    };
    (len, QuotedPacket { src: ip.dst, dst: ip.src, protocol, transport: qt })
}

/// Build `g`; return the frame, the summary the parser must produce, and the layout.
fn build(g: &Gen) -> (Vec<u8>, FrameSummary, Layout) {
    let ntags = g.vlan.len();
    let l3 = 14 + 4 * ntags;
    let mut quote_buf = [0u8; 256];
    let mut tcp_opts = [0u8; 40];
    let mut buf = vec![0u8; 4096];
    let (network_spec, expected_net, net_len, exts_layout, transport_start);
    match &g.net {
        GenNet::Arp(arp) => {
            network_spec = NetworkSpec::Arp(*arp);
            expected_net = Network::Arp(ArpSummary {
                operation: arp.operation,
                sender_mac: arp.sender_mac,
                sender_ip: arp.sender_ip,
                target_mac: arp.target_mac,
                target_ip: arp.target_ip,
            });
            net_len = 28;
            exts_layout = Vec::new();
            transport_start = l3;
        }
        GenNet::Other { ethertype, len } => {
            network_spec = NetworkSpec::Other { ethertype: *ethertype, payload: fill(*len) };
            expected_net = Network::Other { ethertype: *ethertype };
            net_len = 0;
            exts_layout = Vec::new();
            transport_start = l3;
        }
        GenNet::Ip(ip) => {
            let version = if ip.v6 { IpVersion::V6 } else { IpVersion::V4 };
            // A first fragment's transport part must be a multiple of 8: pad the data.
            let pad8 = |header: usize, len: usize| {
                if ip.frag == GenFrag::First { len + (8 - (header + len) % 8) % 8 } else { len }
            };
            let (transport, expected_transport, l4_len) = match &ip.l4 {
                GenL4::Tcp { sp, dp, seq, ack, flags, window, opt_words, len } => {
                    // NOP-filled options: valid and uninterpreted.
                    tcp_opts.fill(1);
                    let options = &tcp_opts[..4 * opt_words];
                    let len = pad8(20 + options.len(), *len);
                    (
                        TransportSpec::Tcp {
                            src_port: *sp,
                            dst_port: *dp,
                            seq: *seq,
                            ack: *ack,
                            flags: TcpFlags::from_bits(*flags),
                            window: *window,
                            options,
                            payload: fill(len),
                        },
                        Transport::Tcp {
                            src_port: *sp,
                            dst_port: *dp,
                            flags: TcpFlags::from_bits(*flags),
                            seq: *seq,
                            ack: *ack,
                        },
                        20 + options.len() + len,
                    )
                }
                GenL4::Udp { sp, dp, len } => {
                    let len = pad8(8, *len);
                    (
                        TransportSpec::Udp { src_port: *sp, dst_port: *dp, payload: fill(len) },
                        Transport::Udp { src_port: *sp, dst_port: *dp },
                        8 + len,
                    )
                }
                GenL4::Sctp { sp, dp, vtag, len } => {
                    let len = pad8(12, *len);
                    (
                        TransportSpec::Sctp {
                            src_port: *sp,
                            dst_port: *dp,
                            verification_tag: *vtag,
                            chunks: fill(len),
                        },
                        Transport::Sctp { src_port: *sp, dst_port: *dp, verification_tag: *vtag },
                        12 + len,
                    )
                }
                GenL4::Echo { request, id, seq, len } => {
                    let len = pad8(8, *len);
                    let spec = if *request {
                        TransportSpec::echo_request(version, *id, *seq, fill(len))
                    } else {
                        TransportSpec::echo_reply(version, *id, *seq, fill(len))
                    };
                    let TransportSpec::Icmp { icmp_type, .. } = spec else { unreachable!() };
                    let message = if *request {
                        IcmpMessage::EchoRequest { identifier: *id, sequence: *seq }
                    } else {
                        IcmpMessage::EchoReply { identifier: *id, sequence: *seq }
                    };
                    (spec, Transport::Icmp(IcmpSummary { version, icmp_type, code: 0, message }), 8 + len)
                }
                GenL4::IcmpOther { ty, code } => (
                    TransportSpec::Icmp { icmp_type: *ty, code: *code, rest_of_header: [1, 2, 3, 4], body: fill(12) },
                    Transport::Icmp(IcmpSummary { version, icmp_type: *ty, code: *code, message: IcmpMessage::Other }),
                    20,
                ),
                GenL4::IcmpError { ty, code, inner, quote_extra } => {
                    let (n, quoted) = quote(ip, inner, *quote_extra, &mut quote_buf);
                    (
                        TransportSpec::Icmp {
                            icmp_type: *ty,
                            code: *code,
                            rest_of_header: [0; 4],
                            body: &quote_buf[..n],
                        },
                        Transport::Icmp(IcmpSummary {
                            version,
                            icmp_type: *ty,
                            code: *code,
                            message: IcmpMessage::Error(quoted),
                        }),
                        8 + n,
                    )
                }
                GenL4::Raw { protocol, len } => (
                    TransportSpec::Raw { protocol: *protocol, payload: fill(*len) },
                    if matches!(ip.frag, GenFrag::Later(..)) { Transport::NotInspected } else { Transport::Unknown },
                    *len,
                ),
            };
            let protocol = transport.protocol(version);
            let (fragment, fragment_offset, more) = match ip.frag {
                GenFrag::None => (Fragment::NotFragmented, 0, false),
                GenFrag::First => (Fragment::First, 0, true),
                GenFrag::Later(offset, more) => (Fragment::Later, offset, more),
            };
            let fragment_id = if fragment == Fragment::NotFragmented { 0 } else { ip.ident };
            let mut exts = ip.exts.clone();
            if fragment != Fragment::NotFragmented && ip.v6 {
                exts.push(Ext::Fragment { offset: fragment_offset, more, ident: ip.ident });
            }
            let ext_len: usize = exts.iter().map(Ext::len).sum();
            let header_len = if ip.v6 { 40 + ext_len } else { 20 + ip.options.len() };
            let mut layout = Vec::new();
            let mut at = l3 + 40;
            if ip.v6 {
                for e in &exts {
                    layout.push((at, at + e.len()));
                    at += e.len();
                }
            }
            let exts: &'static [Ext] = Box::leak(exts.into_boxed_slice());
            let options: &'static [u8] = Box::leak(ip.options.clone().into_boxed_slice());
            network_spec = match (ip.src, ip.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    let mut spec = Ipv4Spec::new(s, d, transport);
                    spec.ttl = ip.ttl;
                    spec.ident = u16::try_from(ip.ident).unwrap();
                    spec.options = options;
                    spec.dont_fragment = fragment == Fragment::NotFragmented;
                    spec.more_fragments = more;
                    spec.fragment_offset = fragment_offset;
                    NetworkSpec::Ipv4(spec)
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let mut spec = Ipv6Spec::new(s, d, transport);
                    spec.hop_limit = ip.ttl;
                    spec.extensions = exts;
                    NetworkSpec::Ipv6(spec)
                }
                _ => unreachable!(),
            };
            expected_net = Network::Ip(IpSummary {
                src: ip.src,
                dst: ip.dst,
                protocol,
                fragment,
                fragment_id,
                fragment_offset,
                more_fragments: more,
                ttl: ip.ttl,
                payload_offset: l3 + header_len,
                payload_len: l4_len,
                transport: expected_transport,
            });
            net_len = header_len + l4_len;
            exts_layout = layout;
            transport_start = l3 + header_len;
        }
    }
    let spec = FrameSpec {
        dst_mac: EthernetAddress(g.dst_mac),
        src_mac: EthernetAddress(g.src_mac),
        vlan: g.vlan,
        network: network_spec,
        pad_to: g.pad_to,
    };
    let n = build_frame(&spec, &mut buf).unwrap();
    buf.truncate(n);
    let expected = FrameSummary { vlan: g.vlan, network: expected_net, frame_len: n, l3_offset: l3 };
    let layout = Layout { l3, net_end: l3 + net_len, exts: exts_layout, transport: transport_start };
    (buf, expected, layout)
}

/// What every `Ok` summary must satisfy, whatever the input.
fn check_invariants(frame: &[u8], result: Result<FrameSummary, DropReason>) {
    let Ok(s) = result else { return };
    assert_eq!(s.frame_len, frame.len());
    assert!(matches!(s.l3_offset, 14 | 18 | 22));
    assert!(s.l3_offset <= frame.len());
    assert!(s.vlan.inner.is_none() || s.vlan.outer.is_some());
    assert_eq!(s.l3_offset, 14 + 4 * s.vlan.len());
    if let Network::Ip(ip) = s.network {
        assert!(ip.payload_offset + ip.payload_len <= frame.len());
        assert!(ip.payload_offset >= s.l3_offset + 20);
        assert_eq!(ip.fragment == Fragment::Later, ip.transport == Transport::NotInspected);
        if ip.fragment == Fragment::NotFragmented {
            assert_eq!((ip.fragment_id, ip.fragment_offset, ip.more_fragments), (0, 0, false));
        }
        assert_eq!(matches!(ip.src, IpAddr::V4(_)), matches!(ip.dst, IpAddr::V4(_)));
    }
}

fn network_truncated(g: &Gen) -> Option<DropReason> {
    match &g.net {
        GenNet::Arp(_) => Some(DropReason::ArpTruncated),
        GenNet::Ip(ip) if ip.v6 => Some(DropReason::Ipv6Truncated),
        GenNet::Ip(_) => Some(DropReason::Ipv4Truncated),
        GenNet::Other { .. } => None,
    }
}

/// Rewrite the IP length fields (and IPv4 checksum) so the packet ends at `cut`.
fn fix_lengths(frame: &mut [u8], l3: usize, v6: bool, cut: usize) {
    if v6 {
        let len = u16::try_from(cut - l3 - 40).unwrap().to_be_bytes();
        frame[l3 + 4..l3 + 6].copy_from_slice(&len);
    } else {
        let len = u16::try_from(cut - l3).unwrap().to_be_bytes();
        frame[l3 + 2..l3 + 4].copy_from_slice(&len);
        let ihl = usize::from(frame[l3] & 0x0f) * 4;
        frame[l3 + 10..l3 + 12].fill(0);
        let sum = moat_wire::checksum::internet(&frame[l3..l3 + ihl]).to_be_bytes();
        frame[l3 + 10..l3 + 12].copy_from_slice(&sum);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// 1. Arbitrary bytes never panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        check_invariants(&bytes, parse_frame(&bytes));
    }

    /// 1b. A valid Ethernet/IP prefix followed by arbitrary bytes: reaches deeper layers than
    /// uniform random bytes do.
    #[test]
    fn valid_prefix_random_tail_never_panics(g in arb_gen(), keep in 0usize..80, tail in prop::collection::vec(any::<u8>(), 0..200)) {
        let (mut frame, _, _) = build(&g);
        frame.truncate(keep.min(frame.len()));
        frame.extend_from_slice(&tail);
        check_invariants(&frame, parse_frame(&frame));
    }

    /// 2. Frames built from random fields parse back to exactly those fields.
    #[test]
    fn built_frames_round_trip(g in arb_gen()) {
        let (frame, expected, _) = build(&g);
        prop_assert_eq!(parse_frame(&frame), Ok(expected));
    }

    /// 3. Every truncation returns the reason of the layer it cuts; cutting only padding is Ok.
    #[test]
    fn truncation_gives_the_layer_reason(g in arb_gen()) {
        let (frame, expected, layout) = build(&g);
        for cut in 0..=frame.len() {
            let got = parse_frame(&frame[..cut]);
            check_invariants(&frame[..cut], got);
            let want = if cut < 14 {
                Err(DropReason::EthernetTruncated)
            } else if cut < layout.l3 {
                Err(DropReason::VlanTruncated)
            } else if let (true, Some(reason)) = (cut < layout.net_end, network_truncated(&g)) {
                Err(reason)
            } else {
                Ok(FrameSummary { frame_len: cut, ..expected })
            };
            prop_assert_eq!(got, want, "cut at {} of {}", cut, frame.len());
        }
    }

    /// 3b. Truncation with consistent IP lengths lands in the extension chain or the transport
    /// header and gives that layer's reason.
    #[test]
    fn consistent_truncation_gives_the_inner_layer_reason(g in arb_gen()) {
        let GenNet::Ip(ip) = &g.net else { return Ok(()) };
        if ip.frag != GenFrag::None {
            return Ok(()); // a cut fragment trips the fragment rules first
        }
        let (frame, _, layout) = build(&g);
        let first_cut = if ip.v6 { layout.l3 + 40 } else { layout.transport };
        for cut in first_cut..layout.net_end {
            let mut f = frame[..cut].to_vec();
            fix_lengths(&mut f, layout.l3, ip.v6, cut);
            let got = parse_frame(&f);
            check_invariants(&f, got);
            let rel = cut.saturating_sub(layout.transport);
            let want: Result<(), DropReason> = if layout.exts.iter().any(|&(s, e)| (s..e).contains(&cut)) {
                Err(DropReason::Ipv6ExtensionTruncated)
            } else {
                match &ip.l4 {
                    GenL4::Tcp { opt_words, .. } if rel < 20 + 4 * opt_words => Err(DropReason::TcpTruncated),
                    GenL4::Udp { len, .. } if rel < 8 => { let _ = len; Err(DropReason::UdpTruncated) }
                    GenL4::Udp { .. } => Err(DropReason::UdpBadLength), // the UDP length still says more
                    GenL4::Sctp { .. } if rel < 12 => Err(DropReason::SctpTruncated),
                    GenL4::Echo { .. } | GenL4::IcmpOther { .. } | GenL4::IcmpError { .. } if rel < 8 => {
                        Err(DropReason::IcmpTruncated)
                    }
                    GenL4::IcmpError { .. } if rel - 8 < if ip.v6 { 40 } else { 20 } => Err(DropReason::IcmpBadQuote),
                    _ => Ok(()),
                }
            };
            prop_assert_eq!(got.map(|_| ()), want, "consistent cut at {} (transport at {})", cut, layout.transport);
        }
    }

    /// 4. Random bit flips never panic.
    #[test]
    fn bit_flips_never_panic(g in arb_gen(), flips in prop::collection::vec(any::<prop::sample::Index>(), 1..8), bits in prop::collection::vec(0u8..8, 8)) {
        let (mut frame, _, _) = build(&g);
        for (i, idx) in flips.iter().enumerate() {
            let at = idx.index(frame.len());
            frame[at] ^= 1 << bits[i % bits.len()];
            check_invariants(&frame, parse_frame(&frame));
        }
    }
}
