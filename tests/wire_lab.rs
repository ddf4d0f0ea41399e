//! Checks of the lab itself, with a Linux bridge standing in for moat: when these pass and a `wire_*` test through
//! moat fails, the fault is in the dataplane, not in the topology.

mod support;

use moat::lab::{Lab, WireTopology};
use std::path::Path;
use support::{BLOCKED_AFTER, CONNECT, Outcome, probe, sock};

#[test]
fn bridge_forwards_tcp_udp_icmp_arp_ipv6() {
    let Some((_lab, topo)) = support::wire("bridge_forwards_tcp_udp_icmp_arp_ipv6", 1) else { return };
    topo.bridge_moat_ns().unwrap();
    let (c, s) = (&topo.client, &topo.server);

    let tcp = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let data = support::pattern(256 * 1024, 1);
    assert_eq!(probe::tcp_exchange(&c.ns, tcp.addr(), &data, CONNECT).unwrap(), data);

    let udp = probe::UdpEchoServer::start(&s.ns, sock(s.ipv4, 53)).unwrap();
    assert_eq!(probe::udp_reach(&c.ns, udp.addr(), CONNECT).unwrap(), Outcome::Answered);
    // Nobody listens on 54: the server's ICMP port unreachable comes back as a refusal.
    assert_eq!(probe::udp_reach(&c.ns, sock(s.ipv4, 54), CONNECT).unwrap(), Outcome::Refused);
    // Nobody listens on 81: RST.
    assert_eq!(probe::tcp_reach(&c.ns, sock(s.ipv4, 81), BLOCKED_AFTER).unwrap(), Outcome::Refused);

    let report = probe::ping(&c.ns, s.ipv4.into(), 3, 1).unwrap();
    assert_eq!(report.received, 3, "{report:?}");

    let n = c.neighbour(s.ipv4.into()).unwrap().expect("client has a neighbour entry for the server");
    assert!(n.is_resolved() && n.mac == Some(s.mac), "{n:?}");

    // A sysctl set through the lab lands in that namespace only.
    let before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    c.ns.sysctl("net/ipv4/ip_forward", if before.trim() == "1" { "0" } else { "1" }).unwrap();
    assert_ne!(c.ns.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap(), before);
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), before);

    let v6 = s.ipv6.unwrap();
    let tcp6 = probe::TcpEchoServer::start(&s.ns, sock(v6, 8080)).unwrap();
    assert_eq!(probe::tcp_exchange(&c.ns, tcp6.addr(), b"over IPv6", CONNECT).unwrap(), b"over IPv6");
    assert_eq!(probe::ping(&c.ns, v6.into(), 1, 2).unwrap().received, 1);
}

/// The kernel spreads flows over the TX queues of a multi-queue veth by flow hash (no XPS is configured on veth,
/// so `netdev_pick_tx` falls back to `skb_tx_hash`, and each TCP socket gets a random `sk_txhash`); veth then
/// delivers on the peer's RX queue with the same index. An `mq` qdisc on the client end shows the per-queue
/// counts. This is the precondition of the two-worker test through moat.
#[test]
fn multiqueue_veth_spreads_flows_over_queues() {
    let Some((_lab, topo)) = support::wire("multiqueue_veth_spreads_flows_over_queues", 2) else { return };
    topo.bridge_moat_ns().unwrap();
    let (c, s) = (&topo.client, &topo.server);
    c.ns.exec("tc", &["qdisc", "replace", "dev", &c.ifname, "root", "handle", "1:", "mq"]).unwrap();
    let tcp = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    for i in 0..32u8 {
        assert_eq!(probe::tcp_exchange(&c.ns, tcp.addr(), &[i; 100], CONNECT).unwrap(), [i; 100]);
    }
    // `tc -j class` prints no JSON in iproute2 6.1; the per-queue child qdiscs of mq (parents 1:1, 1:2) do.
    let json = c.ns.exec("tc", &["-s", "-j", "qdisc", "show", "dev", &c.ifname]).unwrap();
    let qdiscs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let packets: Vec<u64> = qdiscs
        .iter()
        .filter(|q| q["parent"].as_str().is_some_and(|p| p.starts_with("1:")))
        .map(|q| q["packets"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(packets.len(), 2, "{json}");
    assert!(packets.iter().all(|p| *p > 0), "both TX queues carried packets: {packets:?}");
}

#[test]
fn lab_removes_everything_on_drop_also_after_a_panic() {
    let Some(lab) = support::lab("lab_removes_everything_on_drop_also_after_a_panic") else { return };
    drop(lab);
    let mut lab = Lab::new().unwrap();
    let topo = WireTopology::build(&mut lab, 1).unwrap();
    let names: Vec<String> = lab.namespaces().iter().map(|n| n.name().to_owned()).collect();
    let workdir = lab.workdir().to_owned();
    assert_eq!(names.len(), 3);
    // A sleeping process inside a namespace must not keep it alive.
    let mut sleeper = topo.moat.command("sleep").arg("600").spawn().unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        topo.client.ns.run_in(|| panic!("boom")).unwrap();
    }));
    assert!(result.is_err());
    for name in &names {
        assert!(!Path::new("/run/netns").join(name).exists(), "{name} left behind");
    }
    assert!(!workdir.exists());
    let _ = sleeper.wait();
}

#[test]
fn cleanup_stale_removes_only_namespaces_of_dead_processes() {
    let Some(live) = support::lab("cleanup_stale_removes_only_namespaces_of_dead_processes") else { return };
    let mut live = live;
    let live_ns = live.add_netns("live").unwrap();
    // No process has pid 999999999 (above any pid_max), so this stands for a run that was killed.
    let dead = "mtstale-999999999-0-x";
    let other = "mtstale2-999999999-0-x";
    for name in [dead, other] {
        moat::lab::run_checked(std::process::Command::new("ip").args(["netns", "add", name])).unwrap();
    }
    let removed = moat::lab::cleanup_stale("mtstale").unwrap();
    assert_eq!(removed, vec![dead.to_owned()]);
    assert!(!Path::new("/run/netns").join(dead).exists());
    assert!(Path::new("/run/netns").join(other).exists(), "another prefix is left alone");
    moat::lab::run_checked(std::process::Command::new("ip").args(["netns", "del", other])).unwrap();
    // The live lab of this process is never touched.
    assert!(moat::lab::cleanup_stale(moat::lab::DEFAULT_PREFIX).unwrap().iter().all(|n| !n.starts_with(live.tag())));
    assert!(live_ns.path().exists());
}
