//! Objects, the resourceVersion clock, the watch history and the open watches.
//!
//! Like etcd behind a real API server, one counter stamps every write of every resource, so
//! resource versions are comparable across kinds and strictly increase. Every write is kept in a
//! bounded history from which a watch resumes (`?watch=1&resourceVersion=N`); a resume point older
//! than the history (after [`Store::expire_history`], a restart, or the history bound) is answered
//! with `410 Gone`. Writes are pushed to the open watches while the store lock is held, and a new
//! watch replays its backlog and subscribes under the same lock, so no event falls between the
//! two and each watch sees every change exactly once, in order.

use crate::api::{self, ResourceInfo};
use crate::select::FieldSelector;
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn wire(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// An API error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into() }
    }

    pub(crate) fn status(&self) -> Value {
        status_object(self.code, self.reason, &self.message)
    }
}

/// A `meta/v1` `Status` failure.
pub(crate) fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// What the real API server says when a watch resumes from a compacted resourceVersion.
pub(crate) fn gone_watch() -> ApiError {
    ApiError::new(410, "Expired", "The resourceVersion for the provided watch is too old.")
}

/// What the store could not do for a caller of the handle.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("not an object with apiVersion, kind and metadata.name")]
    NotAnObject,
    #[error("no resource serves {api_version} {kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} {name} not found")]
    NotFound { kind: String, name: String },
}

type Key = (String, String);

/// One write, kept for watches that resume from an older resourceVersion.
#[derive(Debug)]
struct Change {
    rv: u64,
    resource: usize,
    kind: EventType,
    object: Arc<Value>,
    /// The version it replaced (Modified, Deleted): needed to tell a field-selected watch that an
    /// object left or entered its selection, and to rebuild an older state for exact lists.
    previous: Option<Arc<Value>>,
}

/// What a watch stream is told.
#[derive(Debug)]
pub(crate) enum WatchMsg {
    /// One JSON line (an event).
    Line(Bytes),
    /// Cut the connection mid-stream (no terminating chunk).
    Abort,
}

/// What an open watch asked for.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    pub(crate) resource: usize,
    pub(crate) namespace: Option<String>,
    pub(crate) selector: FieldSelector,
    pub(crate) metadata_only: bool,
    pub(crate) bookmarks: bool,
}

#[derive(Debug)]
struct Watcher {
    spec: WatchSpec,
    tx: UnboundedSender<WatchMsg>,
}

/// What a list asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListSpec {
    pub(crate) resource: usize,
    pub(crate) namespace: Option<String>,
    pub(crate) selector: FieldSelector,
    pub(crate) metadata_only: bool,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) exact: bool,
}

/// A paged list in progress: the snapshot its first page was cut from.
#[derive(Debug)]
struct Page {
    spec: ListSpec,
    rv: u64,
    items: Arc<Vec<Arc<Value>>>,
    offset: usize,
}

/// Everything stored, with the clock and the subscribers.
#[derive(Debug)]
pub(crate) struct Store {
    rv: u64,
    /// A watch or exact list may start from `rv >= compacted`; older ones get 410.
    compacted: u64,
    collections: Vec<BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Change>,
    history_limit: usize,
    watchers: Vec<Watcher>,
    pages: HashMap<String, Page>,
    next_page: u64,
    next_uid: u64,
}

fn key_of(object: &Value) -> Key {
    let meta = &object["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (s(&meta["namespace"]), s(&meta["name"]))
}

/// An object as a metadata-only client (`Accept: …;as=PartialObjectMetadata…`) receives it.
fn partial(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

impl Store {
    pub(crate) fn new(history_limit: usize) -> Store {
        Store {
            rv: 1,
            compacted: 1,
            collections: api::resources().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            watchers: Vec::new(),
            pages: HashMap::new(),
            next_page: 1,
            next_uid: 1,
        }
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn open_watches(&self) -> usize {
        self.watchers.iter().filter(|w| !w.tx.is_closed()).count()
    }

    /// Creates or replaces an object (`kubectl apply`); returns its new resourceVersion.
    pub(crate) fn apply(&mut self, object: Value) -> Result<u64, StoreError> {
        let Value::Object(mut object) = object else { return Err(StoreError::NotAnObject) };
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        let resource = api::find_kind(&api_version, &kind)
            .ok_or_else(|| StoreError::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
        let info = api::resource(resource).ok_or(StoreError::NotAnObject)?;
        let meta = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(meta) = meta else { return Err(StoreError::NotAnObject) };
        let name = meta.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(StoreError::NotAnObject);
        }
        if info.namespaced {
            if meta.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) {
                meta.insert("namespace".into(), "default".into());
            }
        } else {
            meta.remove("namespace");
        }
        if info.kind == "Namespace" {
            // The API server's defaulting (since 1.21) labels every namespace with its name.
            let labels = meta.entry("labels").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(labels) = labels {
                labels.entry("kubernetes.io/metadata.name").or_insert_with(|| name.clone().into());
            }
        }
        let key = key_of(&Value::Object(Map::from_iter([("metadata".to_string(), Value::Object(meta.clone()))])));
        let previous = self.collections.get(resource).and_then(|c| c.get(&key)).cloned();
        let (uid, created) = match &previous {
            Some(p) => (p["metadata"]["uid"].clone(), p["metadata"]["creationTimestamp"].clone()),
            None => {
                let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
                self.next_uid += 1;
                (uid.into(), "2026-01-01T00:00:00Z".into())
            }
        };
        self.rv += 1;
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        meta.insert("resourceVersion".into(), self.rv.to_string().into());
        let object = Arc::new(Value::Object(object));
        let kind = if previous.is_some() { EventType::Modified } else { EventType::Added };
        if let Some(c) = self.collections.get_mut(resource) {
            c.insert(key, object.clone());
        }
        self.record(Change { rv: self.rv, resource, kind, object, previous });
        Ok(self.rv)
    }

    /// Deletes an object; `Ok(None)` when there was none.
    pub(crate) fn delete(&mut self, resource: usize, namespace: &str, name: &str) -> Option<u64> {
        let key = (namespace.to_string(), name.to_string());
        let previous = self.collections.get_mut(resource)?.remove(&key)?;
        self.rv += 1;
        // The deleted object carries the resourceVersion of its deletion, as in the real server.
        let mut object = (*previous).clone();
        object["metadata"]["resourceVersion"] = self.rv.to_string().into();
        self.record(Change {
            rv: self.rv,
            resource,
            kind: EventType::Deleted,
            object: Arc::new(object),
            previous: Some(previous),
        });
        Some(self.rv)
    }

    pub(crate) fn get(&self, resource: usize, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.collections.get(resource)?.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    pub(crate) fn len(&self, resource: usize) -> usize {
        self.collections.get(resource).map_or(0, BTreeMap::len)
    }

    fn record(&mut self, change: Change) {
        self.broadcast(&change);
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                // Resuming from `old.rv` still works (every later change is kept); from
                // anything before it does not.
                self.compacted = old.rv;
            }
        }
    }

    /// The event a watch with `spec` gets for `change`, if any: a field-selected watch sees an
    /// object entering its selection as ADDED and leaving it as DELETED, like the real server.
    fn event_for(spec: &WatchSpec, change: &Change) -> Option<EventType> {
        if change.resource != spec.resource {
            return None;
        }
        let selected = |o: &Value| {
            spec.namespace.as_ref().is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
                && spec.selector.matches(o)
        };
        let now = selected(&change.object);
        let before = change.previous.as_deref().is_some_and(selected);
        match (change.kind, before, now) {
            (EventType::Added, _, true) => Some(EventType::Added),
            (EventType::Deleted, true, _) => Some(EventType::Deleted),
            (EventType::Modified, true, true) => Some(EventType::Modified),
            (EventType::Modified, false, true) => Some(EventType::Added),
            (EventType::Modified, true, false) => Some(EventType::Deleted),
            _ => None,
        }
    }

    fn render(spec: &WatchSpec, kind: EventType, object: &Value) -> Bytes {
        if spec.metadata_only { watch_line(kind.wire(), &partial(object)) } else { watch_line(kind.wire(), object) }
    }

    fn broadcast(&mut self, change: &Change) {
        self.watchers.retain(|w| match Store::event_for(&w.spec, change) {
            Some(kind) => w.tx.send(WatchMsg::Line(Store::render(&w.spec, kind, &change.object))).is_ok(),
            None => !w.tx.is_closed(),
        });
    }

    /// Starts a watch: replays what happened after `resource_version` (or, without one, the
    /// current objects as ADDED), then subscribes. A resume point older than the history gets
    /// the real server's answer: a started stream whose only event is an ERROR with a 410 Status.
    pub(crate) fn watch(
        &mut self,
        spec: WatchSpec,
        resource_version: Option<&str>,
        initial_events: bool,
        tx: UnboundedSender<WatchMsg>,
    ) -> Result<(), ApiError> {
        let from = match resource_version.filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| ApiError::new(400, "BadRequest", format!("invalid resource version {v:?}")))?,
            ),
        };
        let send = |line: Bytes| {
            // A closed receiver means the client is gone; the watcher is not registered then.
            let _ = tx.send(WatchMsg::Line(line));
        };
        match from {
            // "0" and no version both mean: the current state first, then changes.
            None | Some(0) => {
                let info = api::resource(spec.resource);
                let objects = self.collections.get(spec.resource).into_iter().flat_map(BTreeMap::values);
                for o in objects.filter(|o| {
                    spec.namespace.as_ref().is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
                        && spec.selector.matches(o)
                }) {
                    send(Store::render(&spec, EventType::Added, o));
                }
                if initial_events {
                    // Streaming lists end their initial events with an annotated bookmark.
                    let mut mark = self.bookmark_object(info, spec.metadata_only);
                    mark["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                    send(watch_line("BOOKMARK", &mark));
                }
            }
            Some(rv) if rv < self.compacted => {
                send(watch_line("ERROR", &gone_watch().status()));
                return Ok(());
            }
            Some(rv) => {
                for change in self.history.iter().filter(|c| c.rv > rv) {
                    if let Some(kind) = Store::event_for(&spec, change) {
                        send(Store::render(&spec, kind, &change.object));
                    }
                }
            }
        }
        self.watchers.push(Watcher { spec, tx });
        Ok(())
    }

    fn bookmark_object(&self, info: Option<&ResourceInfo>, metadata_only: bool) -> Value {
        let (api_version, kind) = match info {
            Some(_) if metadata_only => ("meta.k8s.io/v1".to_string(), "PartialObjectMetadata".to_string()),
            Some(i) => (i.api_version(), i.kind.to_string()),
            None => (String::new(), String::new()),
        };
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": self.rv.to_string()}})
    }

    /// Sends a BOOKMARK with the current resourceVersion to every watch that allows them.
    pub(crate) fn bookmark(&mut self) {
        let marks: Vec<Option<Bytes>> = self
            .watchers
            .iter()
            .map(|w| {
                w.spec.bookmarks.then(|| {
                    watch_line("BOOKMARK", &self.bookmark_object(api::resource(w.spec.resource), w.spec.metadata_only))
                })
            })
            .collect();
        let mut marks = marks.into_iter();
        self.watchers.retain(|w| match marks.next().flatten() {
            Some(line) => w.tx.send(WatchMsg::Line(line)).is_ok(),
            None => !w.tx.is_closed(),
        });
    }

    /// Ends every open watch with an ERROR event carrying a 410 Status.
    pub(crate) fn gone(&mut self) {
        let line = watch_line("ERROR", &gone_watch().status());
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Line(line.clone()));
        }
    }

    /// Cuts every open watch mid-stream.
    pub(crate) fn abort_watches(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Abort);
        }
    }

    /// Forgets the watch history and the paged lists in progress: resuming from any
    /// resourceVersion handed out so far now answers 410. The clock moves on by one so that the
    /// newest version is forgotten too (a client that saw the latest write must relist as well,
    /// as after a real API server restart whose watch cache starts later than the client's
    /// version); lists after this return the new version, from which watches work.
    pub(crate) fn expire_history(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.compacted = self.rv;
        self.pages.clear();
    }

    /// The objects of `spec.resource` as of `rv`, undoing later writes from the history.
    fn state_at(&self, resource: usize, rv: u64) -> Result<BTreeMap<Key, Arc<Value>>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::new(410, "Expired", format!("too old resource version: {rv} ({})", self.compacted)));
        }
        let mut state = self.collections.get(resource).cloned().unwrap_or_default();
        for c in self.history.iter().rev().filter(|c| c.rv > rv && c.resource == resource) {
            let key = key_of(&c.object);
            match (&c.kind, &c.previous) {
                (EventType::Added, _) => {
                    state.remove(&key);
                }
                (_, Some(p)) => {
                    state.insert(key, p.clone());
                }
                (_, None) => {}
            }
        }
        Ok(state)
    }

    /// A list response (`<Kind>List` with `metadata.resourceVersion`, paged with `limit` and
    /// `continue` like the real server: every page comes from the snapshot of the first).
    pub(crate) fn list(&mut self, spec: ListSpec) -> Result<Value, ApiError> {
        let info = api::resource(spec.resource).ok_or_else(|| ApiError::new(404, "NotFound", "no such resource"))?;
        let (rv, items, offset, spec) = match spec.continue_token.clone() {
            Some(token) => {
                if spec.resource_version.as_deref().is_some_and(|v| !v.is_empty()) {
                    return Err(ApiError::new(
                        400,
                        "BadRequest",
                        "specifying resource version is not allowed when using continue",
                    ));
                }
                let issued = token
                    .strip_prefix("kubesim-")
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| ApiError::new(400, "BadRequest", "continue key is not valid"))?;
                let page = match self.pages.remove(&token) {
                    Some(p) if p.rv >= self.compacted => p,
                    // Issued here but gone (compacted, forgotten by a restart, or used already).
                    _ if issued < self.next_page => {
                        return Err(ApiError::new(
                            410,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent list result. \
                             You can start a new list without the continue parameter.",
                        ));
                    }
                    _ => return Err(ApiError::new(400, "BadRequest", "continue key is not valid")),
                };
                let mut next = page.spec;
                next.limit = spec.limit;
                (page.rv, page.items, page.offset, next)
            }
            None => {
                let requested = match spec.resource_version.as_deref().filter(|v| !v.is_empty()) {
                    None => None,
                    Some(v) => Some(
                        v.parse::<u64>()
                            .map_err(|_| ApiError::new(400, "BadRequest", format!("invalid resource version {v:?}")))?,
                    ),
                };
                let (rv, state) = match requested {
                    Some(n) if spec.exact => (n, self.state_at(spec.resource, n)?),
                    Some(n) if n > self.rv => {
                        return Err(ApiError::new(504, "Timeout", format!("Too large resource version: {n}")));
                    }
                    _ => (self.rv, self.collections.get(spec.resource).cloned().unwrap_or_default()),
                };
                let items: Vec<Arc<Value>> = state
                    .into_values()
                    .filter(|o| {
                        spec.namespace.as_ref().is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
                            && spec.selector.matches(o)
                    })
                    .collect();
                (rv, Arc::new(items), 0, spec)
            }
        };
        let end = match spec.limit {
            Some(limit) if limit > 0 => offset.saturating_add(limit).min(items.len()),
            _ => items.len(),
        };
        let render = |o: &Arc<Value>| -> Value {
            if spec.metadata_only {
                return partial(o);
            }
            let mut item = (**o).clone();
            if info.builtin() {
                if let Value::Object(m) = &mut item {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            item
        };
        let page: Vec<Value> = items.get(offset..end).unwrap_or_default().iter().map(render).collect();
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if end < items.len() {
            let token = format!("kubesim-{}", self.next_page);
            self.next_page += 1;
            metadata["continue"] = token.clone().into();
            metadata["remainingItemCount"] = (items.len() - end).into();
            self.pages.insert(token, Page { spec: spec.clone(), rv, items: items.clone(), offset: end });
        }
        let (api_version, kind) = if spec.metadata_only {
            ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
        } else {
            (info.api_version(), format!("{}List", info.kind))
        };
        Ok(json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    fn pod(name: &str, phase: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "dmz"},
               "status": {"phase": phase}})
    }

    fn lines(rx: &mut UnboundedReceiver<WatchMsg>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let WatchMsg::Line(b) = m {
                out.push(serde_json::from_slice(&b).unwrap());
            }
        }
        out
    }

    fn pods() -> usize {
        api::find_kind("v1", "Pod").unwrap()
    }

    fn watch_spec(selector: &str) -> WatchSpec {
        WatchSpec {
            resource: pods(),
            namespace: None,
            selector: FieldSelector::parse(selector, "Pod").unwrap(),
            metadata_only: false,
            bookmarks: true,
        }
    }

    #[test]
    fn resource_versions_increase_and_lists_page_from_one_snapshot() {
        let mut s = Store::new(100);
        for i in 0..5 {
            s.apply(pod(&format!("p{i}"), "Running")).unwrap();
        }
        let spec = ListSpec { resource: pods(), limit: Some(2), ..ListSpec::default() };
        let first = s.list(spec.clone()).unwrap();
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        assert!(first["items"][0].get("kind").is_none(), "built-in list items carry no kind");
        let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        s.apply(pod("p9", "Running")).unwrap();
        let mut token = first["metadata"]["continue"].as_str().map(str::to_string);
        let mut names = Vec::new();
        while let Some(t) = token {
            let page = s.list(ListSpec { continue_token: Some(t), ..spec.clone() }).unwrap();
            assert_eq!(page["metadata"]["resourceVersion"].as_str().unwrap(), rv);
            names.extend(page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].clone()));
            token = page["metadata"]["continue"].as_str().map(str::to_string);
        }
        assert_eq!(names, vec!["p2", "p3", "p4"], "the page snapshot does not see p9");
    }

    #[test]
    fn a_continue_token_expires_with_the_history() {
        let mut s = Store::new(100);
        for i in 0..3 {
            s.apply(pod(&format!("p{i}"), "Running")).unwrap();
        }
        let spec = ListSpec { resource: pods(), limit: Some(1), ..ListSpec::default() };
        let first = s.list(spec.clone()).unwrap();
        s.expire_history();
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        let err = s.list(ListSpec { continue_token: Some(token), ..spec }).unwrap_err();
        assert_eq!(err.code, 410);
    }

    #[test]
    fn watches_resume_from_history_and_get_410_when_it_is_gone() {
        let mut s = Store::new(100);
        let rv = s.apply(pod("a", "Running")).unwrap();
        s.apply(pod("b", "Running")).unwrap();
        s.delete(pods(), "dmz", "a").unwrap();
        let (tx, mut rx) = unbounded_channel();
        s.watch(watch_spec(""), Some(&rv.to_string()), false, tx).unwrap();
        let types: Vec<_> = lines(&mut rx).iter().map(|l| l["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(types, vec!["ADDED", "DELETED"]);
        s.expire_history();
        let (tx, mut rx) = unbounded_channel();
        s.watch(watch_spec(""), Some(&rv.to_string()), false, tx).unwrap();
        let got = lines(&mut rx);
        assert_eq!(got[0]["type"], "ERROR");
        assert_eq!(got[0]["object"]["code"], 410);
        assert_eq!(s.open_watches(), 1, "only the first watch is open");
    }

    #[test]
    fn field_selected_watches_see_objects_leave_and_enter() {
        let mut s = Store::new(100);
        let (tx, mut rx) = unbounded_channel();
        s.watch(watch_spec("status.phase!=Failed"), None, false, tx).unwrap();
        s.apply(pod("a", "Running")).unwrap();
        s.apply(pod("a", "Failed")).unwrap();
        s.apply(pod("a", "Running")).unwrap();
        s.apply(pod("a", "Running")).unwrap();
        s.bookmark();
        let types: Vec<_> = lines(&mut rx).iter().map(|l| l["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(types, vec!["ADDED", "DELETED", "ADDED", "MODIFIED", "BOOKMARK"]);
    }

    #[test]
    fn exact_lists_rebuild_an_older_state() {
        let mut s = Store::new(100);
        let rv = s.apply(pod("a", "Running")).unwrap();
        s.apply(pod("b", "Running")).unwrap();
        s.delete(pods(), "dmz", "a").unwrap();
        let spec =
            ListSpec { resource: pods(), resource_version: Some(rv.to_string()), exact: true, ..ListSpec::default() };
        let list = s.list(spec).unwrap();
        let names: Vec<_> = list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].clone()).collect();
        assert_eq!(names, vec!["a"]);
    }

    #[test]
    fn the_history_bound_compacts() {
        let mut s = Store::new(2);
        let first = s.apply(pod("a", "Running")).unwrap();
        s.apply(pod("b", "Running")).unwrap();
        s.apply(pod("c", "Running")).unwrap();
        s.apply(pod("d", "Running")).unwrap();
        let (tx, mut rx) = unbounded_channel();
        s.watch(watch_spec(""), Some(&first.to_string()), false, tx).unwrap();
        assert_eq!(lines(&mut rx)[0]["type"], "ERROR");
    }
}
