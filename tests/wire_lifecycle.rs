//! moat's life cycle on real interfaces: clean stop and crash leave nothing attached, a restart works,
//! frames are all accounted for, and the failsafe ports keep the node reachable whatever the policy.
// A test binary: a panic is the assertion, in helpers as in test bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use moat::lab::{MoatOptions, MoatProcess, Netns, WireTopology};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::{CONNECT, check, ok, probe};

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The XDP program ids attached to `ifname` in `ns` (empty when none), from `ip -j link`.
fn xdp_attached(ns: &Netns, ifname: &str) -> Vec<u64> {
    let out = ns.ip(&["-j", "-d", "link", "show", "dev", ifname]).unwrap_or_else(|e| panic!("{e:#}"));
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    links[0]["xdp"]["prog"]["id"].as_u64().into_iter().collect()
}

fn stats_json(stats: &moat::lab::MoatStats) -> serde_json::Value {
    stats.raw.clone()
}

fn assert_nothing_attached(topo: &WireTopology, when: &str) {
    for ifname in [&topo.if_a, &topo.if_b] {
        // Link teardown is asynchronous in the kernel; give it a moment before calling it a leak.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !xdp_attached(&topo.moat, ifname).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(xdp_attached(&topo.moat, ifname).is_empty(), "{when}: XDP still attached to {ifname}");
    }
}

#[test]
fn crash_and_stop_leave_nothing_attached_and_restart_works() {
    let Some((lab, topo)) = support::wire("crash_and_stop_leave_nothing_attached_and_restart_works", 1) else {
        return;
    };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!("allow tcp {}/32 {}/32 80\n", c.ipv4, s.ipv4);
    let server = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();

    let moat = support::start_moat(&lab, &topo, &rules, None);
    assert_eq!(xdp_attached(&topo.moat, &topo.if_a).len(), 1, "moat is running but nothing is attached");
    ok(&moat, probe::tcp_exchange(&c.ns, server.addr(), b"before the crash", CONNECT));

    // SIGKILL: no destructor runs. The kernel must still detach XDP (BPF link) and close the sockets.
    let pid = moat.pid().expect("moat has a pid");
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    drop(moat);
    assert_nothing_attached(&topo, "after SIGKILL");

    // A new moat starts on the same interfaces and forwards at once.
    let moat = support::start_moat(&lab, &topo, &rules, None);
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, server.addr(), b"after the restart", CONNECT));
    check(&moat, echoed == b"after the restart", || "echo differs after restart".to_owned());
    let stats = support::stop_moat(moat);
    assert_nothing_attached(&topo, "after SIGTERM");

    // Every frame is accounted for: none held by userspace, none stuck in a TX ring.
    let raw = stats_json(&stats);
    for worker in raw["workers"].as_array().expect("workers in stats") {
        let frames = &worker["frames"];
        assert_eq!(frames["in_use"], 0, "frames leaked: {worker}");
        assert_eq!(frames["tx"], 0, "frames stuck in TX: {worker}");
        assert_eq!(frames["refused_descriptors"], 0, "kernel returned foreign frames: {worker}");
        let total = ["free", "in_use", "fill", "tx"].iter().map(|k| frames[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!(total, 8192, "frame census does not add up: {worker}");
        // Between exchanges the worker had nothing to do: it must have slept in poll(2), not spun.
        assert!(worker["idle_waits"].as_u64().unwrap_or(0) > 0, "worker never slept: {worker}");
    }
}

#[test]
fn failsafe_port_reaches_the_node_whatever_the_policy() {
    let Some((lab, topo)) = support::wire("failsafe_port_reaches_the_node_whatever_the_policy", 1) else {
        return;
    };
    let (c, s) = (&topo.client, &topo.server);
    // The node itself has an address on the guarded interface facing the client.
    let node = Ipv4Addr::from(u32::from(c.ipv4) + 2);
    topo.moat.ip(&["addr", "add", &format!("{node}/24"), "dev", &topo.if_a]).unwrap();
    let on_node = probe::TcpEchoServer::start(&topo.moat, sock(node, 2222)).unwrap();
    let behind = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 2222)).unwrap();

    // Deny everything; 2222 is failsafe.
    let dir = lab.write_files("failsafe-rules", &[("00-deny.acl", "deny any any any\n")]).unwrap();
    let mut opts = MoatOptions::new(env!("CARGO_BIN_EXE_moat"), dir).wire(&topo.if_a, &topo.if_b);
    opts.extra_args.extend(["--failsafe-ports".to_owned(), "in:tcp:2222".to_owned()]);
    let moat = MoatProcess::start(&topo.moat, lab.workdir(), &opts).unwrap_or_else(|e| panic!("{e:#}"));

    // The node answers on its failsafe port (ARP for its address reaches its kernel too)…
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, on_node.addr(), b"management", CONNECT));
    check(&moat, echoed == b"management", || "failsafe echo differs".to_owned());
    // …but the same port on a host behind moat stays blocked: failsafe is for the node, not a hole.
    let outcome = ok(&moat, probe::tcp_reach(&c.ns, behind.addr(), support::BLOCKED_AFTER));
    check(&moat, outcome == probe::Outcome::NoAnswer, || format!("port 2222 behind moat: {outcome:?}"));

    let stats = support::stop_moat(moat);
    let raw = stats_json(&stats);
    let facing_client = raw["redirectors"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["interface"] == topo.if_a.as_str()))
        .cloned()
        .unwrap_or_default();
    assert!(facing_client["failsafe_passed"].as_u64().unwrap_or(0) > 0, "{facing_client}");
    assert!(facing_client["local_arp_passed"].as_u64().unwrap_or(0) > 0, "{facing_client}");
    assert_eq!(on_node.accepted(), 1);
    assert_eq!(behind.accepted(), 0);
}
