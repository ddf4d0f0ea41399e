//! All 48 Kubernetes e2e network-policy cases (`test/e2e/network/netpol`), every probe's full
//! reachability matrix (self-traffic excluded, as upstream ignores loopback), evaluated by the
//! reference evaluator against the destination pod's address and port (after service DNAT).
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use moat_control::{Evaluator, Verdict};

#[test]
fn k8s_e2e_netpol_cases() {
    let Some(dir) = conformance_dir("k8s_e2e_netpol") else { return };
    let data = read_json(&dir.join("k8s_e2e_netpol/cases.json"));
    let cases = data["cases"].as_array().unwrap();
    let (mut checked, mut mismatches, mut probes) = (0usize, Vec::new(), 0usize);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut m = e2e_topology(case);
        for (si, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            for a in step["actions"].as_array().into_iter().flatten() {
                e2e_action(&mut m, a);
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
                        let flow = tcp_flow(pod_end(&m, from), pod_end(&m, to), proto, port);
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
