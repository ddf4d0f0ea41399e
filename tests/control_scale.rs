//! Update latency of the split at scale (issue 6, items 2 and 3): a cluster of 10,000 pods in 1,000
//! namespaces with 3,000 policies served by kubesim, read by `moat agent` (Kubernetes source), tables handed
//! to `moat run --control-socket` on a real wire in the netns lab. Measured per pod relabel, one at a time:
//!
//! * `write → ack`: from the write at the API server (the watch event is on the wire when `relabel`
//!   returns) until the test sees the agent count the fastpath's acknowledgement (polled every
//!   millisecond over HTTP: an upper bound);
//! * `event → ack`: the agent's own figure, from the event reaching its source to the acknowledgement
//!   (`moat_agent_last_update_latency_seconds`);
//! * `fastpath build`: decoding, validation and build of the table in the fastpath;
//! * the table message's size.
//!
//! Ignored by default (a minute of CPU on two cores); run it in release mode:
//!
//! ```text
//! cargo test --release --test control_scale -- --ignored --nocapture [MOAT_SCALE_REPEAT=50]
//! ```
//!
//! The cluster's shape is `control/examples/kube_scale.rs`'s (copied: an example is not a library).
// A test binary: a panic is the assertion, in helpers as in test bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

mod support;

use moat::lab::{AgentOptions, AgentProcess, MoatOptions, MoatProcess};
use moat_kubesim::scale::{Size, cluster};
use moat_kubesim::{KubeSim, SimConfig};
use serde_json::Value;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, 90th percentile and maximum, in milliseconds.
fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("{:.2} / {:.2} / {:.2}", at(0.5), at(0.9), at(1.0))
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn status(agent: &AgentProcess) -> Value {
    serde_json::from_str(&agent.get("/status").unwrap().1).unwrap()
}

fn metric(agent: &AgentProcess, name: &str) -> f64 {
    let text = agent.get("/metrics").unwrap().1;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
#[ignore = "a scale measurement: run with --release -- --ignored --nocapture"]
fn relabel_to_fastpath_ack_at_10000_pods() {
    let Some((lab, topo)) = support::wire("relabel_to_fastpath_ack_at_10000_pods", 1) else { return };
    let small = std::env::var("MOAT_SCALE_SMALL").is_ok();
    let s = if small { Size { namespaces: 100, pods_per_ns: 10 } } else { Size { namespaces: 1000, pods_per_ns: 10 } };
    let repeat: usize = std::env::var("MOAT_SCALE_REPEAT").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
    let sim = KubeSim::start_with(SimConfig::default(), cluster(&s)).unwrap();
    let kubeconfig = lab.workdir().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
    let socket = lab.workdir().join("control.sock");
    let opts = MoatOptions::fastpath(env!("CARGO_BIN_EXE_moat"), &socket).wire(&topo.if_a, &topo.if_b).queues(1);
    let fastpath = MoatProcess::start(&topo.moat, lab.workdir(), &opts).unwrap();
    let mut agent_opts = AgentOptions::kubernetes(env!("CARGO_BIN_EXE_moat"), &socket, &kubeconfig);
    agent_opts.ready_timeout = Duration::from_secs(300);
    // Unset: the source's default debounce.
    let debounce = std::env::var("MOAT_SCALE_DEBOUNCE_MS").ok();
    if let Some(ms) = &debounce {
        agent_opts.extra_args = vec!["--watch-debounce-ms".into(), ms.clone()];
    }
    let debounce = debounce.map_or_else(|| "default".to_owned(), |ms| format!("{ms} ms"));
    let started = Instant::now();
    let agent = AgentProcess::start(lab.workdir(), &agent_opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while agent.get("/readyz").unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "no first table\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_ack = started.elapsed();
    let st = status(&agent);
    let first_bytes = st["agent"]["last_table_bytes"].as_u64().unwrap();
    let first_build = st["agent"]["last_fastpath_build_ms"].as_f64().unwrap();
    let first_compile = st["agent"]["last_compile_ms"].as_f64().unwrap();
    let memory_line = agent.log().lines().find(|l| l.contains("memory of the policy stages")).map(str::to_owned);

    let (mut write_ack, mut event_ack, mut build, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..repeat {
        // A web pod relabelled to db (out of web's selectors, into db's), or back.
        let j = (i * 37 % s.namespaces) * s.pods_per_ns;
        let ns = format!("ns{}", j / s.pods_per_ns);
        let current = sim.get("v1", "Pod", Some(&ns), &format!("p{j}")).unwrap();
        let app = if current["metadata"]["labels"]["app"] == "web" { "db" } else { "web" };
        let acked = status(&agent)["agent"]["tables_acked"].as_u64().unwrap();
        let written = Instant::now();
        sim.relabel("v1", "Pod", Some(&ns), &format!("p{j}"), &[("app", Some(app))]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = status(&agent);
            if st["agent"]["tables_acked"].as_u64().unwrap() > acked {
                write_ack.push(ms(written.elapsed()));
                build.push(st["agent"]["last_fastpath_build_ms"].as_f64().unwrap());
                bytes.push(st["agent"]["last_table_bytes"].as_f64().unwrap());
                break;
            }
            assert!(Instant::now() < deadline, "relabel {i} never acknowledged\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(1));
        }
        event_ack.push(metric(&agent, "moat_agent_last_update_latency_seconds") * 1e3);
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent_rss = rss_mib(agent.pid().unwrap());
    let fastpath_rss = rss_mib(fastpath.pid().unwrap());
    println!("\n# split: pod relabel → fastpath ack\n");
    println!(
        "cluster: {} pods, {} namespaces, {} policies; agent debounce {debounce}",
        s.namespaces * s.pods_per_ns,
        s.namespaces,
        s.namespaces * 3
    );
    println!(
        "first table: agent start → first ack {:.0} ms (compile {first_compile:.0} ms, message {:.1} MiB, fastpath \
         decode+validate+build {first_build:.0} ms)",
        ms(first_ack),
        first_bytes as f64 / (1 << 20) as f64
    );
    if let Some(line) = memory_line {
        println!("agent: {line}");
    }
    println!("RSS after the run: agent {agent_rss:.0} MiB, fastpath {fastpath_rss:.0} MiB");
    println!("\n{repeat} relabels, one at a time; median / p90 / max\n");
    println!("| write → ack (ms) | event → ack (ms) | fastpath build (ms) | message (KiB) |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        summary(write_ack),
        summary(event_ack),
        summary(build),
        summary(bytes.iter().map(|b| b / 1024.0).collect())
    );
    if std::env::var("MOAT_SCALE_LOG").is_ok() {
        for line in agent.log().lines().filter(|l| l.contains("policy compiled") || l.contains("acknowledged")) {
            println!("{line}");
        }
    }
    agent.stop().unwrap();
    support::stop_moat(fastpath);
}
