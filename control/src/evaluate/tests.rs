//! One test (at least) per semantic rule of the policy model, independent of `../shared`.

use super::*;
use crate::manifest::load_str;
use std::path::Path;

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {env: dev}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: db-sa, namespace: a, labels: {role: database}}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: a, labels: {app: db}}
spec: {serviceAccountName: db-sa, containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: p3, namespace: b, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.3}
"#;

fn ev(extra: &str) -> Evaluator {
    let text = format!("{BASE}\n---\n{extra}");
    let r = load_str(&text, Path::new("test.yaml"));
    assert!(r.errors.is_empty(), "{:?}", r.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings.iter().map(ToString::to_string).collect::<Vec<_>>());
    Evaluator::new(&r.to_model())
}

/// A query without ports or ICMP type and code; tests fill in what they need.
fn query(src: &str, dst: &str, protocol: crate::model::Protocol) -> FlowQuery {
    FlowQuery {
        src: src.into(),
        dst: dst.into(),
        protocol,
        dst_port: None,
        src_port: None,
        icmp_type: None,
        icmp_code: None,
    }
}

fn flow(e: &Evaluator, src: &str, dst: &str, proto: &str, port: u16) -> FlowResult {
    let protocol = crate::model::Protocol::parse(proto).unwrap();
    let q = FlowQuery { dst_port: Some(port), src_port: Some(33333), ..query(src, dst, protocol) };
    e.evaluate(&e.flow_from_query(&q).unwrap())
}

fn icmp(e: &Evaluator, src: &str, dst: &str, t: u8, c: u8) -> FlowResult {
    let q = FlowQuery { icmp_type: Some(t), icmp_code: Some(c), ..query(src, dst, crate::model::Protocol::Icmp) };
    e.evaluate(&e.flow_from_query(&q).unwrap())
}

fn trace(entries: &[TraceEntry]) -> Vec<String> {
    entries.iter().map(ToString::to_string).collect()
}

fn ing(r: &FlowResult) -> Vec<String> {
    trace(&r.ingress.as_ref().unwrap().policies)
}

fn egr(r: &FlowResult) -> Vec<String> {
    trace(&r.egress.as_ref().unwrap().policies)
}

/// The ingress side's trace with staged policies in force.
fn staged_ing(r: &FlowResult) -> Vec<String> {
    trace(&r.ingress.as_ref().unwrap().staged)
}

fn allowed(r: &FlowResult) -> bool {
    r.verdict == Verdict::Allow
}

/// GlobalNetworkPolicy applying to pods with `app == 'db'` (ingress) with the given rules.
fn gnp_db(rules: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: t}}\nspec:\n  selector: app == 'db'\n  types: [Ingress]\n  ingress:\n{rules}"
    )
}

/// NetworkPolicy `t` in namespace `a` applying to pods with `app == 'db'` with the given ingress list.
fn np_db(ingress: &str) -> String {
    format!(
        r#"
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: t, namespace: a}}
spec:
  selector: app == 'db'
  ingress: {ingress}
"#
    )
}

/// Kubernetes NetworkPolicy `np` in namespace `a` with spec `enforced`, and a
/// StagedKubernetesNetworkPolicy of the same name with spec `staged`.
fn knp_and_staged(enforced: &str, staged: &str) -> Evaluator {
    ev(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: np, namespace: a}}
spec: {enforced}
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {{name: np, namespace: a}}
spec: {staged}
"#
    ))
}

#[test]
fn workload_labels_include_calico_namespace_and_service_account_labels() {
    let e = ev("");
    let p2 = e.resolved().endpoint(&EndpointId::Workload { namespace: "a".into(), name: "p2".into() }).unwrap();
    let l = &p2.labels;
    assert_eq!(l["app"], "db");
    assert_eq!(l["projectcalico.org/namespace"], "a");
    assert_eq!(l["projectcalico.org/orchestrator"], "k8s");
    assert_eq!(l["projectcalico.org/serviceaccount"], "db-sa");
    assert_eq!(l["pcns.env"], "prod");
    assert_eq!(l["pcns.projectcalico.org/name"], "a");
    assert_eq!(l["pcns.kubernetes.io/metadata.name"], "a");
    assert_eq!(l["pcsa.role"], "database");
    assert_eq!(l["pcsa.projectcalico.org/name"], "db-sa");
}

#[test]
fn no_policy_means_namespace_profile_allows() {
    let e = ev("");
    let r = flow(&e, "a/p1", "a/p2", "TCP", 80);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|__PROFILE__|__PROFILE__.kns.a|allow|0"]);
    assert_eq!(egr(&r), ["0|__PROFILE__|__PROFILE__.kns.a|allow|0"]);
}

#[test]
fn kubernetes_policy_is_converted_and_traced_as_knp_default() {
    let e = ev(r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: a}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 5432);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|default|a/knp.default.db|allow|0"]);
    // Other namespace's web pod: podSelector alone is confined to the policy's namespace.
    let r = flow(&e, "b/p3", "a/p2", "TCP", 5432);
    assert!(!allowed(&r));
    assert_eq!(ing(&r), ["0|default|a/knp.default.db|deny|-1"]);
    // Egress of p1 is not affected (policyTypes defaulted to Ingress only).
    assert_eq!(egr(&r).len(), 1);
}

#[test]
fn namespace_selector_matches_namespace_labels() {
    let e = ev(&gnp_db("  - action: Allow\n    source: {namespaceSelector: env == 'dev'}\n"));
    assert!(allowed(&flow(&e, "b/p3", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn service_account_selector_matches_service_account_labels() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: t}
spec:
  selector: app == 'web'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {serviceAccounts: {selector: role == 'database'}}
"#);
    assert!(allowed(&flow(&e, "a/p2", "a/p1", "TCP", 1)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p1", "TCP", 1)));
}

#[test]
fn service_account_names_match_by_name() {
    let e = ev(&gnp_db("  - action: Allow\n    source: {serviceAccounts: {names: [default]}}\n"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn tiers_run_in_order_and_pass_skips_to_next_tier() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: second}
spec: {order: 20}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: second.deny}
spec: {tier: second, selector: app == 'db', types: [Ingress], ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first.pass}
spec: {tier: first, selector: app == 'db', types: [Ingress], ingress: [{action: Pass, source: {selector: app == 'web'}}, {action: Allow}]}
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(!allowed(&r));
    assert_eq!(ing(&r), ["0|first|first.pass|pass|0", "1|second|second.deny|deny|0"]);
    // Not web: the first tier's Allow decides and the second tier never runs.
    let e2 = ev(r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: first}
spec: {order: 10}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: first.pass}
spec: {tier: first, selector: app == 'db', types: [Ingress], ingress: [{action: Pass, source: {selector: app == 'nothing'}}, {action: Allow}]}
"#);
    assert_eq!(ing(&flow(&e2, "a/p1", "a/p2", "TCP", 1)), ["0|first|first.pass|allow|1"]);
}

#[test]
fn pass_out_of_the_last_tier_reaches_the_profile() {
    let e = ev(&gnp_db("  - action: Pass\n"));
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|default|default.t|pass|0", "1|__PROFILE__|__PROFILE__.kns.a|allow|0"]);
}

#[test]
fn policies_run_by_order_then_name_and_rules_first_match() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: b-deny}
spec: {order: 5, selector: app == 'db', types: [Ingress], ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a-allow}
spec: {order: 5, selector: app == 'db', types: [Ingress], ingress: [{action: Allow, protocol: UDP}, {action: Allow}, {action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: z-first}
spec: {order: 1, selector: app == 'db', types: [Ingress], ingress: [{action: Deny, protocol: SCTP}]}
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|default|default.a-allow|allow|1"]);
    let r = flow(&e, "a/p1", "a/p2", "SCTP", 1);
    assert_eq!(ing(&r), ["0|default|default.z-first|deny|0"]);
}

#[test]
fn policy_without_order_comes_after_ordered_ones() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a-unordered}
spec: {selector: app == 'db', types: [Ingress], ingress: [{action: Deny}]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: z-ordered}
spec: {order: 1000000, selector: app == 'db', types: [Ingress], ingress: [{action: Allow}]}
"#);
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn log_is_recorded_and_evaluation_continues() {
    let e = ev(&gnp_db("  - action: Log\n  - action: Allow\n"));
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|default|default.t|log|0", "1|default|default.t|allow|1"]);
}

#[test]
fn end_of_tier_denies_with_rule_index_minus_one() {
    let e = ev(&gnp_db("  - action: Allow\n    protocol: UDP\n"));
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(!allowed(&r));
    assert_eq!(ing(&r), ["0|default|default.t|deny|-1"]);
}

#[test]
fn tier_default_action_pass_continues_to_next_tier() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: soft}
spec: {order: 1, defaultAction: Pass}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: soft.nothing}
spec: {tier: soft, selector: app == 'db', types: [Ingress], ingress: [{action: Deny, protocol: UDP}]}
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|soft|soft.nothing|pass|-1", "1|__PROFILE__|__PROFILE__.kns.a|allow|0"]);
}

#[test]
fn tier_without_applicable_policy_is_skipped() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: other}
spec: {order: 1}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: other.x}
spec: {tier: other, selector: app == 'nothing', types: [Ingress], ingress: [{action: Deny}]}
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|__PROFILE__|__PROFILE__.kns.a|allow|0"]);
}

#[test]
fn staged_policy_is_reported_but_never_enforced() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lockdown, namespace: a}
spec: {selector: app == 'db', types: [Ingress], ingress: [{action: Deny}]}
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|__PROFILE__|__PROFILE__.kns.a|allow|0"]);
    assert_eq!(staged_ing(&r), ["0|default|a/staged:default.lockdown|deny|0"]);
    // A side no staged policy applies to reports no staged trace.
    assert!(r.egress.as_ref().unwrap().staged.is_empty());
}

#[test]
fn staged_kubernetes_policy_replaces_the_enforced_one_in_the_staged_trace() {
    let e = knp_and_staged(
        "{podSelector: {}, policyTypes: [Ingress], ingress: [{}]}",
        "{podSelector: {}, policyTypes: [Ingress]}",
    );
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|default|a/knp.default.np|allow|0"]);
    assert_eq!(staged_ing(&r), ["0|default|a/staged:knp.default.np|deny|-1"]);
}

#[test]
fn staged_kubernetes_policy_delete_removes_the_enforced_one_in_the_staged_trace() {
    // Regression: `stagedAction: Delete` of a StagedKubernetesNetworkPolicy used to be dropped
    // by the loader, so the staged trace showed a replacement instead of a deletion.
    let e = knp_and_staged(
        "{podSelector: {}, policyTypes: [Ingress]}",
        "{podSelector: {}, policyTypes: [Ingress], stagedAction: Delete}",
    );
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert!(!allowed(&r), "the enforced policy isolates");
    assert_eq!(ing(&r), ["0|default|a/knp.default.np|deny|-1"]);
    assert_eq!(staged_ing(&r), ["0|__PROFILE__|__PROFILE__.kns.a|allow|0"], "without it, the profile allows");
}

#[test]
fn types_default_from_rules() {
    use crate::model::{Direction, PolicySpec, Rule};
    let mut s = PolicySpec::default();
    assert_eq!(s.effective_types(), [Direction::Ingress]);
    s.egress.push(Rule::with_action(Action::Allow));
    assert_eq!(s.effective_types(), [Direction::Egress]);
    s.ingress.push(Rule::with_action(Action::Allow));
    assert_eq!(s.effective_types(), [Direction::Ingress, Direction::Egress]);
    s.types = Some(vec![Direction::Ingress]);
    assert_eq!(s.effective_types(), [Direction::Ingress]);
    // An egress-only policy (by default) does not close ingress.
    let e = ev(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: t}\nspec: {selector: app == 'db', egress: [{action: Deny}]}\n",
    );
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "a/p2", "a/p1", "TCP", 1)));
}

#[test]
fn protocol_and_not_protocol() {
    let e = ev(&gnp_db("  - action: Allow\n    protocol: UDP\n  - action: Allow\n    notProtocol: TCP\n"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "UDP", 1)));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "SCTP", 1)));
    assert!(!allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
    let e = ev(&gnp_db("  - action: Allow\n    protocol: 17\n"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "UDP", 1)));
}

#[test]
fn icmp_type_code_and_not_icmp() {
    let e = ev(&gnp_db(
        "  - action: Deny\n    protocol: ICMP\n    icmp: {type: 8, code: 1}\n  - action: Allow\n    protocol: ICMP\n    notICMP: {type: 3}\n",
    ));
    assert!(allowed(&icmp(&e, "a/p1", "a/p2", 8, 0)));
    assert!(!allowed(&icmp(&e, "a/p1", "a/p2", 8, 1)));
    assert!(!allowed(&icmp(&e, "a/p1", "a/p2", 3, 0)));
}

#[test]
fn nets_and_not_nets() {
    let e = ev(&gnp_db("  - action: Allow\n    source: {nets: [10.0.0.0/16], notNets: [10.0.1.0/24]}\n"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "192.168.0.1", "a/p2", "TCP", 1)));
}

#[test]
fn selector_and_not_selector() {
    let e = ev(&gnp_db(
        "  - action: Allow\n    source: {selector: has(app), notSelector: projectcalico.org/namespace == 'b'}\n",
    ));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p2", "TCP", 1)));
    // An address that is no endpoint has no labels: the selector cannot match it.
    assert!(!allowed(&flow(&e, "192.168.0.1", "a/p2", "TCP", 1)));
}

#[test]
fn namespaced_policy_selectors_are_confined_to_its_namespace() {
    let e = ev(&np_db("[{action: Allow, source: {selector: app == 'web'}}]"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p2", "TCP", 1)));
    // notSelector alone also confines to the namespace.
    let e = ev(&np_db("[{action: Allow, source: {notSelector: app == 'nothing'}}]"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p2", "TCP", 1)));
    // A namespaced policy never applies to pods of another namespace.
    let e = ev(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: t, namespace: b}\nspec: {selector: all(), ingress: [{action: Deny}]}\n",
    );
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn global_namespace_selector_selects_non_namespaced_entities() {
    let set = r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: ext, labels: {kind: external}}
spec: {nets: [198.51.100.0/24]}
"#;
    let policy = np_db("[{action: Allow, source: {namespaceSelector: global(), selector: kind == 'external'}}]");
    let e = ev(&format!("{set}---{policy}"));
    assert!(allowed(&flow(&e, "198.51.100.7", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "198.51.101.7", "a/p2", "TCP", 1)));
    assert!(!allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn all_namespace_selector_selects_every_namespace() {
    let e = ev(&np_db("[{action: Allow, source: {namespaceSelector: all(), selector: app == 'web'}}]"));
    assert!(allowed(&flow(&e, "b/p3", "a/p2", "TCP", 1)));
}

#[test]
fn ports_ranges_and_not_ports() {
    let e = ev(&gnp_db(
        "  - action: Allow\n    protocol: TCP\n    destination: {ports: [80, '1000:2000'], notPorts: [1500]}\n",
    ));
    for (port, want) in [(80, true), (81, false), (1000, true), (2000, true), (1500, false), (2001, false)] {
        assert_eq!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", port)), want, "port {port}");
    }
    let e = ev(&gnp_db("  - action: Allow\n    protocol: TCP\n    source: {ports: [33333]}\n"));
    assert!(allowed(&flow(&e, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn named_ports_resolve_per_destination_endpoint() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: t}
spec:
  selector: all()
  types: [Ingress]
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [http]}}]
"#);
    assert!(allowed(&flow(&e, "b/p3", "a/p1", "TCP", 8080)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p1", "TCP", 9090)));
    assert!(allowed(&flow(&e, "b/p3", "a/p2", "TCP", 9090)));
    assert!(!allowed(&flow(&e, "b/p3", "a/p2", "TCP", 8080)));
    // Protocol must match the container port's protocol.
    let e = ev(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: t}\nspec: {selector: all(), types: [Ingress], ingress: [{action: Allow, protocol: TCP, destination: {ports: [dns]}}]}\n",
    );
    assert!(!allowed(&flow(&e, "b/p3", "a/p1", "TCP", 53)));
}

#[test]
fn network_sets_label_addresses_for_selectors() {
    let set = r#"
apiVersion: projectcalico.org/v3
kind: NetworkSet
metadata: {name: partners, namespace: a, labels: {role: partner}}
spec: {nets: [203.0.113.0/24]}
"#;
    let e = ev(&format!("{set}---{}", np_db("[{action: Allow, source: {selector: role == 'partner'}}]")));
    let r = flow(&e, "203.0.113.5", "a/p2", "TCP", 1);
    assert!(allowed(&r));
    assert!(r.egress.is_none(), "an address that is no endpoint has no egress side");
    assert!(!allowed(&flow(&e, "203.0.114.5", "a/p2", "TCP", 1)));
}

const HOST: &str = r#"
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: node1-eth0, labels: {node: node1}}
spec: {node: node1, interfaceName: eth0, expectedIPs: [192.168.50.1]}
"#;

#[test]
fn host_endpoint_without_policy_denies_except_failsafe_ports() {
    let e = ev(HOST);
    let r = flow(&e, "a/p1", "192.168.50.1", "TCP", 80);
    assert!(!allowed(&r));
    assert_eq!(ing(&r), ["0|__PROFILE__|__PROFILE__.__NO_MATCH__|deny|-1"]);
    let r = flow(&e, "a/p1", "192.168.50.1", "TCP", 22);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|__FAILSAFE__|failsafe.inbound.tcp.22|allow|0"]);
    // Outbound failsafe: DNS from the host.
    assert!(allowed(&flow(&e, "192.168.50.1", "a/p1", "UDP", 53)));
    assert!(!allowed(&flow(&e, "192.168.50.1", "a/p1", "TCP", 80)));
}

#[test]
fn failsafe_ports_are_configuration() {
    let r = load_str(&format!("{BASE}\n---\n{HOST}"), Path::new("t.yaml"));
    let m = r.to_model();
    let none = crate::resolve::Failsafe { inbound: vec![], outbound: vec![] };
    let e = Evaluator::from_resolved(&m, crate::resolve::Resolved::with_failsafe(&m, none));
    assert!(!allowed(&flow(&e, "a/p1", "192.168.50.1", "TCP", 22)));
}

#[test]
fn host_endpoint_policy_and_profiles() {
    let e = ev(&format!(
        "{HOST}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: host}}\nspec: {{selector: node == 'node1', types: [Ingress], ingress: [{{action: Allow, protocol: TCP, destination: {{ports: [443]}}}}]}}\n"
    ));
    assert!(allowed(&flow(&e, "a/p1", "192.168.50.1", "TCP", 443)));
    assert!(!allowed(&flow(&e, "a/p1", "192.168.50.1", "TCP", 444)));
    let e = ev(&HOST.replace(
        "expectedIPs: [192.168.50.1]",
        "expectedIPs: [192.168.50.1], profiles: [projectcalico-default-allow]",
    ));
    assert!(allowed(&flow(&e, "a/p1", "192.168.50.1", "TCP", 80)));
}

#[test]
fn do_not_track_and_pre_dnat_policies_run_first_on_host_endpoints() {
    let e = ev(&format!(
        "{HOST}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: untracked}}\nspec: {{selector: node == 'node1', doNotTrack: true, applyOnForward: true, types: [Ingress], ingress: [{{action: Allow, protocol: UDP}}]}}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: prednat}}\nspec: {{selector: node == 'node1', preDNAT: true, applyOnForward: true, types: [Ingress], ingress: [{{action: Deny, protocol: TCP, destination: {{ports: [8443]}}}}]}}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: normal}}\nspec: {{selector: node == 'node1', types: [Ingress], ingress: [{{action: Allow, protocol: TCP}}]}}\n"
    ));
    let r = flow(&e, "a/p1", "192.168.50.1", "UDP", 9);
    assert!(allowed(&r));
    assert_eq!(ing(&r), ["0|default|default.untracked|allow|0"]);
    assert!(!allowed(&flow(&e, "a/p1", "192.168.50.1", "TCP", 8443)));
    assert!(allowed(&flow(&e, "a/p1", "192.168.50.1", "TCP", 8444)));
    // These policies do not apply to pods.
    let e2 = ev(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: prednat}\nspec: {selector: all(), preDNAT: true, applyOnForward: true, types: [Ingress], ingress: [{action: Deny}]}\n",
    );
    assert!(allowed(&flow(&e2, "a/p1", "a/p2", "TCP", 1)));
}

#[test]
fn flow_needs_both_known_sides_to_allow() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: t}
spec: {selector: app == 'web', types: [Egress], egress: [{action: Deny}]}
"#);
    let r = flow(&e, "a/p1", "a/p2", "TCP", 1);
    assert_eq!(r.egress.as_ref().unwrap().verdict, Verdict::Deny);
    assert_eq!(r.ingress.as_ref().unwrap().verdict, Verdict::Allow);
    assert!(!allowed(&r));
    // Unknown destination: only the source side counts.
    let r = flow(&e, "a/p2", "8.8.8.8", "TCP", 1);
    assert!(r.ingress.is_none());
    assert!(allowed(&r));
    // An IP that belongs to a pod makes that pod the known endpoint.
    let r = flow(&e, "10.0.0.1", "a/p2", "TCP", 1);
    assert!(!allowed(&r));
}

#[test]
fn ip_pools_name_zones_longest_prefix_first() {
    let e = ev(r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: wide}
spec: {cidr: 10.0.0.0/8}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: narrow}
spec: {cidr: 10.0.1.0/24}
"#);
    assert_eq!(e.zone("10.0.1.3".parse().unwrap()), Some("narrow"));
    assert_eq!(e.zone("10.0.0.1".parse().unwrap()), Some("wide"));
    assert_eq!(e.zone("11.0.0.1".parse().unwrap()), None);
}

#[test]
fn query_lines_answer_errors_without_crashing() {
    let e = ev("");
    let answer = |l: &str| e.answer_line(l).map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap());
    let bad = answer(r#"{"src": "a/nope", "dst": "a/p1", "protocol": "TCP", "dst_port": 80}"#).unwrap();
    assert_eq!(bad, serde_json::json!({"error": "unknown pod a/nope"}));
    let bad = answer("not json").unwrap();
    assert!(bad["error"].as_str().unwrap().starts_with("invalid flow"));
    let bad = answer(r#"{"src": "a/p1", "dst": "a/p2", "protocol": "TCP"}"#).unwrap();
    assert_eq!(bad["error"], "protocol TCP needs dst_port");
    assert!(e.answer_line("   ").is_none());
    let ok = answer(r#"{"src": "a/p1", "dst": "8.8.8.8", "protocol": "UDP", "dst_port": 53}"#).unwrap();
    assert_eq!(
        ok,
        serde_json::json!({"verdict": "allow", "ingress": null,
            "egress": {"verdict": "allow", "policies": ["0|__PROFILE__|__PROFILE__.kns.a|allow|0"], "staged": []}})
    );
}

#[test]
fn explain_names_tier_policy_and_rule() {
    let e = ev(&gnp_db("  - action: Deny\n    protocol: TCP\n"));
    let q = FlowQuery { dst_port: Some(80), ..query("a/p1", "a/p2", crate::model::Protocol::Tcp) };
    let text = e.explain(&q).unwrap();
    assert!(text.contains("verdict: DENY"), "{text}");
    assert!(text.contains("tier default"), "{text}");
    assert!(text.contains("policy default.t"), "{text}");
    assert!(text.contains("rule 0 matches: Deny"), "{text}");
}

mod props {
    use super::*;
    use crate::model::{CalicoPolicy, PolicyId, PolicyKind, PolicySpec, Protocol, Resource, Rule};
    use crate::selector::Selector;
    use proptest::prelude::*;

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (
            prop_oneof![Just(Action::Allow), Just(Action::Deny), Just(Action::Pass), Just(Action::Log)],
            prop_oneof![Just(None), Just(Some(Protocol::Tcp)), Just(Some(Protocol::Udp))],
            prop_oneof![Just(None), Just(Some("app == 'web'")), Just(Some("app == 'db'")), Just(Some("has(nothing)"))],
            prop_oneof![Just(vec![]), Just(vec![Port::single(80)]), Just(vec![Port::Range { min: 1, max: 100 }])],
        )
            .prop_map(|(action, protocol, sel, ports)| {
                let mut r = Rule::with_action(action);
                r.protocol = protocol;
                r.source.selector = sel.map(|s| Selector::parse(s).unwrap());
                if protocol.is_some() {
                    r.destination.ports = ports;
                }
                r
            })
    }

    fn model_with(rules: &[Vec<Rule>]) -> Model {
        let base = load_str(BASE, Path::new("base.yaml")).to_model();
        let mut m = base;
        for (i, rs) in rules.iter().enumerate() {
            m.insert(Resource::CalicoPolicy(CalicoPolicy {
                id: PolicyId { kind: PolicyKind::GlobalNetworkPolicy, namespace: None, name: format!("p{i}") },
                spec: PolicySpec {
                    order: Some(i as f64),
                    selector: Some(Selector::all()),
                    types: Some(vec![Direction::Ingress, Direction::Egress]),
                    ingress: rs.clone(),
                    egress: rs.clone(),
                    ..Default::default()
                },
            }));
        }
        m
    }

    fn verdicts(m: &Model) -> Vec<Verdict> {
        let e = Evaluator::new(m);
        let pods = ["a/p1", "a/p2", "b/p3", "192.0.2.1"];
        let mut out = Vec::new();
        for s in pods {
            for d in pods {
                for (proto, port) in [("TCP", 80), ("TCP", 443), ("UDP", 80)] {
                    out.push(flow(&e, s, d, proto, port).verdict);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Removing a Deny rule never turns an allowed flow into a denied one.
        #[test]
        fn removing_a_deny_rule_never_denies_more(
            rules in proptest::collection::vec(proptest::collection::vec(arb_rule(), 0..4), 1..3),
            pick in any::<prop::sample::Index>(),
        ) {
            let denies: Vec<(usize, usize)> = rules.iter().enumerate()
                .flat_map(|(p, rs)| rs.iter().enumerate().filter(|(_, r)| r.action == Action::Deny).map(move |(i, _)| (p, i)))
                .collect();
            prop_assume!(!denies.is_empty());
            let (p, i) = denies[pick.index(denies.len())];
            let before = verdicts(&model_with(&rules));
            let mut fewer = rules.clone();
            fewer[p].remove(i);
            let after = verdicts(&model_with(&fewer));
            for (b, a) in before.iter().zip(&after) {
                prop_assert!(!(*b == Verdict::Allow && *a == Verdict::Deny));
            }
        }

        /// Log rules never change a verdict.
        #[test]
        fn log_rules_never_change_verdicts(
            rules in proptest::collection::vec(proptest::collection::vec(arb_rule(), 0..4), 1..3),
        ) {
            let without: Vec<Vec<Rule>> = rules.iter()
                .map(|rs| rs.iter().filter(|r| r.action != Action::Log).cloned().collect()).collect();
            prop_assert_eq!(verdicts(&model_with(&rules)), verdicts(&model_with(&without)));
        }

        /// Staged copies of the policies never change enforced verdicts.
        #[test]
        fn staged_policies_never_change_verdicts(
            rules in proptest::collection::vec(proptest::collection::vec(arb_rule(), 0..4), 1..3),
        ) {
            let m = model_with(&rules);
            let mut staged = model_with(&[]);
            for p in m.policies.values() {
                let mut s = p.clone();
                s.id.kind = PolicyKind::StagedGlobalNetworkPolicy;
                staged.insert(Resource::CalicoPolicy(s));
            }
            let all_allow: Vec<Verdict> = verdicts(&staged);
            prop_assert!(all_allow.iter().all(|v| *v == Verdict::Allow));
        }
    }
}
