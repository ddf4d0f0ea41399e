//! Connection tracking with real traffic: `client ns ─ veth ─ [moat run] ─ veth ─ server ns`, the policy a
//! Kubernetes cluster of two namespaces (`clients`, `servers`) with default-deny in both directions and a few
//! allows. Every reply crosses moat as a packet policy alone would deny (the server's egress and the client's
//! ingress allow nothing), so whatever passes back passes by conntrack.
// A test binary: a panic is the assertion, in helpers as in test bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use moat::lab::WireTopology;
use moat::lab::probe::{self, Outcome, TcpEchoServer, UdpEchoServer};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;
use support::{BLOCKED_AFTER, CONNECT, check, ok, sock};

/// Default deny everywhere; clients may open TCP 80 and UDP 53/54 and ping towards servers.
const ALLOW: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: clients}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: servers}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-servers, namespace: clients}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {side: servers}}}]
    ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 53}, {protocol: UDP, port: 54}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-clients, namespace: servers}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {side: clients}}}]
    ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 53}, {protocol: UDP, port: 54}]
---
apiVersion: crd.projectcalico.org/v1
kind: NetworkPolicy
metadata: {name: ping-out, namespace: clients}
spec:
  selector: app == "client"
  types: [Egress]
  egress: [{action: Allow, protocol: ICMP}, {action: Allow, protocol: ICMPv6}]
---
apiVersion: crd.projectcalico.org/v1
kind: NetworkPolicy
metadata: {name: ping-in, namespace: servers}
spec:
  selector: app == "server"
  types: [Ingress]
  ingress:
  - {action: Allow, protocol: ICMP, source: {namespaceSelector: side == "clients"}}
  - {action: Allow, protocol: ICMPv6, source: {namespaceSelector: side == "clients"}}
"#;

/// IPv6 neighbour discovery between the hosts: Calico leaves it to the host's failsafe rules; here the
/// hosts are pods, so the policy must allow it like any other ICMPv6 (types 133–136).
const NEIGHBOUR_DISCOVERY: &str = r#"
apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: neighbour-discovery}
spec:
  order: 1
  selector: all()
  types: [Ingress, Egress]
  ingress: [{action: Allow, protocol: ICMPv6, icmp: {type: 135}}, {action: Allow, protocol: ICMPv6, icmp: {type: 136}}]
  egress: [{action: Allow, protocol: ICMPv6, icmp: {type: 135}}, {action: Allow, protocol: ICMPv6, icmp: {type: 136}}]
"#;

fn start(lab: &moat::lab::Lab, topo: &WireTopology, policy: &str, extra: &[&str]) -> moat::lab::MoatProcess {
    let cluster = support::cluster(topo);
    support::start_moat_manifests(
        lab,
        topo,
        &[("00-cluster.yaml", &cluster), ("10-nd.yaml", NEIGHBOUR_DISCOVERY), ("50-policy.yaml", policy)],
        Some(1),
        extra,
    )
}

/// Sends `msg` on a live connection and reads the echo; `false` when nothing comes back in time.
fn echo_on(stream: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    if stream.write_all(msg).is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).is_ok() && back == msg
}

#[test]
fn replies_pass_by_conntrack_and_the_server_cannot_open_connections() {
    let Some((lab, topo)) = support::wire("replies_pass_by_conntrack_and_the_server_cannot_open_connections", 1) else {
        return;
    };
    let (c, s) = (&topo.client, &topo.server);
    let v6 = (c.ipv6.unwrap(), s.ipv6.unwrap());
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let _web6 = TcpEchoServer::start(&s.ns, sock(v6.1, 80)).unwrap();
    let _dns = UdpEchoServer::start(&s.ns, sock(s.ipv4, 53)).unwrap();
    let _client_listener = TcpEchoServer::start(&c.ns, sock(c.ipv4, 8080)).unwrap();
    let _client_udp = UdpEchoServer::start(&c.ns, sock(c.ipv4, 53)).unwrap();
    let moat = start(&lab, &topo, ALLOW, &[]);

    // Client-initiated: allowed, and the replies come back although no policy allows server → client.
    let payload = support::pattern(256 * 1024, 7);
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, sock(s.ipv4, 80), &payload, CONNECT));
    check(&moat, echoed == payload, || "256 KiB over TCP came back different".to_owned());
    let echoed6 = ok(&moat, probe::tcp_exchange(&c.ns, sock(v6.1, 80), b"over IPv6", CONNECT));
    check(&moat, echoed6 == b"over IPv6", || "TCP over IPv6".to_owned());
    let udp = ok(&moat, probe::udp_reach(&c.ns, sock(s.ipv4, 53), CONNECT));
    check(&moat, udp == Outcome::Answered, || format!("UDP request/response: {udp:?}"));
    let ping = ok(&moat, probe::ping(&c.ns, IpAddr::V4(s.ipv4), 3, 2));
    check(&moat, ping.received == 3, || format!("ping: {ping:?}"));
    let ping6 = ok(&moat, probe::ping(&c.ns, IpAddr::V6(v6.1), 2, 2));
    check(&moat, ping6.received == 2, || format!("ping over IPv6: {ping6:?}"));

    // Server-initiated, towards ports the client listens on: a new flow, denied by both sides' policies.
    let back = ok(&moat, probe::tcp_reach(&s.ns, sock(c.ipv4, 8080), BLOCKED_AFTER));
    check(&moat, back == Outcome::NoAnswer, || format!("server → client TCP must be blocked: {back:?}"));
    let back_udp = ok(&moat, probe::udp_reach(&s.ns, sock(c.ipv4, 53), BLOCKED_AFTER));
    check(&moat, back_udp == Outcome::NoAnswer, || format!("server → client UDP must be blocked: {back_udp:?}"));
    let back_ping = ok(&moat, probe::ping(&s.ns, IpAddr::V4(c.ipv4), 1, 1));
    check(&moat, back_ping.received == 0, || "server → client ping must be blocked".to_owned());

    let stats = support::stop_moat(moat);
    assert!(support::policy_drops(&stats) > 0, "the blocked flows must be counted as policy drops");
    let ct = &stats.raw["workers"][0]["conntrack"];
    assert!(ct["inserts"].as_u64().unwrap_or(0) >= 6, "flows tracked: {ct}");
}

#[test]
fn icmp_errors_of_allowed_flows_pass_as_related() {
    let Some((lab, topo)) = support::wire("icmp_errors_of_allowed_flows_pass_as_related", 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let moat = start(&lab, &topo, ALLOW, &[]);
    // UDP 54 is allowed but nothing listens: the server's port-unreachable error travels server → client,
    // which only its relation to the allowed flow admits. The client sees it as "connection refused".
    let closed = ok(&moat, probe::udp_reach(&c.ns, sock(s.ipv4, 54), CONNECT));
    check(&moat, closed == Outcome::Refused, || format!("ICMP port unreachable must reach the client: {closed:?}"));
    let closed6 = ok(&moat, probe::udp_reach(&c.ns, sock(s.ipv6.unwrap(), 54), CONNECT));
    check(&moat, closed6 == Outcome::Refused, || format!("ICMPv6 port unreachable must reach the client: {closed6:?}"));
    // The closed TCP port answers with a RST, which belongs to the SYN's flow.
    let rst = ok(&moat, probe::tcp_reach(&c.ns, sock(s.ipv4, 80), CONNECT));
    check(&moat, rst == Outcome::Refused, || format!("the server's RST must reach the client: {rst:?}"));
    support::stop_moat(moat);
}

#[test]
fn revoking_a_policy_cuts_live_connections_unless_configured_not_to() {
    for revalidate in [true, false] {
        let test = format!("revoking_a_policy_cuts_live_connections (revalidate {revalidate})");
        let Some((lab, topo)) = support::wire(&test, 1) else { return };
        let (c, s) = (&topo.client, &topo.server);
        let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
        let extra: &[&str] = if revalidate { &[] } else { &["--conntrack-keep-on-revoke"] };
        let moat = start(&lab, &topo, ALLOW, extra);
        let mut live = match ok(&moat, probe::tcp_connect(&c.ns, sock(s.ipv4, 80), CONNECT)) {
            Ok(stream) => stream,
            Err(outcome) => panic!("{test}: connect: {outcome:?}\n{}", moat.log()),
        };
        check(&moat, echo_on(&mut live, b"before", CONNECT), || format!("{test}: echo before the change"));

        // Take TCP 80 out of both allows; new connections stop at once.
        let revoked = ALLOW.replace("{protocol: TCP, port: 80}, ", "");
        std::fs::write(lab.workdir().join("manifests/50-policy.yaml"), revoked).unwrap();
        support::eventually("the revocation", || {
            probe::tcp_reach(&c.ns, sock(s.ipv4, 80), Duration::from_millis(500)).unwrap() == Outcome::NoAnswer
        });
        let survives = echo_on(&mut live, b"after", BLOCKED_AFTER);
        if revalidate {
            check(&moat, !survives, || format!("{test}: the live connection must be cut"));
        } else {
            check(&moat, survives, || format!("{test}: with --conntrack-keep-on-revoke it must keep going"));
        }
        let stats = support::stop_moat(moat);
        let revoked_drops = stats.dropped_where(|r| r == "revoked");
        assert_eq!(revoked_drops > 0, revalidate, "{test}: drops as revoked: {revoked_drops}");
    }
}

#[test]
fn a_full_flow_table_keeps_established_connections_flowing() {
    let Some((lab, topo)) = support::wire("a_full_flow_table_keeps_established_connections_flowing", 1) else {
        return;
    };
    let (c, s) = (&topo.client, &topo.server);
    let _web = TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let moat = start(&lab, &topo, ALLOW, &["--conntrack-capacity", "512"]);
    let mut live = match ok(&moat, probe::tcp_connect(&c.ns, sock(s.ipv4, 80), CONNECT)) {
        Ok(stream) => stream,
        Err(outcome) => panic!("connect: {outcome:?}\n{}", moat.log()),
    };
    check(&moat, echo_on(&mut live, b"before the flood", CONNECT), || "echo before the flood".to_owned());

    // A SYN flood from 60,000 source ports to the allowed port (each one a new embryonic flow), sent from the
    // client's interface by moat's own AF_XDP generator, far beyond the table's 512 entries. Paced at 40,000
    // frames/s so that a busy machine still delivers it to moat's RX ring whole.
    let generator =
        c.ns.command(env!("CARGO_BIN_EXE_moat"))
            .args(["pktgen", "--dev", &c.ifname, "--src", &c.ipv4.to_string(), "--dst", &s.ipv4.to_string()])
            .args(["--dst-mac", &s.mac.to_string(), "--protocol", "tcp-syn", "--dst-port", "80"])
            .args(["--src-port", "2000", "--flows", "60000", "--count", "60000", "--rate", "40000", "--json"])
            .output()
            .unwrap();
    assert!(generator.status.success(), "pktgen: {}", String::from_utf8_lossy(&generator.stderr));

    // The established connection was never evicted for the flood's sake.
    check(&moat, echo_on(&mut live, b"after the flood", CONNECT), || {
        "the established connection must keep working".to_owned()
    });
    let stats = support::stop_moat(moat);
    let ct = &stats.raw["workers"][0]["conntrack"];
    let counter = |name: &str| ct[name].as_u64().unwrap_or(0);
    let evicted: u64 =
        ["expired", "tombstone", "embryonic", "closing"].iter().map(|c| counter(&format!("evicted_{c}"))).sum();
    let pressure = evicted + counter("table_full");
    // The table of 512 must have been refilled many times over (a few SYNs may still be lost before moat's RX
    // ring on a busy machine).
    assert!(pressure >= 40 * 512, "the flood must have hit the capacity many times: {ct}");
    assert!(counter("occupancy") <= 512 && counter("capacity") == 512, "capacity exceeded: {ct}");
}
