//! The source's model, fed by watch events: a synchronous state machine (no I/O), so its rules
//! are tested without a server.
//!
//! Rules:
//! * Each kind keeps, per object, its **last good** converted resource. An object whose new
//!   version does not load is a [`Problem`] and its last good version stays in the model; an
//!   object that never loaded is left out. Deleting the object ends both.
//! * A (re)list of a kind (`Init`, `InitApply`…, `InitDone`) is buffered and applied only at
//!   `InitDone`, as one diff against what the kind held (objects not relisted are deleted). Until
//!   then the kind's previous complete set stays in the model.
//! * Nothing is published before every kind has completed its first list.
//! * Versions that convert to the same resource change nothing (a pod's status conditions, a
//!   policy's annotations), so they cause no publication and no recompile.

use super::kinds::{CalicoGroup, WatchedKind};
use crate::compile::ResourceKey;
use crate::manifest::{LoadOptions, LoadReport, ManifestError, Origin, load_value_with};
use crate::model::{Model, PolicyId, PolicyKind, Resource};
use crate::source::Snapshot;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The identity of a watched object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: WatchedKind,
    /// `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: WatchedKind, namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey { kind, namespace: namespace.map(str::to_string), name: name.to_string() }
    }
}

impl ObjectKey {
    /// The identity the model (and the incremental compiler) keys this object by.
    pub fn resource_key(&self) -> ResourceKey {
        let ns = || self.namespace.clone().unwrap_or_default();
        let name = self.name.clone();
        let policy = |kind: PolicyKind| {
            let namespace = if kind.is_global() { None } else { Some(ns()) };
            ResourceKey::CalicoPolicy(PolicyId { kind, namespace, name: self.name.clone() })
        };
        match self.kind {
            WatchedKind::Namespace => ResourceKey::Namespace(name),
            WatchedKind::ServiceAccount => ResourceKey::ServiceAccount { namespace: ns(), name },
            WatchedKind::Pod => ResourceKey::Pod { namespace: ns(), name },
            WatchedKind::NetworkPolicy => ResourceKey::K8sNetworkPolicy { staged: false, namespace: ns(), name },
            WatchedKind::StagedKubernetesNetworkPolicy => {
                ResourceKey::K8sNetworkPolicy { staged: true, namespace: ns(), name }
            }
            WatchedKind::CalicoNetworkPolicy => policy(PolicyKind::NetworkPolicy),
            WatchedKind::GlobalNetworkPolicy => policy(PolicyKind::GlobalNetworkPolicy),
            WatchedKind::StagedNetworkPolicy => policy(PolicyKind::StagedNetworkPolicy),
            WatchedKind::StagedGlobalNetworkPolicy => policy(PolicyKind::StagedGlobalNetworkPolicy),
            WatchedKind::Tier => ResourceKey::Tier(name),
            WatchedKind::NetworkSet => ResourceKey::NetworkSet { namespace: Some(ns()), name },
            WatchedKind::GlobalNetworkSet => ResourceKey::NetworkSet { namespace: None, name },
            WatchedKind::HostEndpoint => ResourceKey::HostEndpoint(name),
            WatchedKind::IpPool => ResourceKey::IpPool(name),
        }
    }
}

/// The resource of `model` with identity `key`, if any.
pub(crate) fn lookup(model: &Model, key: &ResourceKey) -> Option<Resource> {
    let pair = |a: &String, b: &String| (a.clone(), b.clone());
    match key {
        ResourceKey::Namespace(n) => model.namespaces.get(n).cloned().map(Resource::Namespace),
        ResourceKey::ServiceAccount { namespace, name } => {
            model.service_accounts.get(&pair(namespace, name)).cloned().map(Resource::ServiceAccount)
        }
        ResourceKey::Pod { namespace, name } => model.pods.get(&pair(namespace, name)).cloned().map(Resource::Pod),
        ResourceKey::K8sNetworkPolicy { staged, namespace, name } => model
            .k8s_policies
            .get(&(*staged, namespace.clone(), name.clone()))
            .cloned()
            .map(|policy| Resource::K8sNetworkPolicy { staged: *staged, policy }),
        ResourceKey::CalicoPolicy(id) => model.policies.get(id).cloned().map(Resource::CalicoPolicy),
        ResourceKey::Tier(n) => model.tiers.get(n).cloned().map(Resource::Tier),
        ResourceKey::NetworkSet { namespace, name } => {
            model.network_sets.get(&(namespace.clone(), name.clone())).cloned().map(Resource::NetworkSet)
        }
        ResourceKey::HostEndpoint(n) => model.host_endpoints.get(n).cloned().map(Resource::HostEndpoint),
        ResourceKey::IpPool(n) => model.ip_pools.get(n).cloned().map(Resource::IpPool),
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// An object the source could not take as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: ObjectKey,
    /// Field path and reason (`spec.ingress[0].ports[0].port: port 0 is not in 1-65535`).
    pub message: String,
    /// Whether an earlier, valid version of the object is still in the model (`true`) or the
    /// object is left out entirely (`false`).
    pub kept: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.kept { "the last valid version stays in force" } else { "left out" };
        write!(f, "{}: {} ({what})", self.key, self.message)
    }
}

/// A complete model and its notes, shared without copying: cloning is an `Arc` clone, and the
/// source copies the model only when it must change it while a consumer still holds this.
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshot(Arc<SnapshotCell>);

#[derive(Debug, Default)]
struct SnapshotCell(Snapshot);

impl Clone for SnapshotCell {
    fn clone(&self) -> SnapshotCell {
        SnapshotCell(Snapshot { model: self.0.model.clone(), notes: self.0.notes.clone() })
    }
}

impl std::ops::Deref for SharedSnapshot {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.0.0
    }
}

impl SharedSnapshot {
    fn make_mut(&mut self) -> &mut Snapshot {
        &mut Arc::make_mut(&mut self.0).0
    }
}

/// Which objects changed since the previous publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Everything (the first publication).
    All,
    /// These objects were added, changed or deleted.
    Objects(BTreeSet<ObjectKey>),
}

impl Changed {
    /// Folds a later change set into this one.
    pub fn merge(&mut self, later: Changed) {
        match (&mut *self, later) {
            (Changed::All, _) => {}
            (_, Changed::All) => *self = Changed::All,
            (Changed::Objects(a), Changed::Objects(b)) => a.extend(b),
        }
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        match self {
            Changed::All => true,
            Changed::Objects(s) => s.contains(key),
        }
    }

    /// Objects listed (`None` for [`Changed::All`]).
    pub fn len(&self) -> Option<usize> {
        match self {
            Changed::All => None,
            Changed::Objects(s) => Some(s.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Changed::Objects(s) if s.is_empty())
    }
}

/// What one watch event of an object turned into.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A valid resource, with notes (unknown fields under lenient loading).
    Valid(Box<Resource>, Vec<String>),
    /// Not loadable: why.
    Invalid(String),
    /// Not an object moat enforces on (a finished pod): the same as deleted.
    Absent,
}

/// One object, converted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Converted {
    pub(crate) key: ObjectKey,
    pub(crate) outcome: Outcome,
}

/// The message of a loader error without its origin (there is no file; the key says which
/// object).
fn describe(e: &ManifestError) -> String {
    match e {
        ManifestError::Invalid { field, message, .. } => format!("{field}: {message}"),
        ManifestError::UnknownField { field, .. } => format!("{field}: unknown field"),
        ManifestError::NotAnObject { message, .. } | ManifestError::Syntax { message, .. } => message.clone(),
        ManifestError::Io { .. } => e.to_string(),
    }
}

/// Converts an object as the API server sent it. `apiVersion` and `kind` are set from the watch
/// (list items of built-in kinds come without them, metadata-only objects say
/// `PartialObjectMetadata`), then the object goes through the manifest loader, so an object
/// from the API is validated exactly as the same object in a manifests directory.
pub(crate) fn convert(kind: WatchedKind, calico: CalicoGroup, object: Value, options: LoadOptions) -> Converted {
    let Value::Object(mut object) = object else {
        return Converted { key: ObjectKey::new(kind, None, ""), outcome: Outcome::Invalid("not an object".into()) };
    };
    let api_version = kind.api_version(calico);
    object.insert("apiVersion".into(), api_version.clone().into());
    object.insert("kind".into(), kind.kind().into());
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        // Server bookkeeping, large on busy objects and never read.
        meta.remove("managedFields");
    }
    let meta = object.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_string();
    let namespace = kind
        .namespaced()
        .then(|| meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default").to_string());
    let key = ObjectKey { kind, namespace, name };
    let finished = kind == WatchedKind::Pod
        && matches!(
            object.get("status").and_then(|s| s.get("phase")).and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
    if finished {
        return Converted { key, outcome: Outcome::Absent };
    }
    let origin = Origin { file: PathBuf::from(format!("{api_version}/{}", kind.plural())), document: 1 };
    let mut report = LoadReport::default();
    load_value_with(Value::Object(object), &origin, options, &mut report);
    let outcome = if !report.errors.is_empty() {
        Outcome::Invalid(report.errors.iter().map(describe).collect::<Vec<_>>().join("; "))
    } else {
        match report.loaded.pop() {
            Some(l) if report.loaded.is_empty() => {
                let notes = report
                    .warnings
                    .iter()
                    .map(|w| match w {
                        crate::manifest::ManifestWarning::UnknownField { field, .. } => {
                            format!("{key}: {field}: unknown field, ignored")
                        }
                    })
                    .collect();
                Outcome::Valid(Box::new(l.resource), notes)
            }
            _ => Outcome::Invalid(format!("not read as a {} ({api_version})", kind.kind())),
        }
    };
    Converted { key, outcome }
}

/// What the state machine is told.
#[derive(Debug)]
pub(crate) enum Input {
    /// A (re)list of the kind starts.
    Init(WatchedKind),
    /// An object of the list in progress.
    Listed(Converted),
    /// The list is complete.
    InitDone(WatchedKind),
    /// An object was added or modified.
    Applied(Converted),
    /// An object was deleted.
    Deleted(ObjectKey),
    /// The kind is not served by the cluster: it has no objects.
    Unserved(WatchedKind, String),
}

impl Input {
    fn kind(&self) -> WatchedKind {
        match self {
            Input::Init(k) | Input::InitDone(k) | Input::Unserved(k, _) => *k,
            Input::Listed(c) | Input::Applied(c) => c.key.kind,
            Input::Deleted(key) => key.kind,
        }
    }
}

#[derive(Debug, Default)]
struct KindState {
    /// Has completed a list at least once.
    synced: bool,
    /// Objects seen, with their last good resource (`None`: never valid).
    objects: BTreeMap<ObjectKey, Option<Resource>>,
    /// A list in progress.
    relist: Option<BTreeMap<ObjectKey, Outcome>>,
}

/// The publication the state hands out.
#[derive(Debug, Clone)]
pub(crate) struct Publication {
    pub(crate) snapshot: SharedSnapshot,
    pub(crate) changed: Changed,
    pub(crate) problems: Arc<Vec<Problem>>,
}

/// The model being maintained.
#[derive(Debug)]
pub(crate) struct State {
    kinds: BTreeMap<WatchedKind, KindState>,
    working: SharedSnapshot,
    changed: BTreeSet<ObjectKey>,
    problems: BTreeMap<ObjectKey, Problem>,
    problems_changed: bool,
    notes: BTreeMap<ObjectKey, Vec<String>>,
    source_notes: BTreeMap<WatchedKind, String>,
    notes_changed: bool,
    published: bool,
}

impl State {
    /// A state waiting for the first list of each of `kinds`.
    pub(crate) fn new(kinds: impl IntoIterator<Item = WatchedKind>) -> State {
        State {
            kinds: kinds.into_iter().map(|k| (k, KindState::default())).collect(),
            working: SharedSnapshot::default(),
            changed: BTreeSet::new(),
            problems: BTreeMap::new(),
            problems_changed: false,
            notes: BTreeMap::new(),
            source_notes: BTreeMap::new(),
            notes_changed: false,
            published: false,
        }
    }

    /// Every kind has completed its first list.
    pub(crate) fn synced(&self) -> bool {
        self.kinds.values().all(|k| k.synced)
    }

    /// Kinds still waiting for their first complete list.
    #[cfg(test)]
    pub(crate) fn unsynced(&self) -> Vec<WatchedKind> {
        self.kinds.iter().filter(|(_, k)| !k.synced).map(|(k, _)| *k).collect()
    }

    /// There is something a publication would carry.
    pub(crate) fn dirty(&self) -> bool {
        !self.changed.is_empty() || self.problems_changed || self.notes_changed
    }

    pub(crate) fn objects(&self, kind: WatchedKind) -> usize {
        self.kinds.get(&kind).map_or(0, |k| k.objects.len())
    }

    #[cfg(test)]
    pub(crate) fn model(&self) -> &Model {
        &self.working.model
    }

    /// Applies one input.
    pub(crate) fn apply(&mut self, input: Input) {
        let kind = input.kind();
        if !self.kinds.contains_key(&kind) {
            return;
        }
        match input {
            Input::Init(k) => {
                if let Some(ks) = self.kinds.get_mut(&k) {
                    ks.relist = Some(BTreeMap::new());
                }
            }
            Input::Listed(c) => match self.kinds.get_mut(&kind).and_then(|ks| ks.relist.as_mut()) {
                Some(buffer) => {
                    buffer.insert(c.key, c.outcome);
                }
                // Outside a list (not expected from kube's watcher): an ordinary update.
                None => self.upsert(c.key, c.outcome),
            },
            Input::InitDone(k) => {
                let Some(ks) = self.kinds.get_mut(&k) else { return };
                let listed = ks.relist.take().unwrap_or_default();
                ks.synced = true;
                let gone: Vec<ObjectKey> = ks.objects.keys().filter(|key| !listed.contains_key(key)).cloned().collect();
                for key in gone {
                    self.remove(&key);
                }
                for (key, outcome) in listed {
                    self.upsert(key, outcome);
                }
            }
            Input::Applied(c) => self.upsert(c.key, c.outcome),
            Input::Deleted(key) => self.remove(&key),
            Input::Unserved(k, note) => {
                if let Some(ks) = self.kinds.get_mut(&k) {
                    ks.synced = true;
                }
                self.source_notes.insert(k, note);
                self.notes_changed = true;
            }
        }
    }

    fn upsert(&mut self, key: ObjectKey, outcome: Outcome) {
        match outcome {
            Outcome::Absent => self.remove(&key),
            Outcome::Valid(resource, notes) => {
                let Some(ks) = self.kinds.get_mut(&key.kind) else { return };
                let slot = ks.objects.entry(key.clone()).or_insert(None);
                if slot.as_ref() != Some(&*resource) {
                    self.working.make_mut().model.insert((*resource).clone());
                    *slot = Some(*resource);
                    self.changed.insert(key.clone());
                }
                if self.problems.remove(&key).is_some() {
                    self.problems_changed = true;
                }
                self.set_notes(key, notes);
            }
            Outcome::Invalid(message) => {
                let Some(ks) = self.kinds.get_mut(&key.kind) else { return };
                let kept = ks.objects.entry(key.clone()).or_insert(None).is_some();
                let problem = Problem { key: key.clone(), message, kept };
                if self.problems.get(&key) != Some(&problem) {
                    self.problems.insert(key.clone(), problem);
                    self.problems_changed = true;
                }
                self.set_notes(key, Vec::new());
            }
        }
    }

    fn set_notes(&mut self, key: ObjectKey, notes: Vec<String>) {
        let before = if notes.is_empty() { self.notes.remove(&key) } else { self.notes.insert(key, notes.clone()) };
        if before.unwrap_or_default() != notes {
            self.notes_changed = true;
        }
    }

    fn remove(&mut self, key: &ObjectKey) {
        let Some(ks) = self.kinds.get_mut(&key.kind) else { return };
        if let Some(Some(good)) = ks.objects.remove(key) {
            self.working.make_mut().model.remove(&good);
            self.changed.insert(key.clone());
        }
        if self.problems.remove(key).is_some() {
            self.problems_changed = true;
        }
        self.set_notes(key.clone(), Vec::new());
    }

    /// The publication due now, if any: the first once every kind has listed, then whatever
    /// changed since the last one.
    pub(crate) fn publish(&mut self) -> Option<Publication> {
        if !self.synced() || (self.published && !self.dirty()) {
            return None;
        }
        if self.notes_changed {
            let notes: Vec<String> =
                self.source_notes.values().cloned().chain(self.notes.values().flatten().cloned()).collect();
            self.working.make_mut().notes = notes;
        }
        let changed = if self.published { Changed::Objects(std::mem::take(&mut self.changed)) } else { Changed::All };
        self.changed.clear();
        self.published = true;
        self.problems_changed = false;
        self.notes_changed = false;
        Some(Publication {
            snapshot: self.working.clone(),
            changed,
            problems: Arc::new(self.problems.values().cloned().collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::load_str;
    use serde_json::json;
    use std::path::Path;

    fn pod(name: &str, app: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "dmz", "labels": {"app": app}, "resourceVersion": "7",
                            "managedFields": [{"manager": "kubelet"}]},
               "spec": {"containers": [{"name": "c", "image": "x"}]},
               "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}]}})
    }

    fn policy(name: &str, port: i64) -> Value {
        json!({"metadata": {"name": name, "namespace": "dmz"},
               "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": port}]}]}})
    }

    fn conv(kind: WatchedKind, v: Value) -> Converted {
        convert(kind, CalicoGroup::Crd, v, LoadOptions::strict())
    }

    fn synced_state() -> State {
        let mut s = State::new([WatchedKind::Pod, WatchedKind::NetworkPolicy]);
        for k in [WatchedKind::Pod, WatchedKind::NetworkPolicy] {
            s.apply(Input::Init(k));
            s.apply(Input::InitDone(k));
        }
        assert!(s.publish().is_some());
        s
    }

    #[test]
    fn a_list_item_without_kind_converts_like_the_same_manifest() {
        let c = conv(WatchedKind::Pod, pod("web", "web"));
        let Outcome::Valid(resource, notes) = c.outcome else { panic!("{c:?}") };
        assert!(notes.is_empty());
        let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: dmz, labels: {app: web}}\n\
                        spec: {containers: [{name: c, image: x}]}\nstatus: {podIP: 10.0.0.2, podIPs: [{ip: 10.0.0.2}]}\n";
        let report = load_str(manifest, Path::new("m.yaml"));
        assert_eq!(*resource, report.loaded[0].resource);
        assert_eq!(c.key, ObjectKey::new(WatchedKind::Pod, Some("dmz"), "web"));
    }

    #[test]
    fn finished_pods_are_absent_and_metadata_only_objects_load() {
        let mut done = pod("job", "x");
        done["status"]["phase"] = "Succeeded".into();
        assert_eq!(conv(WatchedKind::Pod, done).outcome, Outcome::Absent);
        let ns = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "dmz", "labels": {"zone": "dmz"}}});
        let c = conv(WatchedKind::Namespace, ns);
        assert!(matches!(c.outcome, Outcome::Valid(..)), "{c:?}");
        assert_eq!(c.key, ObjectKey::new(WatchedKind::Namespace, None, "dmz"));
    }

    #[test]
    fn nothing_is_published_before_every_kind_listed_and_a_relist_applies_as_one_diff() {
        let mut s = State::new([WatchedKind::Pod, WatchedKind::NetworkPolicy]);
        s.apply(Input::Init(WatchedKind::Pod));
        s.apply(Input::Listed(conv(WatchedKind::Pod, pod("a", "a"))));
        s.apply(Input::Listed(conv(WatchedKind::Pod, pod("b", "b"))));
        s.apply(Input::InitDone(WatchedKind::Pod));
        assert!(s.publish().is_none(), "network policies have not listed yet");
        s.apply(Input::Init(WatchedKind::NetworkPolicy));
        s.apply(Input::InitDone(WatchedKind::NetworkPolicy));
        let first = s.publish().unwrap();
        assert_eq!(first.changed, Changed::All);
        assert_eq!(first.snapshot.model.pods.len(), 2);
        assert!(s.publish().is_none(), "nothing new");

        // A relist in progress changes nothing until it completes; then b is gone, c is new,
        // and a (unchanged) is not reported.
        s.apply(Input::Init(WatchedKind::Pod));
        s.apply(Input::Listed(conv(WatchedKind::Pod, pod("a", "a"))));
        s.apply(Input::Listed(conv(WatchedKind::Pod, pod("c", "c"))));
        assert!(s.publish().is_none());
        assert_eq!(s.model().pods.len(), 2);
        s.apply(Input::InitDone(WatchedKind::Pod));
        let next = s.publish().unwrap();
        let keys = |names: &[&str]| {
            Changed::Objects(names.iter().map(|n| ObjectKey::new(WatchedKind::Pod, Some("dmz"), n)).collect())
        };
        assert_eq!(next.changed, keys(&["b", "c"]));
        let names: Vec<_> = next.snapshot.model.pods.keys().map(|(_, n)| n.clone()).collect();
        assert_eq!(names, vec!["a", "c"]);
        // The first publication still shows its own model (copy on write).
        assert_eq!(first.snapshot.model.pods.len(), 2);
        assert!(first.snapshot.model.pods.contains_key(&("dmz".to_string(), "b".to_string())));
    }

    #[test]
    fn an_invalid_version_keeps_the_last_good_one_and_is_reported() {
        let mut s = synced_state();
        s.apply(Input::Applied(conv(WatchedKind::NetworkPolicy, policy("p", 80))));
        assert_eq!(s.publish().unwrap().snapshot.model.k8s_policies.len(), 1);
        s.apply(Input::Applied(conv(WatchedKind::NetworkPolicy, policy("p", 0))));
        let p = s.publish().unwrap();
        assert_eq!(p.changed, Changed::Objects(BTreeSet::new()), "the model did not change");
        assert_eq!(p.problems.len(), 1);
        assert!(p.problems[0].kept);
        assert!(p.problems[0].message.contains("spec.ingress[0].ports[0].port"), "{}", p.problems[0]);
        assert_eq!(p.problems[0].key.to_string(), "NetworkPolicy dmz/p");
        let port = &p.snapshot.model.k8s_policies.values().next().unwrap().spec;
        assert!(format!("{port:?}").contains("80"), "the last good version is enforced");
        // A new object that never was valid is left out; fixing it clears the problem.
        s.apply(Input::Applied(conv(WatchedKind::NetworkPolicy, policy("q", 70000))));
        let p = s.publish().unwrap();
        assert_eq!(p.problems.len(), 2);
        assert!(!p.problems.iter().find(|p| p.key.name == "q").unwrap().kept);
        assert_eq!(p.snapshot.model.k8s_policies.len(), 1);
        s.apply(Input::Applied(conv(WatchedKind::NetworkPolicy, policy("q", 70))));
        s.apply(Input::Deleted(ObjectKey::new(WatchedKind::NetworkPolicy, Some("dmz"), "p")));
        let p = s.publish().unwrap();
        assert!(p.problems.is_empty());
        let names: Vec<_> = p.snapshot.model.k8s_policies.keys().map(|(_, _, n)| n.clone()).collect();
        assert_eq!(names, vec!["q"]);
    }

    #[test]
    fn an_unchanged_conversion_is_no_change() {
        let mut s = synced_state();
        s.apply(Input::Applied(conv(WatchedKind::Pod, pod("a", "a"))));
        assert!(s.publish().is_some());
        let mut status_only = pod("a", "a");
        status_only["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        status_only["metadata"]["resourceVersion"] = "8".into();
        s.apply(Input::Applied(conv(WatchedKind::Pod, status_only)));
        assert!(!s.dirty());
        assert!(s.publish().is_none());
    }

    #[test]
    fn unserved_kinds_count_as_listed_and_are_noted() {
        let mut s = State::new([WatchedKind::Pod, WatchedKind::Tier]);
        s.apply(Input::Init(WatchedKind::Pod));
        s.apply(Input::InitDone(WatchedKind::Pod));
        assert_eq!(s.unsynced(), vec![WatchedKind::Tier]);
        s.apply(Input::Unserved(WatchedKind::Tier, "Tier: not served".into()));
        let p = s.publish().unwrap();
        assert_eq!(p.snapshot.notes, vec!["Tier: not served".to_string()]);
    }

    #[test]
    fn object_keys_name_the_model_identity_of_what_they_convert_to() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/kubesim/scenarios/every-kind.yaml"))
                .unwrap();
        let scenario: Value = serde_norway::from_str(&text).unwrap();
        let mut kinds = BTreeSet::new();
        for o in scenario["objects"].as_array().unwrap() {
            let api_version = o["apiVersion"].as_str().unwrap();
            let kind = WatchedKind::ALL
                .into_iter()
                .find(|k| k.kind() == o["kind"] && k.api_version(CalicoGroup::Crd) == api_version)
                .unwrap();
            let c = conv(kind, o.clone());
            let Outcome::Valid(resource, _) = c.outcome else { panic!("{c:?}") };
            assert_eq!(c.key.resource_key(), ResourceKey::of(&resource), "{}", c.key);
            let mut model = Model::new();
            model.insert((*resource).clone());
            assert_eq!(lookup(&model, &c.key.resource_key()), Some(*resource));
            kinds.insert(kind);
        }
        assert_eq!(kinds.len(), WatchedKind::ALL.len(), "the scenario has every kind");
    }

    #[test]
    fn removing_every_kind_through_the_model() {
        // Model::remove by identity, for every resource kind the source can hold.
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/kubesim/scenarios/every-kind.yaml"))
                .unwrap();
        let scenario: Value = serde_norway::from_str(&text).unwrap();
        let mut docs = String::new();
        for o in scenario["objects"].as_array().unwrap() {
            docs.push_str("---\n");
            docs.push_str(&serde_json::to_string(o).unwrap());
            docs.push('\n');
        }
        let report = load_str(&docs, Path::new("every-kind"));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let mut model = report.to_model();
        for l in &report.loaded {
            assert!(model.remove(&l.resource), "{}", l.object);
        }
        assert!(model.namespaces.is_empty() && model.pods.is_empty() && model.policies.is_empty());
        assert!(model.k8s_policies.is_empty() && model.tiers.is_empty() && model.network_sets.is_empty());
        assert!(model.host_endpoints.is_empty() && model.ip_pools.is_empty() && model.service_accounts.is_empty());
    }
}
