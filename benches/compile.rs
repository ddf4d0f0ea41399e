//! The policy compiler on a policy-shaped cluster: 5,000 pods in 500 namespaces with 2,000
//! Kubernetes and Calico policies (1,000 NetworkPolicies, 500 Calico NetworkPolicies, 500
//! GlobalNetworkPolicies in three tiers), generated here with a fixed seed.
//!
//! `cargo bench --bench compile` measures
//! * `full_compile`: `Compiler::compile` from a resolved model with a cold cache, and
//!   `resolve_and_compile`: model → `Resolved` → table (what a manifest change costs);
//! * `lookup`: `PolicyTable::decide` over 4,096 new flows (same-namespace, cross-namespace and
//!   external peers), ns per flow;
//! * `pod_added` / `pod_relabelled`: one pod changed, model → `Resolved` → table with the
//!   compiler's cache warm (the incremental path: unchanged policies are reused).
//!
//! Under `cargo test` (no `--bench`) the cluster is a tenth of the size, so the test run is quick.

// A benchmark: a panic on its own generated input is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use moat_control::compile::{Compiler, zones_of};
use moat_control::manifest::load_str;
use moat_control::model::{Model, Resource};
use moat_control::resolve::Resolved;
use moat_fastpath::classify::FlowKey;

struct Size {
    namespaces: usize,
    pods_per_ns: usize,
}

fn size() -> Size {
    if std::env::args().any(|a| a == "--bench") {
        Size { namespaces: 500, pods_per_ns: 10 }
    } else {
        Size { namespaces: 50, pods_per_ns: 10 }
    }
}

const APPS: [&str; 3] = ["web", "api", "db"];

/// Pods are spread over 100 nodes, each with its own /24 (as Calico IPAM blocks are per node),
/// so a namespace's pods are not one contiguous range.
fn pod_ip(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, u8::try_from(j % 100).unwrap(), u8::try_from(j / 100 + 2).unwrap())
}

fn pod_yaml(ns: usize, j: usize, app: &str, extra: &str) -> String {
    let (port_name, port) = match app {
        "web" => ("http", 8080),
        "api" => ("http", 9000),
        _ => ("pg", 5432),
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{j}, namespace: ns{ns}, labels: {{app: {app}{extra}}}}}\nspec: {{containers: [{{name: c, ports: [{{name: {port_name}, containerPort: {port}}}, {{name: metrics, containerPort: 9090}}]}}]}}\nstatus: {{podIP: {}}}\n",
        pod_ip(j)
    )
}

fn cluster(s: &Size) -> String {
    let mut docs = vec![
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 10}\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: platform}\nspec: {order: 20, defaultAction: Pass}\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.244.0.0/16}\n".to_string(),
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: partners, labels: {kind: partner}}\nspec: {nets: [203.0.113.0/24, 198.51.100.0/24]}\n".to_string(),
    ];
    for ns in 0..s.namespaces {
        let team = ns % 20;
        let env = if ns % 3 == 0 { "prod" } else { "dev" };
        let monitoring = if ns % 50 == 0 { ", monitoring: 'true'" } else { "" };
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}, labels: {{team: t{team}, env: {env}{monitoring}}}}}\n"
        ));
        for k in 0..s.pods_per_ns {
            let j = ns * s.pods_per_ns + k;
            docs.push(pod_yaml(ns, j, APPS[k % 3], ""));
        }
        // Two Kubernetes policies per namespace: default deny ingress, and web → api on the
        // named port plus api → db.
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: default-deny, namespace: ns{ns}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n"
        ));
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: app-flows, namespace: ns{ns}}}\nspec:\n  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [api, db]}}]}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]\n    ports: [{{port: http}}]\n  - from: [{{podSelector: {{matchLabels: {{app: api}}}}}}, {{namespaceSelector: {{matchLabels: {{team: t{team}}}}}}}]\n    ports: [{{port: 5432}}, {{port: 6000, endPort: 6100}}]\n"
        ));
        // One Calico policy: egress of web pods to the team's namespaces and partners.
        docs.push(format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: web-egress, namespace: ns{ns}}}\nspec:\n  order: 500\n  selector: app == 'web'\n  types: [Egress]\n  egress:\n  - {{action: Allow, protocol: UDP, destination: {{ports: [53]}}}}\n  - {{action: Allow, protocol: TCP, destination: {{namespaceSelector: \"team == 't{team}'\", selector: \"app in {{'api', 'web'}}\", ports: [http, 443]}}}}\n  - {{action: Allow, protocol: TCP, destination: {{selector: \"kind == 'partner'\", namespaceSelector: global()}}}}\n  - {{action: Deny}}\n"
        ));
        // One global policy per namespace, in the security or platform tier.
        let tier = if ns % 2 == 0 { "security" } else { "platform" };
        let body = if ns % 2 == 0 {
            format!(
                "  order: {ns}\n  selector: projectcalico.org/namespace == 'ns{ns}'\n  types: [Ingress, Egress]\n  ingress:\n  - {{action: Deny, source: {{nets: [192.0.2.0/24]}}}}\n  - {{action: Log, protocol: TCP, destination: {{ports: [22]}}}}\n  - {{action: Pass}}\n  egress:\n  - {{action: Deny, protocol: TCP, destination: {{notNets: [10.0.0.0/8], ports: [25]}}}}\n  - {{action: Pass}}\n"
            )
        } else {
            format!(
                "  order: {ns}\n  namespaceSelector: team == 't{team}'\n  selector: app == 'web' || app == 'api'\n  types: [Ingress]\n  ingress:\n  - {{action: Allow, protocol: TCP, source: {{namespaceSelector: \"monitoring == 'true'\"}}, destination: {{ports: [metrics]}}}}\n  - {{action: Pass, protocol: TCP, destination: {{notPorts: ['0:1023']}}}}\n"
            )
        };
        docs.push(format!("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: {tier}.g{ns}}}\nspec:\n  tier: {tier}\n{body}"));
    }
    docs.join("---\n")
}

fn load(text: &str) -> Model {
    let r = load_str(text, std::path::Path::new("cluster.yaml"));
    assert!(r.errors.is_empty(), "{:?}", r.errors.iter().map(ToString::to_string).take(3).collect::<Vec<_>>());
    r.to_model()
}

fn flows(s: &Size) -> Vec<FlowKey> {
    let pods = s.namespaces * s.pods_per_ns;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..4096)
        .map(|i| {
            let a = usize::try_from(next() % pods as u64).unwrap();
            let b = match i % 4 {
                // Same namespace.
                0 | 1 => a - a % s.pods_per_ns + usize::try_from(next() % s.pods_per_ns as u64).unwrap(),
                _ => usize::try_from(next() % pods as u64).unwrap(),
            };
            let dst: IpAddr = if i % 8 == 7 { IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)) } else { pod_ip(b).into() };
            let port = [8080u16, 9000, 5432, 6050, 53, 9090, 22, 443][usize::try_from(next() % 8).unwrap()];
            let protocol = if port == 53 { 17 } else { 6 };
            FlowKey { src: pod_ip(a).into(), dst, protocol, src_port: 40000, dst_port: port, icmp: None }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let s = size();
    let model = load(&cluster(&s));
    let resolved = Resolved::new(&model);
    let zones = zones_of(&model);
    let (table, stats) = Compiler::new().compile(&resolved, zones.clone()).unwrap();
    eprintln!(
        "cluster: {} endpoints, {} policies (enforced) -> {} policy stages, {} classifier rules, {} chains, {} selectors, {} KiB of classifiers",
        stats.endpoints,
        resolved.tiers.iter().map(|t| t.policies.len()).sum::<usize>(),
        stats.policies,
        stats.pieces,
        stats.chains,
        stats.selectors,
        table.classifier_bytes() / 1024
    );

    let mut g = c.benchmark_group("compile");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("full_compile", |b| {
        b.iter(|| Compiler::new().compile(black_box(&resolved), zones.clone()).unwrap())
    });
    g.bench_function("resolve_and_compile", |b| {
        b.iter(|| Compiler::new().compile(&Resolved::new(black_box(&model)), zones.clone()).unwrap())
    });

    // One pod added or relabelled, with the compiler's cache warm from the previous model.
    let warm = std::cell::RefCell::new(Compiler::new());
    let added = {
        let mut m = model.clone();
        let text = pod_yaml(7, 999_999 % 250 + s.namespaces * s.pods_per_ns, "api", "");
        for l in load_str(&text, std::path::Path::new("pod.yaml")).loaded {
            m.insert(l.resource);
        }
        m
    };
    let relabelled = {
        let mut m = model.clone();
        let text = pod_yaml(7, 7 * s.pods_per_ns, "db", ", quarantine: 'true'");
        for l in load_str(&text, std::path::Path::new("pod.yaml")).loaded {
            if let Resource::Pod(_) = &l.resource {
                m.insert(l.resource);
            }
        }
        m
    };
    for (name, changed) in [("pod_added", &added), ("pod_relabelled", &relabelled)] {
        let (_, st) = {
            let mut c2 = Compiler::new();
            c2.compile(&resolved, zones.clone()).unwrap();
            c2.compile(&Resolved::new(changed), zones.clone()).unwrap()
        };
        eprintln!("{name}: {} of {} policy stages rebuilt", st.built, st.policies);
        g.bench_function(name, |b| {
            b.iter_batched(
                // Not measured: the compiler's state after the previous model.
                || {
                    warm.borrow_mut().compile(&resolved, zones.clone()).unwrap();
                },
                // Measured: what enforcing the change costs before the swap.
                |()| warm.borrow_mut().compile(&Resolved::new(black_box(changed)), zones.clone()).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let keys = flows(&s);
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("decide_4096_flows", |b| {
        b.iter(|| {
            let mut allowed = 0usize;
            for k in &keys {
                allowed += usize::from(table.decide(black_box(k)).verdict == moat_fastpath::classify::Verdict::Allow);
            }
            allowed
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
