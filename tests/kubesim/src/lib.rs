//! kubesim: an in-test Kubernetes API server for the resources moat reads.
//!
//! No API server can be installed where moat's tests run, so this crate speaks the real list/watch
//! wire format over plain HTTP/1.1 on `127.0.0.1` (random port, no TLS, no authentication: point
//! a kube-rs `Config` at [`SimControl::url`] with `Config::new(url)`). It is a test fixture, never
//! a server to expose.
//!
//! What it serves (see [`api`]): core `v1` `pods`, `namespaces`, `serviceaccounts`;
//! `networking.k8s.io/v1` `networkpolicies`; Calico's ten kinds at `crd.projectcalico.org/v1`
//! (default on) and `projectcalico.org/v3` (off unless [`Serve::calico_v3`]); discovery documents
//! (`/api`, `/api/v1`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`, `/version`).
//!
//! Semantics, as the real server has them:
//!
//! * one monotonically increasing `resourceVersion` over all kinds (etcd's revision);
//! * lists: `<Kind>List` with `metadata.resourceVersion`; `limit` pages carry `metadata.continue`
//!   and `remainingItemCount`, and every page is cut from the snapshot of the first; built-in
//!   kinds' list items have no `apiVersion`/`kind`, custom resources' do; `resourceVersion` with
//!   `resourceVersionMatch=Exact` lists an older state, `410` when it is compacted; an expired
//!   `continue` token is an HTTP `410`;
//! * watches (`?watch=true&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`): a
//!   chunked stream of JSON lines `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":…}`;
//!   resuming from a compacted version starts a stream whose only event is an `ERROR` with a
//!   `Status` of code 410 (what the watch cache does); no version or `0` starts with the current
//!   objects as `ADDED`; `sendInitialEvents=true` ends those with the `k8s.io/initial-events-end`
//!   bookmark; the stream ends cleanly after `timeoutSeconds`;
//! * metadata-only requests (`Accept: application/json;as=PartialObjectMetadata…`) get
//!   `PartialObjectMetadata(List)` objects;
//! * field selectors with the labels the real server supports (`metadata.name`,
//!   `metadata.namespace`, and for pods `status.phase`, `spec.nodeName`, …); an object leaving a
//!   watch's selection is a `DELETED`, one entering it an `ADDED`. Other labels are a `400`, and so
//!   is any `labelSelector` (not implemented: refusing beats answering wrongly).
//!
//! Faults a test injects through the handle or a [`scenario`] step: HTTP errors for the next `n`
//! requests ([`SimControl::fail_next`], [`FaultRule`]), responses cut mid-body
//! ([`Fault::Truncate`]), connections reset without an answer ([`Fault::Reset`]), open watches cut
//! ([`SimControl::drop_watches`]) or ended with 410 ([`SimControl::gone`]), compaction
//! ([`SimControl::expire_history`]), an outage (every connection reset until it ends,
//! [`SimControl::outage`]) and a restart that forgets the watch history
//! ([`SimControl::restart`]). Every request is recorded ([`RequestRecord`]) so tests can assert
//! paging, metadata-only requests and the absence of polling.
//!
//! The server runs on its own thread and tokio runtime, so a test drives it the same way from
//! sync or async code; every method of [`SimControl`] is synchronous and takes effect before it
//! returns (a write is in every open watch's stream when `apply` returns).

#![forbid(unsafe_code)]

pub mod api;
mod http;
pub mod scale;
pub mod scenario;
mod select;
mod store;

pub use api::{ResourceInfo, Serve};
pub use scenario::{Action, ObjectId, Relabel, Scenario, ScenarioError, Step, parse_duration, scenarios_dir};
pub use store::{EventType, StoreError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use store::Store;

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still consistent for a
/// test fixture (every critical section completes its writes before anything can panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Discovery,
    List,
    Watch,
    Get,
    Other,
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string.
    pub query: String,
    pub kind: RequestKind,
    /// Asked for `PartialObjectMetadata` (a metadata-only list or watch).
    pub metadata_only: bool,
    /// The HTTP status answered; 0 when the connection was reset instead.
    pub status: u16,
}

impl RequestRecord {
    /// A query parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        http::query_pairs(&self.query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// How an injected fault answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// An HTTP error with a `Status` body (500, 503, 410, 403, …).
    Status(u16),
    /// `200` headers, part of a body, then the connection is cut.
    Truncate,
    /// The connection is closed without an answer.
    Reset,
}

/// Which requests a fault rule applies to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Any,
    /// Lists, watches and gets (not discovery).
    #[default]
    Resources,
    List,
    Watch,
    Discovery,
}

fn one() -> u32 {
    1
}

/// Answer the next `count` requests that match with `fault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    #[serde(default = "one")]
    pub count: u32,
    pub fault: Fault,
    /// Only requests whose path contains this.
    #[serde(default)]
    pub path: Option<String>,
    /// Only requests whose raw query string contains this (`continue=`: pages after the first).
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub on: Target,
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub serve: Serve,
    /// Writes kept for resuming watches; older resume points get 410.
    pub history_limit: usize,
    /// Send a BOOKMARK to every watch that allows them this often (the real server: about a
    /// minute). `None`: only when asked ([`SimControl::bookmark`]).
    pub bookmark_every: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig { serve: Serve::default(), history_limit: 100_000, bookmark_every: None }
    }
}

/// What a handle call could not do.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("cannot start the server: {0}")]
    Io(#[from] std::io::Error),
    #[error("not YAML/JSON objects: {0}")]
    Decode(String),
}

/// State shared by the server tasks and the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) faults: Mutex<Vec<FaultRule>>,
    pub(crate) log: Mutex<Vec<RequestRecord>>,
    pub(crate) serve: Mutex<Serve>,
    /// Bumped to close every open connection (outage, restart).
    pub(crate) epoch: tokio::sync::watch::Sender<u64>,
    pub(crate) outage: AtomicBool,
    pub(crate) addr: SocketAddr,
}

/// A cloneable, `Send` handle on a running server: what tests (and timed scenario steps on
/// other threads) drive it with.
#[derive(Debug, Clone)]
pub struct SimControl {
    shared: Arc<Shared>,
}

/// A running server; stops when dropped. Derefs to its [`SimControl`].
#[derive(Debug)]
pub struct KubeSim {
    control: SimControl,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for KubeSim {
    type Target = SimControl;

    fn deref(&self) -> &SimControl {
        &self.control
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl KubeSim {
    /// Starts an empty server on `127.0.0.1` (random port).
    pub fn start(config: SimConfig) -> Result<KubeSim, SimError> {
        KubeSim::start_with(config, Vec::new())
    }

    /// Starts a server with `objects` stored before the first connection is accepted.
    pub fn start_with(config: SimConfig, objects: Vec<Value>) -> Result<KubeSim, SimError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut store = Store::new(config.history_limit);
        for o in objects {
            store.apply(o)?;
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            serve: Mutex::new(config.serve),
            epoch: tokio::sync::watch::Sender::new(0),
            outage: AtomicBool::new(false),
            addr,
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let server = shared.clone();
        let bookmark_every = config.bookmark_every;
        let thread = std::thread::Builder::new().name("kubesim".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("kubesim: cannot register the listener: {e}");
                        return;
                    }
                };
                if let Some(every) = bookmark_every {
                    let shared = server.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(every);
                        loop {
                            tick.tick().await;
                            lock(&shared.store).bookmark();
                        }
                    });
                }
                http::accept_loop(server, listener, stop_rx).await;
            });
        })?;
        Ok(KubeSim { control: SimControl { shared }, stop, thread: Some(thread) })
    }

    /// Starts a server with a scenario's settings and initial objects.
    pub fn from_scenario(scenario: &Scenario) -> Result<KubeSim, SimError> {
        let config = SimConfig { serve: scenario.serve, ..SimConfig::default() };
        KubeSim::start_with(config, scenario.objects.clone())
    }

    /// A handle that outlives borrows of this server (for other threads).
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }
}

fn resource_of(api_version: &str, kind: &str) -> Result<usize, StoreError> {
    api::find_kind(api_version, kind)
        .ok_or_else(|| StoreError::UnknownKind { api_version: api_version.into(), kind: kind.into() })
}

impl SimControl {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A kubeconfig for this server (plain HTTP, no credentials: kubesim does not authenticate), for
    /// processes that find their cluster as kubectl does.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: sim\nclusters: [{{name: sim, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: anonymous, user: {{}}}}]\ncontexts: [{{name: sim, context: {{cluster: sim, user: anonymous}}}}]\n",
            self.url()
        )
    }

    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    /// Creates or replaces an object; returns its resourceVersion.
    pub fn apply(&self, object: Value) -> Result<u64, SimError> {
        Ok(lock(&self.shared.store).apply(object)?)
    }

    /// Applies every document of a YAML (or JSON) text, in order.
    pub fn apply_yaml(&self, text: &str) -> Result<Vec<u64>, SimError> {
        let mut objects = Vec::new();
        for doc in serde_norway::Deserializer::from_str(text) {
            let v = Value::deserialize(doc).map_err(|e| SimError::Decode(e.to_string()))?;
            if !v.is_null() {
                objects.push(v);
            }
        }
        self.apply_all(objects)
    }

    /// Applies objects in order under one lock: watches see them back to back.
    pub fn apply_all(&self, objects: Vec<Value>) -> Result<Vec<u64>, SimError> {
        let mut store = lock(&self.shared.store);
        objects.into_iter().map(|o| Ok(store.apply(o)?)).collect()
    }

    /// Deletes an object; `Ok(false)` when there was none.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Result<bool, SimError> {
        let resource = resource_of(api_version, kind)?;
        Ok(lock(&self.shared.store).delete(resource, namespace.unwrap_or_default(), name).is_some())
    }

    /// The stored object, if any.
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let resource = resource_of(api_version, kind).ok()?;
        lock(&self.shared.store).get(resource, namespace.unwrap_or_default(), name).map(|o| (*o).clone())
    }

    /// How many objects of a kind are stored.
    pub fn count_objects(&self, api_version: &str, kind: &str) -> usize {
        resource_of(api_version, kind).map_or(0, |r| lock(&self.shared.store).len(r))
    }

    /// Sets (`Some`) or removes (`None`) labels of an object; a MODIFIED event.
    pub fn relabel(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        labels: &[(&str, Option<&str>)],
    ) -> Result<u64, SimError> {
        let resource = resource_of(api_version, kind)?;
        let mut store = lock(&self.shared.store);
        let current = store
            .get(resource, namespace.unwrap_or_default(), name)
            .ok_or_else(|| StoreError::NotFound { kind: kind.into(), name: name.into() })?;
        let mut object = (*current).clone();
        let map = object["metadata"]
            .as_object_mut()
            .map(|m| m.entry("labels").or_insert_with(|| Value::Object(Default::default())));
        if let Some(Value::Object(map)) = map {
            for (k, v) in labels {
                match v {
                    Some(v) => map.insert((*k).to_string(), (*v).into()),
                    None => map.remove(*k),
                };
            }
        }
        Ok(store.apply(object)?)
    }

    /// Compaction of everything so far: watches resuming from any resourceVersion handed out
    /// until now get 410, continue tokens expire. Open watches go on.
    pub fn expire_history(&self) {
        lock(&self.shared.store).expire_history();
    }

    /// An API server restart: every connection is closed, the watch history and paged lists are
    /// forgotten (resuming gets 410, so clients relist). Objects stay (they live in etcd).
    pub fn restart(&self) {
        {
            let mut store = lock(&self.shared.store);
            store.abort_watches();
            store.expire_history();
        }
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// Ends every open watch with an ERROR event carrying a 410 Status.
    pub fn gone(&self) {
        lock(&self.shared.store).gone();
    }

    /// Cuts every open watch mid-stream (no terminating chunk).
    pub fn drop_watches(&self) {
        lock(&self.shared.store).abort_watches();
    }

    /// Sends a BOOKMARK with the current resourceVersion to every watch that allows them.
    pub fn bookmark(&self) {
        lock(&self.shared.store).bookmark();
    }

    /// Starts (`true`) or ends an outage: while on, every new connection is reset at once, and
    /// turning it on closes every open connection.
    pub fn outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
        if on {
            self.shared.epoch.send_modify(|e| *e += 1);
            lock(&self.shared.store).abort_watches();
        }
    }

    /// Answers the next `count` list/watch/get requests with HTTP `status`.
    pub fn fail_next(&self, count: u32, status: u16) {
        self.inject(FaultRule { count, fault: Fault::Status(status), path: None, query: None, on: Target::Resources });
    }

    /// Adds a fault rule (rules are tried in the order added).
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.shared.faults).push(rule);
    }

    /// Removes every fault rule not used up yet.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Changes which API groups are served.
    pub fn serve(&self, serve: Serve) {
        *lock(&self.shared.serve) = serve;
    }

    /// Watches currently open.
    pub fn open_watches(&self) -> usize {
        lock(&self.shared.store).open_watches()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Requests received so far that satisfy `f`.
    pub fn count_requests(&self, f: impl Fn(&RequestRecord) -> bool) -> usize {
        lock(&self.shared.log).iter().filter(|r| f(r)).count()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Performs one scenario action.
    pub fn perform(&self, action: &Action) -> Result<(), SimError> {
        match action {
            Action::Apply(o) => {
                self.apply(o.clone())?;
            }
            Action::Delete(id) => {
                self.delete(&id.api_version, &id.kind, id.namespace.as_deref(), &id.name)?;
            }
            Action::Relabel(r) => {
                let labels: Vec<(&str, Option<&str>)> =
                    r.labels.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
                self.relabel(&r.id.api_version, &r.id.kind, r.id.namespace.as_deref(), &r.id.name, &labels)?;
            }
            Action::FailNext(rule) => self.inject(rule.clone()),
            Action::Outage(on) => self.outage(*on),
            Action::ExpireHistory => self.expire_history(),
            Action::Restart => self.restart(),
            Action::Gone => self.gone(),
            Action::DropWatches => self.drop_watches(),
            Action::Bookmark => self.bookmark(),
            Action::Serve(s) => self.serve(*s),
            Action::Sleep(d) => std::thread::sleep(*d),
        }
        Ok(())
    }

    /// Performs every action of a step, in order.
    pub fn play(&self, step: &Step) -> Result<(), SimError> {
        step.actions.iter().try_for_each(|a| self.perform(a))
    }

    /// Performs the step called `name` of `scenario`.
    pub fn run_step(&self, scenario: &Scenario, name: &str) -> Result<(), SimError> {
        self.play(scenario.step(name)?)
    }

    /// Runs the scenario's timed steps (those with `at`) on a thread, each at its time after
    /// this call, in the order of their times.
    pub fn play_timed(&self, scenario: &Scenario) -> std::thread::JoinHandle<Result<(), SimError>> {
        let control = self.clone();
        let mut steps: Vec<Step> = scenario.steps.iter().filter(|s| s.at.is_some()).cloned().collect();
        steps.sort_by_key(|s| s.at);
        let started = std::time::Instant::now();
        std::thread::spawn(move || {
            for step in &steps {
                let at = started + step.at.unwrap_or_default();
                std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
                control.play(step)?;
            }
            Ok(())
        })
    }
}
