//! Tests of the flow table, driven by real frames from `moat_wire::builder` through `parse_frame`.

// Test frames use small computed numbers as ports and sequence numbers; the casts are exact.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::classify::Verdict;
use moat_wire::builder::{
    FrameSpec, Ipv4Spec, Ipv6Spec, NetworkSpec, TransportSpec, build_frame, build_ipv4, build_ipv6,
};
use moat_wire::{IpVersion, Network, VlanTag, parse_frame};
use std::net::IpAddr;
use std::sync::Arc;

const CLIENT: &str = "10.0.0.1";
const SERVER: &str = "10.0.0.2";
const ROUTER: &str = "10.0.9.9";
const CLIENT6: &str = "fd00::1";
const SERVER6: &str = "fd00::2";

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN_ACK: TcpFlags = TcpFlags::from_bits(0x011);
const SYN_ACK: TcpFlags = TcpFlags::from_bits(0x012);
const RST: TcpFlags = TcpFlags::RST;
const RST_ACK: TcpFlags = TcpFlags::from_bits(0x014);
const PSH_ACK: TcpFlags = TcpFlags::from_bits(0x018);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A frame carrying `transport` from `src` to `dst` (IPv4 or IPv6 by the addresses), with `vlan`.
fn frame_on(vlan: VlanTags, src: &str, dst: &str, transport: TransportSpec<'_>) -> Vec<u8> {
    let network = match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => NetworkSpec::Ipv4(Ipv4Spec::new(s, d, transport)),
        (IpAddr::V6(s), IpAddr::V6(d)) => NetworkSpec::Ipv6(Ipv6Spec::new(s, d, transport)),
        _ => panic!("mixed families"),
    };
    let mut buf = vec![0u8; 2048];
    let len = build_frame(&FrameSpec { vlan, ..FrameSpec::new(network) }, &mut buf).unwrap();
    buf.truncate(len);
    buf
}

fn frame(src: &str, dst: &str, transport: TransportSpec<'_>) -> Vec<u8> {
    frame_on(VlanTags::NONE, src, dst, transport)
}

fn tcp_spec<'a>(sport: u16, dport: u16, flags: TcpFlags, seq: u32, ack: u32, payload: &'a [u8]) -> TransportSpec<'a> {
    TransportSpec::Tcp { src_port: sport, dst_port: dport, seq, ack, flags, window: 65_535, options: &[], payload }
}

#[allow(clippy::too_many_arguments)]
fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: TcpFlags, seq: u32, ack: u32) -> Vec<u8> {
    frame(src, dst, tcp_spec(sport, dport, flags, seq, ack, &[]))
}

fn tcp_data(src: &str, sport: u16, dst: &str, dport: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    frame(src, dst, tcp_spec(sport, dport, PSH_ACK, seq, ack, payload))
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    frame(src, dst, TransportSpec::Udp { src_port: sport, dst_port: dport, payload: b"query" })
}

fn version(addr: &str) -> IpVersion {
    if ip(addr).is_ipv4() { IpVersion::V4 } else { IpVersion::V6 }
}

fn echo(src: &str, dst: &str, id: u16, request: bool) -> Vec<u8> {
    let v = version(src);
    let t = if request {
        TransportSpec::echo_request(v, id, 1, b"ping")
    } else {
        TransportSpec::echo_reply(v, id, 1, b"ping")
    };
    frame(src, dst, t)
}

/// The IP packet (no Ethernet header) an ICMP error would quote.
fn ip_packet(src: &str, dst: &str, transport: TransportSpec<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let len = match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => build_ipv4(&Ipv4Spec::new(s, d, transport), &mut buf).unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => build_ipv6(&Ipv6Spec::new(s, d, transport), &mut buf).unwrap(),
        _ => panic!("mixed families"),
    };
    buf.truncate(len);
    buf
}

/// An ICMP error (destination unreachable / ICMPv6 packet too big) from `from` to `to` quoting `quote`.
fn icmp_error(from: &str, to: &str, quote: &[u8]) -> Vec<u8> {
    let (icmp_type, code) = if ip(from).is_ipv4() { (3, 3) } else { (2, 0) };
    frame(from, to, TransportSpec::Icmp { icmp_type, code, rest_of_header: [0, 0, 5, 0xdc], body: quote })
}

fn parse(frame: &[u8]) -> (IpSummary, VlanTags, u32) {
    let summary = parse_frame(frame).unwrap();
    let Network::Ip(ip) = summary.network else { panic!("not IP") };
    (ip, summary.vlan, u32::try_from(frame.len()).unwrap())
}

fn secs(s: u64) -> u64 {
    s * 1_000_000_000
}

/// A flow table with a policy that allows what the client (and only the client) opens.
struct Harness {
    table: FlowTable,
    records: Arc<RecordQueue>,
    now: u64,
    generation: u64,
    allow: Box<dyn Fn(&FlowKey) -> bool>,
    checks: usize,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(ConntrackConfig { capacity: 1024, hash_seed: Some(7), ..ConntrackConfig::default() })
    }

    fn with(config: ConntrackConfig) -> Harness {
        let records = Arc::new(RecordQueue::new(4096));
        Harness {
            table: FlowTable::new(config, Arc::clone(&records)),
            records,
            now: secs(1000),
            generation: 1,
            allow: Box::new(|k| k.src == ip(CLIENT) || k.src == ip(CLIENT6)),
            checks: 0,
        }
    }

    fn send(&mut self, frame: &[u8]) -> Outcome {
        let (ip, vlan, len) = parse(frame);
        let allow = &self.allow;
        let checks = &mut self.checks;
        let outcome = self.table.track(&ip, &vlan, len, self.now, self.generation, &mut |k| {
            *checks += 1;
            Admission::bare(if allow(k) { Verdict::Allow } else { Verdict::Deny })
        });
        self.table.check_invariants();
        outcome
    }

    fn state(&self, frame: &[u8]) -> Option<FlowState> {
        let (ip, vlan, _) = parse(frame);
        self.table.flow_state(&ip, &vlan)
    }

    fn advance(&mut self, seconds: u64) {
        self.now += secs(seconds);
    }

    fn expire_all(&mut self) -> usize {
        let n = self.table.expire(self.now, self.table.capacity());
        self.table.check_invariants();
        n
    }

    fn records(&self) -> Vec<FlowRecord> {
        std::iter::from_fn(|| self.records.pop()).collect()
    }

    fn snapshot(&self) -> ConntrackSnapshot {
        self.table.counters().snapshot()
    }
}

const FWD: Outcome = Outcome::Forward;

fn invalid(reason: InvalidReason) -> Outcome {
    Outcome::Drop(CtDrop::Invalid(reason))
}

const DENIED: Outcome = Outcome::Drop(CtDrop::PolicyDenied);
const REVOKED: Outcome = Outcome::Drop(CtDrop::Revoked);

/// Client → server handshake on ports 40000 → 80 with ISNs 100 (client) and 500 (server).
fn handshake(h: &mut Harness) {
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 100, 0)), FWD);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 500, 101)), FWD);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), FWD);
}

fn tcp_state(h: &Harness) -> Option<FlowState> {
    h.state(&tcp(CLIENT, 40000, SERVER, 80, ACK, 0, 0))
}

// ---- TCP ----

#[test]
fn tcp_handshake_data_and_fin_both_ways() {
    let mut h = Harness::new();
    let syn = tcp(CLIENT, 40000, SERVER, 80, SYN, 100, 0);
    assert_eq!(h.send(&syn), FWD);
    assert_eq!(h.state(&syn), Some(FlowState::Tcp(TcpState::SynSent)));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 500, 101)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::SynRecv)));
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Established)));
    assert_eq!(h.snapshot().established, 1);

    assert_eq!(h.send(&tcp_data(CLIENT, 40000, SERVER, 80, 101, 501, b"GET / HTTP/1.0\r\n\r\n")), FWD);
    assert_eq!(h.send(&tcp_data(SERVER, 80, CLIENT, 40000, 501, 119, &[b'x'; 1000])), FWD);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 119, 1501)), FWD);

    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, FIN_ACK, 119, 1501)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::FinWait)));
    // A retransmitted FIN does not count as the other side's.
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, FIN_ACK, 119, 1501)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::FinWait)));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, ACK, 1501, 120)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::CloseWait)));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, FIN_ACK, 1501, 120)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::LastAck)));
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 120, 1502)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::TimeWait)));
    assert_eq!(h.checks, 1, "policy is consulted for the first packet only");

    // TIME_WAIT lasts 120 s, then the record says the connection closed.
    h.advance(119);
    assert_eq!(h.expire_all(), 0);
    h.advance(2);
    assert_eq!(h.expire_all(), 1);
    assert!(h.table.is_empty());
    let records = h.records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.end, EndReason::Closed);
    assert_eq!((r.key.src, r.key.dst, r.key.src_port, r.key.dst_port), (ip(CLIENT), ip(SERVER), 40000, 80));
    assert_eq!(r.kind, FlowKind::Ports);
    assert_eq!((r.original.packets, r.reply.packets), (7, 4));
    assert!(r.reply.bytes > r.original.bytes, "the server sent the data");
    assert_eq!(r.original.tcp_flags, TcpFlags::from_bits(0x01b), "SYN, ACK, PSH, FIN from the client");
    assert_eq!(r.reply.tcp_flags, TcpFlags::from_bits(0x01b));
    assert_eq!(r.tcp_state, Some(TcpState::TimeWait));
    assert_eq!(r.admission.verdict, Verdict::Allow);
    assert_eq!(r.generation, 1);
    assert!(r.first_seen_ns <= r.last_seen_ns && r.last_seen_ns <= r.ended_ns);
    assert_eq!(r.first_seen_ns, secs(1000));
    assert_eq!(r.last_seen_ns, secs(1000));
    assert_eq!(r.ended_ns, secs(1121));
}

#[test]
fn replies_pass_but_the_responder_cannot_open_its_own_connection() {
    let mut h = Harness::new();
    handshake(&mut h);
    // The server's own SYN to the client is a new flow, and policy denies it.
    assert_eq!(h.send(&tcp(SERVER, 40001, CLIENT, 22, SYN, 9, 0)), DENIED);
    assert_eq!(h.snapshot().denied, 1);
}

#[test]
fn rst_closes_and_the_record_says_reset() {
    let mut h = Harness::new();
    handshake(&mut h);
    // A RST far from the server's sequence is a forgery: dropped, state unchanged.
    assert_eq!(
        h.send(&tcp(SERVER, 80, CLIENT, 40000, RST, 501 + (RST_WINDOW_FOR_TESTS * 2), 0)),
        invalid(InvalidReason::RstOutOfWindow)
    );
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Established)));
    assert_eq!(h.snapshot().invalid_by(InvalidReason::RstOutOfWindow), 1);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, RST, 501, 0)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Close)));
    h.advance(11);
    assert_eq!(h.expire_all(), 1);
    let records = h.records();
    assert_eq!(records[0].end, EndReason::Reset);
    assert_eq!(records[0].tcp_state, Some(TcpState::Close));
}

const RST_WINDOW_FOR_TESTS: u32 = tcp::RST_WINDOW;

#[test]
fn a_reset_answering_a_syn_must_acknowledge_it() {
    let mut h = Harness::new();
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 100, 0)), FWD);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, RST_ACK, 0, 777)), invalid(InvalidReason::RstOutOfWindow));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, RST, 0, 101)), invalid(InvalidReason::RstOutOfWindow));
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::SynSent)));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, RST_ACK, 0, 101)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Close)));
}

#[test]
fn invalid_flag_combinations_drop_and_change_nothing() {
    let mut h = Harness::new();
    for bits in [0x003u16, 0x006, 0x000, 0x001, 0x03f] {
        let f = TcpFlags::from_bits(bits);
        assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, f, 1, 0)), invalid(InvalidReason::TcpFlags), "{f}");
    }
    assert!(h.table.is_empty(), "invalid packets create nothing");
    assert_eq!(h.checks, 0);
    handshake(&mut h);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, TcpFlags::EMPTY, 101, 0)), invalid(InvalidReason::TcpFlags));
    assert_eq!(
        h.send(&tcp(SERVER, 80, CLIENT, 40000, TcpFlags::from_bits(0x003), 501, 0)),
        invalid(InvalidReason::TcpFlags)
    );
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Established)));
    assert_eq!(h.snapshot().invalid_by(InvalidReason::TcpFlags), 7);
}

#[test]
fn a_syn_ack_must_acknowledge_the_syn() {
    let mut h = Harness::new();
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 100, 0)), FWD);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 500, 100)), invalid(InvalidReason::SynAckBadAck));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 500, 9999)), invalid(InvalidReason::SynAckBadAck));
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::SynSent)));
    // A SYN-ACK from the initiator makes no sense.
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN_ACK, 100, 1)), invalid(InvalidReason::TcpState));
    // A retransmitted SYN with a new ISN moves what the SYN-ACK must acknowledge.
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 5000, 0)), FWD);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 500, 101)), invalid(InvalidReason::SynAckBadAck));
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 500, 5001)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::SynRecv)));
}

#[test]
fn a_packet_the_state_machine_ignores_does_not_make_its_side_tracked() {
    let mut h = Harness::new();
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 0x8000_0000, 0)), FWD);
    // A stray ACK from the responder before its SYN-ACK passes, ignored by the state machine.
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, ACK, 9, 0x7fff_fff0)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::SynSent)));
    // The SYN-ACK's sequence, far from the initiator's, is what the responder's side tracks.
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, SYN_ACK, 5, 0x8000_0001)), FWD);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, RST, 6, 0)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Close)));
}

#[test]
fn acknowledging_unsent_data_is_invalid() {
    let mut h = Harness::new();
    handshake(&mut h);
    let beyond = 501 + tcp::ACK_SLACK + 1000;
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, beyond)), invalid(InvalidReason::AckBeyondSent));
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), FWD);
}

#[test]
fn mid_stream_tcp_is_picked_up_only_when_loose() {
    let mut h = Harness::new();
    // The client's ACK: policy allows its direction, the flow is picked up.
    assert_eq!(h.send(&tcp_data(CLIENT, 40000, SERVER, 80, 7000, 9000, b"more")), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Established)));
    assert_eq!(h.snapshot().embryonic, 1, "unreplied pickups are evictable");
    // The server's answer may acknowledge data sent before the pickup.
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, ACK, 9000, 7004 + 100_000)), FWD);
    assert_eq!(h.snapshot().established, 1);
    // The server's own mid-stream packet on another connection: policy decides in its direction.
    assert_eq!(h.send(&tcp(SERVER, 22, CLIENT, 50000, ACK, 1, 1)), DENIED);
    // FIN, RST and SYN-ACK never open a flow.
    for f in [FIN_ACK, RST, SYN_ACK] {
        assert_eq!(h.send(&tcp(CLIENT, 40001, SERVER, 80, f, 1, 1)), invalid(InvalidReason::TcpNotSyn));
    }
    h.records();
    h.table.drain(h.now);
    assert!(h.records().iter().any(|r| r.picked_up && r.end == EndReason::Shutdown));

    let mut strict = Harness::with(ConntrackConfig { capacity: 64, tcp_loose: false, ..ConntrackConfig::default() });
    assert_eq!(strict.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 1, 1)), invalid(InvalidReason::TcpNotSyn));
    assert_eq!(strict.checks, 0);
}

#[test]
fn a_syn_on_a_closed_connection_opens_a_new_one() {
    let mut h = Harness::new();
    handshake(&mut h);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, FIN_ACK, 101, 501)), FWD);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, FIN_ACK, 501, 102)), FWD);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 102, 502)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::TimeWait)));
    assert_eq!(h.checks, 1);
    h.advance(5);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 90_000, 0)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::SynSent)));
    assert_eq!(h.checks, 2, "the new connection is decided by policy");
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].end, EndReason::Closed);
    // The same after a reset, from the initiator's side.
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, RST_ACK, 0, 90_001)), FWD);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 7, 0)), FWD);
    assert_eq!(h.records()[0].end, EndReason::Reset);
    assert_eq!(h.table.len(), 1);
}

// ---- UDP, ICMP, others ----

#[test]
fn udp_request_response_and_timeouts() {
    let mut h = Harness::new();
    let request = udp(CLIENT, 5353, SERVER, 53);
    let response = udp(SERVER, 53, CLIENT, 5353);
    assert_eq!(h.send(&request), FWD);
    assert_eq!(h.state(&request), Some(FlowState::Unreplied));
    h.advance(29);
    assert_eq!(h.send(&response), FWD);
    assert_eq!(h.state(&request), Some(FlowState::Replied));
    assert_eq!(h.checks, 1);
    // Replied: 120 s.
    h.advance(119);
    assert_eq!(h.send(&response), FWD);
    h.advance(121);
    // Expired: the server's packet is a new flow now, and policy denies it.
    assert_eq!(h.send(&response), DENIED);
    let records = h.records();
    assert_eq!(records[0].end, EndReason::Timeout);
    assert_eq!((records[0].original.packets, records[0].reply.packets), (1, 2));

    // Unreplied: 30 s.
    let mut h = Harness::new();
    assert_eq!(h.send(&request), FWD);
    h.advance(31);
    assert_eq!(h.expire_all(), 1);
    assert_eq!(h.send(&response), DENIED);
}

#[test]
fn ping_is_a_flow_per_identifier() {
    let mut h = Harness::new();
    assert_eq!(h.send(&echo(CLIENT, SERVER, 7, true)), FWD);
    assert_eq!(h.send(&echo(SERVER, CLIENT, 7, false)), FWD);
    assert_eq!(h.state(&echo(CLIENT, SERVER, 7, true)), Some(FlowState::Replied));
    assert_eq!(h.send(&echo(SERVER, CLIENT, 8, false)), invalid(InvalidReason::EchoReplyWithoutRequest));
    // The server pinging the client with the same identifier is its own flow.
    assert_eq!(h.send(&echo(SERVER, CLIENT, 7, true)), DENIED);
    assert_eq!(h.checks, 2);
    let key = h.records.pop();
    assert!(key.is_none());
    h.table.drain(h.now);
    let records = h.records();
    let ping = records.iter().find(|r| r.admission.verdict == Verdict::Allow).unwrap();
    assert_eq!(ping.kind, FlowKind::Echo { identifier: 7 });
    assert_eq!(ping.key.icmp, Some((8, 0)));
    assert_eq!((ping.original.packets, ping.reply.packets), (1, 1));
    // ICMPv6 echo too.
    let mut h = Harness::new();
    assert_eq!(h.send(&echo(CLIENT6, SERVER6, 1, true)), FWD);
    assert_eq!(h.send(&echo(SERVER6, CLIENT6, 1, false)), FWD);
    assert_eq!(h.checks, 1);
}

#[test]
fn icmp_errors_pass_only_for_the_connection_they_quote() {
    let mut h = Harness::new();
    let datagram = TransportSpec::Udp { src_port: 33434, dst_port: 33435, payload: &[0; 8] };
    assert_eq!(h.send(&frame(CLIENT, SERVER, datagram)), FWD);
    let quote = ip_packet(CLIENT, SERVER, datagram);
    // From the server, and from a router on the way (traceroute): RELATED.
    assert_eq!(h.send(&icmp_error(SERVER, CLIENT, &quote)), FWD);
    assert_eq!(h.send(&icmp_error(ROUTER, CLIENT, &quote)), FWD);
    assert_eq!(h.snapshot().related, 2);
    assert_eq!(h.checks, 1, "errors of a known flow need no policy");
    // Quoting a datagram never sent.
    let other = ip_packet(CLIENT, SERVER, TransportSpec::Udp { src_port: 1, dst_port: 2, payload: &[] });
    assert_eq!(h.send(&icmp_error(SERVER, CLIENT, &other)), invalid(InvalidReason::UnrelatedIcmpError));
    // Sent to someone who did not send the quoted packet.
    assert_eq!(h.send(&icmp_error(ROUTER, SERVER, &quote)), invalid(InvalidReason::IcmpErrorAddressMismatch));
    // Counted on the flow, in the reply direction, without keeping it alive.
    h.table.drain(h.now);
    let r = h.records();
    assert_eq!((r[0].original.packets, r[0].reply.packets), (1, 2));
}

#[test]
fn icmp_errors_about_tcp_and_echo_and_denied_flows() {
    let mut h = Harness::new();
    handshake(&mut h);
    let segment = ip_packet(CLIENT, SERVER, tcp_spec(40000, 80, ACK, 101, 501, &[]));
    assert_eq!(h.send(&icmp_error(ROUTER, CLIENT, &segment)), FWD);
    // An error about the server's segment, travelling to the server.
    let reply_segment = ip_packet(SERVER, CLIENT, tcp_spec(80, 40000, ACK, 501, 101, &[]));
    assert_eq!(h.send(&icmp_error(ROUTER, SERVER, &reply_segment)), FWD);
    // Echo: the quote does not say request or reply; both match.
    assert_eq!(h.send(&echo(CLIENT, SERVER, 3, true)), FWD);
    let request = ip_packet(CLIENT, SERVER, TransportSpec::echo_request(IpVersion::V4, 3, 1, b""));
    let reply = ip_packet(SERVER, CLIENT, TransportSpec::echo_reply(IpVersion::V4, 3, 1, b""));
    assert_eq!(h.send(&icmp_error(ROUTER, CLIENT, &request)), FWD);
    assert_eq!(h.send(&icmp_error(ROUTER, SERVER, &reply)), FWD);
    // Errors quoting a denied flow are dropped like the flow.
    assert_eq!(h.send(&udp(SERVER, 9, CLIENT, 9)), DENIED);
    let denied = ip_packet(SERVER, CLIENT, TransportSpec::Udp { src_port: 9, dst_port: 9, payload: b"query" });
    assert_eq!(h.send(&icmp_error(CLIENT, SERVER, &denied)), DENIED);
}

#[test]
fn icmpv6_errors_are_related_too() {
    let mut h = Harness::new();
    assert_eq!(h.send(&frame(CLIENT6, SERVER6, tcp_spec(40000, 443, SYN, 1, 0, &[]))), FWD);
    let quote = ip_packet(CLIENT6, SERVER6, tcp_spec(40000, 443, SYN, 1, 0, &[]));
    assert_eq!(h.send(&icmp_error("fd00::99", CLIENT6, &quote)), FWD);
    let other = ip_packet(CLIENT6, SERVER6, tcp_spec(40001, 443, SYN, 1, 0, &[]));
    assert_eq!(h.send(&icmp_error("fd00::99", CLIENT6, &other)), invalid(InvalidReason::UnrelatedIcmpError));
    // Neighbour discovery is not tracked: policy decides every packet.
    let ns = frame(
        CLIENT6,
        SERVER6,
        TransportSpec::Icmp { icmp_type: 135, code: 0, rest_of_header: [0; 4], body: &[0; 20] },
    );
    let before = h.checks;
    assert_eq!(h.send(&ns), FWD);
    assert_eq!(h.send(&ns), FWD);
    assert_eq!(h.checks, before + 2);
    assert_eq!(h.table.len(), 1);
    assert_eq!(h.snapshot().untracked, 2);
}

#[test]
fn ipv6_connections_and_families_do_not_mix() {
    let mut h = Harness::new();
    assert_eq!(h.send(&frame(CLIENT6, SERVER6, tcp_spec(40000, 80, SYN, 100, 0, &[]))), FWD);
    assert_eq!(h.send(&frame(SERVER6, CLIENT6, tcp_spec(80, 40000, SYN_ACK, 500, 101, &[]))), FWD);
    assert_eq!(h.send(&frame(CLIENT6, SERVER6, tcp_spec(40000, 80, ACK, 101, 501, &[]))), FWD);
    assert_eq!(
        h.state(&frame(SERVER6, CLIENT6, tcp_spec(80, 40000, ACK, 0, 0, &[]))),
        Some(FlowState::Tcp(TcpState::Established))
    );
    // IPv4-mapped addresses name an IPv6 flow, never the IPv4 one with the same bits.
    handshake(&mut h);
    let mapped = frame("::ffff:10.0.0.2", "::ffff:10.0.0.1", tcp_spec(80, 40000, ACK, 501, 101, &[]));
    assert_eq!(h.send(&mapped), DENIED);
    assert_eq!(h.table.len(), 3);
}

#[test]
fn vlans_separate_flows() {
    let mut h = Harness::new();
    let on = |vid, src, sport, dst, dport| {
        frame_on(
            VlanTags { outer: Some(VlanTag::customer(vid)), inner: None },
            src,
            dst,
            TransportSpec::Udp { src_port: sport, dst_port: dport, payload: b"q" },
        )
    };
    assert_eq!(h.send(&on(10, CLIENT, 1000, SERVER, 53)), FWD);
    assert_eq!(h.send(&on(10, SERVER, 53, CLIENT, 1000)), FWD);
    // The same reply on another VLAN is not part of that flow.
    assert_eq!(h.send(&on(20, SERVER, 53, CLIENT, 1000)), DENIED);
    assert_eq!(h.send(&udp(SERVER, 53, CLIENT, 1000)), DENIED);
    assert_eq!(h.table.len(), 3);
    // Q-in-Q: both tags are the identity.
    let qinq = |inner| {
        frame_on(
            VlanTags { outer: Some(VlanTag::service(100)), inner: Some(VlanTag::customer(inner)) },
            CLIENT,
            SERVER,
            TransportSpec::Udp { src_port: 1, dst_port: 2, payload: b"" },
        )
    };
    assert_eq!(h.send(&qinq(1)), FWD);
    assert_eq!(h.send(&qinq(2)), FWD);
    assert_eq!(h.table.len(), 5);
    h.table.drain(h.now);
    let vlans: Vec<VlanIds> = h.records().iter().map(|r| r.vlan).collect();
    assert!(vlans.contains(&VlanIds { outer: 100, inner: 2 }));
    assert!(vlans.contains(&VlanIds { outer: 10, inner: 0 }));
}

#[test]
fn other_protocols_and_later_fragments_are_address_pairs() {
    let mut h = Harness::new();
    let gre = |src, dst| frame(src, dst, TransportSpec::Raw { protocol: 47, payload: &[0; 24] });
    assert_eq!(h.send(&gre(CLIENT, SERVER)), FWD);
    assert_eq!(h.send(&gre(SERVER, CLIENT)), FWD);
    assert_eq!(h.state(&gre(CLIENT, SERVER)), Some(FlowState::Replied));
    // A later fragment of a UDP datagram is a pseudo-connection of its own.
    let later = |src: &str, dst: &str| {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else { panic!() };
        let spec = Ipv4Spec {
            fragment_offset: 1480,
            dont_fragment: false,
            ident: 9,
            ..Ipv4Spec::new(s, d, TransportSpec::Raw { protocol: 17, payload: &[0; 64] })
        };
        let mut buf = vec![0u8; 256];
        let n = build_frame(&FrameSpec::new(NetworkSpec::Ipv4(spec)), &mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    assert_eq!(h.send(&later(CLIENT, SERVER)), FWD);
    assert_eq!(h.send(&later(SERVER, CLIENT)), FWD);
    assert_eq!(h.table.len(), 2);
    assert_eq!(h.checks, 2);
    h.table.drain(h.now);
    let kinds: Vec<FlowKind> = h.records().iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&FlowKind::Generic) && kinds.contains(&FlowKind::LaterFragments));
}

// ---- policy ----

#[test]
fn denied_flows_are_remembered_briefly_and_cost_no_policy_check() {
    let mut h = Harness::new();
    let attack = udp(SERVER, 1, CLIENT, 2);
    for _ in 0..100 {
        assert_eq!(h.send(&attack), DENIED);
    }
    assert_eq!(h.checks, 1);
    assert_eq!(h.state(&attack), Some(FlowState::Denied));
    let s = h.snapshot();
    assert_eq!((s.denied, s.denied_packets, s.tombstones), (1, 99, 1));
    // A new table: policy is asked again.
    h.generation += 1;
    assert_eq!(h.send(&attack), DENIED);
    assert_eq!(h.checks, 2);
    // The tombstone times out (each dropped packet restarts its 10 s) with a record.
    h.advance(11);
    assert_eq!(h.expire_all(), 1);
    let records = h.records();
    let last = records.last().unwrap();
    assert_eq!((last.end, last.admission.verdict, last.original.packets), (EndReason::Timeout, Verdict::Deny, 1));
    assert_eq!(records[0].end, EndReason::Superseded);
    assert_eq!(records[0].original.packets, 100);
}

#[test]
fn a_reply_direction_packet_is_not_denied_by_a_tombstone_of_the_other_direction() {
    let mut h = Harness::new();
    let gre = |src, dst| frame(src, dst, TransportSpec::Raw { protocol: 47, payload: &[0; 24] });
    assert_eq!(h.send(&gre(SERVER, CLIENT)), DENIED);
    // The client's own GRE to the server is its own decision.
    assert_eq!(h.send(&gre(CLIENT, SERVER)), FWD);
    assert_eq!(h.send(&gre(SERVER, CLIENT)), FWD);
}

#[test]
fn revoking_a_policy_cuts_live_connections_and_allowing_again_resumes_them() {
    let mut h = Harness::new();
    handshake(&mut h);
    assert_eq!(h.checks, 1);
    // Same generation: no re-check.
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), FWD);
    assert_eq!(h.checks, 1);
    // A new generation that still allows: one re-check, in the original direction, from a reply.
    h.generation = 2;
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, ACK, 501, 101)), FWD);
    assert_eq!(h.checks, 2);
    // A generation that denies: cut.
    h.generation = 3;
    h.allow = Box::new(|_| false);
    assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, 40000, ACK, 501, 101)), REVOKED);
    assert_eq!(h.checks, 3);
    assert_eq!(tcp_state(&h), Some(FlowState::Revoked));
    for _ in 0..5 {
        assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), REVOKED);
    }
    assert_eq!(h.checks, 3, "revoked flows drop without asking policy");
    let records = h.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].end, EndReason::Revoked);
    assert_eq!(records[0].admission.verdict, Verdict::Allow);
    assert_eq!(records[0].revoked_by.map(|a| a.verdict), Some(Verdict::Deny));
    assert_eq!(records[0].generation, 2);
    let s = h.snapshot();
    assert_eq!((s.revoked, s.revoked_packets, s.revalidations), (1, 6, 2));
    // Allowed again: the connection resumes where it was.
    h.generation = 4;
    h.allow = Box::new(|_| true);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), FWD);
    assert_eq!(tcp_state(&h), Some(FlowState::Tcp(TcpState::Established)));
    assert_eq!(h.snapshot().readmitted, 1);
    let records = h.records();
    assert_eq!((records[0].end, records[0].admission.verdict), (EndReason::Superseded, Verdict::Deny));
    assert_eq!(records[0].original.packets, 5);
}

#[test]
fn without_revalidation_connections_outlive_their_policy() {
    let mut h = Harness::with(ConntrackConfig { capacity: 64, revalidate: false, ..ConntrackConfig::default() });
    handshake(&mut h);
    h.generation = 2;
    h.allow = Box::new(|_| false);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, ACK, 101, 501)), FWD);
    assert_eq!(h.checks, 1);
    // New flows still follow the new table.
    assert_eq!(h.send(&tcp(CLIENT, 40001, SERVER, 80, SYN, 1, 0)), DENIED);
}

#[test]
fn icmp_errors_of_a_revoked_flow_are_cut_too() {
    let mut h = Harness::new();
    assert_eq!(h.send(&udp(CLIENT, 1000, SERVER, 53)), FWD);
    h.generation = 2;
    h.allow = Box::new(|_| false);
    let quote = ip_packet(CLIENT, SERVER, TransportSpec::Udp { src_port: 1000, dst_port: 53, payload: b"query" });
    assert_eq!(h.send(&icmp_error(SERVER, CLIENT, &quote)), REVOKED);
}

// ---- capacity, eviction, records ----

/// `n` replied UDP flows from distinct client ports.
fn established_udp(h: &mut Harness, ports: std::ops::Range<u16>) {
    for p in ports {
        assert_eq!(h.send(&udp(CLIENT, p, SERVER, 53)), FWD);
        assert_eq!(h.send(&udp(SERVER, 53, CLIENT, p)), FWD);
    }
}

#[test]
fn a_syn_flood_of_ten_times_the_capacity_does_not_stop_established_traffic() {
    let capacity = 256;
    let mut h = Harness::with(ConntrackConfig { capacity, hash_seed: Some(1), ..ConntrackConfig::default() });
    handshake(&mut h);
    established_udp(&mut h, 1000..1100);
    h.allow = Box::new(|_| true);
    let mut full = 0;
    for i in 0..(10 * capacity as u32) {
        let attacker = format!("192.0.{}.{}", (i >> 8) & 0xff, i & 0xff);
        match h.send(&tcp(&attacker, 1024 + (i % 60000) as u16, SERVER, 80, SYN, i, 0)) {
            Outcome::Forward => {}
            Outcome::Drop(CtDrop::TableFull) => full += 1,
            other => panic!("{other:?}"),
        }
        if i % 97 == 0 {
            assert_eq!(h.send(&tcp_data(CLIENT, 40000, SERVER, 80, 101, 501, b"still here")), FWD);
            assert_eq!(h.send(&udp(SERVER, 53, CLIENT, 1000 + (i % 100) as u16)), FWD);
        }
    }
    assert_eq!(full, 0, "embryonic flows make room for each other");
    assert_eq!(h.table.len(), capacity);
    let s = h.snapshot();
    assert_eq!(s.established, 101);
    assert!(s.evicted_by(EvictionClass::Embryonic) >= 9 * capacity as u64);
    assert!(h.records().iter().all(|r| r.end == EndReason::Evicted && r.tcp_state == Some(TcpState::SynSent)));
}

#[test]
fn a_table_full_of_established_flows_refuses_new_ones() {
    let mut h = Harness::with(ConntrackConfig { capacity: 64, hash_seed: Some(2), ..ConntrackConfig::default() });
    established_udp(&mut h, 1000..1064);
    assert_eq!(h.table.len(), 64);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 1, 0)), Outcome::Drop(CtDrop::TableFull));
    assert_eq!(h.checks, 64, "no policy check for a flow that cannot be tracked");
    assert_eq!(h.snapshot().table_full, 1);
    // Denied flows are not remembered at the expense of live ones.
    // Established traffic goes on.
    assert_eq!(h.send(&udp(CLIENT, 1000, SERVER, 53)), FWD);
    // Once one expires, it makes room.
    h.advance(60);
    assert_eq!(h.send(&udp(CLIENT, 1001, SERVER, 53)), FWD);
    h.advance(61);
    assert_eq!(h.send(&tcp(CLIENT, 40000, SERVER, 80, SYN, 1, 0)), FWD);
    assert_eq!(h.snapshot().evicted_by(EvictionClass::Expired), 1);
}

#[test]
fn eviction_prefers_tombstones_then_embryonic_then_closing() {
    let mut h = Harness::with(ConntrackConfig { capacity: 16, hash_seed: Some(3), ..ConntrackConfig::default() });
    // 4 established, 4 closing (TIME_WAIT), 4 embryonic, 4 tombstones.
    established_udp(&mut h, 1000..1004);
    for p in 0..4u16 {
        let c = 41000 + p;
        assert_eq!(h.send(&tcp(CLIENT, c, SERVER, 80, SYN, 100, 0)), FWD);
        assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, c, SYN_ACK, 500, 101)), FWD);
        assert_eq!(h.send(&tcp(CLIENT, c, SERVER, 80, FIN_ACK, 101, 501)), FWD);
        assert_eq!(h.send(&tcp(SERVER, 80, CLIENT, c, FIN_ACK, 501, 102)), FWD);
        assert_eq!(h.send(&tcp(CLIENT, c, SERVER, 80, ACK, 102, 502)), FWD);
    }
    for p in 0..4u16 {
        assert_eq!(h.send(&udp(CLIENT, 2000 + p, SERVER, 53)), FWD);
        assert_eq!(h.send(&udp(SERVER, 3000 + p, CLIENT, 53)), DENIED);
    }
    let s = h.snapshot();
    assert_eq!((s.established, s.closing, s.embryonic, s.tombstones), (4, 4, 4, 4));
    let evictions = |h: &Harness| {
        let s = h.snapshot();
        EvictionClass::ALL.map(|k| s.evicted_by(k))
    };
    for p in 0..4u16 {
        assert_eq!(h.send(&udp(CLIENT, 4000 + p, SERVER, 53)), FWD);
    }
    assert_eq!(evictions(&h), [0, 4, 0, 0]);
    // A denied flow may replace a tombstone, never a live flow: not remembered now.
    assert_eq!(h.send(&udp(SERVER, 3999, CLIENT, 53)), DENIED);
    assert_eq!(h.snapshot().tombstones_skipped, 1);
    for p in 0..8u16 {
        assert_eq!(h.send(&udp(CLIENT, 5000 + p, SERVER, 53)), FWD);
    }
    // The oldest embryonic first (four original ones, then the first four new ones).
    assert_eq!(evictions(&h), [0, 4, 8, 0]);
    assert_eq!(h.snapshot().closing, 4);
    // Once the embryonic ones are replied, closing ones go.
    established_udp(&mut h, 5000..5008);
    assert_eq!(h.send(&udp(CLIENT, 6000, SERVER, 53)), FWD);
    assert_eq!(evictions(&h), [0, 4, 8, 1]);
    assert_eq!(h.snapshot().established, 12);
}

#[test]
fn a_full_record_queue_drops_and_counts() {
    let records = Arc::new(RecordQueue::new(2));
    let mut table =
        FlowTable::new(ConntrackConfig { capacity: 64, ..ConntrackConfig::default() }, Arc::clone(&records));
    for p in 0..5u16 {
        let (ip, vlan, len) = parse(&udp(CLIENT, p, SERVER, 53));
        assert_eq!(table.track(&ip, &vlan, len, 0, 1, &mut |_| Admission::bare(Verdict::Allow)), FWD);
    }
    table.drain(secs(1));
    let s = table.counters().snapshot();
    assert_eq!((s.records_emitted, s.records_dropped), (2, 3));
    assert_eq!(records.dropped(), 3);
    assert_eq!(records.len(), 2);
    assert_eq!(s.ended_by(EndReason::Shutdown), 5);
    assert!(table.is_empty());
}

#[test]
fn expiry_is_incremental_and_bounded() {
    let mut h = Harness::with(ConntrackConfig { capacity: 128, ..ConntrackConfig::default() });
    for p in 0..100u16 {
        assert_eq!(h.send(&udp(CLIENT, p, SERVER, 53)), FWD);
    }
    h.advance(31);
    let mut total = 0;
    for _ in 0..32 {
        let n = h.table.expire(h.now, 4);
        assert!(n <= 4);
        total += n;
    }
    assert_eq!(total, 100);
    assert!(h.table.is_empty());
    h.table.check_invariants();
}

#[test]
fn no_allocation_after_new() {
    // The table's only heap blocks are made in `new`; heavy churn must neither move nor grow them.
    let mut h = Harness::with(ConntrackConfig { capacity: 512, hash_seed: Some(5), ..ConntrackConfig::default() });
    let before = h.table.memory_fingerprint();
    let bytes = h.table.bytes();
    h.allow = Box::new(|k| k.dst_port != 7);
    for i in 0..20_000u32 {
        let src = format!("10.1.{}.{}", (i >> 8) & 0xff, i & 0xff);
        let port = (i % 9) as u16;
        h.send(&udp(&src, 1000, SERVER, port));
        h.send(&udp(SERVER, port, &src, 1000));
        if i % 1000 == 0 {
            h.advance(40);
            h.generation += 1;
            h.table.expire(h.now, 64);
        }
    }
    assert_eq!(h.table.memory_fingerprint(), before);
    assert_eq!(h.table.bytes(), bytes);
}

#[test]
fn a_million_flows_fit_in_128_megabytes() {
    let table = FlowTable::new(
        ConntrackConfig { capacity: 1_000_000, hash_seed: Some(9), ..ConntrackConfig::default() },
        Arc::new(RecordQueue::new(1)),
    );
    assert!(table.bytes() < 128_000_000, "{} bytes", table.bytes());
    assert!(table.bytes_per_flow() < 128.0, "{} bytes per flow", table.bytes_per_flow());
}

#[test]
fn a_full_table_keeps_every_flow_findable() {
    // Fill to capacity with random keys: no index overflow, every flow still found.
    let capacity = 20_000;
    let mut h = Harness::with(ConntrackConfig { capacity, hash_seed: Some(11), ..ConntrackConfig::default() });
    h.allow = Box::new(|_| true);
    let mut frames = Vec::new();
    for i in 0..capacity as u32 {
        let src = format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        let f = udp(&src, (i % 50000) as u16, SERVER, 53);
        let (ip, vlan, len) = parse(&f);
        assert_eq!(h.table.track(&ip, &vlan, len, h.now, 1, &mut |_| Admission::bare(Verdict::Allow)), FWD);
        frames.push(f);
    }
    assert_eq!(h.table.len(), capacity);
    assert_eq!(h.snapshot().index_full, 0);
    h.table.check_invariants();
    let share = h.table.first_bucket_share();
    println!("full table: {:.1}% of entries in their first bucket", share * 100.0);
    assert!(share > 0.9, "{share}");
    for f in &frames {
        assert_eq!(h.state(f), Some(FlowState::Unreplied));
    }
}

#[test]
fn drain_ends_everything_with_shutdown() {
    let mut h = Harness::new();
    handshake(&mut h);
    established_udp(&mut h, 1..4);
    assert_eq!(h.send(&udp(SERVER, 1, CLIENT, 2)), DENIED);
    h.table.drain(h.now);
    let records = h.records();
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r.end == EndReason::Shutdown));
    assert!(h.table.is_empty());
    h.table.check_invariants();
}

// ---- properties ----

mod props {
    use super::*;
    use proptest::prelude::*;

    fn addr(v6: bool, a: u32) -> String {
        if v6 { format!("fd00::{:x}:{:x}", a >> 16, a & 0xffff) } else { std::net::Ipv4Addr::from(a).to_string() }
    }

    #[derive(Debug, Clone)]
    enum Kind {
        Tcp(u16, u32, u32),
        Udp,
        Sctp,
        Echo(bool),
        Gre,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(f, s, a)| Kind::Tcp(f & 0x1ff, s, a)),
            Just(Kind::Udp),
            Just(Kind::Sctp),
            any::<bool>().prop_map(Kind::Echo),
            Just(Kind::Gre),
        ]
    }

    fn transport(kind: &Kind, sport: u16, dport: u16, v: IpVersion) -> TransportSpec<'static> {
        match *kind {
            Kind::Tcp(f, s, a) => tcp_spec(sport, dport, TcpFlags::from_bits(f), s, a, &[]),
            Kind::Udp => TransportSpec::Udp { src_port: sport, dst_port: dport, payload: b"" },
            Kind::Sctp => TransportSpec::Sctp { src_port: sport, dst_port: dport, verification_tag: 1, chunks: &[] },
            Kind::Echo(true) => TransportSpec::echo_request(v, sport, 1, b""),
            Kind::Echo(false) => TransportSpec::echo_reply(v, sport, 1, b""),
            Kind::Gre => TransportSpec::Raw { protocol: 47, payload: &[0; 4] },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn owner_hash_is_symmetric_and_errors_hash_like_their_connection(
            v6 in any::<bool>(), a in any::<u32>(), b in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
            vid in 0u16..4096, kind in kind(),
        ) {
            let (src, dst) = (addr(v6, a), addr(v6, b));
            let v = if v6 { IpVersion::V6 } else { IpVersion::V4 };
            let vlan = if vid == 0 { VlanTags::NONE } else { VlanTags { outer: Some(VlanTag::customer(vid)), inner: None } };
            let (forward, fv, _) = parse(&frame_on(vlan, &src, &dst, transport(&kind, sport, dport, v)));
            // The reverse direction: echo requests are answered by replies with the same identifier.
            let back_kind = match kind { Kind::Echo(r) => Kind::Echo(!r), ref k => k.clone() };
            let (back_sport, back_dport) = if matches!(kind, Kind::Echo(_)) { (sport, dport) } else { (dport, sport) };
            let (back, bv, _) = parse(&frame_on(vlan, &dst, &src, transport(&back_kind, back_sport, back_dport, v)));
            prop_assert_eq!(owner_hash(&forward, &fv), owner_hash(&back, &bv));
            // An error quoting the forward packet, from anywhere on the path back to its source.
            if !matches!(kind, Kind::Echo(false)) {
                let quote = ip_packet(&src, &dst, transport(&kind, sport, dport, v));
                let router = addr(v6, a ^ 0x5a5a);
                let (icmp_type, code) = if v6 { (1, 4) } else { (3, 3) };
                let error = frame_on(vlan, &router, &src, TransportSpec::Icmp { icmp_type, code, rest_of_header: [0; 4], body: &quote });
                let (e, ev, _) = parse(&error);
                prop_assert_eq!(owner_hash(&e, &ev), owner_hash(&forward, &fv));
            }
        }

        #[test]
        fn a_batch_decides_exactly_as_packets_one_by_one(
            batches in proptest::collection::vec(
                (proptest::collection::vec((0u32..6, 0u32..6, 0u16..4, 0u16..4, kind(), any::<bool>()), 0..40),
                 0u64..50, any::<bool>()),
                1..12),
        ) {
            let config = ConntrackConfig { capacity: 16, hash_seed: Some(4), ..ConntrackConfig::default() };
            let mut one = Harness::with(config.clone());
            let mut many = Harness::with(config);
            let allow = |k: &FlowKey| Admission::bare(if (k.src_port ^ k.dst_port) & 1 == 0 { Verdict::Allow } else { Verdict::Deny });
            for (packets, seconds, new_generation) in batches {
                for h in [&mut one, &mut many] {
                    h.advance(seconds);
                    h.generation += u64::from(new_generation);
                }
                let inputs: Vec<TrackInput> = packets.iter().map(|(a, b, sport, dport, kind, v6)| {
                    let v = if *v6 { IpVersion::V6 } else { IpVersion::V4 };
                    let f = frame(&addr(*v6, *a), &addr(*v6, *b), transport(kind, *sport, *dport, v));
                    let (ip, vlan, frame_len) = parse(&f);
                    TrackInput { ip, vlan, frame_len }
                }).collect();
                let expected: Vec<Outcome> = inputs.iter()
                    .map(|i| one.table.track(&i.ip, &i.vlan, i.frame_len, one.now, one.generation, &mut |k| allow(k)))
                    .collect();
                let mut got = vec![Outcome::Forward; inputs.len()];
                many.table.track_batch(&inputs, many.now, many.generation, &mut |k| allow(k), &mut got);
                prop_assert_eq!(got, expected);
                prop_assert_eq!(one.records(), many.records());
            }
            prop_assert_eq!(one.snapshot(), many.snapshot());
        }

        #[test]
        fn random_packet_sequences_never_panic_and_stay_bounded(
            steps in proptest::collection::vec(
                (0u32..6, 0u32..6, 0u16..4, 0u16..4, kind(), 0u8..8, any::<bool>()), 1..300),
            loose in any::<bool>(), revalidate in any::<bool>(),
        ) {
            let mut h = Harness::with(ConntrackConfig {
                capacity: 16, tcp_loose: loose, revalidate, hash_seed: Some(3), ..ConntrackConfig::default()
            });
            h.allow = Box::new(|k| (k.src_port ^ k.dst_port) & 1 == 0);
            for (a, b, sport, dport, kind, event, v6) in steps {
                let (src, dst) = (addr(v6, a), addr(v6, b));
                let v = if v6 { IpVersion::V6 } else { IpVersion::V4 };
                match event {
                    0 => h.advance(u64::from(a) * 20),
                    1 => h.generation += 1,
                    2 => { h.table.expire(h.now, 5); }
                    3 => {
                        let quote = ip_packet(&src, &dst, transport(&kind, sport, dport, v));
                        let (icmp_type, code) = if v6 { (1, 4) } else { (3, 3) };
                        let router = addr(v6, 99);
                        h.send(&frame(&router, &src, TransportSpec::Icmp { icmp_type, code, rest_of_header: [0; 4], body: &quote }));
                    }
                    _ => { h.send(&frame(&src, &dst, transport(&kind, sport, dport, v))); }
                }
                prop_assert!(h.table.len() <= h.table.capacity());
            }
            h.table.drain(h.now);
            prop_assert!(h.table.is_empty());
            h.table.check_invariants();
        }
    }
}
