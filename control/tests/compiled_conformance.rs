//! The shared conformance suites through the compiled path: every flow the evaluator's
//! conformance tests check (Kubernetes e2e netpol: 48 cases, every probe matrix; Cyclonus probe,
//! traffic and matcher cases; policy-assistant NetworkPolicy cases) is decided by the compiled
//! [`PolicyTable`] and must give the expected verdict *and* the evaluator's verdict and trace.
//! The e2e cases also run through the incremental compiler, each step's actions applied as
//! model changes to the table of the step before.
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

mod common;

use common::*;
use moat_control::compile::{Compiler, IncrementalCompiler, flow_key, flow_of_key, side_trace, zones_of};
use moat_control::model::Model;
use moat_control::resolve::Resolved;
use moat_control::{Evaluator, Flow, Verdict};
use moat_fastpath::classify::PolicyTable;
use moat_fastpath::classify::policy::SideDecision;
use serde_json::Value;
use std::collections::BTreeSet;

/// The compiled table and the evaluator of one model.
struct Both {
    ev: Evaluator,
    resolved: Resolved,
    table: PolicyTable,
}

type Side = Option<(Verdict, Vec<String>)>;

/// Compiled answer: (verdict, egress, ingress).
struct Answer {
    verdict: Verdict,
    egress: Side,
    ingress: Side,
}

fn fast(v: moat_fastpath::classify::Verdict) -> Verdict {
    match v {
        moat_fastpath::classify::Verdict::Allow => Verdict::Allow,
        moat_fastpath::classify::Verdict::Deny => Verdict::Deny,
    }
}

impl Both {
    fn new(m: &Model) -> Both {
        let resolved = Resolved::new(m);
        let (table, _) = Compiler::new().compile(&resolved, zones_of(m)).unwrap();
        Both { ev: Evaluator::from_resolved(m, resolved.clone()), resolved, table }
    }

    /// The incremental compiler's table instead of a full compile.
    fn incremental(inc: &IncrementalCompiler) -> Both {
        let resolved = inc.resolved();
        Both {
            ev: Evaluator::from_resolved(inc.model(), resolved.clone()),
            resolved,
            table: PolicyTable::clone(inc.table()),
        }
    }

    /// Decide `flow` compiled; panic when verdict or trace differ from the evaluator's.
    fn decide(&self, flow: &Flow) -> Answer {
        let key = flow_key(flow).unwrap();
        let d = self.table.decide(&key);
        let side = |s: &Option<SideDecision>| s.as_ref().map(|s| (fast(s.verdict), side_trace(&self.table, s)));
        let got = Answer { verdict: fast(d.verdict), egress: side(&d.egress), ingress: side(&d.ingress) };
        let want = self.ev.evaluate(&flow_of_key(&key, &self.resolved));
        let strings = |s: &Option<moat_control::evaluate::SideResult>| {
            s.as_ref().map(|s| (s.verdict, s.policies.iter().map(ToString::to_string).collect::<Vec<_>>()))
        };
        assert_eq!(
            (got.verdict, &got.egress, &got.ingress),
            (want.verdict, &strings(&want.egress), &strings(&want.ingress)),
            "compiled and evaluator differ on {flow:?}"
        );
        got
    }
}

fn allowed(s: &Side) -> bool {
    s.as_ref().unwrap().0 == Verdict::Allow
}

// ---- Kubernetes e2e ----------------------------------------------------------------------

/// Runs every e2e case; `incremental`: through an [`IncrementalCompiler`] fed each step's
/// changes (the actions' effect on the model) instead of a full compile per step.
fn k8s_e2e_cases(what: &str, incremental: bool) {
    let Some(dir) = conformance_dir(what) else { return };
    let data = read_json(&dir.join("k8s_e2e_netpol/cases.json"));
    let cases = data["cases"].as_array().unwrap();
    let (mut checked, mut probes, mut changes, mut mismatches) = (0usize, 0usize, 0usize, Vec::new());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut m = e2e_topology(case);
        let mut inc = incremental.then(|| IncrementalCompiler::new(m.clone()).unwrap().0);
        for (si, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let before = m.clone();
            for a in step["actions"].as_array().into_iter().flatten() {
                e2e_action(&mut m, a);
            }
            let both = match &mut inc {
                Some(inc) => {
                    let step_changes = model_changes(&before, &m);
                    changes += step_changes.len();
                    inc.apply(step_changes).unwrap_or_else(|e| panic!("{name} step {si}: {e}"));
                    assert_eq!(format!("{:?}", inc.model()), format!("{m:?}"));
                    Both::incremental(inc)
                }
                None => Both::new(&m),
            };
            for probe in step["probes"].as_array().into_iter().flatten() {
                probes += 1;
                let port = probe["port"].as_u64().unwrap() as u16;
                let proto = probe["protocol"].as_str().unwrap();
                for (from, row) in probe["expected"].as_object().unwrap() {
                    for (to, want) in row.as_object().unwrap() {
                        if from == to {
                            continue;
                        }
                        let got = both.decide(&tcp_flow(pod_end(&m, from), pod_end(&m, to), proto, port));
                        checked += 1;
                        if (got.verdict == Verdict::Allow) != want.as_bool().unwrap() {
                            mismatches.push(format!("{name} step {si} {proto}/{port} {from} -> {to}"));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{what}: {} cases, {probes} probes, {checked} pod pairs, {} mismatches{}",
        cases.len(),
        mismatches.len(),
        if incremental { format!(" ({changes} changes applied incrementally)") } else { String::new() }
    );
    assert_eq!(cases.len(), 48);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[test]
fn compiled_k8s_e2e_netpol_cases() {
    k8s_e2e_cases("compiled k8s e2e netpol", false);
}

#[test]
fn incremental_k8s_e2e_netpol_cases() {
    k8s_e2e_cases("incremental k8s e2e netpol", true);
}

// ---- Cyclonus ----------------------------------------------------------------------------

#[test]
fn compiled_cyclonus_simple_example_probe() {
    let Some(dir) = conformance_dir("compiled cyclonus probe") else { return };
    let data = read_json(&dir.join("cyclonus/simple_example_probe.json"));
    let mut m = Model::new();
    let res = &data["resources"];
    for (ns, l) in res["Namespaces"].as_object().unwrap() {
        m.insert(namespace(ns, labels(l)));
    }
    // The data gives pods of namespaces y and z the same addresses. A dataplane identifies
    // endpoints by address, so here every pod gets its own (the probes are about pods, the
    // addresses are incidental); the evaluator's own conformance test keeps the originals.
    let mut used = BTreeSet::new();
    let mut readdressed = 0;
    for p in res["Pods"].as_array().unwrap() {
        let mut ip = p["IP"].as_str().unwrap().to_string();
        if !used.insert(ip.clone()) {
            readdressed += 1;
            ip = format!("192.168.2.{readdressed}");
            used.insert(ip.clone());
        }
        let ports = p["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                named_port(
                    c["PortName"].as_str().unwrap(),
                    c["Protocol"].as_str().unwrap(),
                    c["Port"].as_u64().unwrap() as u16,
                )
            })
            .collect();
        m.insert(pod(p["Namespace"].as_str().unwrap(), p["Name"].as_str().unwrap(), labels(&p["Labels"]), &ip, ports));
    }
    for pol in data["policies"].as_array().unwrap() {
        apply_object(&mut m, pol.clone(), None);
    }
    let both = Both::new(&m);
    let (mut checked, mut mismatches) = (0, Vec::new());
    for probe in data["probes"].as_array().unwrap() {
        let port = probe["port"].as_u64().unwrap() as u16;
        let proto = probe["protocol"].as_str().unwrap();
        for table in ["ingress", "egress", "combined"] {
            for (from, row) in probe["expected"][table].as_object().unwrap() {
                for (to, want) in row.as_object().unwrap() {
                    let want = match want.as_str().unwrap() {
                        "allowed" => true,
                        "blocked" => false,
                        _ => continue,
                    };
                    let r = both.decide(&tcp_flow(pod_end(&m, from), pod_end(&m, to), proto, port));
                    let got = match table {
                        "ingress" => allowed(&r.ingress),
                        "egress" => allowed(&r.egress),
                        _ => r.verdict == Verdict::Allow,
                    };
                    checked += 1;
                    if got != want {
                        mismatches.push(format!("{proto}/{port} {table} {from} -> {to}: got {got}"));
                    }
                }
            }
        }
    }
    eprintln!(
        "compiled cyclonus probe: {checked} verdicts, {} mismatches ({readdressed} pods given their own address)",
        mismatches.len()
    );
    assert!(checked > 0);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

fn cyclonus_traffic(policies: &[Value], t: &Value) -> bool {
    let TrafficCase { model: m, src, dst, protocol: proto, port } = cyclonus_traffic_case(policies, t);
    let proto = proto.as_str();
    Both::new(&m).decide(&tcp_flow(src, dst, proto, port)).verdict == Verdict::Allow
}

#[test]
fn compiled_cyclonus_traffic_and_matcher_cases() {
    let Some(dir) = conformance_dir("compiled cyclonus traffic") else { return };
    let data = read_json(&dir.join("cyclonus/simple_example_traffic.json"));
    let policies = data["policies"].as_array().unwrap();
    let mut mismatches = Vec::new();
    let cases = data["cases"].as_array().unwrap();
    for (i, c) in cases.iter().enumerate() {
        if cyclonus_traffic(policies, c) != c["expectedAllowed"].as_bool().unwrap() {
            mismatches.push(format!("traffic case {i}"));
        }
    }
    let data = read_json(&dir.join("cyclonus/matcher_unit_cases.json"));
    let matcher = data["cases"].as_array().unwrap();
    for c in matcher {
        if cyclonus_traffic(c["policies"].as_array().unwrap(), &c["traffic"]) != c["expectedAllowed"].as_bool().unwrap()
        {
            mismatches.push(format!("{} / {}", c["describe"], c["it"]));
        }
    }
    eprintln!(
        "compiled cyclonus: {} traffic + {} matcher cases, {} mismatches",
        cases.len(),
        matcher.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

// ---- policy-assistant --------------------------------------------------------------------

#[test]
fn compiled_policy_assistant_netpol_cases() {
    let Some(dir) = conformance_dir("compiled policy_assistant") else { return };
    let data = read_json(&dir.join("policy_assistant/integration_cases.json"));
    let (mut run, mut checked, mut mismatches) = (0, 0usize, Vec::new());
    for case in data["cases"].as_array().unwrap() {
        let Ok(c) = assistant_case(case) else { continue };
        run += 1;
        let both = Both::new(&c.model);
        for from in &c.pods {
            for to in &c.pods {
                if from == to {
                    continue;
                }
                for port in &c.ports {
                    for proto in &c.protocols {
                        let got = both.decide(&tcp_flow(pod_end(&c.model, from), pod_end(&c.model, to), proto, *port));
                        let (want_in, want_eg) = c.expected(from, to, *port, proto);
                        checked += 2;
                        if allowed(&got.ingress) != want_in || allowed(&got.egress) != want_eg {
                            mismatches.push(format!("{}: {from} -> {to} {proto}/{port}", c.name));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "compiled policy-assistant: {run} NetworkPolicy cases, {checked} side verdicts, {} mismatches",
        mismatches.len()
    );
    assert!(run >= 2);
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
