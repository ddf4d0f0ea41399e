//! Helpers shared by the conformance tests (which read `../shared/conformance`).
#![allow(dead_code)]
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod generate;

use moat_control::compile::{Change, ResourceKey};
use moat_control::manifest::{LoadReport, Origin, load_value};
use moat_control::model::{LabelMap, Model, NamedPort, Namespace, Pod, Protocol, Resource};
use moat_control::resolve::EndpointId;
use moat_control::{Flow, FlowEnd};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

/// `<repo>/../shared/conformance`, or `None` (with a loud message) when it is absent.
pub fn conformance_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "\n\n!!!!! SKIPPED {test}: {} not found (the shared conformance data lives beside the checkout) !!!!!\n",
            dir.display()
        );
        None
    }
}

pub fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn labels(v: &Value) -> LabelMap {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect(),
        _ => LabelMap::new(),
    }
}

pub fn namespace(name: &str, l: LabelMap) -> Resource {
    Resource::Namespace(Namespace::new(name, l))
}

pub fn pod(ns: &str, name: &str, l: LabelMap, ip: &str, ports: Vec<NamedPort>) -> Resource {
    let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("pod {ns}/{name} ip {ip:?}: {e}"));
    Resource::Pod(Pod {
        namespace: ns.to_string(),
        name: name.to_string(),
        labels: l,
        service_account: "default".into(),
        ips: vec![ip],
        named_ports: ports,
        host_network: false,
    })
}

pub fn named_port(name: &str, proto: &str, port: u16) -> NamedPort {
    NamedPort { name: name.to_string(), protocol: Protocol::parse(proto).expect("protocol"), port }
}

/// Load one manifest object (with an optional namespace forced into its metadata) into the
/// model; panics when the loader rejects or skips it, or finds a field it does not know.
pub fn apply_object(model: &mut Model, mut obj: Value, namespace: Option<&str>) {
    if let (Some(ns), Some(meta)) = (namespace, obj.get_mut("metadata").and_then(Value::as_object_mut)) {
        meta.insert("namespace".into(), Value::String(ns.to_string()));
    }
    let mut report = LoadReport::default();
    let origin = Origin { file: PathBuf::from("<conformance>"), document: 1 };
    load_value(obj.clone(), &origin, &mut report);
    assert!(report.errors.is_empty(), "loader rejected {obj}: {:?}", report.errors);
    assert!(report.warnings.is_empty(), "loader found unknown fields in {obj}: {:?}", report.warnings);
    assert!(report.skipped.is_empty(), "loader skipped {obj}");
    for l in report.loaded {
        model.insert(l.resource);
    }
}

/// One Cyclonus traffic case as a model (its internal peers as pods, the case's policies applied)
/// and its two flow ends, protocol and resolved port.
pub struct TrafficCase {
    pub model: Model,
    pub src: moat_control::FlowEnd,
    pub dst: moat_control::FlowEnd,
    pub protocol: String,
    pub port: u16,
}

pub fn cyclonus_traffic_case(policies: &[Value], t: &Value) -> TrafficCase {
    use moat_control::FlowEnd;
    use moat_control::resolve::EndpointId;
    let mut m = Model::new();
    let port = t["ResolvedPort"].as_u64().map(|p| u16::try_from(p).unwrap()).unwrap_or(8080);
    let proto = t["Protocol"].as_str().unwrap();
    let mut end = |key: &str, name: &str| -> FlowEnd {
        let peer = &t[key];
        let ip = peer["IP"].as_str().unwrap();
        let internal = &peer["Internal"];
        if internal.is_null() {
            return FlowEnd { ip: ip.parse().unwrap(), endpoint: None };
        }
        let ns = internal["Namespace"].as_str().unwrap();
        let mut ns_labels = labels(&internal["NamespaceLabels"]);
        if let Some(existing) = m.namespaces.get(ns) {
            ns_labels.extend(existing.labels.clone());
        }
        m.insert(namespace(ns, ns_labels));
        let mut ports: Vec<NamedPort> = Vec::new();
        if key == "Destination" {
            if let Some(pn) = t["ResolvedPortName"].as_str() {
                ports.push(named_port(pn, proto, port));
            }
        }
        m.insert(pod(ns, name, labels(&internal["PodLabels"]), ip, ports));
        FlowEnd {
            ip: ip.parse().unwrap(),
            endpoint: Some(EndpointId::Workload { namespace: ns.into(), name: name.into() }),
        }
    };
    let src = end("Source", "traffic-src");
    let dst = end("Destination", "traffic-dst");
    for p in policies {
        apply_object(&mut m, p.clone(), None);
    }
    TrafficCase { model: m, src, dst, protocol: proto.to_owned(), port }
}

// ---- Kubernetes e2e netpol cases ---------------------------------------------------------------

/// The namespaces and pods of one e2e case.
pub fn e2e_topology(case: &Value) -> Model {
    let mut m = Model::new();
    for ns in case["namespaces"].as_array().into_iter().flatten() {
        m.insert(namespace(ns["name"].as_str().unwrap(), labels(&ns["labels"])));
    }
    for p in case["pods"].as_array().into_iter().flatten() {
        let ports = p["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                named_port(
                    c["portName"].as_str().unwrap(),
                    c["protocol"].as_str().unwrap(),
                    u16::try_from(c["port"].as_u64().unwrap()).unwrap(),
                )
            })
            .collect();
        m.insert(pod(
            p["namespace"].as_str().unwrap(),
            p["name"].as_str().unwrap(),
            labels(&p["labels"]),
            p["ip"].as_str().unwrap(),
            ports,
        ));
    }
    m
}

/// One step action of an e2e case applied to the model.
pub fn e2e_action(m: &mut Model, action: &Value) {
    let (kind, body) = action.as_object().and_then(|o| o.iter().next()).expect("action");
    match kind.as_str() {
        "createPolicy" | "updatePolicy" => apply_object(m, body["policy"].clone(), body["namespace"].as_str()),
        "deleteAllPolicies" => m.clear_policies(),
        "addNamespaceLabels" => {
            let name = body["namespace"].as_str().unwrap();
            let ns = m.namespaces.get_mut(name).expect("namespace exists");
            ns.labels.extend(labels(&body["labels"]));
        }
        "addPodLabels" => {
            let (ns, name) = body["pod"].as_str().unwrap().split_once('/').unwrap();
            let pod = m.pods.get_mut(&(ns.to_string(), name.to_string())).expect("pod exists");
            pod.labels.extend(labels(&body["labels"]));
        }
        other => panic!("unknown action {other}"),
    }
}

/// A pod (`namespace/name`) as a flow end, at its first address.
pub fn pod_end(m: &Model, s: &str) -> FlowEnd {
    let (ns, name) = s.split_once('/').unwrap();
    let pod = &m.pods[&(ns.to_string(), name.to_string())];
    FlowEnd { ip: pod.ips[0], endpoint: Some(EndpointId::Workload { namespace: ns.into(), name: name.into() }) }
}

/// A flow of `proto` (name) to `port`, from source port 40000.
pub fn tcp_flow(src: FlowEnd, dst: FlowEnd, proto: &str, port: u16) -> Flow {
    Flow {
        src,
        dst,
        protocol: Protocol::parse(proto).unwrap().number(),
        src_port: Some(40000),
        dst_port: Some(port),
        icmp_type: None,
        icmp_code: None,
    }
}

// ---- policy-assistant cases --------------------------------------------------------------------

type Listed = BTreeSet<(String, String, u64, String)>;

/// One policy-assistant NetworkPolicy case: its cluster and what it expects.
pub struct AssistantCase {
    pub name: String,
    pub model: Model,
    /// Every pod as `namespace/name`.
    pub pods: Vec<String>,
    pub ports: Vec<u16>,
    pub protocols: Vec<String>,
    non_default_ingress: Listed,
    non_default_egress: Listed,
    default_ingress: bool,
    default_egress: bool,
}

impl AssistantCase {
    /// Expected (ingress allowed, egress allowed) for `from` → `to` on `port`/`protocol`.
    pub fn expected(&self, from: &str, to: &str, port: u16, protocol: &str) -> (bool, bool) {
        let key = (from.to_string(), to.to_string(), u64::from(port), protocol.to_string());
        (
            self.default_ingress != self.non_default_ingress.contains(&key),
            self.default_egress != self.non_default_egress.contains(&key),
        )
    }
}

/// The case, or `Err(name)` for an AdminNetworkPolicy / BaselineAdminNetworkPolicy case (out of
/// scope). Every namespace gets the pods of the case, each serving every port and protocol on a
/// named port `serve-<port>-<protocol>`.
pub fn assistant_case(case: &Value) -> Result<AssistantCase, String> {
    let name = format!("{} / {}", case["suite"].as_str().unwrap(), case["name"].as_str().unwrap());
    if case["anps"].as_array().is_some_and(|a| !a.is_empty()) || !case["banp"].is_null() {
        return Err(name);
    }
    let r = &case["resources"];
    let strs = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_string()).collect()
    };
    let (nss, pod_names, protocols) = (strs(&r["namespaces"]), strs(&r["podNames"]), strs(&r["protocols"]));
    let ports: Vec<u16> =
        r["ports"].as_array().unwrap().iter().map(|p| u16::try_from(p.as_u64().unwrap()).unwrap()).collect();
    let mut model = Model::new();
    for (ni, ns) in nss.iter().enumerate() {
        model.insert(namespace(ns, LabelMap::from([("ns".to_string(), ns.clone())])));
        for (pi, p) in pod_names.iter().enumerate() {
            let named = ports
                .iter()
                .flat_map(|port| {
                    protocols
                        .iter()
                        .map(move |pr| named_port(&format!("serve-{port}-{}", pr.to_lowercase()), pr, *port))
                })
                .collect();
            let ip = format!("10.{}.0.{}", ni + 1, pi + 10);
            model.insert(pod(ns, p, LabelMap::from([("pod".to_string(), p.clone())]), &ip, named));
        }
    }
    for np in case["netpols"].as_array().into_iter().flatten() {
        apply_object(&mut model, np.clone(), None);
    }
    let listed = |key: &str| -> Listed {
        case[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                (
                    f["from"].as_str().unwrap().to_string(),
                    f["to"].as_str().unwrap().to_string(),
                    f["port"].as_u64().unwrap(),
                    f["protocol"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pods = nss.iter().flat_map(|n| pod_names.iter().map(move |p| format!("{n}/{p}"))).collect();
    Ok(AssistantCase {
        name,
        model,
        pods,
        ports,
        protocols,
        non_default_ingress: listed("nonDefaultIngress"),
        non_default_egress: listed("nonDefaultEgress"),
        default_ingress: case["defaultIngress"] == "allowed",
        default_egress: case["defaultEgress"] == "allowed",
    })
}

// ---- model changes -----------------------------------------------------------------------------

/// The changes that turn `old` into `new` (upserts of what differs, deletes of what is gone),
/// for feeding a model-level test step to the incremental compiler.
pub fn model_changes(old: &Model, new: &Model) -> Vec<Change> {
    use std::collections::BTreeMap;
    fn diff<K: Ord, V: PartialEq + Clone>(
        old: &BTreeMap<K, V>,
        new: &BTreeMap<K, V>,
        upsert: impl Fn(&K, V) -> Resource,
        key: impl Fn(&K) -> ResourceKey,
        out: &mut Vec<Change>,
    ) {
        for (k, v) in new {
            if old.get(k) != Some(v) {
                out.push(Change::Upsert(upsert(k, v.clone())));
            }
        }
        out.extend(old.keys().filter(|k| !new.contains_key(*k)).map(|k| Change::Delete(key(k))));
    }
    let mut out = Vec::new();
    let o = &mut out;
    diff(&old.namespaces, &new.namespaces, |_, v| Resource::Namespace(v), |k| ResourceKey::Namespace(k.clone()), o);
    diff(
        &old.service_accounts,
        &new.service_accounts,
        |_, v| Resource::ServiceAccount(v),
        |(ns, n)| ResourceKey::ServiceAccount { namespace: ns.clone(), name: n.clone() },
        o,
    );
    diff(
        &old.pods,
        &new.pods,
        |_, v| Resource::Pod(v),
        |(ns, n)| ResourceKey::Pod { namespace: ns.clone(), name: n.clone() },
        o,
    );
    diff(
        &old.k8s_policies,
        &new.k8s_policies,
        |(staged, _, _), policy| Resource::K8sNetworkPolicy { staged: *staged, policy },
        |(staged, ns, n)| ResourceKey::K8sNetworkPolicy { staged: *staged, namespace: ns.clone(), name: n.clone() },
        o,
    );
    diff(&old.policies, &new.policies, |_, v| Resource::CalicoPolicy(v), |k| ResourceKey::CalicoPolicy(k.clone()), o);
    diff(&old.tiers, &new.tiers, |_, v| Resource::Tier(v), |k| ResourceKey::Tier(k.clone()), o);
    diff(
        &old.network_sets,
        &new.network_sets,
        |_, v| Resource::NetworkSet(v),
        |(ns, n)| ResourceKey::NetworkSet { namespace: ns.clone(), name: n.clone() },
        o,
    );
    diff(
        &old.host_endpoints,
        &new.host_endpoints,
        |_, v| Resource::HostEndpoint(v),
        |k| ResourceKey::HostEndpoint(k.clone()),
        o,
    );
    diff(&old.ip_pools, &new.ip_pools, |_, v| Resource::IpPool(v), |k| ResourceKey::IpPool(k.clone()), o);
    out
}
