use super::*;
use crate::model::k8s::{IntOrString, IpBlock, LabelSelectorRequirement, NetworkPolicySpec};
use proptest::prelude::*;

fn np(spec: NetworkPolicySpec) -> K8sNetworkPolicy {
    K8sNetworkPolicy { namespace: "ns".into(), name: "p".into(), spec }
}

#[test]
fn name_order_tier_and_selector() {
    let mut spec = NetworkPolicySpec::default();
    spec.pod_selector.match_labels.insert("app".into(), "db".into());
    let c = k8s_policy_to_calico(&np(spec)).unwrap();
    assert_eq!(c.name, "knp.default.p");
    assert_eq!(c.spec.order, Some(1000.0));
    assert_eq!(c.spec.tier.as_deref(), Some("default"));
    assert_eq!(c.selector_text, "projectcalico.org/orchestrator == 'k8s' && app == 'db'");
    assert_eq!(c.spec.types, Some(vec![Direction::Ingress]));
}

#[test]
fn policy_types_default_like_the_api_server() {
    let spec = NetworkPolicySpec { egress: Some(vec![NetworkPolicyRule::default()]), ..Default::default() };
    let c = k8s_policy_to_calico(&np(spec)).unwrap();
    assert_eq!(c.spec.types, Some(vec![Direction::Ingress, Direction::Egress]));
}

#[test]
fn empty_and_missing_rules_and_peers() {
    // `ingress: [{}]` allows everything; `ingress: []` nothing.
    let all = NetworkPolicySpec { ingress: Some(vec![NetworkPolicyRule::default()]), ..Default::default() };
    let c = k8s_policy_to_calico(&np(all)).unwrap();
    assert_eq!(c.spec.ingress, vec![Rule::with_action(Action::Allow)]);
    let none = NetworkPolicySpec { ingress: Some(vec![]), ..Default::default() };
    assert!(k8s_policy_to_calico(&np(none)).unwrap().spec.ingress.is_empty());
    let empty_from = NetworkPolicyRule { from: Some(vec![]), ports: Some(vec![]) };
    let c =
        k8s_policy_to_calico(&np(NetworkPolicySpec { ingress: Some(vec![empty_from]), ..Default::default() })).unwrap();
    assert_eq!(c.spec.ingress, vec![Rule::with_action(Action::Allow)]);
}

#[test]
fn pod_and_namespace_selector_in_one_peer() {
    let peer = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: LabelSelectorOperator::NotIn,
                values: vec!["a".into(), "b".into()],
            }],
            ..Default::default()
        }),
        namespace_selector: Some(LabelSelector::default()),
        ip_block: None,
    };
    let (sel, ns, nets, _) = k8s_peer_to_calico_fields(Some(&peer));
    assert_eq!(sel, "projectcalico.org/orchestrator == 'k8s' && k not in { 'a', 'b' }");
    assert_eq!(ns, "all()");
    assert!(nets.is_empty());
}

#[test]
fn ip_block_with_except_masks_host_bits() {
    let peer = NetworkPolicyPeer {
        ip_block: Some(IpBlock { cidr: "10.1.2.3/16".into(), except: vec!["10.1.9.9/24".into()] }),
        ..Default::default()
    };
    let (_, _, nets, not_nets) = k8s_peer_to_calico_fields(Some(&peer));
    assert_eq!(nets, ["10.1.0.0/16"]);
    assert_eq!(not_nets, ["10.1.9.0/24"]);
}

#[test]
fn ports_named_ranges_protocols_and_end_port() {
    let ports = vec![
        NetworkPolicyPort { protocol: Some("UDP".into()), port: Some(IntOrString::Int(53)), end_port: None },
        NetworkPolicyPort { protocol: None, port: Some(IntOrString::String("http".into())), end_port: None },
        NetworkPolicyPort { protocol: Some("SCTP".into()), port: Some(IntOrString::Int(100)), end_port: Some(200) },
    ];
    let rule = NetworkPolicyRule { from: None, ports: Some(ports) };
    let c = k8s_policy_to_calico(&np(NetworkPolicySpec { ingress: Some(vec![rule]), ..Default::default() })).unwrap();
    let got: Vec<(String, Vec<String>)> = c
        .spec
        .ingress
        .iter()
        .map(|r| (r.protocol.unwrap().to_string(), r.destination.ports.iter().map(ToString::to_string).collect()))
        .collect();
    assert_eq!(
        got,
        [
            ("SCTP".into(), vec!["100:200".into()]),
            ("TCP".into(), vec!["http".into()]),
            ("UDP".into(), vec!["53".into()])
        ]
    );
}

#[test]
fn bad_port_drops_only_that_rule() {
    let bad = NetworkPolicyRule {
        from: None,
        ports: Some(vec![NetworkPolicyPort {
            protocol: None,
            port: Some(IntOrString::String("-1:-2".into())),
            end_port: None,
        }]),
    };
    let spec = NetworkPolicySpec { ingress: Some(vec![NetworkPolicyRule::default(), bad]), ..Default::default() };
    let c = k8s_policy_to_calico(&np(spec)).unwrap();
    assert_eq!(c.spec.ingress.len(), 1);
    let e = c.error.unwrap();
    assert_eq!(e.bad_rules[0].rule_index, 1);
    assert!(e.bad_rules[0].reason.contains("invalid name for named port (-1:-2)"));
}

#[test]
fn profiles() {
    let ns = Namespace { name: "n".into(), labels: LabelMap::from([("a".into(), "b".into())]) };
    let p = namespace_to_profile(&ns);
    assert_eq!(p.name, "kns.n");
    assert_eq!(p.labels_to_apply["pcns.a"], "b");
    assert_eq!(p.labels_to_apply["pcns.projectcalico.org/name"], "n");
    let sa = ServiceAccount { namespace: "n".into(), name: "s".into(), labels: LabelMap::new() };
    assert_eq!(service_account_to_profile(&sa).name, "ksa.n.s");
}

fn arb_port() -> impl Strategy<Value = Port> {
    prop_oneof![
        (0u16..200).prop_map(Port::single),
        (0u16..200, 0u16..20).prop_map(|(a, w)| Port::Range { min: a, max: a.saturating_add(w) }),
        "[a-z]{1,5}".prop_map(Port::Named),
    ]
}

proptest! {
    /// SimplifyPorts keeps exactly the same set of numeric ports and all names, and never
    /// produces overlapping or adjacent ranges.
    #[test]
    fn simplify_ports_preserves_the_port_set(ports in proptest::collection::vec(arb_port(), 0..8)) {
        let out = simplify_ports(ports.clone());
        let set = |ps: &[Port]| -> std::collections::BTreeSet<u32> {
            ps.iter().flat_map(|p| match p {
                Port::Range { min, max } => (u32::from(*min)..=u32::from(*max)).collect::<Vec<_>>(),
                Port::Named(_) => vec![],
            }).collect()
        };
        prop_assert_eq!(set(&ports), set(&out));
        let names = |ps: &[Port]| -> Vec<String> {
            ps.iter().filter_map(|p| match p { Port::Named(n) => Some(n.clone()), _ => None }).collect()
        };
        prop_assert_eq!(names(&ports), names(&out));
        if set(&ports).len() > 1 {
            let ranges: Vec<(u16, u16)> = out.iter().filter_map(|p| match p {
                Port::Range { min, max } => Some((*min, *max)), _ => None }).collect();
            for w in ranges.windows(2) {
                prop_assert!(u32::from(w[0].1) + 1 < u32::from(w[1].0));
            }
        }
    }

    /// Every converted rule is an Allow; the rule count is (#protocols) x (#peers) per k8s rule.
    #[test]
    fn conversion_rule_count(peers in 0usize..4, protos in proptest::sample::subsequence(vec!["TCP", "UDP", "SCTP"], 0..=3)) {
        let from: Vec<NetworkPolicyPeer> = (0..peers).map(|i| NetworkPolicyPeer {
            pod_selector: Some(LabelSelector { match_labels: [("i".to_string(), i.to_string())].into(), ..Default::default() }),
            ..Default::default()
        }).collect();
        let ports: Vec<NetworkPolicyPort> = protos.iter().map(|p| NetworkPolicyPort {
            protocol: Some(p.to_string()), port: Some(IntOrString::Int(80)), end_port: None }).collect();
        let rule = NetworkPolicyRule { from: Some(from), ports: Some(ports) };
        let c = k8s_policy_to_calico(&np(NetworkPolicySpec { ingress: Some(vec![rule]), ..Default::default() })).unwrap();
        prop_assert_eq!(c.spec.ingress.len(), peers.max(1) * protos.len().max(1));
        prop_assert!(c.spec.ingress.iter().all(|r| r.action == Action::Allow));
    }
}

#[test]
fn simplify_ports_merges_ranges_without_expanding_them() {
    // 10,000 copies of the full range used to expand into 655 million port numbers.
    let full = Port::Range { min: 1, max: 65535 };
    let out = simplify_ports(vec![full.clone(); 10_000]);
    assert_eq!(out, [full]);
    let out = simplify_ports(vec![
        Port::Range { min: 65535, max: 65535 },
        Port::Named("http".into()),
        Port::Range { min: 0, max: 10 },
        Port::Range { min: 11, max: 20 },
        Port::Range { min: 5, max: 7 },
        Port::Range { min: 65000, max: 65534 },
    ]);
    assert_eq!(
        out,
        [Port::Named("http".into()), Port::Range { min: 0, max: 20 }, Port::Range { min: 65000, max: 65535 }]
    );
}
