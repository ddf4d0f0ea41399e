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
use moat_kubesim::{KubeSim, SimConfig};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const APPS: [&str; 3] = ["web", "api", "db"];

struct Size {
    namespaces: usize,
    pods_per_ns: usize,
}

fn pod_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, (j % 200) as u8, (j / 200 + 2) as u8)
}

fn pod(ns: usize, name: &str, j: usize, app: &str) -> Value {
    let (port_name, port) = match app {
        "web" => ("http", 8080),
        "api" => ("http", 9000),
        _ => ("pg", 5432),
    };
    let ip = pod_ip(j).to_string();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": format!("ns{ns}"),
            "labels": {"app": app, "pod-template-hash": "7d9f8c6b5", "version": "v1"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d9f8c6b5"),
                                 "uid": "5c0c7e1c-0000-4000-8000-000000000000", "controller": true}],
        },
        "spec": {
            "serviceAccountName": format!("sa-{app}"),
            "nodeName": format!("node-{}", j % 100),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "containers": [{
                "name": app, "image": format!("registry.example/{app}:1.2.3"), "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 10},
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
        },
        "status": {
            "phase": "Running", "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
            "hostIP": "172.18.0.3", "hostIPs": [{"ip": "172.18.0.3"}], "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"},
                           {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": app, "ready": true, "restartCount": 0, "started": true,
                                   "image": format!("registry.example/{app}:1.2.3"), "imageID": "sha256:0000",
                                   "containerID": "containerd://0000",
                                   "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}],
        },
    })
}

fn cluster(s: &Size) -> Vec<Value> {
    let calico = "crd.projectcalico.org/v1";
    let mut objects = vec![
        json!({"apiVersion": calico, "kind": "Tier", "metadata": {"name": "security"}, "spec": {"order": 10}}),
        json!({"apiVersion": calico, "kind": "Tier", "metadata": {"name": "platform"},
               "spec": {"order": 20, "defaultAction": "Pass"}}),
        json!({"apiVersion": calico, "kind": "IPPool", "metadata": {"name": "pods"}, "spec": {"cidr": "10.244.0.0/16"}}),
        json!({"apiVersion": calico, "kind": "GlobalNetworkSet", "metadata": {"name": "partners", "labels": {"kind": "partner"}},
               "spec": {"nets": ["203.0.113.0/24", "198.51.100.0/24"]}}),
    ];
    for ns in 0..s.namespaces {
        let team = ns % 20;
        let env = if ns % 3 == 0 { "prod" } else { "dev" };
        objects.push(json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": format!("ns{ns}"), "labels": {"team": format!("t{team}"), "env": env}}}));
        objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                            "metadata": {"name": "sa-web", "namespace": format!("ns{ns}"), "labels": {"role": "web"}}}));
        for k in 0..s.pods_per_ns {
            let j = ns * s.pods_per_ns + k;
            objects.push(pod(ns, &format!("p{j}"), j, APPS[k % 3]));
        }
        objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny", "namespace": format!("ns{ns}")},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}));
        objects.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "app-flows", "namespace": format!("ns{ns}")},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api", "db"]}]},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]},
                {"from": [{"podSelector": {"matchLabels": {"app": "api"}}},
                          {"namespaceSelector": {"matchLabels": {"team": format!("t{team}")}}}],
                 "ports": [{"port": 5432}, {"port": 6000, "endPort": 6100}]},
            ]}}));
        if ns % 2 == 0 {
            objects.push(json!({"apiVersion": calico, "kind": "NetworkPolicy",
                "metadata": {"name": "default.web-egress", "namespace": format!("ns{ns}")},
                "spec": {"order": 500, "selector": "app == 'web'", "types": ["Egress"], "egress": [
                    {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}},
                    {"action": "Allow", "protocol": "TCP", "destination": {
                        "namespaceSelector": format!("team == 't{team}'"), "selector": "app in {'api', 'web'}",
                        "ports": ["http", 443]}},
                    {"action": "Allow", "protocol": "TCP", "destination": {"selector": "kind == 'partner'",
                                                                           "namespaceSelector": "global()"}},
                    {"action": "Deny"}]}}));
        } else {
            let tier = if ns % 4 == 1 { "security" } else { "platform" };
            objects.push(json!({"apiVersion": calico, "kind": "GlobalNetworkPolicy",
                "metadata": {"name": format!("{tier}.g{ns}")},
                "spec": {"tier": tier, "order": ns, "namespaceSelector": format!("team == 't{team}'"),
                         "selector": "app == 'web' || app == 'api'", "types": ["Ingress"],
                         "ingress": [{"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}},
                                     {"action": "Pass", "protocol": "TCP", "destination": {"notPorts": ["0:1023"]}}]}}));
        }
    }
    objects
}

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
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: sim, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: anonymous, user: {{}}}}]\ncontexts: [{{name: sim, context: {{cluster: sim, user: anonymous}}}}]\n\
             current-context: sim\n",
            sim.url()
        ),
    )
    .unwrap();
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
