//! All 48 Kubernetes e2e network-policy cases (`test/e2e/network/netpol`), every probe's full
//! reachability matrix (self-traffic excluded, as upstream ignores loopback), evaluated by the
//! reference evaluator against the destination pod's address and port (after service DNAT).
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use moat_control::model::{Model, Protocol, Resource};
use moat_control::resolve::EndpointId;
use moat_control::{Evaluator, Flow, FlowEnd, Verdict};
use serde_json::Value;

fn build_topology(case: &Value) -> Model {
    let mut m = Model::new();
    for ns in case["namespaces"].as_array().into_iter().flatten() {
        m.insert(namespace(ns["name"].as_str().unwrap(), labels(&ns["labels"])));
    }
    for p in case["pods"].as_array().into_iter().flatten() {
        let ports = p["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                named_port(
                    c["portName"].as_str().unwrap(),
                    c["protocol"].as_str().unwrap(),
                    u16::try_from(c["port"].as_u64().unwrap()).unwrap(),
                )
            })
            .collect();
        m.insert(pod(
            p["namespace"].as_str().unwrap(),
            p["name"].as_str().unwrap(),
            labels(&p["labels"]),
            p["ip"].as_str().unwrap(),
            ports,
        ));
    }
    m
}

fn apply_action(m: &mut Model, action: &Value) {
    let (kind, body) = action.as_object().and_then(|o| o.iter().next()).expect("action");
    match kind.as_str() {
        "createPolicy" | "updatePolicy" => {
            apply_object(m, body["policy"].clone(), body["namespace"].as_str());
        }
        "deleteAllPolicies" => m.clear_policies(),
        "addNamespaceLabels" => {
            let name = body["namespace"].as_str().unwrap();
            let ns = m.namespaces.get_mut(name).expect("namespace exists");
            ns.labels.extend(labels(&body["labels"]));
        }
        "addPodLabels" => {
            let (ns, name) = body["pod"].as_str().unwrap().split_once('/').unwrap();
            let pod = m.pods.get_mut(&(ns.to_string(), name.to_string())).expect("pod exists");
            pod.labels.extend(labels(&body["labels"]));
        }
        other => panic!("unknown action {other}"),
    }
}

fn flow_between(m: &Model, from: &str, to: &str, protocol: &str, port: u16) -> Flow {
    let end = |s: &str| {
        let (ns, name) = s.split_once('/').unwrap();
        let pod = &m.pods[&(ns.to_string(), name.to_string())];
        FlowEnd {
            ip: pod.ips[0],
            endpoint: Some(EndpointId::Workload { namespace: ns.to_string(), name: name.to_string() }),
        }
    };
    Flow {
        src: end(from),
        dst: end(to),
        protocol: Protocol::parse(protocol).unwrap().number(),
        src_port: Some(40000),
        dst_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    }
}

#[test]
fn k8s_e2e_netpol_cases() {
    let Some(dir) = conformance_dir("k8s_e2e_netpol") else { return };
    let data = read_json(&dir.join("k8s_e2e_netpol/cases.json"));
    let cases = data["cases"].as_array().unwrap();
    let (mut checked, mut mismatches, mut probes) = (0usize, Vec::new(), 0usize);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut m = build_topology(case);
        for (si, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            for a in step["actions"].as_array().into_iter().flatten() {
                apply_action(&mut m, a);
            }
            let ev = Evaluator::new(&m);
            assert!(ev.resolved().warnings.is_empty(), "{name}: {:?}", ev.resolved().warnings);
            for probe in step["probes"].as_array().into_iter().flatten() {
                probes += 1;
                let port = u16::try_from(probe["port"].as_u64().unwrap()).unwrap();
                let proto = probe["protocol"].as_str().unwrap();
                for (from, row) in probe["expected"].as_object().unwrap() {
                    for (to, want) in row.as_object().unwrap() {
                        if from == to {
                            continue;
                        }
                        let flow = flow_between(&m, from, to, proto, port);
                        let got = ev.evaluate(&flow);
                        checked += 1;
                        let want = want.as_bool().unwrap();
                        if (got.verdict == Verdict::Allow) != want {
                            mismatches.push(format!(
                                "{name} step {si} {proto}/{port} {from} -> {to}: want {want}, got {:?} (egress {:?}, ingress {:?})",
                                got.verdict,
                                got.egress.as_ref().map(|s| s.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
                                got.ingress.as_ref().map(|s| s.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "k8s e2e netpol: {} cases, {probes} probes, {checked} pod pairs checked, {} mismatches",
        cases.len(),
        mismatches.len()
    );
    for mm in mismatches.iter().take(40) {
        eprintln!("  MISMATCH {mm}");
    }
    assert_eq!(cases.len(), 48, "expected the 48 upstream cases");
    assert!(mismatches.is_empty(), "{} mismatches", mismatches.len());
}

// Silence the unused-import lint for helpers this file does not use.
#[allow(dead_code)]
fn _unused(_: Resource) {}
