//! The compiled policy table against the reference evaluator: random models (namespaces, pods with
//! labels, named ports, IPv4 and IPv6, network sets, host endpoints, Kubernetes and Calico
//! policies across 1–3 tiers with Allow/Deny/Pass/Log, nets/notNets, selectors/notSelectors,
//! namespaceSelector, serviceAccounts, ports/notPorts ranges and names, protocols, ICMP type and
//! code, doNotTrack/preDNAT, staged policies), then rules mutated past what the manifest
//! validator admits (ports without protocol, notICMP on any protocol, ipVersion against the
//! nets), and random plus adversarial flows (range edges, /0 /32 /128 neighbours, ports 0 and
//! 65535, ICMP later fragments). Verdict *and* trace of both sides must be identical.
//!
//! `MOAT_EQUIV_MODELS=N` runs N models instead of the default (the larger seeded run).
// Integration tests: a panic is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

mod common;

use common::generate::Gen;
use moat_control::compile::{Compiler, flow_of_key, side_trace, zones_of};
use moat_control::evaluate::SideResult;
use moat_control::manifest::load_str;
use moat_control::resolve::Resolved;
use moat_control::{Evaluator, Verdict};
use moat_fastpath::classify::policy::SideDecision;
use std::path::Path;

fn strings(s: &Option<SideResult>) -> Option<(Verdict, Vec<String>)> {
    s.as_ref().map(|s| (s.verdict, s.policies.iter().map(ToString::to_string).collect()))
}

fn compiled(table: &moat_fastpath::classify::PolicyTable, s: &Option<SideDecision>) -> Option<(Verdict, Vec<String>)> {
    s.as_ref().map(|s| {
        assert!(!s.truncated, "trace truncated");
        let v = match s.verdict {
            moat_fastpath::classify::Verdict::Allow => Verdict::Allow,
            moat_fastpath::classify::Verdict::Deny => Verdict::Deny,
        };
        (v, side_trace(table, s))
    })
}

/// Runs `models` random models of `flows` flows each; returns (models, flows, objects loaded).
fn run(first_seed: u64, models: u64, flows: usize) -> (u64, usize, usize) {
    let (mut checked, mut loaded) = (0, 0);
    for seed in first_seed..first_seed + models {
        let mut g = Gen::new(seed);
        let text = g.model();
        let report = load_str(&text, Path::new("gen.yaml"));
        loaded += report.loaded.len();
        if std::env::var("MOAT_EQUIV_DEBUG").is_ok() {
            for e in &report.errors {
                eprintln!("seed {seed}: load error {e}");
            }
        }
        let model = report.to_model();
        let mut resolved = Resolved::new(&model);
        if g.rng.chance(50) {
            g.mutate(&mut resolved);
        }
        let ev = Evaluator::from_resolved(&model, resolved.clone());
        // Odd seeds: every policy in a decision-tree classifier; even seeds: the default
        // (linear matcher for small policies).
        let mut compiler = Compiler::new();
        if seed % 2 == 1 {
            compiler.linear_max_pieces = 0;
        }
        let (table, _) = compiler
            .compile(&resolved, zones_of(&model))
            .unwrap_or_else(|e| panic!("seed {seed}: compile failed: {e}\n{text}"));
        for _ in 0..flows {
            let key = g.flow();
            let want = ev.evaluate(&flow_of_key(&key, &resolved));
            let got = table.decide(&key);
            let (w, c) = ((want.verdict, strings(&want.egress), strings(&want.ingress)), {
                let v = match got.verdict {
                    moat_fastpath::classify::Verdict::Allow => Verdict::Allow,
                    moat_fastpath::classify::Verdict::Deny => Verdict::Deny,
                };
                (v, compiled(&table, &got.egress), compiled(&table, &got.ingress))
            });
            assert_eq!(
                c,
                w,
                "seed {seed}: flow {key:?}\nmodel:\n{text}\nerrors: {:?}",
                report.errors.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
            checked += 1;
            if std::env::var("MOAT_EQUIV_DEBUG").is_ok() {
                eprintln!("{:?} {:?} {:?}", w.0, w.1, w.2);
            }
        }
    }
    (models, checked, loaded)
}

#[test]
fn compiled_equals_evaluator_on_random_models() {
    let models = std::env::var("MOAT_EQUIV_MODELS").ok().and_then(|v| v.parse().ok()).unwrap_or(800);
    let (m, flows, loaded) = run(1, models, 300);
    eprintln!("compiled vs evaluator: {m} models ({loaded} objects loaded), {flows} flows, 0 mismatches");
}

#[test]
#[ignore]
fn dump_model() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let mut g = Gen::new(seed);
    println!("{}", g.model());
}
