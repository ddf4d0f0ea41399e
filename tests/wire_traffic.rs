//! Real TCP, UDP, ICMP and ARP traffic through `moat run` between two namespaces:
//! `client ─ veth ─ [moat: wa … wb] ─ veth ─ server`, one L2 segment, one subnet.
//! Each test builds its own lab and tears it down, also when it fails.

mod support;

use support::{BLOCKED_AFTER, CONNECT, Outcome, check, host, ok, probe, sock};

#[test]
fn tcp_connect_and_transfer_both_directions() {
    let Some((lab, topo)) = support::wire("tcp_connect_and_transfer_both_directions", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!(
        "# client may open connections to the server's port 80, the server to the client's port 9000\n\
         allow tcp {c4} {s4} 80\n\
         allow tcp {s4} {c4} 9000\n\
         deny any any any\n",
        c4 = host(c.ipv4.into()),
        s4 = host(s.ipv4.into()),
    );
    let on_server = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let on_client = probe::TcpEchoServer::start(&c.ns, sock(c.ipv4, 9000)).unwrap();
    let moat = support::start_moat(&lab, &topo, &rules, None);

    // client → server: the request goes one way, its echo comes back on the same connection.
    let request = b"GET / HTTP/1.0\r\n\r\n".repeat(50);
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, on_server.addr(), &request, CONNECT));
    check(&moat, echoed == request, || format!("client→server echo differs: {} bytes back", echoed.len()));

    // server → client, allowed by its own rule.
    let request = support::pattern(20_000, 7);
    let echoed = ok(&moat, probe::tcp_exchange(&s.ns, on_client.addr(), &request, CONNECT));
    check(&moat, echoed == request, || format!("server→client echo differs: {} bytes back", echoed.len()));

    let stats = support::stop_moat(moat);
    assert_eq!(on_server.accepted(), 1);
    assert_eq!(on_client.accepted(), 1);
    assert!(stats.rx() > 0 && stats.tx() > 0, "moat forwarded nothing?\n{}", stats.table());
}

#[test]
fn one_megabyte_arrives_intact() {
    let Some((lab, topo)) = support::wire("one_megabyte_arrives_intact", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!("allow tcp {} {} 80\ndeny any any any\n", host(c.ipv4.into()), host(s.ipv4.into()));
    let server = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let moat = support::start_moat(&lab, &topo, &rules, None);

    // 1 MiB each way: client → server, then echoed server → client on the same connection.
    let data = support::pattern(1 << 20, 0x6d6f6174);
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, server.addr(), &data, CONNECT));
    check(&moat, echoed.len() == data.len(), || format!("{} of {} bytes came back", echoed.len(), data.len()));
    check(&moat, echoed == data, || {
        let first = data.iter().zip(&echoed).position(|(a, b)| a != b).unwrap_or(0);
        format!(
            "payload corrupted: fnv1a sent {:016x}, received {:016x}; first difference at byte {first}",
            support::fnv1a(&data),
            support::fnv1a(&echoed)
        )
    });
    let stats = support::stop_moat(moat);
    // 2 MiB of payload in ≤ 1500-byte frames (no GSO through XDP): at least 1400 frames forwarded.
    assert!(stats.tx() >= 1400, "{}", stats.table());
}

#[test]
fn udp_request_response() {
    let Some((lab, topo)) = support::wire("udp_request_response", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!("allow udp {} {} 53\ndeny any any any\n", host(c.ipv4.into()), host(s.ipv4.into()));
    let server = probe::UdpEchoServer::start(&s.ns, sock(s.ipv4, 53)).unwrap();
    let denied = probe::UdpEchoServer::start(&s.ns, sock(s.ipv4, 54)).unwrap();
    let moat = support::start_moat(&lab, &topo, &rules, None);

    for i in 0..10u16 {
        let request = format!("query {i}").into_bytes();
        let reply = ok(&moat, probe::udp_exchange(&c.ns, server.addr(), &request, CONNECT));
        check(&moat, reply.as_ref() == Ok(&request), || format!("udp request {i}: {reply:?}"));
    }
    let blocked = ok(&moat, probe::udp_reach(&c.ns, denied.addr(), BLOCKED_AFTER));
    check(&moat, blocked == Outcome::NoAnswer, || format!("udp to the denied port 54: {blocked:?}"));

    let stats = support::stop_moat(moat);
    assert_eq!(server.received(), 10);
    assert_eq!(denied.received(), 0, "a datagram to the denied port reached the server");
    assert!(support::policy_drops(&stats) >= 1, "no policy drop counted\n{}", stats.table());
}

#[test]
fn icmp_echo() {
    let Some((lab, topo)) = support::wire("icmp_echo", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!("allow icmp {} {}\ndeny any any any\n", host(c.ipv4.into()), host(s.ipv4.into()));
    let moat = support::start_moat(&lab, &topo, &rules, None);

    let report = ok(&moat, probe::ping(&c.ns, s.ipv4.into(), 3, 1));
    check(&moat, report.received == 3, || format!("client → server ping: {report:?}"));
    // Only replies to the client's requests are admitted: the server's own echo requests are not.
    let report = ok(&moat, probe::ping(&s.ns, c.ipv4.into(), 2, 1));
    check(&moat, report.received == 0, || format!("server → client ping should be denied: {report:?}"));

    let stats = support::stop_moat(moat);
    assert!(support::policy_drops(&stats) >= 2, "no policy drop counted\n{}", stats.table());
}

#[test]
fn arp_resolution_through_moat() {
    let Some((lab, topo)) = support::wire("arp_resolution_through_moat", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    // Deny all IP: ARP is not IP and must be bridged anyway.
    let moat = support::start_moat(&lab, &topo, "deny any any any\n", None);
    assert!(ok(&moat, c.neighbour(s.ipv4.into())).is_none(), "fresh namespace already knows the server");

    // Any IP packet triggers ARP; the ping itself is denied.
    let report = ok(&moat, probe::ping(&c.ns, s.ipv4.into(), 1, 1));
    check(&moat, report.received == 0, || format!("ping should be denied: {report:?}"));

    let entry = ok(&moat, c.neighbour(s.ipv4.into()));
    check(&moat, entry.as_ref().is_some_and(|n| n.is_resolved() && n.mac == Some(s.mac)), || {
        format!("client's neighbour entry for {} should hold {}: {entry:?}", s.ipv4, s.mac)
    });
    // The server learnt the client from the ARP request that crossed moat.
    let entry = ok(&moat, s.neighbour(c.ipv4.into()));
    check(&moat, entry.as_ref().is_some_and(|n| n.mac == Some(c.mac)), || {
        format!("server's neighbour entry for {} should hold {}: {entry:?}", c.ipv4, c.mac)
    });
    let stats = support::stop_moat(moat);
    // ARP request and reply at least.
    assert!(stats.tx() >= 2, "{}", stats.table());
}

#[test]
fn blocked_flow_is_really_blocked() {
    let Some((lab, topo)) = support::wire("blocked_flow_is_really_blocked", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!("allow tcp {} {} 80\ndeny any any any\n", host(c.ipv4.into()), host(s.ipv4.into()));
    let allowed = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let denied = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 81)).unwrap();
    let on_client = probe::TcpEchoServer::start(&c.ns, sock(c.ipv4, 9000)).unwrap();
    let moat = support::start_moat(&lab, &topo, &rules, None);

    // The path works (and ARP is resolved) ...
    let outcome = ok(&moat, probe::tcp_reach(&c.ns, allowed.addr(), CONNECT));
    check(&moat, outcome == Outcome::Answered, || format!("allowed port 80: {outcome:?}"));
    // ... but a port the rules do not allow gets no answer at all (not even a RST: the SYN never arrives) ...
    let outcome = ok(&moat, probe::tcp_reach(&c.ns, denied.addr(), BLOCKED_AFTER));
    check(&moat, outcome == Outcome::NoAnswer, || format!("denied port 81: {outcome:?}"));
    // ... and the reverse admission of port 80's flows does not open the server → client direction.
    let outcome = ok(&moat, probe::tcp_reach(&s.ns, on_client.addr(), BLOCKED_AFTER));
    check(&moat, outcome == Outcome::NoAnswer, || format!("server → client:9000: {outcome:?}"));

    let stats = support::stop_moat(moat);
    assert_eq!(denied.accepted(), 0, "a denied connection reached the server");
    assert_eq!(on_client.accepted(), 0, "a denied connection reached the client");
    assert_eq!(allowed.accepted(), 1);
    // Each blocked connect retransmits its SYN at least once within the wait.
    assert!(support::policy_drops(&stats) >= 2, "no policy drops counted\n{}", stats.table());
}

#[test]
fn ipv6_tcp_through_moat() {
    let Some((lab, topo)) = support::wire("ipv6_tcp_through_moat", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let (c6, s6) = (c.ipv6.unwrap(), s.ipv6.unwrap());
    let rules = format!(
        "# neighbour discovery is ICMPv6 (to solicited-node multicast): IPv6 needs it\n\
         allow icmpv6 any any\n\
         allow tcp {} {} 80\n\
         deny any any any\n",
        host(c6.into()),
        host(s6.into())
    );
    let allowed = probe::TcpEchoServer::start(&s.ns, sock(s6, 80)).unwrap();
    let denied = probe::TcpEchoServer::start(&s.ns, sock(s6, 81)).unwrap();
    let moat = support::start_moat(&lab, &topo, &rules, None);

    let data = support::pattern(100_000, 6);
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, allowed.addr(), &data, CONNECT));
    check(&moat, echoed == data, || format!("IPv6 echo differs: {} of {} bytes", echoed.len(), data.len()));
    let outcome = ok(&moat, probe::tcp_reach(&c.ns, denied.addr(), BLOCKED_AFTER));
    check(&moat, outcome == Outcome::NoAnswer, || format!("denied IPv6 port 81: {outcome:?}"));

    let entry = ok(&moat, c.neighbour(s6.into()));
    check(&moat, entry.as_ref().is_some_and(|n| n.mac == Some(s.mac)), || format!("ND for {s6}: {entry:?}"));
    let stats = support::stop_moat(moat);
    assert_eq!(denied.accepted(), 0);
    assert!(support::policy_drops(&stats) >= 1, "{}", stats.table());
}
