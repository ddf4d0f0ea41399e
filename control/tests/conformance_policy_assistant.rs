//! policy-assistant (kubernetes-sigs/network-policy-api) integration cases: the NetworkPolicy v1
//! ones, with ingress and egress verdicts checked per side for every pod pair, port and protocol.
//! AdminNetworkPolicy / BaselineAdminNetworkPolicy cases are out of scope and counted as skipped.
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_possible_truncation)]

mod common;

use common::*;
use moat_control::{Evaluator, Verdict};

#[test]
fn policy_assistant_netpol_cases() {
    let Some(dir) = conformance_dir("policy_assistant") else { return };
    let data = read_json(&dir.join("policy_assistant/integration_cases.json"));
    let (mut run, mut skipped, mut checked, mut mismatches) = (0, Vec::new(), 0usize, Vec::new());
    for case in data["cases"].as_array().unwrap() {
        let c = match assistant_case(case) {
            Ok(c) => c,
            Err(name) => {
                skipped.push(name);
                continue;
            }
        };
        run += 1;
        let ev = Evaluator::new(&c.model);
        for from in &c.pods {
            for to in &c.pods {
                if from == to {
                    continue;
                }
                for port in &c.ports {
                    for proto in &c.protocols {
                        let flow = tcp_flow(pod_end(&c.model, from), pod_end(&c.model, to), proto, *port);
                        let got = ev.evaluate(&flow);
                        let (want_in, want_eg) = c.expected(from, to, *port, proto);
                        let got_in = got.ingress.as_ref().unwrap().verdict == Verdict::Allow;
                        let got_eg = got.egress.as_ref().unwrap().verdict == Verdict::Allow;
                        checked += 2;
                        if got_in != want_in || got_eg != want_eg {
                            mismatches.push(format!(
                                "{}: {from} -> {to} {proto}/{port}: ingress {got_in} (want {want_in}), egress {got_eg} (want {want_eg})",
                                c.name
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
