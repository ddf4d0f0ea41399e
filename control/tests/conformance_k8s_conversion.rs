//! libcalico-go's Kubernetes → Calico conversion cases (`conversion_test.go`): network
//! policies (exact / order-free / per-field checks, dropped rules), peers, selectors, port
//! simplification and profiles.
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use moat_control::convert::{self, SelectorType};
use moat_control::model::k8s::{LabelSelector, NetworkPolicyPeer, NetworkPolicySpec};
use moat_control::model::{EntityRule, K8sNetworkPolicy, Namespace, Port, Rule, ServiceAccount};
use moat_control::selector::Selector;
use serde_json::{Value, json};

fn canon_selector(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    Selector::parse(s).unwrap_or_else(|e| panic!("expected selector {s:?}: {e}")).to_string()
}

fn norm_ports(v: &Value) -> Value {
    Value::Array(
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| match p {
                Value::String(s) => Value::String(s.clone()),
                other => Value::String(other.to_string()),
            })
            .collect(),
    )
}

fn norm_nets(v: &Value) -> Value {
    Value::Array(v.as_array().into_iter().flatten().cloned().collect())
}

/// Normalise an expected entity rule (JSON) into the comparison form.
fn norm_expected_entity(v: &Value) -> Value {
    json!({
        "selector": canon_selector(v["selector"].as_str().unwrap_or_default()),
        "namespaceSelector": canon_selector(v["namespaceSelector"].as_str().unwrap_or_default()),
        "nets": norm_nets(&v["nets"]),
        "notNets": norm_nets(&v["notNets"]),
        "ports": norm_ports(&v["ports"]),
    })
}

fn norm_expected_rule(v: &Value) -> Value {
    json!({
        "action": v["action"],
        "protocol": v["protocol"],
        "source": norm_expected_entity(&v["source"]),
        "destination": norm_expected_entity(&v["destination"]),
    })
}

fn norm_entity(e: &EntityRule) -> Value {
    assert!(e.not_selector.is_none() && e.service_accounts.is_none() && e.not_ports.is_empty());
    json!({
        "selector": e.selector.as_ref().map(ToString::to_string).unwrap_or_default(),
        "namespaceSelector": e.namespace_selector.as_ref().map(ToString::to_string).unwrap_or_default(),
        "nets": e.nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "notNets": e.not_nets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ports": e.ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn norm_rule(r: &Rule) -> Value {
    json!({
        "action": format!("{:?}", r.action),
        "protocol": r.protocol.map(|p| p.to_string()),
        "source": norm_entity(&r.source),
        "destination": norm_entity(&r.destination),
    })
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

fn check_rules(name: &str, dir: &str, got: &[Rule], expected: &Value, how: &str, failures: &mut Vec<String>) {
    let got: Vec<Value> = got.iter().map(norm_rule).collect();
    match how {
        "fieldChecks" => {
            let count = expected[format!("{dir}Count")].as_u64();
            if let Some(c) = count {
                if got.len() as u64 != c {
                    failures.push(format!("{name}: {dir} count {} != {c}", got.len()));
                    return;
                }
            } else if let Some(list) = expected[dir].as_array() {
                if got.len() != list.len() {
                    failures.push(format!("{name}: {dir} count {} != {}", got.len(), list.len()));
                }
                return;
            }
            for check in expected[format!("{dir}FieldChecks")].as_array().into_iter().flatten() {
                let i = usize::try_from(check["index"].as_u64().unwrap()).unwrap();
                for (k, want) in check.as_object().unwrap() {
                    if k == "index" {
                        continue;
                    }
                    let want = if k.ends_with("elector") {
                        Value::String(canon_selector(want.as_str().unwrap_or_default()))
                    } else if k.ends_with("ports") {
                        norm_ports(want)
                    } else {
                        want.clone()
                    };
                    let have = field(&got[i], k);
                    if have != &want {
                        failures.push(format!("{name}: {dir}[{i}].{k}: got {have}, want {want}"));
                    }
                }
            }
        }
        _ => {
            let want: Vec<Value> = expected[dir].as_array().into_iter().flatten().map(norm_expected_rule).collect();
            let same = if how == "exact" {
                got == want
            } else {
                let mut g: Vec<String> = got.iter().map(ToString::to_string).collect();
                let mut w: Vec<String> = want.iter().map(ToString::to_string).collect();
                g.sort();
                w.sort();
                g == w
            };
            if !same {
                failures.push(format!("{name}: {dir} ({how}):\n   got  {got:?}\n   want {want:?}"));
            }
        }
    }
}

#[test]
fn k8s_to_calico_conversion_cases() {
    let Some(dir) = conformance_dir("calico_k8s_conversion") else { return };
    let data = read_json(&dir.join("calico_k8s_conversion/conversion_cases.json"));
    let mut failures = Vec::new();
    let mut counts = [0usize; 5];

    for case in data["networkPolicyCases"].as_array().unwrap() {
        counts[0] += 1;
        let name = case["name"].as_str().unwrap();
        let input = &case["input"];
        let spec: NetworkPolicySpec = serde_json::from_value(input["spec"].clone()).unwrap();
        let np = K8sNetworkPolicy {
            namespace: input["metadata"]["namespace"].as_str().unwrap().to_string(),
            name: input["metadata"]["name"].as_str().unwrap().to_string(),
            spec,
        };
        let got = convert::k8s_policy_to_calico(&np).unwrap();
        let exp = &case["expected"];
        if let Some(n) = exp["legacyV3Name"].as_str() {
            if got.name != n {
                failures.push(format!("{name}: name {} != {n}", got.name));
            }
        }
        if let Some(n) = exp["keyName"].as_str() {
            assert_eq!(np.name, n, "{name}: keyName is the unprefixed name");
        }
        if let Some(ns) = exp["namespace"].as_str() {
            assert_eq!(got.namespace, ns);
        }
        if let Some(o) = exp["order"].as_f64() {
            if got.spec.order != Some(o) {
                failures.push(format!("{name}: order {:?}", got.spec.order));
            }
        }
        if let Some(t) = exp["tier"].as_str() {
            if got.spec.tier.as_deref() != Some(t) {
                failures.push(format!("{name}: tier {:?}", got.spec.tier));
            }
        }
        if let Some(s) = exp["selector"].as_str() {
            if got.selector_text != s {
                failures.push(format!("{name}: selector {:?} != {s:?}", got.selector_text));
            }
            let have = got.spec.selector.as_ref().map(ToString::to_string).unwrap_or_default();
            assert_eq!(have, canon_selector(s));
        }
        if let Some(types) = exp["types"].as_array() {
            let have: Vec<String> = got.spec.types.iter().flatten().map(|t| format!("{t:?}")).collect();
            let want: Vec<String> = types.iter().map(|t| t.as_str().unwrap().to_string()).collect();
            if have != want {
                failures.push(format!("{name}: types {have:?} != {want:?}"));
            }
        }
        let how = case["rulesMatch"].as_str().unwrap_or("exact");
        for d in ["ingress", "egress"] {
            if exp.get(d).is_some() || exp.get(format!("{d}Count")).is_some() {
                let rules = if d == "ingress" { &got.spec.ingress } else { &got.spec.egress };
                check_rules(name, d, rules, exp, how, &mut failures);
            }
        }
        match (&exp["error"], &got.error) {
            (Value::Null, None) => {}
            (Value::Null, Some(e)) => failures.push(format!("{name}: unexpected error {e}")),
            (want, None) => failures.push(format!("{name}: expected error {want}")),
            (want, Some(e)) => {
                assert_eq!(want["policyName"].as_str(), Some(e.policy_name.as_str()));
                let want_bad: Vec<(String, u64, String)> = want["badRules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| {
                        (
                            b["direction"].as_str().unwrap().to_string(),
                            b["ruleIndex"].as_u64().unwrap(),
                            b["reason"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                let got_bad: Vec<(String, u64, String)> = e
                    .bad_rules
                    .iter()
                    .map(|b| (b.direction.to_string(), b.rule_index as u64, b.reason.clone()))
                    .collect();
                if want_bad != got_bad {
                    failures.push(format!("{name}: bad rules {got_bad:?} != {want_bad:?}"));
                }
            }
        }
    }

    for case in data["peerCases"].as_array().unwrap() {
        counts[1] += 1;
        let peer: NetworkPolicyPeer = serde_json::from_value(case["peer"].clone()).unwrap();
        let (sel, ns_sel, nets, not_nets) = convert::k8s_peer_to_calico_fields(Some(&peer));
        let e = &case["expected"];
        let strs = |v: &Value| -> Vec<String> {
            v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
        };
        if sel != e["selector"].as_str().unwrap()
            || ns_sel != e["namespaceSelector"].as_str().unwrap()
            || nets != strs(&e["nets"])
            || not_nets != strs(&e["notNets"])
        {
            failures.push(format!("peer {}: got {sel:?} {ns_sel:?} {nets:?} {not_nets:?}", case["name"]));
        }
    }

    for case in data["selectorConversionCases"].as_array().unwrap() {
        counts[2] += 1;
        let sel: Option<LabelSelector> = serde_json::from_value(case["selector"].clone()).unwrap();
        let ty = if case["type"] == "pod" { SelectorType::Pod } else { SelectorType::Namespace };
        let got = convert::k8s_selector_to_calico(sel.as_ref(), ty);
        if got != case["expected"].as_str().unwrap() {
            failures.push(format!("selector {}: got {got:?} want {}", case["name"], case["expected"]));
        }
    }

    for case in data["portSimplificationCases"].as_array().unwrap() {
        counts[3] += 1;
        let input = case["input"].as_str().unwrap();
        let ports: Vec<Port> = input.split(',').filter(|s| !s.is_empty()).map(|s| Port::parse(s).unwrap()).collect();
        let got: Vec<String> = convert::simplify_ports(ports).iter().map(ToString::to_string).collect();
        if got.join(",") != case["expected"].as_str().unwrap() {
            failures.push(format!("simplify {input:?}: got {got:?} want {}", case["expected"]));
        }
    }

    let profiles = &data["profileCases"];
    for case in profiles["namespace"].as_array().unwrap() {
        counts[4] += 1;
        let i = &case["input"];
        // Profiles are built from the namespace's declared labels only (no API-server label).
        let ns = Namespace { name: i["name"].as_str().unwrap().to_string(), labels: labels(&i["labels"]) };
        let p = convert::namespace_to_profile(&ns);
        let e = &case["expected"];
        if p.name != e["profileName"].as_str().unwrap()
            || p.labels_to_apply != labels(&e["labelsToApply"])
            || p.ingress.len() != e["ingress"].as_array().unwrap().len()
            || p.egress.len() != e["egress"].as_array().unwrap().len()
        {
            failures.push(format!("namespace profile {}: got {p:?}", case["name"]));
        }
    }
    for case in profiles["serviceAccount"].as_array().unwrap() {
        counts[4] += 1;
        let i = &case["input"];
        let sa = ServiceAccount {
            namespace: i["namespace"].as_str().unwrap().to_string(),
            name: i["name"].as_str().unwrap().to_string(),
            labels: labels(&i["labels"]),
        };
        let p = convert::service_account_to_profile(&sa);
        let e = &case["expected"];
        let mut ok = e["profileName"].as_str().is_none_or(|n| n == p.name);
        if let Some(l) = e.get("labelsToApply") {
            ok &= p.labels_to_apply == labels(l);
        }
        if let Some(r) = e.get("ingress") {
            ok &= p.ingress.len() == r.as_array().unwrap().len() && p.egress.is_empty();
        }
        if !ok {
            failures.push(format!("service-account profile {}: got {p:?}", case["name"]));
        }
    }

    eprintln!(
        "k8s→Calico conversion: {} policy, {} peer, {} selector, {} port-simplification, {} profile cases; {} failures",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        failures.len()
    );
    for f in &failures {
        eprintln!("  FAIL {f}");
    }
    assert!(failures.is_empty());
}
