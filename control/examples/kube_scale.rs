//! Scale measurement of the Kubernetes source (issue 6, item 3): a cluster of 10,000 pods in
//! 1,000 namespaces with 3,000 policies served by kubesim on 127.0.0.1, read by the source as a
//! node agent would (`KubeSource::start_thread`: its own thread, one-threaded runtime).
//!
//! ```text
//! cargo run --release -p moat-control --example kube_scale [-- --repeat N --small]
//! ```
//!
//! Measured:
//! * initial sync: source start → first update (every kind listed, 500 objects per page), then
//!   the first table, full (`Pipeline::build`) and as `IncrementalCompiler::new`;
//! * per change (a pod added, a pod relabelled out of one app's selectors into another's), each
//!   alone (the previous one fully processed first):
//!   - `write → publish`: from the write at the API server (the watch event is on the wire when
//!     `apply` returns) to the source publishing the update;
//!   - `arrive → publish`: from the event reaching the source to publication (conversion, model
//!     update, debounce);
//!   - `full table`: `Pipeline::build` of the published snapshot (resolve + compile, warm
//!     stage cache) — the path `moat run` uses today;
//!   - `incremental`: `IncrementalCompiler::apply(update.model_changes())` + `RuleTable`;
//!   - `write → table`: end to end with the incremental compiler.
//!
//! Both the default debounce (5 ms of quiet) and none are measured: the debounce is a
//! deliberate delay that turns bursts into one recompile.
//!
//! The cluster's shape follows `benches/compile.rs` (ten pods per namespace: web, api, db;
//! default-deny and app-flow Kubernetes policies per namespace; a Calico policy per even
//! namespace and a GlobalNetworkPolicy per odd one in two tiers). Pods carry the fields a real
//! pod has (containers with resources, env and mounts; status with conditions and container
//! statuses), about 2 KiB of JSON each, so parsing costs what it would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::cast_possible_truncation)]

use moat_control::compile::IncrementalCompiler;
use moat_control::pipeline::Pipeline;
use moat_control::source::kube::{KubeSource, KubeSourceConfig, ObjectKey, Update, Updates, WatchedKind};
use moat_fastpath::RuleTable;
use moat_kubesim::scale::{Size, cluster, pod};
use moat_kubesim::{KubeSim, SimConfig};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, 90th percentile and maximum, in milliseconds.
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    format!("{:8.2} {:8.2} {:8.2}", at(0.5), at(0.9), at(1.0))
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Samples {
    write_to_publish: Vec<Duration>,
    arrive_to_publish: Vec<Duration>,
    full_table: Vec<Duration>,
    incremental: Vec<Duration>,
    write_to_table: Vec<Duration>,
}

/// Waits for the update that carries `key`, applying every update to the incremental compiler.
fn take(
    updates: &mut Updates,
    key: &ObjectKey,
    incremental: &mut IncrementalCompiler,
    pipeline: &mut Pipeline,
    written: Instant,
    samples: &mut Samples,
) {
    loop {
        let u: Update = updates.blocking_next(WAIT).expect("an update");
        let started = Instant::now();
        let (table, _) = incremental.apply(u.model_changes().expect("a change set")).expect("incremental apply");
        let _table = RuleTable::from_policy(table, "kube");
        let incremental_done = Instant::now();
        if !u.changed.contains(key) {
            continue;
        }
        let full_started = Instant::now();
        pipeline.build(&u.snapshot, "kube").expect("full build");
        samples.full_table.push(full_started.elapsed());
        samples.write_to_publish.push(u.published.saturating_duration_since(written));
        if let Some(first) = u.first_event {
            samples.arrive_to_publish.push(u.published.saturating_duration_since(first));
        }
        samples.incremental.push(incremental_done - started);
        samples.write_to_table.push(incremental_done - written);
        return;
    }
}

fn run(sim: &KubeSim, s: &Size, repeat: usize, debounce: Duration) {
    println!("\n## debounce {} ms (max delay 50 ms)\n", ms(debounce));
    let rss_before = rss_kib();
    let is_pod_list =
        |r: &moat_kubesim::RequestRecord| r.path == "/api/v1/pods" && r.kind == moat_kubesim::RequestKind::List;
    let pod_lists_before = sim.count_requests(is_pod_list);
    let kube_config = kube::Config::new(sim.url().parse().unwrap());
    let config = KubeSourceConfig { debounce, ..KubeSourceConfig::default() };
    let started = Instant::now();
    let (handle, mut updates) = KubeSource::start_thread(Some(kube_config), config).unwrap();
    let first = updates.blocking_next(WAIT).unwrap();
    let sync = started.elapsed();
    let model = &first.snapshot.model;
    assert!(model.pods.len() >= s.namespaces * s.pods_per_ns);
    let policies = model.k8s_policies.len() + model.policies.len();
    let rss_after = rss_kib();
    let mut pipeline = Pipeline::new();
    let t = Instant::now();
    let (_, report) = pipeline.build(&first.snapshot, "kube").unwrap();
    let full_first = t.elapsed();
    let t = Instant::now();
    let (mut incremental, _) = IncrementalCompiler::new(model.clone()).unwrap();
    let incremental_first = t.elapsed();
    println!(
        "cluster: {} pods, {} namespaces, {} service accounts, {} policies ({} Kubernetes, {} Calico), {} endpoints compiled",
        model.pods.len(),
        model.namespaces.len(),
        model.service_accounts.len(),
        policies,
        model.k8s_policies.len(),
        model.policies.len(),
        report.stats.endpoints
    );
    println!("initial sync (start → first update): {:.0} ms", ms(sync));
    println!("first table: full {:.0} ms, IncrementalCompiler::new {:.0} ms", ms(full_first), ms(incremental_first));
    println!("process RSS grew by {} MiB while the source synced", rss_after.saturating_sub(rss_before) / 1024);
    let pod_lists = sim.count_requests(is_pod_list) - pod_lists_before;
    println!("pod list requests for the initial sync: {pod_lists} (pages of 500)");
    drop(first);

    let mut added = Samples::default();
    let mut relabelled = Samples::default();
    for i in 0..repeat {
        // A pod added to namespace i (a new address).
        let ns = i % s.namespaces;
        let name = format!("new-{i}-{}", ms(debounce) as u32);
        let j = s.namespaces * s.pods_per_ns + i + 1;
        let key = ObjectKey::new(WatchedKind::Pod, Some(&format!("ns{ns}")), &name);
        let written = Instant::now();
        sim.apply(pod(ns, &name, j, "api")).unwrap();
        take(&mut updates, &key, &mut incremental, &mut pipeline, written, &mut added);
        std::thread::sleep(Duration::from_millis(20));

        // A web pod relabelled to db (out of web's selectors, into db's), or back.
        let j = (i * 37 % s.namespaces) * s.pods_per_ns;
        let ns = j / s.pods_per_ns;
        let current = sim.get("v1", "Pod", Some(&format!("ns{ns}")), &format!("p{j}")).unwrap();
        let app = if current["metadata"]["labels"]["app"] == "web" { "db" } else { "web" };
        let key = ObjectKey::new(WatchedKind::Pod, Some(&format!("ns{ns}")), &format!("p{j}"));
        let written = Instant::now();
        sim.relabel("v1", "Pod", Some(&format!("ns{ns}")), &format!("p{j}"), &[("app", Some(app))]).unwrap();
        take(&mut updates, &key, &mut incremental, &mut pipeline, written, &mut relabelled);
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("\n{repeat} changes of each kind, one at a time; milliseconds: median, p90, max\n");
    println!(
        "| change | write → publish | arrive → publish | incremental table | write → table (incremental) | full table (Pipeline::build) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, s) in [("pod added", added), ("pod relabelled", relabelled)] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            summary(s.write_to_publish),
            summary(s.arrive_to_publish),
            summary(s.incremental),
            summary(s.write_to_table),
            summary(s.full_table)
        );
    }
    handle.stop();
}

fn main() {
    let small = std::env::args().any(|a| a == "--small");
    let s = if small { Size { namespaces: 100, pods_per_ns: 10 } } else { Size { namespaces: 1000, pods_per_ns: 10 } };
    let repeat: usize = arg("--repeat").and_then(|r| r.parse().ok()).unwrap_or(50);
    let objects = cluster(&s);
    let bytes: usize = objects.iter().map(|o| o.to_string().len()).sum();
    println!("# kube source at scale\n");
    println!("{} objects, {} MiB of JSON", objects.len(), bytes / (1 << 20));
    let sim = KubeSim::start_with(SimConfig::default(), objects).unwrap();
    for debounce in [Duration::from_millis(5), Duration::ZERO] {
        run(&sim, &s, repeat, debounce);
    }
}
