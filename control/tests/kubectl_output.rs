//! Real `kubectl get -o yaml` / `calicoctl get -o yaml` output (server-set metadata, managed
//! fields, annotations, Pod specs and statuses in full) loads clean: no errors, no warnings —
//! unknown-field warnings are for what a person wrote, not for what the API server adds.
// Integration tests: a panic is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use moat_control::manifest::{LoadOptions, load_paths, load_paths_with};
use moat_control::model::{PolicyKind, Protocol};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubectl")
}

#[test]
fn kubectl_output_loads_without_errors_or_warnings() {
    for options in [LoadOptions::default(), LoadOptions::strict()] {
        let r = load_paths_with(&[fixtures()], options);
        let messages: Vec<String> =
            r.errors.iter().map(ToString::to_string).chain(r.warnings.iter().map(ToString::to_string)).collect();
        assert!(messages.is_empty(), "{options:?}: {messages:#?}");
        assert!(r.skipped.is_empty());
        assert_eq!(r.loaded.len(), 12);
    }
}

#[test]
fn kubectl_output_means_what_it_says() {
    let m = load_paths(&[fixtures()]).to_model();
    let api = &m.pods[&("shop".to_string(), "api-7d9c8b6f5d-x2k8q".to_string())];
    assert_eq!(api.service_account, "api");
    assert_eq!(api.ips.len(), 2);
    assert_eq!(api.named_ports.len(), 2);
    assert_eq!(api.named_ports[0].protocol, Protocol::Tcp);
    assert_eq!(m.namespaces["shop"].labels["team"], "shop");
    let np = &m.k8s_policies[&(false, "shop".to_string(), "api-ingress".to_string())];
    assert_eq!(np.spec.egress.as_ref().unwrap()[0].from.as_ref().unwrap().len(), 1, "egress `to` peers");
    assert!(m.policies.keys().any(|k| k.kind == PolicyKind::GlobalNetworkPolicy && k.name == "default.allow-dns"));
    assert_eq!(m.ip_pools["default-ipv4-ippool"].spec.cidr.to_string(), "10.244.0.0/16");
    assert_eq!(m.host_endpoints["worker-1-eth0"].spec.ports[0].port, 22);
}
