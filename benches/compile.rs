//! The policy compiler on a policy-shaped cluster: 5,000 pods in 500 namespaces with 2,000
//! Kubernetes and Calico policies (1,000 NetworkPolicies, 500 Calico NetworkPolicies, 500
//! GlobalNetworkPolicies in three tiers), generated here with a fixed seed.
//!
//! `cargo bench --bench compile` measures
//! * `compile/full_compile`: `Compiler::compile` from a resolved model with a cold cache, and
//!   `compile/resolve_and_compile`: model → `Resolved` → table (what a manifest change costs);
//!   `compile/incremental_first_build`: `IncrementalCompiler::new` (the same from scratch,
//!   keeping the state the incremental path needs);
//! * `compile/recompile_pod_added` / `compile/recompile_pod_relabelled`: one pod changed, model →
//!   `Resolved` → table through `Compiler::compile` with its stage cache warm (the path before
//!   the incremental compiler);
//! * `incremental/*`: one change applied by `IncrementalCompiler::apply`, from the change to
//!   the next `PolicyTable`: a pod added, a pod relabelled (out of the selectors of its app,
//!   into those of another), a pod deleted, a namespace relabelled (its ten pods move from
//!   one team's selectors to another's), one Calico policy changed. Each iteration first
//!   undoes the previous one (not measured), so every measured apply is the same change;
//! * `lookup`: `PolicyTable::decide` over 4,096 new flows (same-namespace, cross-namespace and
//!   external peers), ns per flow, on the fully compiled table and on the incremental one.
//!
//! Under `cargo test` (no `--bench`) the cluster is a tenth of the size, so the test run is quick.

// A benchmark: a panic on its own generated input is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use moat_control::compile::{Change, Compiler, IncrementalCompiler, ResourceKey, side_trace, zones_of};
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
        docs.push(namespace_yaml(ns, team));
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
        docs.push(web_egress(ns, team, ""));
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

/// The one resource of a manifest.
fn resource(text: &str) -> Resource {
    load_str(text, std::path::Path::new("change.yaml")).loaded.into_iter().next().unwrap().resource
}

/// The `web-egress` policy of a namespace, with `extra` appended to its egress rules.
fn web_egress(ns: usize, team: usize, extra: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: web-egress, namespace: ns{ns}}}\nspec:\n  order: 500\n  selector: app == 'web'\n  types: [Egress]\n  egress:\n  - {{action: Allow, protocol: UDP, destination: {{ports: [53]}}}}\n  - {{action: Allow, protocol: TCP, destination: {{namespaceSelector: \"team == 't{team}'\", selector: \"app in {{'api', 'web'}}\", ports: [http, 443]}}}}\n  - {{action: Allow, protocol: TCP, destination: {{selector: \"kind == 'partner'\", namespaceSelector: global()}}}}\n{extra}  - {{action: Deny}}\n"
    )
}

fn namespace_yaml(ns: usize, team: usize) -> String {
    let env = if ns % 3 == 0 { "prod" } else { "dev" };
    let monitoring = if ns % 50 == 0 { ", monitoring: 'true'" } else { "" };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}, labels: {{team: t{team}, env: {env}{monitoring}}}}}\n"
    )
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

    g.bench_function("incremental_first_build", |b| {
        b.iter_batched(|| model.clone(), |m| IncrementalCompiler::new(black_box(m)).unwrap(), BatchSize::PerIteration)
    });

    // The changes, each with the change that undoes it.
    let pods = s.namespaces * s.pods_per_ns;
    let added_pod = resource(&pod_yaml(7, pods + 1, "api", ""));
    let relabelled_pod = resource(&pod_yaml(7, 7 * s.pods_per_ns, "db", ", quarantine: 'true'"));
    let original_pod = resource(&pod_yaml(7, 7 * s.pods_per_ns, APPS[0], ""));
    let deleted = ResourceKey::Pod { namespace: "ns7".into(), name: format!("p{}", 7 * s.pods_per_ns + 1) };
    let deleted_pod = resource(&pod_yaml(7, 7 * s.pods_per_ns + 1, APPS[1], ""));
    let changes: Vec<(&str, Change, Change)> = vec![
        ("pod_added", Change::Upsert(added_pod.clone()), Change::Delete(ResourceKey::of(&added_pod))),
        ("pod_relabelled", Change::Upsert(relabelled_pod), Change::Upsert(original_pod)),
        ("pod_deleted", Change::Delete(deleted), Change::Upsert(deleted_pod)),
        (
            "namespace_relabelled",
            Change::Upsert(resource(&namespace_yaml(7, 8))),
            Change::Upsert(resource(&namespace_yaml(7, 7))),
        ),
        (
            "policy_changed",
            Change::Upsert(resource(&web_egress(
                7,
                7,
                "  - {action: Allow, protocol: TCP, destination: {ports: [8443]}}\n",
            ))),
            Change::Upsert(resource(&web_egress(7, 7, ""))),
        ),
    ];

    // The path before the incremental compiler: a full recompile with the stage cache warm.
    let warm = std::cell::RefCell::new(Compiler::new());
    for (name, change) in [("recompile_pod_added", &changes[0].1), ("recompile_pod_relabelled", &changes[1].1)] {
        let mut changed = model.clone();
        if let Change::Upsert(r) = change {
            changed.insert(r.clone());
        }
        g.bench_function(name, |b| {
            b.iter_batched(
                // Not measured: the compiler's state after the previous model.
                || {
                    warm.borrow_mut().compile(&resolved, zones.clone()).unwrap();
                },
                // Measured: what enforcing the change costs before the swap.
                |()| warm.borrow_mut().compile(&Resolved::new(black_box(&changed)), zones.clone()).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();

    let (inc, first) = IncrementalCompiler::new(model.clone()).unwrap();
    eprintln!(
        "incremental first build: {} endpoints, {} stages built, {} chains, {} selectors",
        first.endpoints, first.stages_built, first.chains, first.selectors
    );
    let inc = std::cell::RefCell::new(inc);
    let mut g = c.benchmark_group("incremental");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, change, undo) in &changes {
        let (_, st) = inc.borrow_mut().apply(vec![change.clone()]).unwrap();
        inc.borrow_mut().apply(vec![undo.clone()]).unwrap();
        eprintln!(
            "{name}: {} owners changed, {} of {} selectors recomputed ({} changed), {} stages recomputed, {} built, {} endpoints rechained; written: {} endpoints, {} chains, {} stages, {} addresses, {} traces",
            st.owners_changed,
            st.selectors_recomputed,
            st.selectors,
            st.selectors_changed,
            st.stages_recomputed,
            st.stages_built,
            st.endpoints_rechained,
            st.endpoints_written,
            st.chains_written,
            st.stages_written,
            st.addresses_written,
            st.traces_added
        );
        g.bench_function(*name, |b| {
            b.iter_batched(
                // Not measured: undo the previous iteration's change.
                || {
                    inc.borrow_mut().apply(vec![undo.clone()]).unwrap();
                },
                // Measured: from the change to the next table, ready to publish.
                |()| inc.borrow_mut().apply(vec![black_box(change.clone())]).unwrap(),
                BatchSize::PerIteration,
            )
        });
        inc.borrow_mut().apply(vec![undo.clone()]).unwrap();
    }
    g.finish();
    let inc_table = std::sync::Arc::clone(inc.borrow().table());

    let keys = flows(&s);
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for (name, table) in [("decide_4096_flows", &table), ("decide_4096_flows_incremental_table", &*inc_table)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut allowed = 0usize;
                for k in &keys {
                    allowed +=
                        usize::from(table.decide(black_box(k)).verdict == moat_fastpath::classify::Verdict::Allow);
                }
                allowed
            })
        });
    }
    // Every change was undone: both tables decide alike, traces included (the benchmark's
    // own sanity check; the equivalence tests are in control/tests).
    for k in &keys {
        let (a, b) = (table.decide(k), inc_table.decide(k));
        let traces = |t: &moat_fastpath::classify::PolicyTable, d: &moat_fastpath::classify::FlowDecision| {
            [d.egress, d.ingress].map(|s| s.map(|s| side_trace(t, &s)))
        };
        assert_eq!((a.verdict, traces(&table, &a)), (b.verdict, traces(&inc_table, &b)), "{k:?}");
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
