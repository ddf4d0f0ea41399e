//! Two RX queues on each veth end, `moat run --queues 2`: one worker per (pair, queue), and both carry traffic.
//!
//! How the traffic reaches both queues: a veth delivers a frame on the peer's RX queue with the index of the TX
//! queue it was sent on (`veth_xmit` uses `skb->queue_mapping`; native XDP on the moat side then runs on that
//! queue, whose AF_XDP socket belongs to one worker). The sender's TX queue is chosen by `netdev_pick_tx`: veth
//! configures no XPS map, so it falls back to `skb_tx_hash`, i.e. the flow hash, and every TCP socket draws a
//! random `sk_txhash`. Many connections therefore land on both queues, about half each (the chance that 64
//! connections all pick one of two queues is 2^-63). The replies are spread the same way by the server's sockets.
//! `wire_lab::multiqueue_veth_spreads_flows_over_queues` checks that precondition without moat.
//! Should a kernel ever pin everything to queue 0 (an XPS map set by default), setting
//! `/sys/class/net/eth0/queues/tx-N/xps_cpus` to 0 in the client namespace restores the hash.
//!
//! Generic XDP (`MOAT_E2E_XDP_MODE=generic`) is different: veth's skb path leaves the sender's TX queue index in
//! `skb->queue_mapping`, which the generic-XDP receive path reads as "RX queue + 1", so a frame sent on TX queue
//! k arrives on RX queue max(k - 1, 0) (measured on 6.18: with two queues everything lands on queue 0). In that
//! mode the veth gets three queues and moat serves two: TX queues 0 and 1 feed RX queue 0, TX queue 2 feeds
//! RX queue 1.

mod support;

use support::{CONNECT, check, host, ok, probe, sock};

#[test]
fn two_queues_served_by_two_workers() {
    let generic = std::env::var("MOAT_E2E_XDP_MODE").is_ok_and(|m| m == "generic");
    let veth_queues = if generic { 3 } else { 2 };
    let Some((lab, topo)) = support::wire("two_queues_served_by_two_workers", veth_queues) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let rules = format!("allow tcp {} {} 80\ndeny any any any\n", host(c.ipv4.into()), host(s.ipv4.into()));
    let server = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let moat = support::start_moat(&lab, &topo, &rules, Some(2));

    // 64 connections: 64 source ports, 64 random flow hashes.
    for i in 0..64u32 {
        let msg = format!("flow {i}").into_bytes();
        let echoed = ok(&moat, probe::tcp_exchange(&c.ns, server.addr(), &msg, CONNECT));
        check(&moat, echoed == msg, || format!("flow {i}: echo differs"));
    }

    let stats = support::stop_moat(moat);
    assert_eq!(server.accepted(), 64);
    let wire = topo.wire();
    let workers: Vec<_> = stats.pair(&wire).collect();
    let mut queues: Vec<u32> = workers.iter().map(|w| w.queue).collect();
    queues.sort_unstable();
    assert_eq!(queues, [0, 1], "one worker per queue of pair {}\n{}", topo.wire(), stats.table());
    for w in &workers {
        assert!(w.rx > 0 && w.tx > 0, "worker for queue {} forwarded nothing\n{}", w.queue, stats.table());
    }
    let raw = stats.raw["workers"].as_array().expect("workers in the stats file");
    let sum = |key: &str| raw.iter().map(|w| w[key].as_u64().unwrap_or(0)).sum::<u64>();
    assert!(sum("handed_off") > 0, "no frame was handed to its connection's owner: {raw:?}");
    assert_eq!(sum("handed_off"), sum("handoff_received"), "handed frames lost: {raw:?}");
}
