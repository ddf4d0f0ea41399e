//! policy-assistant (kubernetes-sigs/network-policy-api) integration cases: the NetworkPolicy v1
//! ones, with ingress and egress verdicts checked per side for every pod pair, port and protocol.
//! AdminNetworkPolicy / BaselineAdminNetworkPolicy cases are out of scope and counted as skipped.
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

mod common;

use common::*;
use moat_control::model::{LabelMap, Model, Protocol};
use moat_control::resolve::EndpointId;
use moat_control::{Evaluator, Flow, FlowEnd, Verdict};
use serde_json::Value;
use std::collections::BTreeSet;

#[test]
fn policy_assistant_netpol_cases() {
    let Some(dir) = conformance_dir("policy_assistant") else { return };
    let data = read_json(&dir.join("policy_assistant/integration_cases.json"));
    let (mut run, mut skipped, mut checked, mut mismatches) = (0, Vec::new(), 0usize, Vec::new());
    for case in data["cases"].as_array().unwrap() {
        let name = format!("{} / {}", case["suite"].as_str().unwrap(), case["name"].as_str().unwrap());
        let has_anp = case["anps"].as_array().is_some_and(|a| !a.is_empty()) || !case["banp"].is_null();
        if has_anp {
            skipped.push(name);
            continue;
        }
        run += 1;
        let r = &case["resources"];
        let strs = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
        };
        let (nss, pods, protos) = (strs(&r["namespaces"]), strs(&r["podNames"]), strs(&r["protocols"]));
        let ports: Vec<u16> = r["ports"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap() as u16).collect();
        let mut m = Model::new();
        for (ni, ns) in nss.iter().enumerate() {
            m.insert(namespace(ns, LabelMap::from([("ns".to_string(), ns.clone())])));
            for (pi, p) in pods.iter().enumerate() {
                let named = ports
                    .iter()
                    .flat_map(|port| {
                        protos
                            .iter()
                            .map(move |pr| named_port(&format!("serve-{port}-{}", pr.to_lowercase()), pr, *port))
                    })
                    .collect();
                let ip = format!("10.{}.0.{}", ni + 1, pi + 10);
                m.insert(pod(ns, p, LabelMap::from([("pod".to_string(), p.clone())]), &ip, named));
            }
        }
        for np in case["netpols"].as_array().into_iter().flatten() {
            apply_object(&mut m, np.clone(), None);
        }
        let ev = Evaluator::new(&m);
        let listed = |key: &str| -> BTreeSet<(String, String, u64, String)> {
            case[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f["from"].as_str().unwrap().to_string(),
                        f["to"].as_str().unwrap().to_string(),
                        f["port"].as_u64().unwrap(),
                        f["protocol"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let (non_in, non_eg) = (listed("nonDefaultIngress"), listed("nonDefaultEgress"));
        let default_in = case["defaultIngress"] == "allowed";
        let default_eg = case["defaultEgress"] == "allowed";
        let all: Vec<String> = nss.iter().flat_map(|n| pods.iter().map(move |p| format!("{n}/{p}"))).collect();
        for from in &all {
            for to in &all {
                if from == to {
                    continue;
                }
                for port in &ports {
                    for proto in &protos {
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
                            dst_port: Some(*port),
                            icmp_type: None,
                            icmp_code: None,
                        };
                        let got = ev.evaluate(&flow);
                        let key = (from.clone(), to.clone(), u64::from(*port), proto.clone());
                        let want_in = default_in != non_in.contains(&key);
                        let want_eg = default_eg != non_eg.contains(&key);
                        let got_in = got.ingress.as_ref().unwrap().verdict == Verdict::Allow;
                        let got_eg = got.egress.as_ref().unwrap().verdict == Verdict::Allow;
                        checked += 2;
                        if got_in != want_in || got_eg != want_eg {
                            mismatches.push(format!(
                                "{name}: {from} -> {to} {proto}/{port}: ingress {got_in} (want {want_in}), egress {got_eg} (want {want_eg})"
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "policy-assistant: {run} NetworkPolicy cases run ({checked} side verdicts), {} mismatches; {} ANP/BANP cases SKIPPED (out of scope)",
        mismatches.len(),
        skipped.len()
    );
    for s in &skipped {
        eprintln!("  skipped (ANP/BANP): {s}");
    }
    for mm in &mismatches {
        eprintln!("  MISMATCH {mm}");
    }
    assert!(run >= 2);
    assert!(mismatches.is_empty());
}
