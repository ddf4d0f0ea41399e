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

fn warnings(r: &LoadReport) -> Vec<String> {
    r.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn unknown_fields_are_warned_about_with_file_document_object_and_path() {
    let r = load(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  namespaceSelectr: team == 'x'\n  egres: [{action: Deny}]\n  ingress:\n  - action: Allow\n    sorce: {selector: all()}\n    destination: {selectr: a == 'b', ports: [80]}\n    protocol: TCP\n",
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.loaded.len(), 2, "the object still loads, without the unknown fields");
    let w = warnings(&r);
    assert_eq!(
        w,
        [
            // Within a section, in key order.
            "m.yaml (document 2): GlobalNetworkPolicy g: spec.egres: unknown field, ignored",
            "m.yaml (document 2): GlobalNetworkPolicy g: spec.ingress[0].destination.selectr: unknown field, ignored",
            "m.yaml (document 2): GlobalNetworkPolicy g: spec.ingress[0].sorce: unknown field, ignored",
            "m.yaml (document 2): GlobalNetworkPolicy g: spec.namespaceSelectr: unknown field, ignored",
        ]
    );
    assert!(matches!(&r.warnings[0], ManifestWarning::UnknownField { origin, .. } if origin.document == 2));
}

#[test]
fn unknown_fields_of_kubernetes_objects() {
    let r = load(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: n, lables: {a: b}}\nsepc: {}\nspec:\n  podSelector: {matchLabel: {app: x}}\n  ingress: [{form: [{podSelector: {}}]}]\n  egress: [{from: [{podSelector: {}}]}]\n",
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        warnings(&r),
        [
            "m.yaml (document 1): NetworkPolicy n/p: sepc: unknown field, ignored",
            "m.yaml (document 1): NetworkPolicy n/p: metadata.lables: unknown field, ignored",
            // `from` belongs to ingress rules: an egress rule's peers are `to`.
            "m.yaml (document 1): NetworkPolicy n/p: spec.egress[0].from: unknown field, ignored",
            "m.yaml (document 1): NetworkPolicy n/p: spec.ingress[0].form: unknown field, ignored",
            "m.yaml (document 1): NetworkPolicy n/p: spec.podSelector.matchLabel: unknown field, ignored",
        ]
    );
    let m = r.to_model();
    let p = &m.k8s_policies[&(false, "n".to_string(), "p".to_string())];
    assert_eq!(p.spec.egress.as_ref().unwrap()[0].from, None, "as Kubernetes reads it: no `to`");
}

#[test]
fn pods_read_the_deprecated_service_account_field_and_report_typos() {
    let r = load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {serviceAccount: legacy, containers: [{name: c, ports: [{containerPort: 80, nmae: http}]}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {serviceAccountNmae: x, serviceAccount: legacy, serviceAccountName: current}\nstatus: {podIp: 10.0.0.1}\n",
    );
    let m = r.to_model();
    assert_eq!(m.pods[&("default".to_string(), "a".to_string())].service_account, "legacy");
    assert_eq!(m.pods[&("default".to_string(), "b".to_string())].service_account, "current");
    assert_eq!(
        warnings(&r),
        [
            "m.yaml (document 1): Pod default/a: spec.containers[0].ports[0].nmae: unknown field, ignored",
            "m.yaml (document 2): Pod default/b: spec.serviceAccountNmae: unknown field, ignored",
            "m.yaml (document 2): Pod default/b: status.podIp: unknown field, ignored",
        ]
    );
}

#[test]
fn strict_loading_rejects_objects_with_unknown_fields_and_keeps_the_rest() {
    let text = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {egres: [{action: Deny}], ingres: []}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ok, resourceVersion: '7'}\n";
    let r = load_str_with(text, Path::new("m.yaml"), LoadOptions::strict());
    assert!(r.warnings.is_empty());
    assert_eq!(r.loaded.len(), 1);
    assert_eq!(r.loaded[0].object.name, "ok");
    let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "m.yaml (document 1): GlobalNetworkPolicy g: spec.egres: unknown field",
            "m.yaml (document 1): GlobalNetworkPolicy g: spec.ingres: unknown field",
        ]
    );
    // The default warns and loads.
    let r = load(text);
    assert_eq!((r.loaded.len(), r.warnings.len(), r.errors.len()), (2, 2, 0));
}

#[test]
fn unknown_fields_of_an_invalid_object_are_reported_with_its_error() {
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {egres: [], ingress: [{action: Jump}], ordr: 1}\n",
    );
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].to_string().contains("spec.ingress[0].action"));
    // Fields after the error (in key order) are not reached.
    assert_eq!(warnings(&r), ["m.yaml (document 1): NetworkPolicy default/p: spec.egres: unknown field, ignored"]);
}

#[test]
fn lists_report_unknown_fields_and_missing_items() {
    let r = load("apiVersion: v1\nkind: List\nitmes:\n- {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n");
    assert!(r.loaded.is_empty());
    assert_eq!(warnings(&r), ["m.yaml (document 1): List (unnamed): itmes: unknown field, ignored"]);
    assert_eq!(r.errors[0].to_string(), "m.yaml (document 1): List (unnamed): items: a List needs items");
    let r = load("apiVersion: v1\nkind: List\nitems: 5\n");
    assert!(r.errors[0].to_string().contains("items: expected a list of objects"));
    let r = load("apiVersion: v1\nkind: List\nitems:\nmetadata: {resourceVersion: ''}\n");
    assert!(r.errors.is_empty() && r.warnings.is_empty());
}

#[test]
fn kinds_moat_does_not_read_are_not_checked_for_fields() {
    let r = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 3, anything: [1]}\n");
    assert_eq!(r.skipped.len(), 1);
    assert!(r.warnings.is_empty() && r.errors.is_empty());
}

#[test]
fn upstream_fields_moat_does_not_read_pass_silently() {
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, uid: x, generation: 2, managedFields: []}\nspec: {cidr: 10.0.0.0/16, blockSize: 26, nodeSelector: all(), allowedUses: [Workload]}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s}\nautomountServiceAccountToken: false\nsecrets: [{name: t}]\n---\napiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: 1}\nstatus: {conditions: []}\n",
    );
    assert!(r.errors.is_empty() && r.warnings.is_empty(), "{:?} {:?}", r.errors, r.warnings);
    assert_eq!(r.loaded.len(), 3);
}

#[test]
fn duplicate_keys_reject_the_document_and_the_next_one_still_loads() {
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec:\n  ingress: [{action: Deny}]\n  ingress: [{action: Allow}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    assert_eq!(r.errors.len(), 1);
    let msg = r.errors[0].to_string();
    assert_eq!(msg, "m.yaml (document 1): not valid YAML/JSON: spec: duplicate key \"ingress\"");
    assert_eq!(r.loaded.len(), 1, "document 2 still loads");
}

#[test]
fn yaml_merge_keys_merge() {
    let r = load(
        "apiVersion: v1\nkind: List\nitems:\n- &base {apiVersion: v1, kind: Namespace, metadata: {name: a, labels: {team: x}}}\n- <<: *base\n  metadata: {name: b}\n",
    );
    assert!(r.errors.is_empty() && r.warnings.is_empty(), "{:?} {:?}", r.errors, r.warnings);
    let m = r.to_model();
    assert_eq!(m.namespaces.len(), 2);
    assert!(!m.namespaces["b"].labels.contains_key("team"), "merge is shallow, explicit keys win");
}

#[test]
fn staged_action_belongs_to_the_staged_kubernetes_kind_only() {
    let r = load(
        "apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: s}\nspec: {podSelector: {}, stagedAction: Delete}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}, stagedAction: Delete}\n---\napiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: bad}\nspec: {podSelector: {}, stagedAction: Remove}\n",
    );
    let m = r.to_model();
    let staged = &m.k8s_policies[&(true, "default".to_string(), "s".to_string())];
    assert_eq!(staged.spec.staged_action, Some(crate::model::StagedAction::Delete));
    assert_eq!(m.k8s_policies[&(false, "default".to_string(), "p".to_string())].spec.staged_action, None);
    assert_eq!(
        warnings(&r),
        ["m.yaml (document 2): NetworkPolicy default/p: spec.stagedAction: unknown field, ignored"]
    );
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].to_string().contains("StagedKubernetesNetworkPolicy default/bad: spec.stagedAction"));
}

#[test]
fn a_duplicate_key_before_a_syntax_error_does_not_resume_the_stream() {
    // Regression (fuzzing, manifest_load): resuming after the duplicate key started the next
    // "document" in the middle of this one, and serde_norway panicked.
    let r = load(
        "kind: a\nkind: b\nspec: {types: [Ingress, *Egress]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].to_string().contains("unknown anchor"), "{}", r.errors[0]);
    assert!(r.loaded.is_empty());
}
