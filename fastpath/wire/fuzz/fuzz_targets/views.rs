//! Every per-layer view, checked and unchecked, on arbitrary bytes: constructors and all
//! accessors must not panic, and a checked view's slices must lie inside the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_wire::{
    ArpPacket, EthernetFrame, IcmpPacket, Ipv4Packet, Ipv6AuthHeader, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet,
    SctpPacket, TcpPacket, UdpPacket, VlanHeader,
};
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let e = EthernetFrame::new_unchecked(data);
    black_box((e.destination(), e.source(), e.ethertype(), e.payload(), e.check_len()));
    let v = VlanHeader::new_unchecked(data);
    black_box((v.tci(), v.ethertype_raw(), v.payload(), v.check_len()));

    let a = ArpPacket::new_unchecked(data);
    black_box((a.check_len(), a.operation(), a.is_ethernet_ipv4(), a.sender_mac(), a.sender_ip()));
    black_box((a.sender_hardware_addr(), a.sender_protocol_addr(), a.target_hardware_addr(), a.target_protocol_addr()));
    black_box((a.target_mac(), a.target_ip()));

    let p = Ipv4Packet::new_unchecked(data);
    black_box((p.check_len(), p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident()));
    black_box((p.dont_frag(), p.more_frags(), p.frag_offset(), p.ttl(), p.protocol(), p.checksum()));
    black_box((p.src_addr(), p.dst_addr(), p.header(), p.options(), p.payload()));
    black_box((p.verify_checksum(), p.check_options()));
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        assert_eq!(p.payload().len(), usize::from(p.total_len()) - p.header_len());
    }

    let p = Ipv6Packet::new_unchecked(data);
    black_box((p.check_len(), p.version(), p.traffic_class(), p.flow_label(), p.payload_len()));
    black_box((p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr(), p.payload()));
    if let Ok(p) = Ipv6Packet::new_checked(data) {
        assert_eq!(p.payload().len(), usize::from(p.payload_len()));
    }
    let x = Ipv6ExtHeader::new_unchecked(data);
    black_box((x.check_len(), x.next_header_raw(), x.header_len(), x.routing_type(), x.segments_left()));
    black_box((x.options(), x.check_options()));
    let f = Ipv6FragmentHeader::new_unchecked(data);
    black_box((f.check_len(), f.next_header_raw(), f.frag_offset(), f.more_frags(), f.ident()));
    let h = Ipv6AuthHeader::new_unchecked(data);
    black_box((h.check_len(), h.next_header_raw(), h.header_len(), h.spi(), h.sequence()));

    let t = TcpPacket::new_unchecked(data);
    black_box((t.check_len(), t.src_port(), t.dst_port(), t.seq_number(), t.ack_number(), t.header_len()));
    black_box((t.flags(), t.window(), t.checksum(), t.urgent(), t.options(), t.payload()));
    let u = UdpPacket::new_unchecked(data);
    black_box((u.check_len(), u.check_header(), u.src_port(), u.dst_port(), u.len(), u.checksum(), u.payload()));
    let s = SctpPacket::new_unchecked(data);
    black_box((s.check_len(), s.src_port(), s.dst_port(), s.verification_tag(), s.checksum()));
    black_box((s.first_chunk_type(), s.chunks()));
    let i = IcmpPacket::new_unchecked(data);
    black_box((i.check_len(), i.msg_type(), i.icmpv4_message(), i.icmpv6_message(), i.msg_code()));
    black_box((i.checksum(), i.echo_ident(), i.echo_seq_no(), i.body()));
});
