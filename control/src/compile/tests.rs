//! Unit tests of the compiler; the equivalence with the evaluator is property-tested in
//! `control/tests/compiled_equivalence.rs`, the conformance suites run in
//! `control/tests/compiled_conformance.rs`.

use super::*;
use crate::Evaluator;
use crate::manifest::load_str;
use moat_fastpath::classify::{FlowKey, RuleTable, Verdict as V};
use std::path::Path;

fn example() -> Evaluator {
    let text = include_str!("../../examples/policy/cluster.yaml");
    let r = load_str(text, Path::new("cluster.yaml"));
    assert!(r.errors.is_empty());
    Evaluator::new(&r.to_model())
}

#[test]
fn cli_answers_match_the_evaluator_on_the_example() {
    let ev = example();
    let table = compile_model(ev.model()).unwrap();
    let compiled = CompiledEvaluator::new(ev.clone(), table);
    for line in include_str!("../../examples/policy/flows.jsonl").lines() {
        assert_eq!(compiled.answer_line(line), ev.answer_line(line), "{line}");
    }
    // What the compiled path cannot decide is an error line, not a guess.
    let line = r#"{"src": "frontend/web", "dst": "backend/api", "protocol": "ICMP", "icmp_type": 8}"#;
    assert!(compiled.answer_line(line).unwrap().contains("compiled path"));
}

#[test]
fn rule_table_classifies_through_the_policy_table() {
    let ev = example();
    let table = Arc::new(compile_model(ev.model()).unwrap());
    let rt = RuleTable::from_policy(Arc::clone(&table), "example");
    assert!(rt.policy().is_some());
    // Every pod pair on a few ports: the worker's verdict is the compiled flow decision's.
    let ips: Vec<IpAddr> = ev.resolved().endpoints.iter().flat_map(|e| e.ips.clone()).collect();
    for &src in &ips {
        for &dst in &ips {
            for port in [53, 80, 8080, 9090] {
                let key = FlowKey { src, dst, protocol: 6, src_port: 40000, dst_port: port, icmp: None };
                let want = ev.evaluate(&flow_of_key(&key, ev.resolved())).verdict;
                let got = rt.classify(&key);
                assert_eq!(got == V::Allow, want == crate::Verdict::Allow, "{key:?}");
            }
        }
    }
}

#[test]
fn zones_and_endpoints_for_flow_logs() {
    let ev = example();
    let table = compile_model(ev.model()).unwrap();
    for e in &ev.resolved().endpoints {
        for ip in &e.ips {
            let i = table.endpoint_of(*ip).unwrap();
            let info = &table.endpoints()[i as usize];
            assert_eq!(info.host, e.is_host());
            assert_eq!(table.zone(*ip), ev.zone(*ip), "{ip}");
        }
    }
}

#[test]
fn recompiling_reuses_unchanged_policies() {
    let ev = example();
    let mut c = Compiler::new();
    let (_, first) = c.compile(ev.resolved(), zones_of(ev.model())).unwrap();
    let (_, second) = c.compile(ev.resolved(), zones_of(ev.model())).unwrap();
    assert!(first.built > 0);
    assert_eq!(second.built, 0, "nothing changed, nothing rebuilt");
    assert_eq!(first.policies, second.policies);
}
