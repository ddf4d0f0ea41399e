//! `kubectl moat` against an API server: the in-test `moat-kubesim` (a real Kubernetes API server cannot run
//! here; kubesim speaks the list/watch wire format kube-rs uses), loaded with the demo's cluster and policy.
//! The plugin is the `moat` binary run as `kubectl-moat` (through a link, as kubectl finds plugins on the PATH)
//! and as `moat kubectl`.
// A test binary: a panic is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use moat_kubesim::{KubeSim, SimConfig};
use std::process::{Command, Output};

const DEMO: [&str; 3] = [
    include_str!("../examples/demo/00-cluster.yaml"),
    include_str!("../examples/demo/10-zones-tier.yaml"),
    include_str!("../examples/demo/20-namespaces.yaml"),
];

fn demo_cluster() -> KubeSim {
    let sim = KubeSim::start(SimConfig::default()).unwrap();
    for text in DEMO {
        sim.apply_yaml(text).unwrap();
    }
    sim
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn explain_names_the_deciding_tier_policy_and_rule_from_the_live_cluster() {
    let sim = demo_cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, sim.kubeconfig()).unwrap();
    // As kubectl runs it: an executable named kubectl-moat.
    let plugin = dir.path().join("kubectl-moat");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_moat"), &plugin).unwrap();
    let explain = |from: &str, to: &str, port: &str| {
        Command::new(&plugin)
            .args(["explain", "--from", from, "--to", to, "--port", port, "--kubeconfig"])
            .arg(&config)
            .output()
            .unwrap()
    };

    let allowed = explain("dmz/web", "trusted/app", "8080/TCP");
    let out = text(&allowed);
    assert!(allowed.status.success(), "{out}");
    assert!(out.contains("zones.dmz-egress") && out.contains("knp.default.api-ingress"), "{out}");
    assert!(out.to_lowercase().contains("allow"), "{out}");

    let denied = explain("dmz/web", "restricted/db", "5432/TCP");
    let out = text(&denied);
    assert!(denied.status.success(), "{out}");
    assert!(out.contains("zones.restricted") && out.to_lowercase().contains("deny"), "{out}");

    // Same answer through `moat kubectl`; a pod that does not exist is an error naming it.
    let missing = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["kubectl", "--kubeconfig"])
        .arg(&config)
        .args(["explain", "--from", "dmz/nope", "--to", "trusted/app", "--port", "8080/TCP"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(text(&missing).contains("dmz/nope"), "{}", text(&missing));
}

#[test]
fn an_unreachable_api_server_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    // A kubeconfig for a server that is gone: nothing listens on its port any more.
    let config = dir.path().join("kubeconfig");
    let gone = KubeSim::start(SimConfig::default()).unwrap();
    std::fs::write(&config, gone.kubeconfig()).unwrap();
    drop(gone);
    let out = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["kubectl", "--kubeconfig"])
        .arg(&config)
        .args(["--timeout-secs", "3", "explain", "--from", "a/b", "--to", "c/d", "--port", "80/TCP"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no complete view of the cluster"), "{}", text(&out));
}
