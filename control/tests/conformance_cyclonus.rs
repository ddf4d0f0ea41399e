//! Cyclonus examples: the simple-example probe tables (ingress, egress and combined verdicts for
//! TCP 80/81/82 over 9 pods), the simple-example traffic queries and the matcher unit cases.
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

mod common;

use common::*;
use moat_control::model::{LabelMap, Model, Protocol};
use moat_control::resolve::EndpointId;
use moat_control::{Evaluator, Flow, FlowEnd, Verdict};
use serde_json::Value;

#[test]
fn cyclonus_simple_example_probe() {
    let Some(dir) = conformance_dir("cyclonus probe") else { return };
    let data = read_json(&dir.join("cyclonus/simple_example_probe.json"));
    let mut m = Model::new();
    let res = &data["resources"];
    for (ns, l) in res["Namespaces"].as_object().unwrap() {
        m.insert(namespace(ns, labels(l)));
    }
    for p in res["Pods"].as_array().unwrap() {
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
        m.insert(pod(
            p["Namespace"].as_str().unwrap(),
            p["Name"].as_str().unwrap(),
            labels(&p["Labels"]),
            p["IP"].as_str().unwrap(),
            ports,
        ));
    }
    for pol in data["policies"].as_array().unwrap() {
        apply_object(&mut m, pol.clone(), None);
    }
    let ev = Evaluator::new(&m);
    let (mut checked, mut not_compared, mut mismatches) = (0, 0, Vec::new());
    for probe in data["probes"].as_array().unwrap() {
        let port = probe["port"].as_u64().unwrap() as u16;
        let proto = probe["protocol"].as_str().unwrap();
        for table in ["ingress", "egress", "combined"] {
            for (from, row) in probe["expected"][table].as_object().unwrap() {
                for (to, want) in row.as_object().unwrap() {
                    let want = match want.as_str().unwrap() {
                        "allowed" => true,
                        "blocked" => false,
                        _ => {
                            // no-server (nobody listens on port 82) / undefined (self): not a policy verdict.
                            not_compared += 1;
                            continue;
                        }
                    };
                    let end = |s: &str| {
                        let (ns, n) = s.split_once('/').unwrap();
                        FlowEnd {
                            ip: m.pods[&(ns.to_string(), n.to_string())].ips[0],
                            endpoint: Some(EndpointId::Workload { namespace: ns.into(), name: n.into() }),
                        }
                    };
                    let flow = Flow {
                        src: end(from),
                        dst: end(to),
                        protocol: Protocol::parse(proto).unwrap().number(),
                        src_port: Some(40000),
                        dst_port: Some(port),
                        icmp_type: None,
                        icmp_code: None,
                    };
                    let r = ev.evaluate(&flow);
                    let got = match table {
                        "ingress" => r.ingress.as_ref().unwrap().verdict,
                        "egress" => r.egress.as_ref().unwrap().verdict,
                        _ => r.verdict,
                    } == Verdict::Allow;
                    checked += 1;
                    if got != want {
                        mismatches.push(format!("{proto}/{port} {table} {from} -> {to}: got {got}, want {want}"));
                    }
                }
            }
        }
    }
    eprintln!(
        "cyclonus simple-example probe: {checked} verdicts checked, {not_compared} no-server/undefined cells not compared, {} mismatches",
        mismatches.len()
    );
    for mm in &mismatches {
        eprintln!("  MISMATCH {mm}");
    }
    assert!(mismatches.is_empty());
}

/// Build a model with the traffic's internal peers as pods and answer it.
fn traffic_allowed(policies: &[Value], t: &Value) -> bool {
    let TrafficCase { model: m, src, dst, protocol: proto, port } = cyclonus_traffic_case(policies, t);
    let proto = proto.as_str();
    let ev = Evaluator::new(&m);
    let flow = Flow {
        src,
        dst,
        protocol: Protocol::parse(proto).unwrap().number(),
        src_port: Some(40000),
        dst_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    };
    ev.evaluate(&flow).verdict == Verdict::Allow
}

#[test]
fn cyclonus_simple_example_traffic() {
    let Some(dir) = conformance_dir("cyclonus traffic") else { return };
    let data = read_json(&dir.join("cyclonus/simple_example_traffic.json"));
    let policies = data["policies"].as_array().unwrap();
    let mut mismatches = Vec::new();
    let cases = data["cases"].as_array().unwrap();
    for (i, c) in cases.iter().enumerate() {
        let got = traffic_allowed(policies, c);
        if got != c["expectedAllowed"].as_bool().unwrap() {
            mismatches.push(format!("traffic case {i}: got {got}: {c}"));
        }
    }
    eprintln!("cyclonus simple-example traffic: {} cases, {} mismatches", cases.len(), mismatches.len());
    for mm in &mismatches {
        eprintln!("  MISMATCH {mm}");
    }
    assert!(mismatches.is_empty());
}

#[test]
fn cyclonus_matcher_unit_cases() {
    let Some(dir) = conformance_dir("cyclonus matcher") else { return };
    let data = read_json(&dir.join("cyclonus/matcher_unit_cases.json"));
    let mut mismatches = Vec::new();
    let cases = data["cases"].as_array().unwrap();
    for c in cases {
        let got = traffic_allowed(c["policies"].as_array().unwrap(), &c["traffic"]);
        if got != c["expectedAllowed"].as_bool().unwrap() {
            mismatches.push(format!("{} / {}: got {got}", c["describe"], c["it"]));
        }
    }
    eprintln!("cyclonus matcher: {} cases, {} mismatches", cases.len(), mismatches.len());
    for mm in &mismatches {
        eprintln!("  MISMATCH {mm}");
    }
    assert!(mismatches.is_empty());
}

#[allow(dead_code)]
fn _unused(_: LabelMap) {}
