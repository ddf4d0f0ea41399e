//! Rule tables change under a running dataplane: by editing the directory of `moat run` (raw ACL files, and
//! Kubernetes/Calico manifests recompiled through the control pipeline), and by publishing thousands of tables
//! while traffic flows. Nothing allowed may be lost, nothing denied may pass, and a broken rule file or manifest
//! leaves the last good table in force.
// A test binary: a panic is the assertion, in helpers as in test bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use moat::lab::probe;
use moat_fastpath::classify::acl;
use moat_fastpath::dataplane::{Dataplane, DataplaneConfig};
use moat_fastpath::{RuleTable, TableHandle, Verdict};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{CONNECT, check, ok};

fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// After one good reload and a refused one: generation 2, the failure counted, the error naming what
/// `error_names`, and the latency of the good reload recorded (the refused one enforced nothing).
fn assert_reloaded_once_then_refused(stats: &moat::lab::MoatStats, error_names: &[&str]) {
    let table = &stats.raw["table"];
    assert_eq!(table["generation"], 2, "one successful reload: {table}");
    assert!(table["reload_failures"].as_u64().unwrap_or(0) >= 1, "{table}");
    let error = table["last_reload_error"].as_str().unwrap_or("");
    assert!(error_names.iter().all(|n| error.contains(n)), "the error must name {error_names:?}: {table}");
    assert!(table["last_change_to_enforcement_ms"].as_f64().is_some(), "{table}");
}

#[test]
fn editing_the_rules_reloads_them_and_a_broken_file_keeps_the_last_good_table() {
    let test = "editing_the_rules_reloads_them_and_a_broken_file_keeps_the_last_good_table";
    let Some((lab, topo)) = support::wire(test, 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let server = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let moat = support::start_moat(&lab, &topo, "deny any any any\n", None);
    let rules = lab.workdir().join("rules").join("50-test.acl");
    let reach = || probe::tcp_reach(&c.ns, server.addr(), Duration::from_millis(500)).unwrap();
    check(&moat, reach() == probe::Outcome::NoAnswer, || "denied before the edit".to_owned());

    // Allow it: the running moat picks the change up without a restart.
    std::fs::write(&rules, format!("allow tcp {}/32 {}/32 80\n", c.ipv4, s.ipv4)).unwrap();
    support::eventually("the new allow rule", || reach() == probe::Outcome::Answered);

    // A broken file is refused; the allow stays in force.
    std::fs::write(&rules, "allow tcp 10.0.0.300/32 any 80\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, server.addr(), b"still allowed", CONNECT));
    check(&moat, echoed == b"still allowed", || "the last good table must stay in force".to_owned());

    assert_reloaded_once_then_refused(&support::stop_moat(moat), &["50-test.acl:1"]);
}

#[test]
fn thousands_of_acl_swaps_under_traffic_lose_nothing_and_leak_nothing() {
    let test = "thousands_of_acl_swaps_under_traffic_lose_nothing_and_leak_nothing";
    let Some((_lab, topo)) = support::wire(test, 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    // Two different tables with the same meaning for this traffic: 9000 allowed, 9001 denied.
    let table_a = format!("allow udp {}/32 {}/32 9000\ndeny any any any\n", c.ipv4, s.ipv4);
    let table_b = format!(
        "deny udp {c}/32 {s}/32 9001\ndeny tcp any any\nallow udp {c}/32 {s}/32 8999-9000\ndeny any any any\n",
        c = c.ipv4,
        s = s.ipv4
    );
    let parse = |text: &str| RuleTable::new(acl::parse(text, "swap.acl").unwrap(), Verdict::Deny, "swap");
    swaps_under_traffic(&topo, parse(&table_a), parse(&table_b));
}

#[test]
fn thousands_of_compiled_policy_swaps_under_traffic_lose_nothing_and_leak_nothing() {
    let test = "thousands_of_compiled_policy_swaps_under_traffic_lose_nothing_and_leak_nothing";
    let Some((_lab, topo)) = support::wire(test, 1) else { return };
    // Two compiled Kubernetes/Calico policies with the same meaning for this traffic, built differently:
    // a NetworkPolicy allowing UDP 9000, and a tiered GlobalNetworkPolicy denying 9001 in front of a
    // NetworkPolicy allowing the range 8999-9000.
    let cluster = support::cluster(&topo);
    let a = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: udp, namespace: servers}\n\
             spec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: UDP, port: 9000}]}]\n";
    let b = "apiVersion: crd.projectcalico.org/v1\nkind: Tier\nmetadata: {name: guard}\nspec: {order: 10}\n---\n\
             apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: guard.no-9001}\n\
             spec: {tier: guard, selector: all(), types: [Ingress], ingress: [{action: Deny, protocol: UDP, \
             destination: {ports: [9001]}}, {action: Pass}]}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: udp, namespace: servers}\n\
             spec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: UDP, port: 8999, endPort: 9000}]}]\n";
    let compile = |policy: &str| {
        let report = moat_control::manifest::load_str(&format!("{cluster}{policy}"), std::path::Path::new("swap.yaml"));
        assert!(report.is_clean(), "{:?}", report.errors);
        let snapshot = moat_control::source::Snapshot { model: report.to_model(), notes: Vec::new() };
        moat_control::pipeline::Pipeline::new().build(&snapshot, "swap").unwrap().0
    };
    swaps_under_traffic(&topo, compile(a), compile(b));
}

/// Publishes `table_a` and `table_b` alternately, thousands of times, while numbered UDP datagrams to port 9000
/// (allowed by both) and 9001 (denied by both) cross a real dataplane.
fn swaps_under_traffic(topo: &moat::lab::WireTopology, table_a: RuleTable, table_b: RuleTable) {
    let (c, s) = (topo.client.clone(), topo.server.clone());
    let tables = TableHandle::new(RuleTable::fail_closed());
    tables.publish(table_a.clone());

    // The dataplane runs in-process, on threads inside moat's namespace.
    let stop_dataplane = Arc::new(AtomicBool::new(false));
    let config =
        DataplaneConfig { pairs: vec![topo.wire().parse().unwrap()], queues: Some(1), ..DataplaneConfig::default() };
    let dp_tables = Arc::clone(&tables);
    let dp_stop = Arc::clone(&stop_dataplane);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let dataplane = topo
        .moat
        .spawn_in(move || {
            let dataplane = Dataplane::start(&config, dp_tables).map_err(|e| e.to_string());
            let ok = dataplane.is_ok();
            let _ = ready_tx.send(dataplane.as_ref().err().cloned());
            let dataplane = dataplane.ok()?;
            while ok && !dp_stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Some(dataplane.stop())
        })
        .unwrap();
    if let Some(err) = ready_rx.recv().unwrap() {
        panic!("dataplane did not start: {err}");
    }

    // Receiver: which datagram numbers arrived on each port.
    const COUNT: u32 = 20_000;
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let receiver =
        s.ns.spawn_in(move || {
            let allowed = UdpSocket::bind(sock(s.ipv4, 9000)).unwrap();
            let denied = UdpSocket::bind(sock(s.ipv4, 9001)).unwrap();
            // Room for every datagram of the run: on a loaded machine this thread may not be scheduled for a
            // while, and a loss in the receiving socket would look like the dataplane's.
            for socket in [&allowed, &denied] {
                nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBufForce, &(32 << 20)).unwrap();
            }
            bound_tx.send(()).unwrap();
            denied.set_nonblocking(true).unwrap();
            allowed.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut seen = HashSet::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = allowed.recv(&mut buf) {
                if n >= 4 {
                    seen.insert(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
                }
            }
            let mut leaked = 0;
            while denied.recv(&mut buf).is_ok() {
                leaked += 1;
            }
            (seen, leaked)
        })
        .unwrap();

    bound_rx.recv().unwrap();

    // Publisher: swap the two tables back to back while the traffic flows.
    let sending = Arc::new(AtomicBool::new(true));
    let (pub_tables, pub_sending) = (Arc::clone(&tables), Arc::clone(&sending));
    let publisher = std::thread::spawn(move || {
        let mut swaps = 0u64;
        while pub_sending.load(Ordering::Relaxed) {
            pub_tables.publish(if swaps % 2 == 0 { table_b.clone() } else { table_a.clone() });
            swaps += 1;
            std::thread::sleep(Duration::from_micros(50));
        }
        swaps
    });

    let server_ip = topo.server.ipv4;
    let sent =
        c.ns.run_in(move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            for seq in 0..COUNT {
                socket.send_to(&seq.to_be_bytes(), sock(server_ip, 9000)).unwrap();
                socket.send_to(&seq.to_be_bytes(), sock(server_ip, 9001)).unwrap();
                if seq % 50 == 49 {
                    // Pace below the receiving socket's buffer so any loss is the dataplane's.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            COUNT
        })
        .unwrap();
    sending.store(false, Ordering::Relaxed);
    let swaps = publisher.join().unwrap();
    let (seen, leaked) = receiver.join().unwrap();
    stop_dataplane.store(true, Ordering::Relaxed);
    let report = dataplane.join().unwrap().expect("dataplane report");

    let missing: Vec<u32> = (0..sent).filter(|n| !seen.contains(n)).take(10).collect();
    let (_, worker, exit) = &report.workers[0];
    let drops: Vec<_> = worker.dropped.iter().filter(|(_, n)| *n > 0).collect();
    eprintln!(
        "{swaps} table swaps during {sent} allowed + {sent} denied datagrams; worker rx {} tx {}, drops {drops:?}",
        worker.rx_packets, worker.tx_packets
    );
    assert!(swaps >= 1000, "only {swaps} swaps: the test did not stress the swap");
    assert!(missing.is_empty(), "{} allowed datagrams lost, first {missing:?}", sent as usize - seen.len());
    assert_eq!(leaked, 0, "denied datagrams passed");
    // Every datagram to 9001 was denied (plus whatever IPv6 neighbour discovery the hosts sent).
    assert!(worker.dropped_by(moat_fastpath::stats::DropCause::Policy) >= u64::from(sent));
    assert!(worker.table_generation > 1000, "the worker kept an old table: {}", worker.table_generation);
    let exit = exit.expect("worker exit report");
    assert_eq!((exit.census.user, exit.census.tx), (0, 0), "frames leaked: {exit:?}");
    // Every replaced table has been freed by the publisher side, none by a worker.
    assert_eq!(tables.reclaim(), 0, "retired tables still alive");
}

#[test]
fn editing_manifests_recompiles_and_a_broken_manifest_keeps_the_last_good_table() {
    let test = "editing_manifests_recompiles_and_a_broken_manifest_keeps_the_last_good_table";
    let Some((lab, topo)) = support::wire(test, 1) else { return };
    let (c, s) = (&topo.client, &topo.server);
    let server = probe::TcpEchoServer::start(&s.ns, sock(s.ipv4, 80)).unwrap();
    let deny_all = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: isolate, namespace: servers}\n\
                    spec: {podSelector: {}, policyTypes: [Ingress]}\n";
    let cluster = support::cluster(&topo);
    let moat = support::start_moat_manifests(
        &lab,
        &topo,
        &[("00-cluster.yaml", &cluster), ("50-policy.yaml", deny_all)],
        None,
        &[],
    );
    let policy = lab.workdir().join("manifests").join("50-policy.yaml");
    let reach = || probe::tcp_reach(&c.ns, server.addr(), Duration::from_millis(500)).unwrap();
    check(&moat, reach() == probe::Outcome::NoAnswer, || "isolated before the edit".to_owned());

    // Open port 80 to the clients' namespace: recompiled and swapped in while running.
    let allow = format!(
        "{deny_all}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: web, namespace: servers}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: server}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{side: clients}}}}}}]\n    ports: [{{protocol: TCP, port: 80}}]\n"
    );
    std::fs::write(&policy, &allow).unwrap();
    support::eventually("the new allow policy", || reach() == probe::Outcome::Answered);

    // A selector that does not parse, in a second file: the whole snapshot is refused, the allow stays.
    let broken = "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: broken}\n\
                  spec: {selector: \"app == \", types: [Ingress], ingress: [{action: Deny}]}\n";
    std::fs::write(lab.workdir().join("manifests").join("60-broken.yaml"), broken).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let echoed = ok(&moat, probe::tcp_exchange(&c.ns, server.addr(), b"still allowed", CONNECT));
    check(&moat, echoed == b"still allowed", || "the last good table must stay in force".to_owned());

    assert_reloaded_once_then_refused(&support::stop_moat(moat), &["60-broken.yaml", "selector"]);
}
