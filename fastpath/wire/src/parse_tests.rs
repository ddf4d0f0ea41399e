//! Unit tests of `parse_frame`: every drop reason, every layer, the fragment and ICMP rules.
// In tests a panic is the assertion.
#![allow(clippy::indexing_slicing, clippy::panic)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::vec::Vec;

use super::*;
use crate::builder::samples::{self, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, base_v4 as v4, base_v6 as v6};
use crate::builder::{
    ArpSpec, FrameSpec, Ipv4Spec, Ipv6ExtensionSpec as Ext, Ipv6Spec, NetworkSpec, TransportSpec, build_frame,
    build_ipv4, build_ipv6,
};
use crate::ethernet::{VlanTag, VlanTags};

fn build(spec: &FrameSpec<'_>) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = build_frame(spec, &mut buf).expect("build");
    buf[..n].to_vec()
}

fn ip(summary: &FrameSummary) -> IpSummary {
    match summary.network {
        Network::Ip(ip) => ip,
        other => panic!("expected IP, got {other:?}"),
    }
}

const UDP: TransportSpec<'static> = TransportSpec::Udp { src_port: 1234, dst_port: 53, payload: b"query" };

#[test]
fn every_drop_reason_has_a_frame_that_produces_it() {
    for reason in DropReason::ALL {
        let mut buf = [0u8; 2048];
        let n = samples::malformed(reason, &mut buf).expect("sample builds");
        assert_eq!(parse_frame(&buf[..n]).map(|_| ()), Err(reason), "sample for {reason:?}");
    }
}

#[test]
fn traffic_mix_parses() {
    for s in samples::traffic_mix() {
        let frame = build(&s.spec);
        let summary = parse_frame(&frame).unwrap_or_else(|r| panic!("{}: {r:?}", s.name));
        assert_eq!(summary.frame_len, frame.len());
    }
}

#[test]
fn tcp_over_ipv4() {
    let spec = v4(TransportSpec::Tcp {
        src_port: 40000,
        dst_port: 443,
        seq: 7,
        ack: 9,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window: 100,
        options: &[2, 4, 5, 0xb4],
        payload: b"hello",
    });
    let frame = build(&spec);
    let s = parse_frame(&frame).unwrap();
    assert_eq!(s.vlan, VlanTags::NONE);
    assert_eq!(s.l3_offset, 14);
    let ip = ip(&s);
    assert_eq!(ip.src, IpAddr::V4(CLIENT_V4));
    assert_eq!(ip.dst, IpAddr::V4(SERVER_V4));
    assert_eq!(ip.protocol, 6);
    assert_eq!(ip.ttl, 64);
    assert_eq!(ip.fragment, Fragment::NotFragmented);
    assert_eq!((ip.fragment_id, ip.fragment_offset, ip.more_fragments), (0, 0, false));
    assert_eq!(ip.payload_offset, 34);
    assert_eq!(ip.payload_len, 24 + 5);
    assert_eq!(ip.version(), IpVersion::V4);
    assert_eq!(
        ip.transport,
        Transport::Tcp { src_port: 40000, dst_port: 443, flags: TcpFlags::SYN | TcpFlags::ACK, seq: 7, ack: 9 }
    );
    assert_eq!(ip.transport.ports(), Some((40000, 443)));
}

#[test]
fn ethernet_padding_is_not_payload() {
    let mut spec = v4(UDP);
    spec.pad_to = 60;
    let frame = build(&spec);
    assert_eq!(frame.len(), 60);
    let ip = ip(&parse_frame(&frame).unwrap());
    assert_eq!(ip.payload_len, 8 + 5);
    // The same for IPv6 (a 40 + 8 byte packet is never padded, so pad to 100).
    let mut spec = v6(&[], UDP);
    spec.pad_to = 100;
    let frame = build(&spec);
    assert_eq!(ip_of(&frame).payload_len, 13);
}

fn ip_of(frame: &[u8]) -> IpSummary {
    ip(&parse_frame(frame).unwrap())
}

#[test]
fn ip_length_past_frame_is_truncation() {
    let frame = build(&v4(UDP));
    assert_eq!(parse_frame(&frame[..frame.len() - 1]), Err(DropReason::Ipv4Truncated));
    let frame = build(&v6(&[], UDP));
    assert_eq!(parse_frame(&frame[..frame.len() - 1]), Err(DropReason::Ipv6Truncated));
}

#[test]
fn vlan_tags() {
    let mut spec = v4(UDP);
    spec.vlan = VlanTags { outer: Some(VlanTag { tpid: 0x8100, tci: 0xa064 }), inner: None };
    let s = parse_frame(&build(&spec)).unwrap();
    assert_eq!(s.vlan.outer.map(VlanTag::vid), Some(100));
    assert_eq!(s.vlan.outer.map(VlanTag::pcp), Some(5));
    assert_eq!(s.l3_offset, 18);
    assert!(matches!(s.network, Network::Ip(_)));

    for outer_tpid in [0x88a8, 0x9100, 0x8100] {
        spec.vlan = VlanTags {
            outer: Some(VlanTag { tpid: outer_tpid, tci: 10 }),
            inner: Some(VlanTag { tpid: 0x8100, tci: 20 }),
        };
        let s = parse_frame(&build(&spec)).unwrap();
        assert_eq!(s.vlan, spec.vlan);
        assert_eq!(s.vlan.innermost().map(VlanTag::vid), Some(20));
        assert_eq!(s.l3_offset, 22);
        assert_eq!(ip(&s).transport.ports(), Some((1234, 53)));
    }

    // A lone S-tag is fine.
    spec.vlan = VlanTags { outer: Some(VlanTag::service(5)), inner: None };
    assert_eq!(parse_frame(&build(&spec)).unwrap().vlan, spec.vlan);

    // S-tag inside an S-tag, and a legacy 0x9100 inside a C-tag, are refused.
    for (outer, inner) in [(0x88a8, 0x88a8), (0x8100, 0x9100)] {
        spec.vlan =
            VlanTags { outer: Some(VlanTag { tpid: outer, tci: 1 }), inner: Some(VlanTag { tpid: inner, tci: 2 }) };
        assert_eq!(parse_frame(&build(&spec)), Err(DropReason::VlanBadTagOrder));
    }

    // Truncated inside the second tag.
    spec.vlan = VlanTags { outer: Some(VlanTag::service(1)), inner: Some(VlanTag::customer(2)) };
    let frame = build(&spec);
    assert_eq!(parse_frame(&frame[..20]), Err(DropReason::VlanTruncated));
}

#[test]
fn non_ip_is_other() {
    for (ethertype, payload) in [(0x88cc_u16, &[1u8, 2, 3][..]), (0x0026, &[0x42, 0x42, 3][..]), (0x88cc, &[][..])] {
        let frame = build(&FrameSpec::new(NetworkSpec::Other { ethertype, payload }));
        let s = parse_frame(&frame).unwrap();
        assert_eq!(s.network, Network::Other { ethertype });
    }
}

#[test]
fn llc_snap() {
    // STP (LLC 42 42 03) and SNAP carrying a non-IP EtherType are bridged.
    let stp = build(&FrameSpec::new(NetworkSpec::Other { ethertype: 38, payload: &[0x42, 0x42, 0x03, 0, 0] }));
    assert_eq!(parse_frame(&stp).unwrap().network, Network::Other { ethertype: 38 });
    let cdp = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x0c, 0x20, 0x00];
    let cdp = build(&FrameSpec::new(NetworkSpec::Other { ethertype: 8, payload: &cdp }));
    assert!(parse_frame(&cdp).is_ok());
    let lldp_in_snap = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x88, 0xcc];
    assert!(parse_frame(&build(&FrameSpec::new(NetworkSpec::Other { ethertype: 8, payload: &lldp_in_snap }))).is_ok());
    // SNAP with IPv6, ARP or a VLAN tag inside, under either OUI, is dropped.
    for (oui, ethertype) in [(0x00, [0x86, 0xdd]), (0xf8, [0x08, 0x06]), (0x00, [0x81, 0x00])] {
        let snap = [0xaa, 0xaa, 0x03, 0x00, 0x00, oui, ethertype[0], ethertype[1]];
        let frame = build(&FrameSpec::new(NetworkSpec::Other { ethertype: 8, payload: &snap }));
        assert_eq!(parse_frame(&frame), Err(DropReason::LlcSnapEncapsulation));
    }
    // 0x0600 and above are EtherTypes, not lengths.
    let snap_ip = [0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00];
    assert!(parse_frame(&build(&FrameSpec::new(NetworkSpec::Other { ethertype: 0x0600, payload: &snap_ip }))).is_ok());
}

#[test]
fn arp_request() {
    let arp = ArpSpec {
        operation: ArpOperation::Reply,
        sender_mac: EthernetAddress([2, 0, 0, 0, 0, 9]),
        sender_ip: Ipv4Addr::new(192, 0, 2, 1),
        target_mac: EthernetAddress([2, 0, 0, 0, 0, 8]),
        target_ip: Ipv4Addr::new(192, 0, 2, 2),
    };
    let mut spec = FrameSpec::new(NetworkSpec::Arp(arp));
    spec.pad_to = 60;
    let s = parse_frame(&build(&spec)).unwrap();
    assert_eq!(
        s.network,
        Network::Arp(ArpSummary {
            operation: ArpOperation::Reply,
            sender_mac: arp.sender_mac,
            sender_ip: arp.sender_ip,
            target_mac: arp.target_mac,
            target_ip: arp.target_ip,
        })
    );
}

#[test]
fn ipv4_options_and_unknown_protocols() {
    let mut spec = Ipv4Spec::new(CLIENT_V4, SERVER_V4, UDP);
    spec.options = &[148, 4, 0, 0, 1, 1, 1, 0]; // router alert, NOPs, END
    let ip = ip_of(&build(&FrameSpec::new(NetworkSpec::Ipv4(spec))));
    assert_eq!(ip.payload_offset, 14 + 28);
    assert_eq!(ip.transport.ports(), Some((1234, 53)));

    let gre = ip_of(&build(&v4(TransportSpec::Raw { protocol: 47, payload: &[0; 4] })));
    assert_eq!((gre.protocol, gre.transport), (47, Transport::Unknown));
    // ICMPv6 under IPv4 is not ICMP.
    let wrong = ip_of(&build(&v4(TransportSpec::Raw { protocol: 58, payload: &[128, 0, 0, 0, 0, 1, 0, 1] })));
    assert_eq!(wrong.transport, Transport::Unknown);
}

#[test]
fn sctp() {
    let spec =
        v4(TransportSpec::Sctp { src_port: 2905, dst_port: 2906, verification_tag: 0xabcd, chunks: &[1, 0, 0, 4] });
    let frame = build(&spec);
    assert_eq!(ip_of(&frame).transport, Transport::Sctp { src_port: 2905, dst_port: 2906, verification_tag: 0xabcd });
    // The builder's CRC32c verifies: recomputing over the packet with a zeroed field gives it back.
    let mut seg = frame[34..].to_vec();
    let stored = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
    seg[8..12].fill(0);
    assert_eq!(crate::checksum::crc32c(&seg), stored);
}

#[test]
fn udp_length_rules() {
    let frame = build(&v4(UDP));
    // A UDP length shorter than the IP payload is accepted (Linux trims).
    let mut short = frame.clone();
    short[14 + 20 + 5] = 9;
    assert_eq!(ip_of(&short).transport.ports(), Some((1234, 53)));
    short[14 + 20 + 5] = 7;
    assert_eq!(parse_frame(&short), Err(DropReason::UdpBadLength));
}

#[test]
fn tcp_header_past_segment() {
    let mut frame = build(&v4(TransportSpec::tcp(1, 2, TcpFlags::ACK)));
    frame[14 + 20 + 12] = 0x60; // data offset 6 in a 20-byte segment
    assert_eq!(parse_frame(&frame), Err(DropReason::TcpTruncated));
}

#[test]
fn icmp_echo_v4_and_v6() {
    let frame = build(&v4(TransportSpec::echo_request(IpVersion::V4, 0x1234, 7, b"ping")));
    assert_eq!(
        ip_of(&frame).transport,
        Transport::Icmp(IcmpSummary {
            version: IpVersion::V4,
            icmp_type: 8,
            code: 0,
            message: IcmpMessage::EchoRequest { identifier: 0x1234, sequence: 7 },
        })
    );
    // The builder's ICMP checksum verifies.
    assert_eq!(crate::checksum::internet(&frame[34..]), 0);

    let frame = build(&v6(&[], TransportSpec::echo_reply(IpVersion::V6, 9, 10, b"pong")));
    assert_eq!(
        ip_of(&frame).transport,
        Transport::Icmp(IcmpSummary {
            version: IpVersion::V6,
            icmp_type: 129,
            code: 0,
            message: IcmpMessage::EchoReply { identifier: 9, sequence: 10 },
        })
    );
    // Neighbour solicitation is reported as Other.
    let ns = build(&v6(&[], TransportSpec::Icmp { icmp_type: 135, code: 0, rest_of_header: [0; 4], body: &[0; 16] }));
    let Transport::Icmp(icmp) = ip_of(&ns).transport else { panic!() };
    assert_eq!((icmp.icmp_type, icmp.message), (135, IcmpMessage::Other));
}

#[test]
fn icmpv4_error_quotes_connection() {
    let mut buf = [0u8; 256];
    for (quote_len, expected) in [
        (28, QuotedTransport::Ports { src_port: 33434, dst_port: 33435 }),
        (100, QuotedTransport::Ports { src_port: 33434, dst_port: 33435 }),
        (23, QuotedTransport::Unavailable), // RFC 792 says 8 bytes; be lenient with fewer
        (24, QuotedTransport::Ports { src_port: 33434, dst_port: 33435 }),
    ] {
        let n = samples::icmp_port_unreachable(quote_len, &mut buf).unwrap();
        let ip = ip_of(&buf[..n]);
        assert_eq!(ip.src, IpAddr::V4(SERVER_V4));
        let Transport::Icmp(icmp) = ip.transport else { panic!("not ICMP") };
        assert_eq!((icmp.icmp_type, icmp.code), (3, 3));
        assert_eq!(
            icmp.message,
            IcmpMessage::Error(QuotedPacket {
                src: IpAddr::V4(CLIENT_V4),
                dst: IpAddr::V4(SERVER_V4),
                protocol: 17,
                transport: expected,
            }),
            "quote of {quote_len} bytes"
        );
    }
    let n = samples::icmp_port_unreachable(19, &mut buf).unwrap();
    assert_eq!(parse_frame(&buf[..n]), Err(DropReason::IcmpBadQuote));
}

#[test]
fn icmpv4_error_quoting_echo_and_fragment() {
    let mut inner = [0u8; 64];
    let n = build_ipv4(
        &Ipv4Spec::new(CLIENT_V4, SERVER_V4, TransportSpec::echo_request(IpVersion::V4, 77, 3, &[0; 8])),
        &mut inner,
    )
    .unwrap();
    let frame = build(&v4(TransportSpec::Icmp { icmp_type: 11, code: 0, rest_of_header: [0; 4], body: &inner[..n] }));
    let Transport::Icmp(icmp) = ip_of(&frame).transport else { panic!() };
    let IcmpMessage::Error(q) = icmp.message else { panic!() };
    assert_eq!((q.protocol, q.transport), (1, QuotedTransport::Echo { identifier: 77, sequence: 3 }));

    // A quoted later fragment has no ports.
    let mut later = Ipv4Spec::new(CLIENT_V4, SERVER_V4, TransportSpec::Raw { protocol: 6, payload: &[1; 16] });
    later.fragment_offset = 64;
    let n = build_ipv4(&later, &mut inner).unwrap();
    let frame = build(&v4(TransportSpec::Icmp { icmp_type: 3, code: 4, rest_of_header: [0; 4], body: &inner[..n] }));
    let Transport::Icmp(icmp) = ip_of(&frame).transport else { panic!() };
    let IcmpMessage::Error(q) = icmp.message else { panic!() };
    assert_eq!((q.protocol, q.transport), (6, QuotedTransport::Unavailable));

    // An IPv6 header quoted in an ICMPv4 error is a bad quote.
    let n = build_ipv6(&Ipv6Spec::new(CLIENT_V6, SERVER_V6, UDP), &mut inner).unwrap();
    let frame = build(&v4(TransportSpec::Icmp { icmp_type: 3, code: 4, rest_of_header: [0; 4], body: &inner[..n] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::IcmpBadQuote));
}

#[test]
fn icmpv6_error_walks_quoted_chain() {
    let mut inner = [0u8; 256];
    let exts = [Ext::HopByHop { len: 0 }, Ext::Fragment { offset: 0, more: true, ident: 5 }];
    let mut spec = Ipv6Spec::new(CLIENT_V6, SERVER_V6, TransportSpec::tcp(5555, 22, TcpFlags::SYN));
    spec.extensions = &exts;
    let n = build_ipv6(&spec, &mut inner).unwrap();
    for (cut, protocol, transport) in [
        (n, 6, QuotedTransport::Ports { src_port: 5555, dst_port: 22 }),
        (40 + 8 + 8 + 4, 6, QuotedTransport::Ports { src_port: 5555, dst_port: 22 }),
        (40 + 8 + 8 + 3, 6, QuotedTransport::Unavailable),
        (40 + 8 + 7, 44, QuotedTransport::Unavailable), // quote ends inside the Fragment header
        (40, 0, QuotedTransport::Unavailable),
    ] {
        let mut err = Ipv6Spec::new(
            SERVER_V6,
            CLIENT_V6,
            TransportSpec::Icmp { icmp_type: 2, code: 0, rest_of_header: [0, 0, 5, 0], body: &inner[..cut] },
        );
        err.hop_limit = 3;
        let ip = ip_of(&build(&FrameSpec::new(NetworkSpec::Ipv6(err))));
        assert_eq!(ip.ttl, 3);
        let Transport::Icmp(icmp) = ip.transport else { panic!() };
        assert_eq!(icmp.version, IpVersion::V6);
        assert_eq!(
            icmp.message,
            IcmpMessage::Error(QuotedPacket {
                src: IpAddr::V6(CLIENT_V6),
                dst: IpAddr::V6(SERVER_V6),
                protocol,
                transport
            }),
            "cut at {cut}"
        );
    }
    let bad =
        build(&v6(&[], TransportSpec::Icmp { icmp_type: 1, code: 4, rest_of_header: [0; 4], body: &inner[..39] }));
    assert_eq!(parse_frame(&bad), Err(DropReason::IcmpBadQuote));
}

#[test]
fn ipv4_fragments() {
    let mut first =
        Ipv4Spec::new(CLIENT_V4, SERVER_V4, TransportSpec::Udp { src_port: 1, dst_port: 2, payload: &[0; 16] });
    first.dont_fragment = false;
    first.more_fragments = true;
    first.ident = 0xbeef;
    let ip = ip_of(&build(&FrameSpec::new(NetworkSpec::Ipv4(first))));
    assert_eq!(ip.fragment, Fragment::First);
    assert_eq!((ip.fragment_id, ip.fragment_offset, ip.more_fragments), (0xbeef, 0, true));
    assert_eq!(ip.transport, Transport::Udp { src_port: 1, dst_port: 2 });

    // The UDP length of a first fragment covers the datagram, not the fragment.
    let mut frame = build(&FrameSpec::new(NetworkSpec::Ipv4(first)));
    frame[14 + 20 + 4] = 0x10;
    assert_eq!(ip_of(&frame).transport, Transport::Udp { src_port: 1, dst_port: 2 });

    let mut later = first;
    later.more_fragments = false;
    later.fragment_offset = 24;
    later.transport = TransportSpec::Raw { protocol: 17, payload: &[9; 5] };
    let ip = ip_of(&build(&FrameSpec::new(NetworkSpec::Ipv4(later))));
    assert_eq!(ip.fragment, Fragment::Later);
    assert_eq!((ip.fragment_id, ip.fragment_offset, ip.more_fragments), (0xbeef, 24, false));
    assert_eq!((ip.protocol, ip.transport, ip.payload_len), (17, Transport::NotInspected, 5));

    // TCP: offsets 8 and 16 overlap the 20-byte header; 24 does not.
    later.transport = TransportSpec::Raw { protocol: 6, payload: &[0; 8] };
    for (offset, expected) in
        [(8, Err(DropReason::FragmentOverlap)), (16, Err(DropReason::FragmentOverlap)), (24, Ok(()))]
    {
        later.fragment_offset = offset;
        assert_eq!(
            parse_frame(&build(&FrameSpec::new(NetworkSpec::Ipv4(later)))).map(|_| ()),
            expected,
            "offset {offset}"
        );
    }
    // A first TCP fragment whose options are cut by the fragment boundary is too short.
    let opts = [1u8; 12];
    let mut tcp_first = Ipv4Spec::new(
        CLIENT_V4,
        SERVER_V4,
        TransportSpec::Tcp {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack: 0,
            flags: TcpFlags::ACK,
            window: 0,
            options: &opts,
            payload: &[],
        },
    );
    tcp_first.more_fragments = true;
    tcp_first.dont_fragment = false;
    let mut frame = build(&FrameSpec::new(NetworkSpec::Ipv4(tcp_first)));
    frame[14 + 20 + 12] = 0xa0; // data offset 10 (40 bytes) in a 32-byte fragment
    assert_eq!(parse_frame(&frame), Err(DropReason::FragmentTooShort));
    // A first fragment of an unknown protocol has no minimum.
    let mut gre = tcp_first;
    gre.transport = TransportSpec::Raw { protocol: 47, payload: &[0; 8] };
    assert_eq!(ip_of(&build(&FrameSpec::new(NetworkSpec::Ipv4(gre)))).transport, Transport::Unknown);
}

#[test]
fn ipv6_extension_chain() {
    let exts = [
        Ext::HopByHop { len: 1 },
        Ext::DestinationOptions { len: 0 },
        Ext::Routing { routing_type: 4, segments_left: 1, len: 2 },
        Ext::Authentication { len: 4 },
        Ext::DestinationOptions { len: 0 },
    ];
    let frame = build(&v6(&exts, TransportSpec::tcp(1000, 80, TcpFlags::SYN)));
    let ip = ip_of(&frame);
    let chain: usize = exts.iter().map(Ext::len).sum();
    assert_eq!(ip.protocol, 6);
    assert_eq!(ip.payload_offset, 14 + 40 + chain);
    assert_eq!(ip.payload_len, 20);
    assert_eq!(ip.transport.ports(), Some((1000, 80)));
    assert_eq!(ip.fragment, Fragment::NotFragmented);

    // Exactly MAX_EXTENSION_HEADERS is fine.
    let eight = [Ext::DestinationOptions { len: 0 }; MAX_EXTENSION_HEADERS];
    assert_eq!(ip_of(&build(&v6(&eight, UDP))).protocol, 17);

    // RH0 without segments left is harmless.
    let rh0 = [Ext::Routing { routing_type: 0, segments_left: 0, len: 0 }];
    assert_eq!(ip_of(&build(&v6(&rh0, UDP))).protocol, 17);

    // ESP and No Next Header end the chain.
    let esp = ip_of(&build(&v6(&[Ext::HopByHop { len: 0 }], TransportSpec::Raw { protocol: 50, payload: &[0; 16] })));
    assert_eq!((esp.protocol, esp.transport), (50, Transport::Unknown));
    let none = ip_of(&build(&v6(&[], TransportSpec::Raw { protocol: 59, payload: &[] })));
    assert_eq!((none.protocol, none.transport), (59, Transport::Unknown));

    // A header running past the payload length (Ethernet padding does not count).
    let mut frame =
        build(&v6(&[Ext::DestinationOptions { len: 0 }], TransportSpec::Raw { protocol: 59, payload: &[] }));
    frame[14 + 5] = 4; // payload length 4 < 8
    assert_eq!(parse_frame(&frame), Err(DropReason::Ipv6ExtensionTruncated));

    // The transport header's own truncation reasons still apply after a chain.
    let frame = build(&v6(&[Ext::HopByHop { len: 0 }], TransportSpec::Raw { protocol: 17, payload: &[0; 4] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::UdpTruncated));
}

#[test]
fn ipv6_fragments() {
    let first_exts = [Ext::Fragment { offset: 0, more: true, ident: 0x1234_5678 }];
    let frame = build(&v6(&first_exts, TransportSpec::Udp { src_port: 7, dst_port: 8, payload: &[0; 8] }));
    let ip = ip_of(&frame);
    assert_eq!(ip.fragment, Fragment::First);
    assert_eq!((ip.fragment_id, ip.fragment_offset, ip.more_fragments), (0x1234_5678, 0, true));
    assert_eq!(ip.transport, Transport::Udp { src_port: 7, dst_port: 8 });

    let later_exts = [Ext::HopByHop { len: 0 }, Ext::Fragment { offset: 1448, more: false, ident: 1 }];
    let ip = ip_of(&build(&v6(&later_exts, TransportSpec::Raw { protocol: 6, payload: &[0; 9] })));
    assert_eq!(ip.fragment, Fragment::Later);
    assert_eq!((ip.protocol, ip.transport, ip.fragment_offset), (6, Transport::NotInspected, 1448));
    assert_eq!(ip.payload_offset, 14 + 40 + 16);

    // Atomic fragment (RFC 6946): processed as a whole packet.
    let atomic = [Ext::Fragment { offset: 0, more: false, ident: 9 }];
    let ip = ip_of(&build(&v6(&atomic, UDP)));
    assert_eq!((ip.fragment, ip.fragment_id), (Fragment::NotFragmented, 0));
    assert_eq!(ip.transport.ports(), Some((1234, 53)));

    // RFC 7112: the whole chain must be in the first fragment.
    let split_chain = [Ext::Fragment { offset: 0, more: true, ident: 1 }];
    let frame = build(&v6(&split_chain, TransportSpec::Raw { protocol: 60, payload: &[17, 1, 0, 0, 0, 0, 0, 0] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::FragmentTooShort));
    let frame = build(&v6(&split_chain, TransportSpec::Raw { protocol: 6, payload: &[0; 16] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::FragmentTooShort));

    // Overlap, bad length and oversize apply to IPv6 too.
    let overlap = [Ext::Fragment { offset: 8, more: false, ident: 1 }];
    let frame = build(&v6(&overlap, TransportSpec::Raw { protocol: 6, payload: &[0; 8] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::FragmentOverlap));
    let frame = build(&v6(&split_chain, TransportSpec::Raw { protocol: 17, payload: &[0; 12] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::FragmentBadLength));
    let big = [Ext::HopByHop { len: 0 }, Ext::Fragment { offset: 65520, more: false, ident: 1 }];
    let frame = build(&v6(&big, TransportSpec::Raw { protocol: 17, payload: &[0; 8] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::FragmentOversized));
}

#[test]
fn truncated_extension_outside_fragments_is_extension_truncated() {
    let frame = build(&v6(&[], TransportSpec::Raw { protocol: 44, payload: &[17, 0, 0, 0] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::Ipv6ExtensionTruncated));
    let frame = build(&v6(&[], TransportSpec::Raw { protocol: 51, payload: &[17, 4, 0, 0, 0, 0, 0, 0] }));
    assert_eq!(parse_frame(&frame), Err(DropReason::Ipv6ExtensionTruncated));
}

#[test]
fn empty_and_tiny_inputs() {
    for n in 0..14 {
        assert_eq!(parse_frame(&[0u8; 14][..n]), Err(DropReason::EthernetTruncated));
    }
    let mut frame = [0u8; 14];
    frame[12] = 0x08;
    assert_eq!(parse_frame(&frame), Err(DropReason::Ipv4Truncated));
    frame[12] = 0x86;
    frame[13] = 0xdd;
    assert_eq!(parse_frame(&frame), Err(DropReason::Ipv6Truncated));
    frame[12] = 0x08;
    frame[13] = 0x06;
    assert_eq!(parse_frame(&frame), Err(DropReason::ArpTruncated));
}

#[test]
fn summary_is_small_enough_to_return_by_value() {
    // Not a hard limit: a tripwire so growth of the per-packet value is a conscious choice.
    assert!(core::mem::size_of::<Result<FrameSummary, DropReason>>() <= 160);
    let _ = Ipv6Addr::LOCALHOST;
}
