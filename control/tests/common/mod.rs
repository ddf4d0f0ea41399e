//! Helpers shared by the conformance tests (which read `../shared/conformance`).
#![allow(dead_code)]
// Integration tests: a panic is the assertion (helpers outside #[test] fns too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod generate;

use moat_control::manifest::{LoadReport, Origin, load_value};
use moat_control::model::{LabelMap, Model, NamedPort, Namespace, Pod, Protocol, Resource};
use serde_json::Value;
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
