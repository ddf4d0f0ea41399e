use super::*;
use crate::model::PolicyKind;

fn load(text: &str) -> LoadReport {
    load_str(text, Path::new("m.yaml"))
}

#[test]
fn multi_document_yaml_and_lists_load() {
    let r = load(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: s, namespace: a}}\n- {apiVersion: v1, kind: Pod, metadata: {name: p}, status: {podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}}\n",
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.loaded.len(), 3);
    let m = r.to_model();
    assert_eq!(m.namespaces["a"].labels["kubernetes.io/metadata.name"], "a");
    let pod = &m.pods[&("default".to_string(), "p".to_string())];
    assert_eq!(pod.ips.len(), 2);
    assert_eq!(pod.service_account, "default");
}

#[test]
fn json_documents_load() {
    let r = load(
        r#"{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet", "metadata": {"name": "g", "labels": {"a": "b"}}, "spec": {"nets": ["1.2.3.0/24", "1.2.4.5"]}}"#,
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.to_model().network_sets.len(), 1);
}

#[test]
fn unknown_kinds_are_reported_and_skipped() {
    let r = load(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].object.kind, "Deployment");
    assert_eq!(r.loaded.len(), 1);
    assert!(r.skipped[0].to_string().contains("Deployment x/d"));
}

#[test]
fn invalid_object_is_rejected_with_file_object_and_field_and_the_rest_loads() {
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: n}\nspec:\n  ingress:\n  - action: Allow\n  - action: Allow\n    source: {nets: [10.0.0.0/33]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n",
    );
    assert_eq!(r.loaded.len(), 1);
    assert_eq!(r.errors.len(), 1);
    let msg = r.errors[0].to_string();
    assert!(msg.contains("m.yaml (document 1)"), "{msg}");
    assert!(msg.contains("NetworkPolicy n/p"), "{msg}");
    assert!(msg.contains("spec.ingress[1].source.nets[0]"), "{msg}");
}

#[test]
fn malformed_selector_error_shows_selector_and_position() {
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  selector: a == 'b' && (c\n",
    );
    let msg = r.errors[0].to_string();
    assert!(msg.contains("spec.selector"), "{msg}");
    assert!(msg.contains("a == 'b' && (c"), "{msg}");
    assert!(msg.contains("position"), "{msg}");
    assert!(msg.contains('^'), "{msg}");
}

#[test]
fn yaml_syntax_error_names_the_file() {
    let r = load("apiVersion: v1\nkind: [\n");
    assert!(matches!(r.errors[0], ManifestError::Syntax { .. }));
    assert!(r.errors[0].to_string().contains("m.yaml"));
}

#[test]
fn calico_validation_rules() {
    let bad = [
        ("spec: {ingress: [{action: Allow, destination: {ports: [80]}}]}", "spec.ingress[0].destination.ports"),
        ("spec: {ingress: [{action: Allow, protocol: TCP, icmp: {type: 8}}]}", "spec.ingress[0].icmp"),
        ("spec: {ingress: [{action: Allow, protocol: ICMP, icmp: {code: 1}}]}", "spec.ingress[0].icmp.code"),
        ("spec: {ingress: [{action: Jump}]}", "spec.ingress[0].action"),
        (
            "spec: {ingress: [{action: Allow, protocol: TCP, destination: {ports: ['90:80']}}]}",
            "spec.ingress[0].destination.ports[0]",
        ),
        ("spec: {ingress: [{action: Allow, http: {methods: [GET]}}]}", "spec.ingress[0].http"),
        ("spec: {preDNAT: true}", "spec.doNotTrack/preDNAT/applyOnForward"),
    ];
    for (spec, field) in bad {
        let r =
            load(&format!("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {{name: p}}\n{spec}\n"));
        assert_eq!(r.errors.len(), 1, "{spec}");
        let msg = r.errors[0].to_string();
        assert!(msg.contains(field), "{spec}: {msg}");
    }
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\nspec: {preDNAT: true, applyOnForward: true, egress: [{action: Allow}]}\n",
    );
    assert!(r.errors[0].to_string().contains("preDNAT"));
}

#[test]
fn kubernetes_validation_rules() {
    let bad = [
        ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/99}}]}]", "spec.ingress[0].from[0].ipBlock.cidr"),
        ("ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/24]}}]}]", "except[0]"),
        ("egress: [{ports: [{port: 70000}]}]", "spec.egress[0].ports[0].port"),
        ("egress: [{ports: [{port: 80, protocol: ICMP}]}]", "protocol"),
        ("egress: [{ports: [{port: http, endPort: 90}]}]", "endPort"),
        ("policyTypes: [Sideways]", "spec.policyTypes[0]"),
    ];
    for (spec, field) in bad {
        let r = load(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p}}\nspec: {{podSelector: {{}}, {spec}}}\n"
        ));
        assert_eq!(r.errors.len(), 1, "{spec}");
        let msg = r.errors[0].to_string();
        assert!(msg.contains(field), "{spec}: {msg}");
    }
}

#[test]
fn all_calico_kinds_and_both_api_groups_load() {
    let text = [
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a, namespace: n}\nspec: {}",
        "apiVersion: crd.projectcalico.org/v1\nkind: GlobalNetworkPolicy\nmetadata: {name: b}\nspec: {}",
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: c, namespace: n}\nspec: {stagedAction: Delete}",
        "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\nmetadata: {name: d}\nspec: {}",
        "apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: e, namespace: n}\nspec: {podSelector: {}, stagedAction: Set}",
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 5, defaultAction: Pass}",
        "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s, namespace: n}\nspec: {nets: ['fd00::/64']}",
        "apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {node: n1, expectedIPs: [10.1.1.1], ports: [{name: ssh, protocol: TCP, port: 22}]}",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}",
    ]
    .join("\n---\n");
    let r = load(&text);
    assert!(r.errors.is_empty(), "{:?}", r.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    let m = r.to_model();
    assert_eq!(m.policies.len(), 4);
    assert_eq!(m.k8s_policies.len(), 1);
    assert!(m.policies.keys().any(|k| k.kind == PolicyKind::StagedNetworkPolicy));
    assert_eq!(m.tiers["t"].spec.default_action, crate::model::TierDefaultAction::Pass);
    assert_eq!(m.host_endpoints["h"].spec.ports[0].port, 22);
    assert_eq!(m.ip_pools.len(), 1);
}

#[test]
fn directory_trees_load_in_name_order() {
    let dir = std::env::temp_dir().join(format!("moat-manifest-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {v: '1'}}\n")
        .unwrap();
    std::fs::write(
        dir.join("sub/b.json"),
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"v": "2"}}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    let r = load_paths(&[&dir]);
    assert!(r.errors.is_empty());
    assert_eq!(r.loaded.len(), 2);
    assert_eq!(r.to_model().namespaces["a"].labels["v"], "2", "later files win");
    std::fs::remove_dir_all(&dir).ok();
}
