//! `deploy/` checked three ways:
//!
//! * against the Kubernetes OpenAPI schemas: every manifest, and every kustomization rendered by
//!   `kubectl kustomize` where kubectl exists, validated strictly (unknown fields are errors) by
//!   kubernetes-validate at the Kubernetes version moat-control is built against (k8s-openapi
//!   `v1_34`) and at the newest one the validator knows; CRDs as `apiextensions.k8s.io/v1`;
//! * against the code: the ClusterRole grants exactly what `moat_control::source::kube::WATCHED`
//!   lists, the Calico CRDs define exactly the Calico kinds the source reads, every container
//!   argument is one `moat` accepts (today's `moat run` is run for real with the ConfigMap's values),
//!   the example policy loads as the fastpath loads it, the runtime image installs what the binary
//!   links, and the fastpath's capabilities are sufficient and each one necessary (`moat run` as root
//!   with exactly that bounding set, in a network namespace);
//! * against itself: references between objects, the security context, probes, update strategy,
//!   and resources sized by the documented formula from the ConfigMap's values.
//!
//! The YAML is parsed by the validator's own Python (PyYAML, with duplicate keys refused, as kubectl
//! refuses them) and handed over as JSON, so what is validated and what is checked here are the same
//! documents. The validator lives in a venv that `./dev.sh test` installs (`target/deploy-venv`, or
//! `MOAT_DEPLOY_VENV`); without it these tests skip with a banner, and fail under
//! `MOAT_E2E_REQUIRE=1` (CI).
// A test binary: a panic is the assertion, in helpers as in test bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const MOAT: &str = env!("CARGO_BIN_EXE_moat");

/// k8s-openapi's feature in control/Cargo.toml (the API moat-control is written against), and the
/// newest version kubernetes-validate 1.37 ships schemas for.
const KUBERNETES_VERSIONS: &str = "1.34.0,1.37.0";

/// The fastpath's capabilities, each needed (see `fastpath_capabilities_are_sufficient_and_each_is_necessary`
/// and the comment in deploy/base/daemonset.yaml).
const FASTPATH_CAPABILITIES: [&str; 5] = ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW", "IPC_LOCK"];

/// What the base DaemonSet runs that the binary does not have yet: the agent/fastpath split of
/// issue 6 (`moat agent`, and `moat run --control-socket` as in fastpath/src/control_link). Each
/// is checked as soon as it exists; a subcommand or flag that is neither here nor in the binary is
/// an error.
const PLANNED_SUBCOMMANDS: [&str; 0] = [];
const PLANNED_FLAGS: [(&str, &str); 0] = [];

/// The only host paths the pod may mount.
const ALLOWED_HOST_PATHS: [&str; 1] = ["/var/log/moat"];

/// Memory the fastpath allocates at start (daemonset.yaml): per worker, UMEM and handoff mailbox,
/// plus the flow table at `FLOW_BYTES` per tracked connection (BENCHMARKS.md, "Memory per flow");
/// per process, the flow-record queue and the runtime.
const WORKER_FIXED_BYTES: u64 = 18 << 20;
const FLOW_BYTES: u64 = 126;
const PROCESS_FIXED_BYTES: u64 = 55 << 20;

/// Python run inside the validator's venv: `VERSIONS (parse|validate):PATH...` → JSON list of
/// `{path, docs, errors}`.
const VALIDATOR: &str = r#"
import json, sys, yaml
from kubernetes_validate import utils

class Loader(yaml.SafeLoader):
    pass

def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)

Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)

versions = sys.argv[1].split(",")
out = []
for arg in sys.argv[2:]:
    mode, path = arg.split(":", 1)
    entry = {"path": path, "docs": [], "errors": []}
    out.append(entry)
    try:
        with open(path) as f:
            entry["docs"] = [d for d in yaml.load_all(f, Loader=Loader) if d is not None]
    except Exception as e:
        entry["errors"].append("YAML: %s" % e)
        continue
    if mode != "validate":
        continue
    for i, doc in enumerate(entry["docs"]):
        try:
            name = "%s/%s" % (doc["kind"], doc["metadata"]["name"])
        except Exception:
            name = "document %d" % i
        for version in versions:
            try:
                utils.validate(doc, version, strict=True)
            except utils.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                entry["errors"].append("%s (Kubernetes %s): %s: %s" % (name, version, where, e.message))
            except utils.SchemaNotFoundError as e:
                entry["errors"].append("%s: no schema: %s" % (name, e.message))
            except Exception as e:
                entry["errors"].append("%s (Kubernetes %s): %r" % (name, version, e))
json.dump(out, sys.stdout, default=str)
"#;

/// Everything read from deploy/, once per test binary.
#[derive(Debug)]
struct Deploy {
    /// Every YAML file under deploy/ (path relative to deploy/) → its documents.
    files: BTreeMap<String, Vec<Value>>,
    /// Schema and YAML problems, by file (rendered kustomizations as `render:<dir>`).
    errors: Vec<String>,
    /// Kustomization directories (relative to deploy/, "" for deploy/ itself).
    kustomizations: Vec<String>,
    /// `kubectl kustomize <dir>` output, by kustomization directory, when kubectl exists.
    rendered: Option<BTreeMap<String, Vec<Value>>>,
    documents_validated: usize,
}

fn required() -> bool {
    std::env::var_os("MOAT_E2E_REQUIRE").is_some_and(|v| v == "1")
}

/// Fails under `MOAT_E2E_REQUIRE=1`, else prints a banner; the caller returns.
fn skip(test: &str, reason: &str) {
    if required() {
        panic!("{test}: cannot run and MOAT_E2E_REQUIRE=1: {reason}");
    }
    let banner = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{banner}\n!!! SKIPPED {test}: {reason}\n!!! set MOAT_E2E_REQUIRE=1 to fail instead.\n{banner}"
    );
}

fn venv() -> PathBuf {
    std::env::var_os("MOAT_DEPLOY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-venv"))
}

fn deploy(test: &str) -> Option<&'static Deploy> {
    static DEPLOY_DATA: OnceLock<Result<Deploy, String>> = OnceLock::new();
    match DEPLOY_DATA.get_or_init(load_deploy) {
        Ok(d) => Some(d),
        Err(reason) => {
            skip(test, reason);
            None
        }
    }
}

fn run_validator(args: &[String]) -> Result<Vec<Value>, String> {
    let python = venv().join("bin/python");
    let out = Command::new(&python)
        .arg("-c")
        .arg(VALIDATOR)
        .arg(KUBERNETES_VERSIONS)
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("validator failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("validator output: {e}"))
}

fn load_deploy() -> Result<Deploy, String> {
    let python = venv().join("bin/python");
    let probe = Command::new(&python).args(["-c", "import kubernetes_validate"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "kubernetes-validate is not installed in {} (./dev.sh test installs it: python3 -m venv, \
             pip install kubernetes-validate)",
            venv().display()
        ));
    }
    let mut yaml_files = Vec::new();
    collect_yaml(Path::new(DEPLOY), &mut yaml_files);
    yaml_files.sort();
    let rel = |p: &Path| p.strip_prefix(DEPLOY).map(|r| r.display().to_string()).unwrap_or_default();

    // Kustomizations and patches are not Kubernetes objects: parsed, not validated. Everything else
    // under deploy/ is a manifest.
    let parsed = run_validator(
        &yaml_files
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
            .map(|p| format!("parse:{}", p.display()))
            .collect::<Vec<_>>(),
    )?;
    let mut kustomizations = Vec::new();
    let mut patches = BTreeSet::new();
    let mut files = BTreeMap::new();
    let mut errors = Vec::new();
    for entry in &parsed {
        let path = PathBuf::from(entry["path"].as_str().unwrap_or_default());
        let dir = path.parent().map(rel).unwrap_or_default();
        for doc in entry["docs"].as_array().into_iter().flatten() {
            for patch in doc["patches"].as_array().into_iter().flatten() {
                if let Some(p) = patch["path"].as_str() {
                    patches.insert(normalize(&Path::new(DEPLOY).join(&dir).join(p)));
                }
            }
        }
        errors.extend(entry_errors(entry));
        files.insert(rel(&path), entry["docs"].as_array().cloned().unwrap_or_default());
        kustomizations.push(dir);
    }
    let mut args = Vec::new();
    for p in &yaml_files {
        if p.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let mode = if patches.contains(&normalize(p)) { "parse" } else { "validate" };
        args.push(format!("{mode}:{}", p.display()));
    }

    // Rendered kustomizations, where kubectl exists (the brief's "use kubectl kustomize only if
    // available"): overlays and the namespace/label/image transformations are checked then too.
    let scratch = tempdir();
    let mut rendered_dirs = Vec::new();
    if kubectl_available() {
        for dir in &kustomizations {
            let out = Command::new("kubectl")
                .args(["kustomize", &Path::new(DEPLOY).join(dir).display().to_string()])
                .output()
                .map_err(|e| format!("kubectl kustomize: {e}"))?;
            if !out.status.success() {
                errors.push(format!("kubectl kustomize deploy/{dir}: {}", String::from_utf8_lossy(&out.stderr)));
                continue;
            }
            let file = scratch.join(format!("render-{}.yaml", rendered_dirs.len()));
            std::fs::write(&file, &out.stdout).map_err(|e| e.to_string())?;
            args.push(format!("validate:{}", file.display()));
            rendered_dirs.push((file, dir.clone()));
        }
    } else {
        eprintln!(
            "!!! kubectl not found: kustomizations are checked by their file lists only, not rendered \
             (overlays' patches are not validated)"
        );
    }
    let checked = run_validator(&args)?;
    let mut rendered = kubectl_available().then(BTreeMap::new);
    let mut documents_validated = 0;
    for entry in &checked {
        let path = PathBuf::from(entry["path"].as_str().unwrap_or_default());
        let docs = entry["docs"].as_array().cloned().unwrap_or_default();
        if !patches.contains(&normalize(&path)) {
            documents_validated += docs.len();
        }
        match rendered_dirs.iter().find(|(f, _)| *f == path) {
            Some((_, dir)) => {
                errors.extend(entry_errors(entry).into_iter().map(|e| format!("rendered deploy/{dir}: {e}")));
                if let Some(r) = rendered.as_mut() {
                    r.insert(dir.clone(), docs);
                }
            }
            None => {
                errors.extend(entry_errors(entry));
                files.insert(rel(&path), docs);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Deploy { files, errors, kustomizations, rendered, documents_validated })
}

fn entry_errors(entry: &Value) -> Vec<String> {
    let path = entry["path"].as_str().unwrap_or_default();
    entry["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{path}: {}", e.as_str().unwrap_or_default()))
        .collect()
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// `a/b/../c` → `a/c`, without touching the file system (for comparing references).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn kubectl_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("kubectl")
            .args(["version", "--client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn tempdir() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("moat-deploy-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Deploy {
    /// Every document of the base's files.
    fn base(&self) -> impl Iterator<Item = &Value> {
        self.files.iter().filter(|(p, _)| p.starts_with("base/")).flat_map(|(_, d)| d)
    }

    fn base_object(&self, kind: &str, name: &str) -> &Value {
        self.base()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("deploy/base has no {kind} {name}"))
    }

    fn kustomization(&self, dir: &str) -> &Value {
        let path = if dir.is_empty() { "kustomization.yaml".to_owned() } else { format!("{dir}/kustomization.yaml") };
        self.files.get(&path).and_then(|d| d.first()).unwrap_or_else(|| panic!("no deploy/{path}"))
    }

    /// DaemonSets to hold to the security and wiring rules: the base's, and every rendered one.
    fn daemonsets(&self) -> Vec<(String, &Value)> {
        let mut out = vec![("deploy/base/daemonset.yaml".to_owned(), self.base_object("DaemonSet", "moat"))];
        for (dir, docs) in self.rendered.iter().flatten() {
            for d in docs.iter().filter(|d| d["kind"] == "DaemonSet") {
                out.push((format!("rendered deploy/{dir}"), d));
            }
        }
        out
    }

    /// The settings ConfigMap a rendered kustomization (or the base) gives its DaemonSet.
    fn config_for(&self, origin: &str) -> &Value {
        let rendered = origin.strip_prefix("rendered deploy/").and_then(|dir| {
            self.rendered
                .as_ref()?
                .get(dir)?
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "moat-config")
        });
        rendered.unwrap_or_else(|| self.base_object("ConfigMap", "moat-config"))
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

fn container<'a>(ds: &'a Value, name: &str) -> Option<&'a Value> {
    ds["spec"]["template"]["spec"]["containers"].as_array()?.iter().find(|c| c["name"] == name)
}

/// Kubernetes quantities as bytes (memory) or millicores (cpu), the suffixes deploy/ uses.
fn quantity(q: &Value) -> u64 {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a quantity: {other}"),
    };
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().unwrap();
    }
    s.parse::<u64>().map(|n| n * 1000).unwrap_or_else(|_| panic!("quantity {s:?}"))
}

/// The kubelet's `$(VAR)` expansion of container arguments.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// A container's environment with ConfigMap references resolved against `config`.
fn environment(c: &Value, config: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_owned()
        } else if let Some(key) = e["valueFrom"]["configMapKeyRef"]["key"].as_str() {
            config["data"][key].as_str().unwrap_or_default().to_owned()
        } else {
            format!("<{name} from the downward API>")
        };
        env.insert(name, value);
    }
    env
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let Some(d) = deploy("manifests_validate_against_the_kubernetes_schemas") else { return };
    assert!(d.errors.is_empty(), "deploy/ has problems:\n  {}", d.errors.join("\n  "));
    // Base (namespace, SA, role, binding, two ConfigMaps, DaemonSet) and ten CRDs at least.
    assert!(d.documents_validated >= 17, "only {} documents validated", d.documents_validated);
    match &d.rendered {
        Some(r) => eprintln!(
            "{} documents validated at Kubernetes {KUBERNETES_VERSIONS}, and {} kustomizations rendered and validated",
            d.documents_validated,
            r.len()
        ),
        None => eprintln!("{} documents validated at Kubernetes {KUBERNETES_VERSIONS}", d.documents_validated),
    }
}

#[test]
fn kustomizations_reference_existing_files_and_leave_none_out() {
    let Some(d) = deploy("kustomizations_reference_existing_files_and_leave_none_out") else { return };
    let mut referenced = BTreeSet::new();
    for dir in &d.kustomizations {
        let k = d.kustomization(dir);
        let base = Path::new(DEPLOY).join(dir);
        for r in strings(&k["resources"]) {
            let target = base.join(r);
            assert!(target.exists(), "deploy/{dir}/kustomization.yaml: resource {r} does not exist");
            if target.is_dir() {
                assert!(
                    target.join("kustomization.yaml").exists(),
                    "deploy/{dir}: {r} is a directory without a kustomization"
                );
            }
            referenced.insert(normalize(&target));
        }
        for p in k["patches"].as_array().into_iter().flatten() {
            if let Some(path) = p["path"].as_str() {
                assert!(base.join(path).exists(), "deploy/{dir}/kustomization.yaml: patch {path} does not exist");
                referenced.insert(normalize(&base.join(path)));
            }
        }
    }
    for file in d.files.keys().filter(|f| !f.ends_with("kustomization.yaml")) {
        let path = normalize(&Path::new(DEPLOY).join(file));
        assert!(referenced.contains(&path), "deploy/{file} is in no kustomization: it would never be applied");
    }
    // The Calico CRDs must never come with the default install: on a cluster with Calico they would
    // replace Calico's own definitions.
    for dir in ["", "base"] {
        let k = d.kustomization(dir);
        assert!(
            !strings(&k["resources"]).iter().any(|r| r.contains("calico")),
            "deploy/{dir} pulls in the Calico CRDs"
        );
    }
    assert_eq!(d.kustomization("base")["namespace"], "moat-system");
    for dir in &d.kustomizations {
        for image in d.kustomization(dir)["images"].as_array().into_iter().flatten() {
            assert_eq!(
                image["newTag"].as_str(),
                Some(env!("CARGO_PKG_VERSION")),
                "deploy/{dir}: the image tag should follow the workspace version"
            );
        }
    }
    if let Some(rendered) = &d.rendered {
        for (dir, docs) in rendered.iter().filter(|(dir, _)| !dir.contains("calico")) {
            for doc in docs
                .iter()
                .filter(|doc| doc["kind"] != "Namespace" && !doc["kind"].as_str().unwrap().starts_with("Cluster"))
            {
                assert_eq!(
                    doc["metadata"]["namespace"], "moat-system",
                    "rendered deploy/{dir}: {}",
                    doc["metadata"]["name"]
                );
            }
        }
    }
}

#[test]
fn pods_hold_no_privilege_beyond_the_fastpath_capabilities() {
    let Some(d) = deploy("pods_hold_no_privilege_beyond_the_fastpath_capabilities") else { return };
    let wanted: BTreeSet<&str> = FASTPATH_CAPABILITIES.into_iter().collect();
    for (origin, ds) in d.daemonsets() {
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true, "{origin}: the wire interfaces are host interfaces");
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "{origin}");
        for host_ns in ["hostPID", "hostIPC"] {
            assert_ne!(pod[host_ns], true, "{origin}: {host_ns}");
        }
        assert_eq!(pod["automountServiceAccountToken"], false, "{origin}: the token is for the agent only");
        let fastpath = container(ds, "fastpath").unwrap_or_else(|| panic!("{origin}: no fastpath container"));
        for c in pod["containers"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            let sc = &c["securityContext"];
            assert_ne!(sc["privileged"], true, "{origin}: {name} is privileged");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{origin}: {name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{origin}: {name}");
            assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{origin}: {name} must drop ALL");
            let added: BTreeSet<&str> = strings(&sc["capabilities"]["add"]).into_iter().collect();
            if c == fastpath {
                assert_eq!(added, wanted, "{origin}: the fastpath's capabilities");
            } else {
                assert!(added.is_empty(), "{origin}: {name} adds {added:?}");
                assert_eq!(sc["runAsNonRoot"], true, "{origin}: {name} must not run as root");
                assert!(sc["runAsUser"].as_u64().is_some_and(|u| u != 0), "{origin}: {name} runAsUser");
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let is_token = m["mountPath"].as_str().unwrap().starts_with("/var/run/secrets/kubernetes.io");
                assert!(!is_token || name == "agent", "{origin}: {name} mounts API credentials");
            }
        }
        for v in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(path) = v["hostPath"]["path"].as_str() {
                assert!(
                    ALLOWED_HOST_PATHS.contains(&path),
                    "{origin}: hostPath {path} (moat pins nothing in bpffs and reads no host /sys)"
                );
            }
        }
    }
    let sa = d.base_object("ServiceAccount", "moat");
    assert_eq!(sa["automountServiceAccountToken"], false);
}

#[test]
fn daemonset_is_wired_probed_sized_and_updated_as_documented() {
    let Some(d) = deploy("daemonset_is_wired_probed_sized_and_updated_as_documented") else { return };
    for (origin, ds) in d.daemonsets() {
        let spec = &ds["spec"];
        let pod = &spec["template"]["spec"];
        let labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
        for (k, v) in spec["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(labels.get(k), Some(v), "{origin}: the selector must match the template");
        }
        assert_eq!(pod["nodeSelector"]["moat.io/high-throughput"], "true", "{origin}");
        assert_eq!(pod["priorityClassName"], "system-node-critical", "{origin}");
        assert!(
            pod["tolerations"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["operator"] == "Exists" && t["key"].is_null())),
            "{origin}: a node agent tolerates every taint"
        );
        assert_eq!(spec["updateStrategy"]["type"], "RollingUpdate", "{origin}");
        assert_eq!(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1, "{origin}");
        assert_eq!(
            spec["updateStrategy"]["rollingUpdate"]["maxSurge"], 0,
            "{origin}: two fastpaths cannot share a node"
        );
        assert!(pod["terminationGracePeriodSeconds"].as_u64().is_some_and(|s| s > 0), "{origin}");
        let sa = pod["serviceAccountName"].as_str().unwrap();
        d.base_object("ServiceAccount", sa);

        let volumes: BTreeSet<&str> =
            pod["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        let config = d.config_for(&origin);
        for c in pod["containers"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                assert!(
                    volumes.contains(m["name"].as_str().unwrap()),
                    "{origin}: {name} mounts an undefined volume {}",
                    m["name"]
                );
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let r = &e["valueFrom"]["configMapKeyRef"];
                if let Some(key) = r["key"].as_str() {
                    assert_eq!(r["name"], "moat-config", "{origin}: {name}");
                    assert!(config["data"][key].is_string(), "{origin}: {name} reads {key}, which moat-config lacks");
                }
            }
            let env = environment(c, config);
            for arg in strings(&c["args"]) {
                let expanded = expand(arg, &env);
                assert!(!expanded.contains("$("), "{origin}: {name} argument {arg} names an undefined variable");
            }
            // Guaranteed QoS: requests equal limits for both resources, in every container.
            for r in ["cpu", "memory"] {
                let (req, lim) = (&c["resources"]["requests"][r], &c["resources"]["limits"][r]);
                assert!(
                    !req.is_null() && quantity(req) == quantity(lim),
                    "{origin}: {name} {r} request {req} != limit {lim}"
                );
            }
        }

        if let Some(agent) = container(ds, "agent") {
            let port = agent["ports"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == "metrics"))
                .expect("metrics port");
            assert_eq!(port["containerPort"], 9464, "{origin}");
            for (probe, path) in
                [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")]
            {
                let get = &agent[probe]["httpGet"];
                assert_eq!(get["path"], path, "{origin}: agent {probe}");
                assert!(get["port"] == "metrics" || get["port"] == 9464, "{origin}: agent {probe} port");
            }
            assert!(
                strings(&agent["args"]).contains(&"--metrics-addr=0.0.0.0:9464"),
                "{origin}: agent serves metrics on the probed port"
            );
        }

        let fastpath = container(ds, "fastpath").unwrap();
        let env = environment(fastpath, config);
        let args: Vec<String> = strings(&fastpath["args"]).into_iter().map(|a| expand(a, &env)).collect();
        let ready = args.iter().find_map(|a| a.strip_prefix("--ready-file=")).expect("--ready-file");
        let probe = strings(&fastpath["readinessProbe"]["exec"]["command"]);
        assert!(probe.contains(&ready), "{origin}: the fastpath's readiness probe must look at {ready}, not {probe:?}");
        assert!(
            fastpath["livenessProbe"].is_null(),
            "{origin}: a liveness restart of the fastpath cuts the wire (see daemonset.yaml)"
        );

        // Sizing: a whole core per worker, memory per the formula in daemonset.yaml.
        let pairs = args.iter().filter(|a| a.starts_with("--wire=")).count() as u64;
        let arg = |flag: &str| -> u64 {
            let v = args.iter().find_map(|a| a.strip_prefix(flag)).unwrap_or_else(|| panic!("{origin}: no {flag}"));
            v.parse().unwrap_or_else(|_| panic!("{origin}: {flag}{v}"))
        };
        let workers = pairs * arg("--queues=");
        let capacity = arg("--conntrack-capacity=");
        let limits = &fastpath["resources"]["limits"];
        assert_eq!(quantity(&limits["cpu"]), workers * 1000, "{origin}: one whole core per worker ({pairs} pairs)");
        let need = workers * (WORKER_FIXED_BYTES + FLOW_BYTES * capacity) + PROCESS_FIXED_BYTES;
        let memory = quantity(&limits["memory"]);
        assert!(
            memory >= need,
            "{origin}: fastpath memory {memory} B < {need} B needed for {workers} workers x {capacity} flows"
        );
        assert!(
            memory <= 2 * need + (128 << 20),
            "{origin}: fastpath memory {memory} B is far above the {need} B it needs"
        );
    }
}

#[test]
fn cluster_role_grants_exactly_what_the_kubernetes_source_watches() {
    use moat_control::source::kube::WATCHED;
    let Some(d) = deploy("cluster_role_grants_exactly_what_the_kubernetes_source_watches") else { return };
    let role = d.base_object("ClusterRole", "moat-agent");
    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        assert!(rule["nonResourceURLs"].is_null() && rule["resourceNames"].is_null(), "unexpected rule {rule}");
        for verb in strings(&rule["verbs"]) {
            assert!(["get", "list", "watch"].contains(&verb), "the agent only reads: verb {verb}");
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    assert!(!resource.contains('*') && group != "*", "no wildcards: {group}/{resource}");
                    granted.entry((group.to_owned(), resource.to_owned())).or_default().insert(verb.to_owned());
                }
            }
        }
    }
    let watched: BTreeMap<(String, String), BTreeSet<String>> = WATCHED
        .iter()
        .map(|w| ((w.group.to_owned(), w.resource.to_owned()), w.verbs.iter().map(|v| (*v).to_owned()).collect()))
        .collect();
    let missing: Vec<_> = watched.keys().filter(|k| !granted.contains_key(*k)).collect();
    let extra: Vec<_> = granted.keys().filter(|k| !watched.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ClusterRole vs WATCHED: missing {missing:?}, not watched {extra:?}"
    );
    assert_eq!(granted, watched, "verbs granted vs verbs the source uses");

    // Every other role in deploy/ (the `kubectl moat status` one) reads too, and nothing more.
    for role in d.base().filter(|r| r["kind"] == "Role" || r["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().unwrap() {
            for verb in strings(&rule["verbs"]) {
                assert!(["get", "list", "watch"].contains(&verb), "{}: verb {verb}", role["metadata"]["name"]);
            }
        }
    }

    let binding = d.base_object("ClusterRoleBinding", "moat-agent");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "moat-agent");
    let subject = &binding["subjects"][0];
    assert_eq!((subject["kind"].as_str(), subject["name"].as_str()), (Some("ServiceAccount"), Some("moat")));
    assert_eq!(subject["namespace"], "moat-system");
}

#[test]
fn calico_crds_define_the_calico_kinds_the_source_reads() {
    use moat_control::source::kube::{CalicoGroup, WatchedKind};
    let Some(d) = deploy("calico_crds_define_the_calico_kinds_the_source_reads") else { return };
    let crds: BTreeMap<&str, &Value> = d.files["calico-crds/crds.yaml"]
        .iter()
        .map(|crd| {
            assert_eq!(crd["kind"], "CustomResourceDefinition");
            assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
            (crd["spec"]["names"]["plural"].as_str().unwrap(), crd)
        })
        .collect();
    let calico: Vec<WatchedKind> = WatchedKind::ALL.into_iter().filter(|k| k.is_calico()).collect();
    assert_eq!(
        crds.keys().copied().collect::<BTreeSet<_>>(),
        calico.iter().map(|k| k.plural()).collect::<BTreeSet<_>>(),
        "one CRD per Calico kind the source reads"
    );
    for k in calico {
        let crd = crds[k.plural()];
        let (group, version) = k.group_version(CalicoGroup::Crd);
        assert_eq!(crd["metadata"]["name"], format!("{}.{group}", k.plural()));
        assert_eq!(crd["spec"]["group"], group);
        assert_eq!(crd["spec"]["names"]["kind"], k.kind());
        assert_eq!(crd["spec"]["scope"], if k.namespaced() { "Namespaced" } else { "Cluster" }, "{k}");
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert!(versions.iter().any(|v| v["name"] == version && v["served"] == true && v["storage"] == true), "{k}");
    }
}

/// Writes a ConfigMap's data the way the kubelet mounts it: files in a hidden timestamped directory,
/// `..data` pointing at it, and one symlink per key.
fn mount_configmap(config: &Value, dir: &Path) {
    let data = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(data.file_name().unwrap(), dir.join("..data")).unwrap();
    for (key, value) in config["data"].as_object().unwrap() {
        std::fs::write(data.join(key), value.as_str().unwrap()).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(key), dir.join(key)).unwrap();
    }
}

#[test]
fn example_policy_loads_as_the_fastpath_loads_it_and_decides_as_documented() {
    let Some(d) = deploy("example_policy_loads_as_the_fastpath_loads_it_and_decides_as_documented") else { return };
    let dir = tempdir();
    mount_configmap(d.base_object("ConfigMap", "moat-policy"), &dir);
    // What `moat run --manifests` does: the whole directory, unknown fields refused.
    let snapshot = moat_control::source::manifests::ManifestDir::new(&dir).load().unwrap_or_else(|e| panic!("{e}"));
    assert!(snapshot.notes.is_empty(), "notes: {:?}", snapshot.notes);
    // The verdicts policy.yaml's comment promises.
    let flows = [
        (r#"{"src": "198.51.100.7", "dst": "192.0.2.10", "protocol": "TCP", "dst_port": 5432}"#, "allow"),
        (r#"{"src": "198.51.100.7", "dst": "192.0.2.10", "protocol": "TCP", "dst_port": 80}"#, "deny"),
        (r#"{"src": "203.0.113.9", "dst": "192.0.2.10", "protocol": "TCP", "dst_port": 5432}"#, "deny"),
        (r#"{"src": "192.0.2.10", "dst": "198.51.100.7", "protocol": "TCP", "dst_port": 443}"#, "deny"),
        (r#"{"src": "198.51.100.7", "dst": "192.0.2.10", "protocol": "TCP", "dst_port": 22}"#, "allow"),
    ];
    let input = dir.join("..flows.jsonl");
    std::fs::write(&input, flows.iter().map(|(f, _)| format!("{f}\n")).collect::<String>()).unwrap();
    let out = Command::new(MOAT)
        .args(["policy", "eval", "--strict", "--manifests"])
        .arg(&dir)
        .arg("--flows")
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<Value> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), flows.len());
    for ((flow, want), got) in flows.iter().zip(&verdicts) {
        assert_eq!(got["verdict"], *want, "{flow}: {got}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn subcommand_exists(sub: &str) -> bool {
    let out = Command::new(MOAT).args([sub, "--help"]).output().unwrap();
    out.status.success()
}

#[test]
fn container_arguments_are_ones_moat_accepts() {
    let Some(d) = deploy("container_arguments_are_ones_moat_accepts") else { return };
    let mut ran = 0;
    for (origin, ds) in d.daemonsets() {
        let config = d.config_for(&origin);
        for c in ds["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            assert!(c["command"].is_null(), "{origin}: {name} overrides the image's entrypoint (moat)");
            let env = environment(c, config);
            let args: Vec<String> = strings(&c["args"]).into_iter().map(|a| expand(a, &env)).collect();
            let sub = args.first().map(String::as_str).unwrap_or_default();
            if !subcommand_exists(sub) {
                assert!(PLANNED_SUBCOMMANDS.contains(&sub), "{origin}: {name} runs `moat {sub}`, which does not exist");
                eprintln!(
                    "!!! {origin}: `moat {sub}` ({name}) is planned, not built yet: its arguments are not checked"
                );
                continue;
            }
            let help = Command::new(MOAT).args([sub, "--help"]).output().unwrap();
            let help = String::from_utf8_lossy(&help.stdout);
            let mut planned = Vec::new();
            for flag in args.iter().filter_map(|a| a.strip_prefix("--")).map(|a| a.split('=').next().unwrap_or(a)) {
                if help.contains(&format!("--{flag} ")) || help.contains(&format!("--{flag}\n")) {
                    continue;
                }
                assert!(PLANNED_FLAGS.contains(&(sub, flag)), "{origin}: {name}: `moat {sub}` has no --{flag}");
                planned.push(flag);
            }
            if !planned.is_empty() {
                eprintln!(
                    "!!! {origin}: `moat {sub} --{}` ({name}) is planned, not built yet: not run",
                    planned.join(" --")
                );
                continue;
            }
            if sub == "run" {
                run_with_absent_interfaces(&origin, &args, d);
                ran += 1;
            }
        }
    }
    if d.rendered.is_some() {
        assert!(ran > 0, "the standalone overlay runs `moat run`: it should have been run");
    }
}

/// Runs `moat run` with the container's arguments as the kubelet expands them, but with interfaces
/// that do not exist and paths in a scratch directory: every value must parse and the policy must
/// load, so the run gets as far as looking up the first interface.
fn run_with_absent_interfaces(origin: &str, args: &[String], d: &Deploy) {
    let scratch = tempdir();
    let policy = scratch.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    mount_configmap(d.base_object("ConfigMap", "moat-policy"), &policy);
    let args: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, a)| match a.split_once('=') {
            Some(("--wire", _)) => format!("--wire=moatnx{i}a,moatnx{i}b"),
            Some(("--manifests", _)) => format!("--manifests={}", policy.display()),
            Some(("--control-socket", _)) => format!("--control-socket={}", scratch.join("control.sock").display()),
            Some((flag @ ("--flow-log" | "--ready-file" | "--stats-file"), _)) => {
                format!("{flag}={}", scratch.join(flag.trim_start_matches('-')).display())
            }
            _ => a.clone(),
        })
        .collect();
    let out = Command::new(MOAT).args(&args).env("MOAT_LOG", "warn").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{origin}: moat run with absent interfaces succeeded?");
    assert_ne!(out.status.code(), Some(2), "{origin}: moat rejected its arguments: {stderr}");
    assert!(
        stderr.contains("interface \"moatnx") && stderr.contains("not found"),
        "{origin}: moat run stopped before the interfaces: {stderr}"
    );
    assert!(!stderr.contains("no policy loaded"), "{origin}: the policy ConfigMap did not load: {stderr}");
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn dockerfile_lints_clean_and_installs_what_the_binary_links() {
    let test = "dockerfile_lints_clean_and_installs_what_the_binary_links";
    let dockerfile = std::fs::read_to_string(Path::new(DEPLOY).join("Dockerfile")).unwrap();
    let hadolint = venv().join("bin/hadolint");
    if !hadolint.exists() {
        return skip(test, &format!("hadolint is not installed in {} (./dev.sh test installs it)", venv().display()));
    }
    let lint = Command::new(&hadolint).arg(Path::new(DEPLOY).join("Dockerfile")).output().unwrap();
    assert!(lint.status.success(), "hadolint:\n{}", String::from_utf8_lossy(&lint.stdout));

    // The runtime stage is the last FROM; its apt-get install line lists what it adds to the slim
    // image, which already holds libc6, libgcc-s1 and zlib1g (dpkg and apt need them).
    let runtime = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("debian:${DEBIAN_RELEASE}-slim"), "runtime stage: {}", runtime.lines().next().unwrap());
    let installed: BTreeSet<&str> = runtime
        .split("install -y --no-install-recommends")
        .nth(1)
        .map(|rest| rest.split("&&").next().unwrap().split_whitespace().filter(|w| *w != "\\").collect())
        .unwrap_or_default();
    let available: BTreeSet<&str> = installed.iter().copied().chain(["libc6", "libgcc-s1", "zlib1g"]).collect();

    let ldd = match Command::new("ldd").arg(MOAT).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => return skip(test, "ldd cannot read the moat binary here"),
    };
    for lib in ldd.lines().filter_map(|l| l.split("=>").nth(1)).filter_map(|r| r.split_whitespace().next()) {
        // With merged /usr, the loader may name /lib/... for a file dpkg records under /usr/lib/...
        let other = match lib.strip_prefix("/usr") {
            Some(rest) => rest.to_owned(),
            None => format!("/usr{lib}"),
        };
        let mut package = None;
        for path in [lib, other.as_str()] {
            let Ok(owner) = Command::new("dpkg").args(["-S", path]).output() else {
                return skip(test, "no dpkg: the libraries cannot be mapped to Debian packages on this machine");
            };
            if owner.status.success() {
                let owner = String::from_utf8_lossy(&owner.stdout);
                package = owner.split(':').next().map(|p| p.trim().to_owned());
                break;
            }
        }
        let package =
            package.unwrap_or_else(|| panic!("{lib} belongs to no Debian package: the runtime image cannot have it"));
        assert!(
            available.contains(package.as_str()),
            "the binary links {lib} ({package}), which the runtime image does not install"
        );
    }
}

/// A network namespace with two veth pairs, removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Option<Netns> {
        let name = format!("moatcap-{}", std::process::id());
        let ip = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        if !ip(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns(name);
        for (a, b) in [("wa", "pa"), ("wb", "pb")] {
            assert!(ip(&["-n", &ns.0, "link", "add", a, "type", "veth", "peer", "name", b]));
            for i in [a, b] {
                assert!(ip(&["-n", &ns.0, "link", "set", i, "up"]));
            }
        }
        Some(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Starts `moat run` on the namespace's wire pair as root with exactly `caps` as its capability
/// bounding set (what a container with `drop: [ALL]` and `add: caps` gets) and an 8 MiB memlock
/// limit (the kernel's default since 5.16; Kubernetes cannot set rlimits). Ok once it is ready,
/// Err with its log when it exits first.
fn start_with_capabilities(ns: &Netns, caps: &[&str]) -> Result<(), String> {
    let dir = tempdir();
    let ready = dir.join("ready");
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let bounding: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!(
        "ulimit -l 8192 && exec {MOAT} run --wire wa,wb --manifests {} --ready-file {}",
        dir.join("policy").display(),
        ready.display()
    );
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "setpriv",
            &format!("--bounding-set={bounding}"),
            "--inh-caps=-all",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("MOAT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        if ready.exists() {
            // `ip netns exec`, setpriv and sh all exec: the child is moat itself; SIGINT is its
            // clean stop.
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = child.wait();
            break Ok(());
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log);
            // The error moat exits with, and the verifier's verdict when there is one (its log is
            // hundreds of lines).
            let said: Vec<&str> =
                log.lines().filter(|l| l.starts_with("moat: error") || l.contains("prohibited")).collect();
            break Err(format!("{status}: {}", said.join(" | ")));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break Err("not ready within 30 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[test]
fn fastpath_capabilities_are_sufficient_and_each_is_necessary() {
    let test = "fastpath_capabilities_are_sufficient_and_each_is_necessary";
    if !nix::unistd::geteuid().is_root() {
        return skip(test, "not root: the fastpath cannot be started with a chosen capability set");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(test, "no setpriv (util-linux) to start moat with a chosen capability set");
    }
    let Some(ns) = Netns::new() else { return skip(test, "cannot create a network namespace") };
    // The set the DaemonSet grants, read from the file, not from the constant.
    let ds: String = std::fs::read_to_string(Path::new(DEPLOY).join("base/daemonset.yaml")).unwrap();
    let granted: Vec<&str> = ds
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: ["))
        .and_then(|l| l.strip_suffix(']'))
        .expect("the fastpath's `add: [...]` line")
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(granted.iter().copied().collect::<BTreeSet<_>>(), FASTPATH_CAPABILITIES.into_iter().collect());
    if let Err(log) = start_with_capabilities(&ns, &granted) {
        panic!("moat run does not start with the DaemonSet's capabilities {granted:?}: {log}");
    }
    for dropped in &granted {
        let fewer: Vec<&str> = granted.iter().copied().filter(|c| c != dropped).collect();
        match start_with_capabilities(&ns, &fewer) {
            Ok(()) => panic!("moat run starts without CAP_{dropped}: drop it from the DaemonSet and the docs"),
            Err(log) => eprintln!("without CAP_{dropped}: {log}"),
        }
    }
}
