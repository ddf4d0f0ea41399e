//! Manifest loader: files, directory trees, multi-document YAML, JSON and `List` kinds.
//!
//! Loading never stops at the first problem. Every document is parsed on its own; an object
//! that fails validation is reported with its file, kind, namespace/name and the field path
//! (`spec.ingress[1].source.selector`) and left out, and everything else still loads. Kinds
//! moat does not use (Deployments, Services, ConfigMaps …) are reported as skipped.
//!
//! Nothing is dropped without a word. A field moat does not know (`egres:`, `namespaceSelectr:`)
//! is a [`ManifestWarning::UnknownField`] naming file, document, object and field path, and the
//! object loads without it; with [`UnknownFields::Reject`] it is an error and the object is left
//! out, as `kubectl apply --validate=strict` would. Fields that Kubernetes or Calico define but
//! that do not bear on policy (`metadata.managedFields`, a Pod's `volumes` and `status`, …) are
//! accepted silently, so `kubectl get -o yaml` output loads clean (`fields.rs` lists them).
//! Documents are read as Kubernetes reads them (`document.rs`): a duplicate key is an error
//! rather than "last wins", and `<<` merge keys merge.
//!
//! Defaults applied here are the ones the Kubernetes API server would have applied before
//! Calico ever saw the object: a namespaced object without namespace lands in `default`, a
//! namespace gets its `kubernetes.io/metadata.name` label, a pod without service account runs
//! as `default`, a container port without protocol is TCP.

use crate::model::k8s::{NetworkPolicySpec, PodSpec, PodStatus};
use crate::model::{
    CalicoPolicy, Direction, HostEndpoint, HostEndpointSpec, IpPool, IpPoolSpec, K8sNetworkPolicy, LabelMap, Model,
    NamedPort, Namespace, NetworkSet, NetworkSetSpec, Pod, PolicyId, PolicyKind, PolicySpec, Protocol, Resource, Rule,
    ServiceAccount, Tier, TierSpec,
};
use serde::Deserialize;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde_json::Value;
use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

mod document;
pub(crate) mod fields;

use fields::Section;

/// Where a document came from: file and 1-based document index within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)
    }
}

/// Kind and identity of an object, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.kind.is_empty() { "object" } else { &self.kind };
        let name = if self.name.is_empty() { "(unnamed)" } else { &self.name };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{name}"),
            None => write!(f, "{kind} {name}"),
        }
    }
}

/// A problem found while loading manifests. Each one names the file and, where there is one,
/// the object and the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not valid YAML/JSON: {message}")]
    Syntax { origin: Origin, message: String },
    #[error("{origin}: {message}")]
    NotAnObject { origin: Origin, message: String },
    #[error("{origin}: {object}: {field}: {message}")]
    Invalid { origin: Origin, object: ObjectRef, field: String, message: String },
    /// A field moat does not know, under [`UnknownFields::Reject`]; the object is left out.
    #[error("{origin}: {object}: {field}: unknown field")]
    UnknownField { origin: Origin, object: ObjectRef, field: String },
}

/// Something loaded, but not exactly as written: worth a person's attention.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestWarning {
    /// A field moat does not know (a typo, or a field of a newer API version). The object was
    /// loaded without it, which may make the policy wider or narrower than intended.
    #[error("{origin}: {object}: {field}: unknown field, ignored")]
    UnknownField { origin: Origin, object: ObjectRef, field: String },
}

/// What to do with fields moat does not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownFields {
    /// Load the object without them and report each as a [`ManifestWarning`].
    #[default]
    Warn,
    /// Report each as a [`ManifestError`] and leave the object out.
    Reject,
}

/// How manifests are loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub unknown_fields: UnknownFields,
}

impl LoadOptions {
    /// Unknown fields are errors.
    pub fn strict() -> LoadOptions {
        LoadOptions { unknown_fields: UnknownFields::Reject }
    }
}

/// A document of a kind moat does not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub origin: Origin,
    pub object: ObjectRef,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: skipped {} ({}): kind not used by moat", self.origin, self.object, self.object.api_version)
    }
}

/// A resource together with where it was declared.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub origin: Origin,
    pub object: ObjectRef,
    pub resource: Resource,
}

/// Everything a load produced: resources in file order, errors, warnings and skipped kinds.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<Loaded>,
    pub errors: Vec<ManifestError>,
    pub warnings: Vec<ManifestWarning>,
    pub skipped: Vec<Skipped>,
}

impl LoadReport {
    /// Build the model from every valid resource (later declarations of the same object win).
    pub fn to_model(&self) -> Model {
        let mut m = Model::new();
        for l in &self.loaded {
            m.insert(l.resource.clone());
        }
        m
    }

    /// No errors (warnings and skipped kinds allowed).
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Load files and directories (recursively; `.yaml`, `.yml` and `.json` files, in name order),
/// warning about unknown fields.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> LoadReport {
    load_paths_with(paths, LoadOptions::default())
}

/// [`load_paths`] with options.
pub fn load_paths_with<P: AsRef<Path>>(paths: &[P], options: LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    for p in paths {
        load_path(p.as_ref(), options, &mut report);
    }
    report
}

fn load_path(path: &Path, options: LoadOptions, report: &mut LoadReport) {
    if path.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(source) => {
                report.errors.push(ManifestError::Io { path: path.to_path_buf(), source });
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            let is_manifest =
                c.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            let hidden = c.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if c.is_dir() || is_manifest {
                load_path(&c, options, report);
            }
        }
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => load_str_into(&text, path, options, report),
        Err(source) => report.errors.push(ManifestError::Io { path: path.to_path_buf(), source }),
    }
}

/// Load manifests from a string; `file` is only used in messages.
pub fn load_str(text: &str, file: &Path) -> LoadReport {
    load_str_with(text, file, LoadOptions::default())
}

/// [`load_str`] with options.
pub fn load_str_with(text: &str, file: &Path, options: LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    load_str_into(text, file, options, &mut report);
    report
}

fn load_str_into(text: &str, file: &Path, options: LoadOptions, report: &mut LoadReport) {
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file: file.to_path_buf(), document: i + 1 };
        let refusal = RefCell::new(None);
        match document::DocumentSeed::new(&refusal).deserialize(doc) {
            // Content refused (a duplicate key, a tag): this document is out, the next one is
            // still readable.
            Ok(_) if refusal.borrow().is_some() => {
                let message = refusal.into_inner().map(|r| r.to_string()).unwrap_or_default();
                report.errors.push(ManifestError::Syntax { origin, message });
            }
            Ok(Value::Null) => {}
            Ok(v) => load_value_with(v, &origin, options, report),
            Err(e) => {
                report.errors.push(ManifestError::Syntax { origin, message: e.to_string() });
                // The YAML stream cannot be resumed after a syntax error.
                break;
            }
        }
    }
}

/// Load one decoded document (an object or a `List`), warning about unknown fields.
pub fn load_value(v: Value, origin: &Origin, report: &mut LoadReport) {
    load_value_with(v, origin, LoadOptions::default(), report)
}

/// [`load_value`] with options.
pub fn load_value_with(v: Value, origin: &Origin, options: LoadOptions, report: &mut LoadReport) {
    let Value::Object(mut obj) = v else {
        report.errors.push(ManifestError::NotAnObject {
            origin: origin.clone(),
            message: "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
        });
        return;
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if kind == "List" || (kind.ends_with("List") && obj.contains_key("items")) {
        let list = ObjectRef {
            api_version: obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
            kind,
            namespace: None,
            name: String::new(),
        };
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "items"))
            .cloned()
            .collect();
        report_unknown(&unknown, origin, &list, options, report);
        let bad_items = |message: &str| ManifestError::Invalid {
            origin: origin.clone(),
            object: list.clone(),
            field: "items".into(),
            message: message.into(),
        };
        match obj.remove("items") {
            Some(Value::Array(items)) => {
                for item in items {
                    load_value_with(item, origin, options, report);
                }
            }
            // `items:` with nothing after it: an empty list.
            Some(Value::Null) => {}
            // `kind: List` without `items` (a typo such as `itmes:`) would load nothing.
            None => report.errors.push(bad_items("a List needs items")),
            Some(_) => report.errors.push(bad_items("expected a list of objects")),
        }
        return;
    }
    let mut unknown = Vec::new();
    let decoded = decode_object(Value::Object(obj), &mut unknown);
    let object = match &decoded {
        Ok(Decoded::Resource(object, _) | Decoded::Unknown(object)) | Err((object, _, _)) => object.clone(),
    };
    let reject = options.unknown_fields == UnknownFields::Reject && !unknown.is_empty();
    match decoded {
        Ok(Decoded::Resource(object, resource)) if !reject => {
            report.loaded.push(Loaded { origin: origin.clone(), object, resource: *resource })
        }
        Ok(Decoded::Resource(..)) => {}
        Ok(Decoded::Unknown(object)) => report.skipped.push(Skipped { origin: origin.clone(), object }),
        Err((object, field, message)) => {
            report.errors.push(ManifestError::Invalid { origin: origin.clone(), object, field, message })
        }
    }
    report_unknown(&unknown, origin, &object, options, report);
}

fn report_unknown(
    fields: &[String],
    origin: &Origin,
    object: &ObjectRef,
    options: LoadOptions,
    report: &mut LoadReport,
) {
    for field in fields {
        let (origin, object, field) = (origin.clone(), object.clone(), field.clone());
        match options.unknown_fields {
            UnknownFields::Warn => report.warnings.push(ManifestWarning::UnknownField { origin, object, field }),
            UnknownFields::Reject => report.errors.push(ManifestError::UnknownField { origin, object, field }),
        }
    }
}

/// `metadata`: what moat reads; the rest of ObjectMeta is listed in `fields.rs`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<LabelMap>,
}

enum Decoded {
    Resource(ObjectRef, Box<Resource>),
    Unknown(ObjectRef),
}

type DecodeError = (ObjectRef, String, String);

/// API groups whose Calico kinds we read.
fn is_calico(api_version: &str) -> bool {
    matches!(api_version, "projectcalico.org/v3" | "crd.projectcalico.org/v1")
}

/// Where and how an object's typed sections are decoded: unknown fields are collected (with
/// their full path) into `unknown`, errors come back with their full path.
struct Decoder<'a> {
    calico: bool,
    kind: &'a str,
    unknown: &'a mut Vec<String>,
}

impl Decoder<'_> {
    /// Decode one section (`metadata`, `spec`, `status`) of the object.
    fn section<T: DeserializeOwned>(&mut self, section: Section, v: Value) -> Result<T, (String, String)> {
        let name = match section {
            Section::Metadata => "metadata",
            Section::Spec => "spec",
            Section::Status => "status",
        };
        let (calico, kind) = (self.calico, self.kind);
        let mut ignored = Vec::new();
        let mut track = serde_path_to_error::Track::new();
        let result = serde_ignored::deserialize(serde_path_to_error::Deserializer::new(v, &mut track), |p| {
            let path = fields::segments(&p);
            if !fields::is_unread_upstream_field(calico, kind, section, &path) {
                ignored.push(format!("{name}{}", fields::render(&path)));
            }
        });
        // Unknown fields seen before a decoding error are reported too.
        self.unknown.append(&mut ignored);
        result.map_err(|e| {
            let path = track.path().to_string();
            let path = if path == "." {
                String::new()
            } else if path.starts_with('[') {
                path
            } else {
                format!(".{path}")
            };
            (format!("{name}{path}"), e.to_string())
        })
    }

    /// Report the keys of an untyped map that are not in `known`.
    fn keys(&mut self, at: &str, map: &serde_json::Map<String, Value>, known: &[&str]) {
        self.unknown.extend(map.keys().filter(|k| !known.contains(&k.as_str())).map(|k| format!("{at}{k}")));
    }
}

// Decoding runs once per manifest object, far from any hot path: a large error is fine.
#[allow(clippy::result_large_err)]
fn decode_object(v: Value, unknown: &mut Vec<String>) -> Result<Decoded, DecodeError> {
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let mut object =
        ObjectRef { api_version: api_version.clone(), kind: kind.clone(), namespace: None, name: String::new() };
    let namespaced = matches!(
        kind.as_str(),
        "Pod"
            | "ServiceAccount"
            | "NetworkPolicy"
            | "StagedNetworkPolicy"
            | "StagedKubernetesNetworkPolicy"
            | "NetworkSet"
    );
    let known = match api_version.as_str() {
        "v1" => matches!(kind.as_str(), "Namespace" | "Pod" | "ServiceAccount"),
        "networking.k8s.io/v1" => kind == "NetworkPolicy",
        a if is_calico(a) => matches!(
            kind.as_str(),
            "NetworkPolicy"
                | "GlobalNetworkPolicy"
                | "StagedNetworkPolicy"
                | "StagedGlobalNetworkPolicy"
                | "StagedKubernetesNetworkPolicy"
                | "Tier"
                | "NetworkSet"
                | "GlobalNetworkSet"
                | "HostEndpoint"
                | "IPPool"
        ),
        _ => false,
    };
    if !known {
        // Kinds moat does not read are skipped whole: their fields are not moat's business.
        if let Some(meta) = v.get("metadata") {
            object.name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            object.namespace = meta.get("namespace").and_then(Value::as_str).map(str::to_string);
        }
        if api_version.is_empty() || kind.is_empty() {
            return Err((object, "apiVersion/kind".into(), "missing apiVersion or kind".into()));
        }
        return Ok(Decoded::Unknown(object));
    }
    let mut d = Decoder { calico: is_calico(&api_version), kind: &kind, unknown };
    if let Value::Object(top) = &v {
        let extra = fields::top_level_fields(&kind);
        d.unknown.extend(
            top.keys()
                .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") && !extra.contains(&k.as_str()))
                .cloned(),
        );
    }
    let meta: Metadata = match v.get("metadata") {
        Some(m) => d.section(Section::Metadata, m.clone()).map_err(|(f, msg)| (object.clone(), f, msg))?,
        None => Metadata::default(),
    };
    object.name = meta.name.clone();
    if namespaced {
        object.namespace = Some(meta.namespace.clone().unwrap_or_else(|| "default".to_string()));
    }
    if meta.name.is_empty() {
        return Err((object, "metadata.name".into(), "missing name".into()));
    }
    let ns = object.namespace.clone().unwrap_or_default();
    let name = meta.name.clone();
    let labels = meta.labels.clone().unwrap_or_default();
    let spec = v.get("spec").cloned().unwrap_or(Value::Object(Default::default()));
    let o = object.clone();
    let at = move |(f, m): (String, String)| (o.clone(), f, m);
    let at_spec = |o: &ObjectRef| {
        let o = o.clone();
        move |(f, m): (String, String)| (o, format!("spec{f}"), m)
    };

    let resource = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            if let Value::Object(s) = &spec {
                d.keys("spec.", s, fields::NAMESPACE_SPEC);
            }
            Resource::Namespace(Namespace::new(&name, labels))
        }
        ("v1", "ServiceAccount") => Resource::ServiceAccount(ServiceAccount { namespace: ns, name, labels }),
        ("v1", "Pod") => {
            let spec: PodSpec = d.section(Section::Spec, spec).map_err(&at)?;
            let status: PodStatus = match v.get("status") {
                Some(s) => d.section(Section::Status, s.clone()).map_err(&at)?,
                None => PodStatus::default(),
            };
            Resource::Pod(pod_from(ns, name, labels, spec, status).map_err(&at)?)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            let mut spec: NetworkPolicySpec = d.section(Section::Spec, spec).map_err(&at)?;
            if spec.staged_action.take().is_some() {
                // Only the staged kind has it; the model type carries it for that one.
                d.unknown.push("spec.stagedAction".into());
            }
            validate_k8s_policy(&spec).map_err(at_spec(&object))?;
            Resource::K8sNetworkPolicy { staged: false, policy: K8sNetworkPolicy { namespace: ns, name, spec } }
        }
        (_, "StagedKubernetesNetworkPolicy") => {
            let spec: NetworkPolicySpec = d.section(Section::Spec, spec).map_err(&at)?;
            validate_k8s_policy(&spec).map_err(at_spec(&object))?;
            Resource::K8sNetworkPolicy { staged: true, policy: K8sNetworkPolicy { namespace: ns, name, spec } }
        }
        (_, "NetworkPolicy" | "GlobalNetworkPolicy" | "StagedNetworkPolicy" | "StagedGlobalNetworkPolicy") => {
            let kind = match kind.as_str() {
                "NetworkPolicy" => PolicyKind::NetworkPolicy,
                "GlobalNetworkPolicy" => PolicyKind::GlobalNetworkPolicy,
                "StagedNetworkPolicy" => PolicyKind::StagedNetworkPolicy,
                _ => PolicyKind::StagedGlobalNetworkPolicy,
            };
            let spec: PolicySpec = d.section(Section::Spec, spec).map_err(&at)?;
            validate_policy(kind, &spec).map_err(at_spec(&object))?;
            let namespace = if kind.is_global() { None } else { Some(ns) };
            Resource::CalicoPolicy(CalicoPolicy { id: PolicyId { kind, namespace, name }, spec })
        }
        (_, "Tier") => {
            let spec: TierSpec = d.section(Section::Spec, spec).map_err(&at)?;
            Resource::Tier(Tier { name, spec })
        }
        (_, "NetworkSet" | "GlobalNetworkSet") => {
            let spec: NetworkSetSpec = d.section(Section::Spec, spec).map_err(&at)?;
            let namespace = if kind == "NetworkSet" { Some(ns) } else { None };
            Resource::NetworkSet(NetworkSet { namespace, name, labels, nets: spec.nets })
        }
        (_, "HostEndpoint") => {
            let spec: HostEndpointSpec = d.section(Section::Spec, spec).map_err(&at)?;
            Resource::HostEndpoint(HostEndpoint { name, labels, spec })
        }
        (_, "IPPool") => {
            let spec: IpPoolSpec = d.section(Section::Spec, spec).map_err(&at)?;
            Resource::IpPool(IpPool { name, spec })
        }
        _ => return Ok(Decoded::Unknown(object)),
    };
    Ok(Decoded::Resource(object, Box::new(resource)))
}

fn pod_from(
    namespace: String,
    name: String,
    labels: LabelMap,
    spec: PodSpec,
    status: PodStatus,
) -> Result<Pod, (String, String)> {
    let mut named_ports = Vec::new();
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().enumerate() {
            let Some(pname) = &p.name else { continue };
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let protocol = match Protocol::parse(proto) {
                Some(pr @ (Protocol::Tcp | Protocol::Udp | Protocol::Sctp)) => pr,
                _ => {
                    return Err((
                        format!("spec.containers[{ci}].ports[{pi}].protocol"),
                        format!("unsupported container port protocol {proto:?} (TCP, UDP or SCTP)"),
                    ));
                }
            };
            named_ports.push(NamedPort { name: pname.clone(), protocol, port: p.container_port });
        }
    }
    let ips = if !status.pod_ips.is_empty() {
        status.pod_ips.iter().map(|p| p.ip).collect()
    } else {
        status.pod_ip.into_iter().collect()
    };
    Ok(Pod {
        namespace,
        name,
        labels,
        service_account: spec
            .service_account_name
            .filter(|s| !s.is_empty())
            .or(spec.service_account.filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "default".into()),
        ips,
        named_ports,
        host_network: spec.host_network,
    })
}

/// The API server's validation of a NetworkPolicy (what matters for enforcement): policy
/// types, ipBlock CIDRs (host bits are masked, as Calico does), ports, end ports and protocols.
pub fn validate_k8s_policy(spec: &NetworkPolicySpec) -> Result<(), (String, String)> {
    use crate::model::k8s::IntOrString;
    for (i, t) in spec.policy_types.iter().flatten().enumerate() {
        if t != "Ingress" && t != "Egress" {
            return Err((format!(".policyTypes[{i}]"), format!("unknown policy type {t:?} (Ingress or Egress)")));
        }
    }
    for (dir, peers_key, rules) in [("ingress", "from", &spec.ingress), ("egress", "to", &spec.egress)] {
        for (ri, r) in rules.iter().flatten().enumerate() {
            for (pi, peer) in r.from.iter().flatten().enumerate() {
                let at = format!(".{dir}[{ri}].{peers_key}[{pi}]");
                if let Some(b) = &peer.ip_block {
                    if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                        return Err((at, "ipBlock cannot be combined with podSelector or namespaceSelector".into()));
                    }
                    let Some(net) = crate::convert::parse_cidr(&b.cidr) else {
                        return Err((format!("{at}.ipBlock.cidr"), format!("invalid CIDR {:?}", b.cidr)));
                    };
                    for (ei, ex) in b.except.iter().enumerate() {
                        match crate::convert::parse_cidr(ex) {
                            Some(e) if net.contains(e.network()) && e.prefix() >= net.prefix() => {}
                            _ => {
                                return Err((
                                    format!("{at}.ipBlock.except[{ei}]"),
                                    format!("{ex:?} is not a CIDR inside {}", b.cidr),
                                ));
                            }
                        }
                    }
                } else if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                    return Err((at, "a peer needs podSelector, namespaceSelector or ipBlock".into()));
                }
            }
            for (pi, p) in r.ports.iter().flatten().enumerate() {
                let at = format!(".{dir}[{ri}].ports[{pi}]");
                if let Some(proto) = &p.protocol {
                    if !matches!(proto.as_str(), "TCP" | "UDP" | "SCTP") {
                        return Err((
                            format!("{at}.protocol"),
                            format!("unsupported protocol {proto:?} (TCP, UDP or SCTP)"),
                        ));
                    }
                }
                match &p.port {
                    Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                        return Err((format!("{at}.port"), format!("port {n} is not in 1-65535")));
                    }
                    Some(IntOrString::String(s)) if !crate::model::is_valid_port_name(s) => {
                        return Err((format!("{at}.port"), format!("{s:?} is not a valid port name")));
                    }
                    _ => {}
                }
                if let Some(end) = p.end_port {
                    match &p.port {
                        Some(IntOrString::Int(start)) if *start <= end && end <= 65535 => {}
                        _ => {
                            return Err((
                                format!("{at}.endPort"),
                                "endPort needs a numeric port not greater than it (and at most 65535)".into(),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks Calico's validator makes that serde cannot express. Paths are relative to `spec`.
pub fn validate_policy(kind: PolicyKind, spec: &PolicySpec) -> Result<(), (String, String)> {
    if !kind.is_global() {
        if spec.namespace_selector.is_some() {
            return Err((".namespaceSelector".into(), "only GlobalNetworkPolicy may set namespaceSelector".into()));
        }
        if spec.do_not_track || spec.pre_dnat || spec.apply_on_forward {
            return Err((
                ".doNotTrack/preDNAT/applyOnForward".into(),
                "only GlobalNetworkPolicy may set doNotTrack, preDNAT or applyOnForward".into(),
            ));
        }
    }
    if spec.do_not_track && spec.pre_dnat {
        return Err((".preDNAT".into(), "preDNAT and doNotTrack cannot both be true".into()));
    }
    if (spec.do_not_track || spec.pre_dnat) && !spec.apply_on_forward {
        return Err((".applyOnForward".into(), "preDNAT and doNotTrack policies require applyOnForward: true".into()));
    }
    if spec.pre_dnat && (!spec.egress.is_empty() || spec.effective_types().contains(&Direction::Egress)) {
        return Err((".egress".into(), "a preDNAT policy cannot have egress rules or the Egress type".into()));
    }
    if let Some(types) = &spec.types {
        let mut seen = Vec::new();
        for (i, t) in types.iter().enumerate() {
            if seen.contains(t) {
                return Err((format!(".types[{i}]"), format!("duplicate type {t}")));
            }
            seen.push(*t);
        }
    }
    for (dir, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        for (i, r) in rules.iter().enumerate() {
            validate_rule(r).map_err(|(f, m)| (format!(".{dir}[{i}]{f}"), m))?;
        }
    }
    Ok(())
}

/// Checks one rule the way Calico's validator does (ports need a port protocol, ICMP fields need
/// an ICMP protocol, no L7 matches).
pub fn validate_rule(r: &Rule) -> Result<(), (String, String)> {
    if r.http.is_some() {
        return Err((".http".into(), "HTTP (L7) matches are not supported by moat, an L3/L4 filter".into()));
    }
    if let Some(v) = r.ip_version {
        if v != 4 && v != 6 {
            return Err((".ipVersion".into(), format!("ipVersion must be 4 or 6, not {v}")));
        }
    }
    for (side, e) in [("source", &r.source), ("destination", &r.destination)] {
        if e.services.is_some() {
            // Ignoring it would widen the rule (fail open), so refuse the object instead.
            return Err((format!(".{side}.services"), "Service matches are not supported by moat yet".into()));
        }
        for (field, ports) in [("ports", &e.ports), ("notPorts", &e.not_ports)] {
            if !ports.is_empty() && !r.protocol.is_some_and(Protocol::has_ports) {
                return Err((
                    format!(".{side}.{field}"),
                    "rules with ports need protocol TCP, UDP, SCTP or UDPLite".into(),
                ));
            }
        }
        for (field, nets) in [("nets", &e.nets), ("notNets", &e.not_nets)] {
            if let (Some(v), Some(n)) = (r.ip_version, nets.first()) {
                if (v == 4) != n.is_ipv4() {
                    return Err((format!(".{side}.{field}"), format!("{n} does not match ipVersion {v}")));
                }
            }
        }
    }
    for (field, icmp) in [("icmp", &r.icmp), ("notICMP", &r.not_icmp)] {
        if let Some(m) = icmp {
            if !r.protocol.is_some_and(Protocol::is_icmp) {
                return Err((format!(".{field}"), "icmp matches need protocol ICMP or ICMPv6".into()));
            }
            if m.code.is_some() && m.icmp_type.is_none() {
                return Err((format!(".{field}.code"), "an ICMP code needs an ICMP type".into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
