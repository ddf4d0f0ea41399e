//! End-to-end tests of `moat policy eval` / `moat policy explain` on the example manifests.
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("control/examples/policy")
}

fn moat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moat"));
    c.env("MOAT_LOG", "warn");
    c
}

fn eval_lines(manifests: &[PathBuf], input: &str) -> (Vec<serde_json::Value>, String, Option<i32>) {
    let mut child = moat()
        .args(["policy", "eval", "--flows", "-", "--manifests"])
        .args(manifests)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn moat");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned(), out.status.code())
}

#[test]
fn eval_answers_every_flow_in_order() {
    let flows = std::fs::read_to_string(examples().join("flows.jsonl")).unwrap();
    let (lines, stderr, code) = eval_lines(&[examples().join("cluster.yaml")], &flows);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 6, "one line per flow");
    // frontend/web → backend/api on the named port: allowed by the k8s policy after the
    // security tier passes.
    assert_eq!(lines[0]["verdict"], "allow");
    assert_eq!(
        lines[0]["ingress"]["policies"],
        serde_json::json!([
            "0|security|security.quarantine|pass|1",
            "1|default|backend/knp.default.api-from-frontend|allow|0"
        ])
    );
    assert_eq!(lines[0]["egress"]["verdict"], "allow");
    // Wrong port: end of the default tier.
    assert_eq!(lines[1]["verdict"], "deny");
    assert_eq!(lines[1]["ingress"]["policies"][1], "1|default|backend/knp.default.api-from-frontend|deny|-1");
    // Quarantined pod: denied on both sides by the security tier.
    assert_eq!(lines[2]["verdict"], "deny");
    assert_eq!(lines[2]["egress"]["policies"], serde_json::json!(["0|security|security.quarantine|deny|0"]));
    // External partner address: egress logged, then passed to the profile; no ingress side.
    assert_eq!(lines[3]["verdict"], "allow");
    assert!(lines[3]["ingress"].is_null());
    assert_eq!(lines[3]["egress"]["policies"][0], "0|security|security.quarantine|log|1");
    // Unknown source address with a numeric protocol.
    assert!(lines[4]["egress"].is_null());
    assert_eq!(lines[4]["verdict"], "allow");
    // Unknown pod: an error line, not a crash.
    assert_eq!(lines[5], serde_json::json!({"error": "unknown pod frontend/nope"}));
}

#[test]
fn eval_output_fields_are_in_documented_order() {
    let (_, _, _) = eval_lines(&[examples()], "");
    let out = moat()
        .args(["policy", "eval", "--manifests"])
        .arg(examples())
        .args(["--flows"])
        .arg(examples().join("flows.jsonl"))
        .output()
        .unwrap();
    let first = String::from_utf8(out.stdout).unwrap().lines().next().unwrap().to_string();
    assert!(first.starts_with(r#"{"verdict":"allow","egress":{"verdict":"allow","policies":["#), "{first}");
}

#[test]
fn invalid_manifest_object_is_reported_and_the_rest_still_loads() {
    let dir = std::env::temp_dir().join(format!("moat-policy-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: broken}\nspec:\n  selector: all()\n  ingress:\n  - action: Deny\n    source: {selector: \"app == 'x' &&\"}\n",
    )
    .unwrap();
    let (lines, stderr, code) = eval_lines(
        &[examples().join("cluster.yaml"), bad.clone()],
        r#"{"src": "frontend/web", "dst": "backend/api", "protocol": "TCP", "dst_port": 9000}"#,
    );
    assert_eq!(code, Some(0));
    assert_eq!(lines[0]["verdict"], "allow", "the broken policy was left out");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("GlobalNetworkPolicy broken"), "{stderr}");
    assert!(stderr.contains("spec.ingress[0].source.selector"), "{stderr}");
    assert!(stderr.contains("position"), "{stderr}");
    // --strict refuses to evaluate.
    let out = moat()
        .args(["policy", "eval", "--strict", "--flows", "/dev/null", "--manifests"])
        .arg(examples().join("cluster.yaml"))
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn explain_prints_a_readable_account() {
    let out = moat()
        .args(["policy", "explain", "--manifests"])
        .arg(examples())
        .args(["--from", "frontend/bad", "--to", "backend/api", "--protocol", "TCP", "--port", "9000"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("verdict: DENY"), "{text}");
    assert!(text.contains("zone zone-frontend"), "{text}");
    assert!(text.contains("policy security.quarantine (order 10): ingress rule 0 matches: Deny"), "{text}");
    let out = moat()
        .args(["policy", "explain", "--manifests"])
        .arg(examples())
        .args(["--from", "nope/nope", "--to", "backend/api", "--port", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pod nope/nope"));
}

#[test]
fn unknown_fields_are_warned_about_and_refused_under_strict() {
    let dir = std::env::temp_dir().join(format!("moat-policy-unknown-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let typo = dir.join("typo.yaml");
    // `egres` is a typo: the policy loads without it (and so allows all egress), with a warning.
    std::fs::write(
        &typo,
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: lockdown}\nspec:\n  selector: app == 'web'\n  types: [Ingress]\n  egres:\n  - action: Deny\n",
    )
    .unwrap();
    let (lines, stderr, code) = eval_lines(
        &[examples().join("cluster.yaml"), typo.clone()],
        r#"{"src": "frontend/web", "dst": "backend/api", "protocol": "TCP", "dst_port": 9000}"#,
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 1);
    assert!(
        stderr.contains("typo.yaml (document 1): GlobalNetworkPolicy lockdown: spec.egres: unknown field, ignored"),
        "{stderr}"
    );
    assert!(stderr.contains("1 unknown field(s) ignored"), "{stderr}");
    // --strict: an error, nothing evaluated.
    let out = moat()
        .args(["policy", "eval", "--strict", "--flows", "/dev/null", "--manifests"])
        .arg(examples().join("cluster.yaml"))
        .arg(&typo)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: ") && stderr.contains("spec.egres: unknown field"), "{stderr}");
    assert!(stderr.contains("not evaluating (--strict)"), "{stderr}");
    // explain prints the same warnings.
    let out = moat()
        .args(["policy", "explain", "--manifests"])
        .arg(examples().join("cluster.yaml"))
        .arg(&typo)
        .args(["--from", "frontend/web", "--to", "backend/api", "--port", "9000"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.egres: unknown field"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn example_manifests_load_clean_under_strict() {
    let out = moat()
        .args(["policy", "eval", "--strict", "--flows", "/dev/null", "--manifests"])
        .arg(examples())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
