//! The incremental compiler against the full compile (the oracle) and the reference evaluator:
//! random models from the same generator as `compiled_equivalence.rs`, then random sequences of
//! change batches — pods relabelled (moving in and out of selectors), re-addressed (IPv4 and
//! IPv6, address collisions), given or stripped of named ports, moved to another service
//! account or onto the host network, added and deleted; namespaces relabelled, added, deleted;
//! service accounts with labels; network sets and global network sets changed, added, deleted;
//! the host endpoint changed and deleted; Kubernetes, Calico and staged policies replaced,
//! added and deleted; tiers reordered, added, deleted; IP pools. After every batch the
//! incremental table must decide every generated flow exactly as a full compile of the
//! resulting model does (verdict, both sides' traces, endpoint identity, zone), and as the
//! evaluator does.
//!
//! `MOAT_INC_SEQUENCES=N` runs N sequences instead of the default.
// Integration tests: a panic is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::generate::{APPS, Gen, NAMED};
use moat_control::compile::{Change, Compiler, IncrementalCompiler, ResourceKey, flow_of_key, side_trace, zones_of};
use moat_control::manifest::load_str;
use moat_control::model::{LabelMap, Model, NamedPort, Protocol, Resource, ServiceAccount};
use moat_control::resolve::{Failsafe, Resolved};
use moat_control::{Evaluator, Verdict};
use moat_fastpath::classify::policy::SideDecision;
use moat_fastpath::classify::{FlowKey, PolicyTable};
use std::net::IpAddr;
use std::path::Path;

/// The one resource a generated document holds.
fn resource(text: &str) -> Resource {
    let report = load_str(text, Path::new("change.yaml"));
    assert!(
        report.errors.is_empty(),
        "{text}: {:?}",
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    report.loaded.into_iter().next().map(|l| l.resource).unwrap_or_else(|| panic!("nothing loaded from {text}"))
}

const TIERS: [&str; 3] = ["default", "first", "second"];

/// A random change batch of 1–3 changes against the current model.
fn batch(g: &mut Gen, m: &Model, counter: &mut usize) -> Vec<Change> {
    let n = 1 + if g.rng.chance(30) { g.rng.below(3) } else { 0 };
    (0..n).map(|_| change(g, m, counter)).collect()
}

fn change(g: &mut Gen, m: &Model, counter: &mut usize) -> Change {
    let tiers: Vec<String> = TIERS.iter().map(ToString::to_string).collect();
    let pods: Vec<_> = m.pods.values().cloned().collect();
    let namespaces: Vec<String> = g.namespaces.clone();
    match g.rng.below(20) {
        // An existing pod changed: labels, addresses, named ports, service account, host network.
        0..=5 if !pods.is_empty() => {
            let mut p = g.rng.pick(&pods).clone();
            match g.rng.below(7) {
                0 | 1 => {
                    p.labels.insert("app".into(), (*g.rng.pick(&APPS)).to_string());
                    if g.rng.chance(50) && p.labels.remove("tier").is_none() {
                        p.labels.insert("tier".into(), "fe".into());
                    }
                }
                2 => {
                    let v4: IpAddr = format!("10.0.{}.{}", g.rng.below(2), 1 + g.rng.below(12)).parse().unwrap();
                    p.ips.retain(IpAddr::is_ipv6);
                    p.ips.insert(0, v4);
                    if g.rng.chance(40) {
                        if p.ips.len() > 1 {
                            p.ips.truncate(1);
                        } else {
                            p.ips.push(format!("fd00::{:x}", 1 + g.rng.below(12)).parse().unwrap());
                        }
                    }
                }
                3 => {
                    if p.named_ports.is_empty() || g.rng.chance(50) {
                        let (name, proto, port) = *g.rng.pick(&NAMED);
                        p.named_ports.push(NamedPort {
                            name: name.into(),
                            protocol: Protocol::parse(proto).unwrap(),
                            port,
                        });
                    } else {
                        p.named_ports.remove(g.rng.below(p.named_ports.len()));
                    }
                }
                4 => p.service_account = if p.service_account == "robot" { "default".into() } else { "robot".into() },
                5 => p.host_network = !p.host_network && g.rng.chance(50),
                _ => p.ips.clear(),
            }
            Change::Upsert(Resource::Pod(p))
        }
        6 | 7 => {
            *counter += 1;
            Change::Upsert(resource(&g.pod_doc(*counter + 20)))
        }
        8 if !pods.is_empty() => {
            let p = g.rng.pick(&pods);
            Change::Delete(ResourceKey::Pod { namespace: p.namespace.clone(), name: p.name.clone() })
        }
        9 | 10 => {
            let ns = g.rng.pick(&namespaces).clone();
            if g.rng.chance(15) {
                Change::Delete(ResourceKey::Namespace(ns))
            } else {
                Change::Upsert(resource(&g.namespace_doc(&ns)))
            }
        }
        11 => {
            let ns = g.rng.pick(&namespaces).clone();
            let name = (*g.rng.pick(&["default", "robot"])).to_string();
            if g.rng.chance(25) {
                Change::Delete(ResourceKey::ServiceAccount { namespace: ns, name })
            } else {
                let labels = LabelMap::from([("role".to_string(), (*g.rng.pick(&["a", "b"])).to_string())]);
                Change::Upsert(Resource::ServiceAccount(ServiceAccount { namespace: ns, name, labels }))
            }
        }
        12 => {
            let i = g.rng.below(3);
            if g.rng.chance(25) {
                let r = resource(&g.netset_doc(i));
                Change::Delete(ResourceKey::of(&r))
            } else {
                Change::Upsert(resource(&g.netset_doc(i)))
            }
        }
        13 => {
            if g.rng.chance(25) {
                Change::Delete(ResourceKey::HostEndpoint("n1-eth0".into()))
            } else {
                g.has_host = true;
                Change::Upsert(resource(&g.host_doc()))
            }
        }
        14..=16 => {
            let i = g.rng.below(8);
            let r = resource(&g.policy_doc(i, &tiers));
            if g.rng.chance(20) { Change::Delete(ResourceKey::of(&r)) } else { Change::Upsert(r) }
        }
        17 => {
            let t = *g.rng.pick(&TIERS);
            if g.rng.chance(25) {
                Change::Delete(ResourceKey::Tier(t.into()))
            } else {
                let order = *g.rng.pick(&[5usize, 10, 20, 30, 2_000_000]);
                Change::Upsert(resource(&g.tier_doc(t, order)))
            }
        }
        _ => {
            let name = *g.rng.pick(&["pool-a", "pool-b"]);
            if g.rng.chance(30) {
                Change::Delete(ResourceKey::IpPool(name.into()))
            } else {
                let cidr = *g.rng.pick(&["10.0.0.0/16", "10.0.1.0/24", "fd00::/64", "192.168.50.0/24"]);
                Change::Upsert(resource(&format!(
                    "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: '{cidr}'}}\n"
                )))
            }
        }
    }
}

type SideView = Option<(Verdict, Vec<String>, String)>;

fn verdict(v: moat_fastpath::classify::Verdict) -> Verdict {
    match v {
        moat_fastpath::classify::Verdict::Allow => Verdict::Allow,
        moat_fastpath::classify::Verdict::Deny => Verdict::Deny,
    }
}

fn side(table: &PolicyTable, s: &Option<SideDecision>) -> SideView {
    s.as_ref().map(|s| {
        let ep = &table.endpoints()[s.endpoint as usize];
        let who = format!("{:?}/{}/{}", ep.namespace, ep.name, ep.host);
        (verdict(s.verdict), side_trace(table, s), who)
    })
}

fn decision(table: &PolicyTable, key: &FlowKey) -> (Verdict, SideView, SideView, Option<String>, Option<String>) {
    let d = table.decide(key);
    let zones = (table.zone(key.src).map(String::from), table.zone(key.dst).map(String::from));
    (verdict(d.verdict), side(table, &d.egress), side(table, &d.ingress), zones.0, zones.1)
}

/// Compares the incremental table with a full compile and the evaluator on `flows` flows.
fn check(g: &mut Gen, inc: &IncrementalCompiler, linear: usize, flows: usize, what: &str) -> usize {
    let model = inc.model();
    let resolved = Resolved::new(model);
    let mut compiler = Compiler::new();
    compiler.linear_max_pieces = linear;
    let (full, _) =
        compiler.compile(&resolved, zones_of(model)).unwrap_or_else(|e| panic!("{what}: full compile: {e}"));
    let ev = Evaluator::from_resolved(model, resolved.clone());
    let table = inc.table();
    // Flows between the addresses that exist now, and the fixed edge addresses.
    g.pod_ips = resolved.endpoints.iter().flat_map(|e| e.ips.iter().copied()).collect();
    for ip in &g.pod_ips {
        assert_eq!(
            table.endpoint_of(*ip).map(|e| table.endpoints()[e as usize].name.clone()),
            full.endpoint_of(*ip).map(|e| full.endpoints()[e as usize].name.clone()),
            "{what}: owner of {ip}"
        );
    }
    for _ in 0..flows {
        let key = g.flow();
        let got = decision(table, &key);
        let want = decision(&full, &key);
        assert_eq!(got, want, "{what}: flow {key:?}");
        let reference = ev.evaluate(&flow_of_key(&key, &resolved));
        let strings = |s: &Option<moat_control::evaluate::SideResult>| {
            s.as_ref().map(|s| (s.verdict, s.policies.iter().map(ToString::to_string).collect::<Vec<_>>()))
        };
        let got_sides = (got.1.map(|s| (s.0, s.1)), got.2.map(|s| (s.0, s.1)));
        assert_eq!(
            (got.0, got_sides.0, got_sides.1),
            (reference.verdict, strings(&reference.egress), strings(&reference.ingress)),
            "{what}: evaluator, flow {key:?}"
        );
    }
    flows
}

/// Runs `sequences` random sequences of `steps` batches; returns (batches, changes, flows).
fn run(first_seed: u64, sequences: u64, steps: usize, flows: usize) -> (usize, usize, usize) {
    let (mut batches, mut changes, mut checked) = (0, 0, 0);
    for seed in first_seed..first_seed + sequences {
        let mut g = Gen::new(seed);
        let text = g.model();
        let model = load_str(&text, Path::new("gen.yaml")).to_model();
        // Odd seeds: every stage a decision tree; even seeds: the default linear threshold.
        let linear = if seed % 2 == 1 { 0 } else { moat_fastpath::classify::policy::LINEAR_MAX_PIECES };
        let (mut inc, _) = IncrementalCompiler::with_options(model, Failsafe::default(), linear)
            .unwrap_or_else(|e| panic!("seed {seed}: first build: {e}\n{text}"));
        checked += check(&mut g, &inc, linear, flows, &format!("seed {seed} first build"));
        let mut counter = 0;
        let mut log = Vec::new();
        for step in 0..steps {
            let b = batch(&mut g, inc.model(), &mut counter);
            log.push(format!("{:?}", b.iter().map(Change::key).collect::<Vec<_>>()));
            changes += b.len();
            match inc.apply(b) {
                Ok((table, _)) => assert!(std::sync::Arc::ptr_eq(&table, inc.table())),
                Err(e) => panic!("seed {seed} step {step}: {e}\nchanges so far: {log:#?}\n{text}"),
            }
            batches += 1;
            checked += check(&mut g, &inc, linear, flows, &format!("seed {seed} step {step} after {log:#?}"));
        }
    }
    (batches, changes, checked)
}

#[test]
fn incremental_equals_full_compile_and_evaluator_on_random_change_sequences() {
    let sequences = std::env::var("MOAT_INC_SEQUENCES").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let (batches, changes, flows) = run(1, sequences, 30, 60);
    eprintln!(
        "incremental vs full compile and evaluator: {sequences} sequences, {batches} batches ({changes} changes), {flows} flows, 0 mismatches"
    );
}
