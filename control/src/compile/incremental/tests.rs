//! Unit tests of the incremental compiler: errors leave the table in force, work stays
//! proportional to the change, slots are stable and reused. Equivalence with the full compile
//! on random change sequences is in `control/tests/incremental_equivalence.rs`.

use super::*;
use crate::compile::{Compiler, side_trace};
use crate::manifest::load_str;
use crate::model::IcmpMatch;
use moat_fastpath::classify::FlowKey;
use std::path::Path;

fn model(text: &str) -> Model {
    let r = load_str(text, Path::new("test.yaml"));
    assert!(r.errors.is_empty(), "{:?}", r.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    r.to_model()
}

fn resource(text: &str) -> Resource {
    let r = load_str(text, Path::new("change.yaml"));
    assert!(r.errors.is_empty(), "{:?}", r.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    r.loaded.into_iter().next().unwrap().resource
}

fn example() -> Model {
    model(include_str!("../../../examples/policy/cluster.yaml"))
}

fn key(src: &str, dst: &str, port: u16) -> FlowKey {
    FlowKey {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: 6,
        src_port: 40000,
        dst_port: port,
        icmp: None,
    }
}

/// Every pair of `ips` on a few ports: verdict and both traces.
fn decisions(table: &PolicyTable, ips: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for s in ips {
        for d in ips {
            for port in [22, 53, 80, 8080, 9000] {
                let dec = table.decide(&key(s, d, port));
                let t = |x: &Option<moat_fastpath::classify::policy::SideDecision>| x.map(|x| side_trace(table, &x));
                out.push(format!("{s}->{d}:{port} {:?} {:?} {:?}", dec.verdict, t(&dec.egress), t(&dec.ingress)));
            }
        }
    }
    out
}

/// The decisions of a full compile of `m`.
fn full(m: &Model, ips: &[&str]) -> Vec<String> {
    let (t, _) = Compiler::new().compile(&Resolved::new(m), zones_of(m)).unwrap();
    decisions(&t, ips)
}

const IPS: [&str; 5] = ["10.10.1.5", "10.20.1.7", "10.10.1.6", "10.10.1.9", "203.0.113.5"];

fn calico_policy(text: &str) -> crate::model::CalicoPolicy {
    match resource(text) {
        Resource::CalicoPolicy(p) => p,
        other => panic!("not a Calico policy: {other:?}"),
    }
}

const ALLOW_WEB: &str = "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: allow-web, namespace: frontend}\nspec:\n  selector: app == 'web'\n  ingress:\n  - {action: Allow, protocol: TCP, source: {selector: app == 'web'}}\n";

#[test]
fn a_policy_that_cannot_be_enforced_is_rejected_and_nothing_changes() {
    let (mut c, _) = IncrementalCompiler::new(example()).unwrap();
    let before = Arc::clone(c.table());
    let policies = c.model().policies.len();

    // A namespaceSelector whose keys are too long once prefixed with `pcns.`.
    let mut p = calico_policy(ALLOW_WEB);
    let long = format!("{} == 'x'", "k".repeat(510));
    p.spec.ingress[0].source.namespace_selector = Some(Selector::parse(&long).unwrap());
    let err = c
        .apply(vec![
            Change::Upsert(Resource::Pod(example().pods.values().next().unwrap().clone())),
            Change::Upsert(Resource::CalicoPolicy(p)),
        ])
        .unwrap_err();
    let UpdateError::Policy { index, key, message } = &err else { panic!("{err}") };
    assert_eq!(*index, 1);
    assert!(matches!(key, ResourceKey::CalicoPolicy(id) if id.name == "allow-web"), "{key}");
    assert!(message.contains("ingress[0]") && message.contains("not enforced"), "{message}");
    assert!(err.to_string().contains("allow-web"), "{err}");

    // An ICMP code without a type.
    let mut p = calico_policy(ALLOW_WEB);
    p.spec.ingress[0].protocol = Some(crate::model::Protocol::Icmp);
    p.spec.ingress[0].icmp = Some(IcmpMatch { icmp_type: None, code: Some(1) });
    let err = c.apply_one(Change::Upsert(Resource::CalicoPolicy(p))).unwrap_err();
    assert!(err.to_string().contains("ICMP code without an ICMP type"), "{err}");

    assert!(Arc::ptr_eq(&before, c.table()), "the table in force is untouched");
    assert_eq!(c.model().policies.len(), policies, "the model is untouched");
    // And the compiler still works.
    let (t, _) = c.apply_one(Change::Upsert(resource(ALLOW_WEB))).unwrap();
    assert_eq!(decisions(&t, &IPS), full(c.model(), &IPS));
}

/// 420 scattered addresses: with ports split in 51 ranges on both sides, one rule is more
/// boxes than a decision tree takes ([`moat_fastpath::classify::engine::MAX_BOXES_PER_RULE`]).
fn big_nets() -> String {
    (0..420).map(|i| format!("'198.18.{}.{}/32'", i / 100, (i % 100) * 2)).collect::<Vec<_>>().join(", ")
}

fn many_ports() -> String {
    (1..=50).map(|i| (i * 2).to_string()).collect::<Vec<_>>().join(", ")
}

#[test]
fn a_stage_that_cannot_be_built_undoes_the_batch() {
    let mut m = example();
    m.insert(resource(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: big, labels: {kind: big}}\nspec: {nets: [198.18.0.0/24]}\n",
    ));
    m.insert(resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: from-big}}\nspec:\n  selector: app == 'web'\n  ingress:\n  - {{action: Allow, protocol: TCP, source: {{selector: kind == 'big', notPorts: [{p}]}}, destination: {{notPorts: [{p}]}}}}\n",
        p = many_ports()
    )));
    // Every stage a decision tree, so the size limit applies.
    let (mut c, _) = IncrementalCompiler::with_options(m, Failsafe::default(), 0).unwrap();
    let before = Arc::clone(c.table());
    let answers = decisions(&before, &IPS);

    // An owner change makes the stage too large.
    let grown = resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {{name: big, labels: {{kind: big}}}}\nspec: {{nets: [{}]}}\n",
        big_nets()
    ));
    let err = c.apply_one(Change::Upsert(grown)).unwrap_err();
    let UpdateError::Compile { keys, source } = &err else { panic!("{err}") };
    assert!(keys.contains("GlobalNetworkSet big"), "{keys}");
    assert!(
        matches!(source, CompileError::Build { policy, direction: Direction::Ingress, .. } if policy == "default.from-big"),
        "{source}"
    );
    assert!(Arc::ptr_eq(&before, c.table()) || decisions(c.table(), &IPS) == answers);
    assert_eq!(c.model().network_sets.values().next().unwrap().nets.len(), 1, "the change was undone");
    assert_eq!(decisions(c.table(), &IPS), answers);

    // A policy change that cannot be built (its nets are in the rule itself).
    let p = resource(&format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: from-big}}\nspec:\n  selector: app == 'web'\n  ingress:\n  - {{action: Allow, protocol: TCP, source: {{nets: [{}], notPorts: [{p}]}}, destination: {{notPorts: [{p}]}}}}\n",
        big_nets(),
        p = many_ports()
    ));
    assert!(matches!(c.apply_one(Change::Upsert(p)).unwrap_err(), UpdateError::Compile { .. }));
    assert_eq!(decisions(c.table(), &IPS), answers);

    // Still in service.
    let (t, _) = c.apply_one(Change::Upsert(resource(ALLOW_WEB))).unwrap();
    assert_eq!(decisions(&t, &IPS), full(c.model(), &IPS));
}

/// `n` namespaces of 4 pods, a default-deny and an allow-from-same-app policy each.
fn cluster(n: usize) -> String {
    let mut docs = Vec::new();
    for ns in 0..n {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{ns}, labels: {{team: t{}}}}}\n",
            ns % 3
        ));
        for k in 0..4 {
            let app = ["web", "api"][k % 2];
            docs.push(format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{k}, namespace: ns{ns}, labels: {{app: {app}}}}}\nspec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 80}}]}}]}}\nstatus: {{podIP: 10.1.{ns}.{}}}\n",
                k + 1
            ));
        }
        docs.push(format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: ns{ns}}}\nspec: {{podSelector: {{}}}}\n"));
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: same-app, namespace: ns{ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: api}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]\n    ports: [{{port: http}}]\n"
        ));
    }
    docs.join("---\n")
}

#[test]
fn a_pod_change_does_the_work_it_implies_and_shares_the_rest() {
    let (mut c, first) = IncrementalCompiler::new(model(&cluster(30))).unwrap();
    assert!(first.full);
    let before = Arc::clone(c.table());
    let slot = before.endpoint_of("10.1.5.2".parse().unwrap()).unwrap();
    // ns5/p1 (api) becomes web: it leaves `same-app` of ns5 and the web selector of ns5 gains it.
    let mut pod = c.model().pods[&("ns5".to_string(), "p1".to_string())].clone();
    pod.labels.insert("app".into(), "web".into());
    let (after, st) = c.apply_one(Change::Upsert(Resource::Pod(pod))).unwrap();
    assert!(!st.full);
    assert_eq!(st.owners_changed, 1);
    assert_eq!(st.endpoints_rechained, 1);
    // Only ns5's stages: same-app (its endpoints and its web source changed).
    assert!(st.stages_recomputed <= 2, "{st:?}");
    assert!(st.stages_built >= 1 && st.stages_written <= 2, "{st:?}");
    assert!(st.chains_written <= 2 && st.endpoints_written == 1, "{st:?}");
    assert_eq!(st.addresses_written, 0);
    assert_eq!(after.endpoint_of("10.1.5.2".parse().unwrap()), Some(slot), "an endpoint keeps its index");
    // Untouched stages are the same allocations.
    let shared =
        (0..before.policies().len()).filter(|&i| Arc::ptr_eq(&before.policies()[i], &after.policies()[i])).count();
    assert!(shared + 2 >= before.policies().len(), "{shared} of {}", before.policies().len());
    let ips: Vec<String> = (0..4).map(|k| format!("10.1.5.{}", k + 1)).chain(["10.1.6.2".to_string()]).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    assert_eq!(decisions(&after, &ips), full(c.model(), &ips));

    // A namespace relabel: its four pods change labels, nothing else.
    let (_, st) = c
        .apply_one(Change::Upsert(resource(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns5, labels: {team: t9}}\n",
        )))
        .unwrap();
    assert_eq!((st.owners_changed, st.endpoints_rechained), (4, 4));
    // The same pod again: nothing to do.
    let pod = c.model().pods[&("ns5".to_string(), "p1".to_string())].clone();
    let (same, st) = c.apply_one(Change::Upsert(Resource::Pod(pod))).unwrap();
    assert_eq!((st.owners_changed, st.stages_recomputed, st.endpoints_written), (0, 0, 0));
    assert_eq!(decisions(&same, &ips), full(c.model(), &ips));
}

#[test]
fn deleted_endpoints_leave_a_tombstone_whose_slot_is_reused() {
    let (mut c, _) = IncrementalCompiler::new(model(&cluster(2))).unwrap();
    let ip = "10.1.1.3".parse().unwrap();
    let slot = c.table().endpoint_of(ip).unwrap();
    let (t, _) = c.apply_one(Change::Delete(ResourceKey::Pod { namespace: "ns1".into(), name: "p2".into() })).unwrap();
    assert_eq!(t.endpoint_of(ip), None);
    assert_eq!(t.endpoints()[slot as usize].name, "");
    let pod = resource(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: new, namespace: ns0, labels: {app: api}}\nstatus: {podIP: 10.1.0.77}\n",
    );
    let (t, _) = c.apply_one(Change::Upsert(pod)).unwrap();
    assert_eq!(t.endpoint_of("10.1.0.77".parse().unwrap()), Some(slot));
    assert_eq!(t.endpoints()[slot as usize].name, "new");
    let ips = ["10.1.0.77", "10.1.0.1", "10.1.1.3", "10.1.1.1"];
    assert_eq!(decisions(&t, &ips), full(c.model(), &ips));
}

#[test]
fn staged_policies_change_the_model_only() {
    let (mut c, _) = IncrementalCompiler::new(example()).unwrap();
    let staged = resource(
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: try, namespace: frontend}\nspec: {selector: all(), ingress: [{action: Deny}]}\n",
    );
    let (t, st) = c.apply_one(Change::Upsert(staged.clone())).unwrap();
    assert_eq!((st.stages_recomputed, st.stages_written, st.endpoints_rechained), (0, 0, 0));
    assert!(c.model().policies.contains_key(&match &staged {
        Resource::CalicoPolicy(p) => p.id.clone(),
        _ => unreachable!(),
    }));
    assert_eq!(decisions(&t, &IPS), full(c.model(), &IPS));
}

#[test]
fn tiers_and_pools_and_rebuilds() {
    let (mut c, _) = IncrementalCompiler::new(example()).unwrap();
    // The security tier moves behind the default tier and passes by default.
    let tier = resource(
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 2000000, defaultAction: Pass}\n",
    );
    let pool = resource(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: ext}\nspec: {cidr: 203.0.113.0/24}\n",
    );
    let (t, _) = c.apply(vec![Change::Upsert(tier), Change::Upsert(pool)]).unwrap();
    assert_eq!(decisions(&t, &IPS), full(c.model(), &IPS));
    assert_eq!(t.zone("203.0.113.5".parse().unwrap()), Some("ext"));
    let (t, _) = c.apply_one(Change::Delete(ResourceKey::Tier("security".into()))).unwrap();
    assert_eq!(decisions(&t, &IPS), full(c.model(), &IPS));
    let answers = decisions(&t, &IPS);
    let st = c.rebuild().unwrap();
    assert!(st.full);
    assert_eq!(decisions(c.table(), &IPS), answers);
    assert!(c.resolved().warnings.iter().any(|w| w.contains("security")), "{:?}", c.resolved().warnings);
}
