//! The asynchronous side: discovery, one kube-rs watcher per kind, and the debounced publisher.

use super::kinds::{CalicoApi, CalicoGroup, WatchMode, WatchedKind};
use super::state::{Changed, Input, ObjectKey, Problem, SharedSnapshot, State, convert};
use crate::manifest::LoadOptions;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::{Client, Resource};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct KubeSourceConfig {
    /// Which Calico API group to read.
    pub calico: CalicoApi,
    /// A change is published once no other arrived for this long...
    pub debounce: Duration,
    /// ...but never later than this after the first change of a batch (a steady stream of
    /// changes must not hold enforcement back forever).
    pub max_delay: Duration,
    /// Objects per page of a list (the initial list and every relist).
    pub page_size: u32,
    /// How objects are validated; strict by default, as for a manifests directory: an unknown
    /// field (from a newer API version) may change what a policy means.
    pub load_options: LoadOptions,
    /// Retry delays after watch or list errors; `None`: kube-rs's default (client-go's:
    /// 0.8 s doubling to 30 s with jitter, reset after 120 s without error).
    pub backoff: Option<BackoffConfig>,
    /// Server-side watch timeout in seconds; `None`: kube-rs's 290 s. A watch that ends is
    /// resumed from its last resourceVersion, without a list.
    pub watch_timeout: Option<u32>,
}

impl Default for KubeSourceConfig {
    fn default() -> KubeSourceConfig {
        KubeSourceConfig {
            calico: CalicoApi::Auto,
            debounce: Duration::from_millis(1),
            max_delay: Duration::from_millis(50),
            page_size: 500,
            load_options: LoadOptions::strict(),
            backoff: None,
            watch_timeout: None,
        }
    }
}

/// An exponential backoff without jitter (for tests and for operators who want it bounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
}

/// One publication of the source.
#[derive(Debug, Clone)]
pub struct Update {
    /// 1 for the first (complete) model, then one more per publication.
    pub generation: u64,
    /// The complete model (cheap to clone; see [`SharedSnapshot`]).
    pub snapshot: SharedSnapshot,
    /// What changed since the previous update the consumer took ([`Changed::All`] for the
    /// first). Updates the consumer did not take in time are merged into the next, so no
    /// change is ever missed.
    pub changed: Changed,
    /// Every object currently refused, each with its identity and field; see the module docs
    /// for what is enforced meanwhile.
    pub problems: Arc<Vec<Problem>>,
    /// When the oldest watch event in this update reached the source (for latency figures);
    /// `None` when the update carries only problem or note changes.
    pub first_event: Option<Instant>,
    /// When it was published.
    pub published: Instant,
    /// How many publications were merged into this one because the consumer was busy.
    pub merged: u32,
    /// The Calico group read (`None`: none is served, or Calico is off).
    pub calico: Option<CalicoGroup>,
}

impl Update {
    /// The update as a batch for [`crate::compile::IncrementalCompiler::apply`]: an upsert of
    /// every changed object the snapshot holds, a delete of every other changed one. `None`
    /// for [`Changed::All`] (the first update): build that one in full.
    pub fn model_changes(&self) -> Option<Vec<crate::compile::Change>> {
        use crate::compile::Change;
        let Changed::Objects(keys) = &self.changed else { return None };
        let changes = keys
            .iter()
            .map(|k| {
                let key = k.resource_key();
                match super::state::lookup(&self.snapshot.model, &key) {
                    Some(resource) => Change::Upsert(resource),
                    None => Change::Delete(key),
                }
            })
            .collect();
        Some(changes)
    }
}

/// State of one kind's watch, for health endpoints and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStatus {
    pub api_version: String,
    /// `false`: the cluster does not serve the kind (it counts as empty).
    pub served: bool,
    /// Has completed its first list.
    pub listed: bool,
    /// A list is in progress (initial or relist).
    pub listing: bool,
    /// Lists started (1 initial, then one per relist: 410 Gone, restarts, errors mid-list).
    pub lists: u64,
    /// Errors from the watch or list (each followed by a backoff).
    pub errors: u64,
    pub last_error: Option<String>,
    /// Objects the source holds for the kind.
    pub objects: usize,
}

/// State of the whole source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// Discovery has answered (the watches run).
    pub discovered: bool,
    pub calico: Option<CalicoGroup>,
    /// The first complete model has been published.
    pub synced: bool,
    pub generation: u64,
    pub discovery_errors: u64,
    pub kinds: BTreeMap<WatchedKind, KindStatus>,
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(String),
    #[error("cannot start the source's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Why a blocking wait returned without an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("no update within the timeout")]
    Timeout,
    #[error("the source has stopped")]
    Closed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves consistent data even if a panic unwinds through it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct SlotInner {
    pending: Option<Update>,
    closed: bool,
}

/// The hand-over point: at most one pending update, later ones merged into it.
#[derive(Debug, Default)]
struct Slot {
    inner: Mutex<SlotInner>,
    notify: Notify,
    cond: Condvar,
}

impl Slot {
    fn put(&self, mut update: Update) {
        let mut inner = lock(&self.inner);
        if let Some(prev) = inner.pending.take() {
            let mut changed = prev.changed;
            changed.merge(update.changed);
            update.changed = changed;
            update.merged += prev.merged + 1;
            update.first_event = match (prev.first_event, update.first_event) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        inner.pending = Some(update);
        drop(inner);
        self.notify.notify_one();
        self.cond.notify_all();
    }

    fn close(&self) {
        lock(&self.inner).closed = true;
        self.notify.notify_one();
        self.cond.notify_all();
    }
}

/// Closes the slot when the driver ends, however it ends (return, abort, panic).
struct CloseOnDrop(Arc<Slot>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The consumer's end: the newest update, with everything it did not take merged in.
#[derive(Debug)]
pub struct Updates {
    slot: Arc<Slot>,
}

impl Updates {
    /// Waits for the next update; `None` once the source has stopped.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            {
                let mut inner = lock(&self.slot.inner);
                if let Some(u) = inner.pending.take() {
                    return Some(u);
                }
                if inner.closed {
                    return None;
                }
            }
            // A put between the check and this wait leaves a permit: no lost wake-up.
            self.slot.notify.notified().await;
        }
    }

    /// The pending update, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Update> {
        lock(&self.slot.inner).pending.take()
    }

    /// Waits up to `timeout` for the next update, blocking the thread (for non-async callers).
    pub fn blocking_next(&mut self, timeout: Duration) -> Result<Update, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut inner = lock(&self.slot.inner);
        loop {
            if let Some(u) = inner.pending.take() {
                return Ok(u);
            }
            if inner.closed {
                return Err(WaitError::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout);
            }
            inner = self.slot.cond.wait_timeout(inner, left).map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }
}

/// The running source; stops when dropped.
#[derive(Debug)]
pub struct KubeHandle {
    status: Arc<Mutex<SourceStatus>>,
    task: Option<tokio::task::AbortHandle>,
    thread: Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl KubeHandle {
    /// A copy of the source's current state.
    pub fn status(&self) -> SourceStatus {
        lock(&self.status).clone()
    }

    /// Stops every watch (also done on drop).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some((stop, thread)) = self.thread.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl Drop for KubeHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Constructors of the Kubernetes source.
#[derive(Debug)]
pub struct KubeSource;

impl KubeSource {
    /// Starts the source on the current tokio runtime (panics outside one, as `tokio::spawn`
    /// does). The first update arrives once every kind has been listed completely.
    pub fn start(client: Client, config: KubeSourceConfig) -> (KubeHandle, Updates) {
        let slot = Arc::new(Slot::default());
        let status = Arc::new(Mutex::new(SourceStatus::default()));
        let task = tokio::spawn(drive(client, config, slot.clone(), status.clone()));
        (KubeHandle { status, task: Some(task.abort_handle()), thread: None }, Updates { slot })
    }

    /// Starts the source on a thread of its own with a single-threaded runtime, for callers
    /// without one (the `moat` binary's control loop). `kube_config: None` infers the
    /// configuration as kubectl does (in-cluster service account, else `KUBECONFIG`/
    /// `~/.kube/config`). One thread keeps the control plane's CPU use bounded on a node whose
    /// other cores forward packets.
    pub fn start_thread(
        kube_config: Option<kube::Config>,
        config: KubeSourceConfig,
    ) -> Result<(KubeHandle, Updates), KubeSourceError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let slot = Arc::new(Slot::default());
        let status = Arc::new(Mutex::new(SourceStatus::default()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (slot2, status2) = (slot.clone(), status.clone());
        let thread = std::thread::Builder::new().name("moat-kube-source".into()).spawn(move || {
            runtime.block_on(async move {
                let kube_config = match kube_config {
                    Some(c) => Ok(c),
                    None => kube::Config::infer().await.map_err(|e| e.to_string()),
                };
                let client = kube_config.and_then(|c| Client::try_from(c).map_err(|e| e.to_string()));
                let client = match client {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                tokio::select! {
                    _ = drive(client, config, slot2, status2) => {}
                    _ = stop_rx => {}
                }
            });
        })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(KubeSourceError::Client(e));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(KubeSourceError::Client("the source thread ended before its client was built".into()));
            }
        }
        let handle = KubeHandle { status, task: None, thread: Some((stop_tx, thread)) };
        Ok((handle, Updates { slot }))
    }
}

/// Retry delays of a watch (kube-rs's `StreamBackoff` sleeps `next()` after an error and calls
/// `reset()` after a success).
enum SourceBackoff {
    Default(Box<DefaultBackoff>),
    Exponential { config: BackoffConfig, next: Duration },
}

impl SourceBackoff {
    fn new(config: Option<BackoffConfig>) -> SourceBackoff {
        match config {
            None => SourceBackoff::Default(Box::default()),
            Some(config) => SourceBackoff::Exponential { config, next: config.initial },
        }
    }
}

impl Iterator for SourceBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        match self {
            SourceBackoff::Default(b) => b.next(),
            SourceBackoff::Exponential { config, next } => {
                let now = *next;
                *next = next.saturating_mul(2).min(config.max);
                Some(now)
            }
        }
    }
}

impl Backoff for SourceBackoff {
    fn reset(&mut self) {
        match self {
            SourceBackoff::Default(b) => b.reset(),
            SourceBackoff::Exponential { config, next } => *next = config.initial,
        }
    }
}

/// What discovery found.
struct Discovered {
    calico: Option<CalicoGroup>,
    /// Calico kinds the group does not serve, with the note to carry.
    unserved: Vec<(WatchedKind, String)>,
}

/// The resources a group version serves; `None` when the group version is not served at all.
async fn served(client: &Client, group: CalicoGroup) -> Result<Option<BTreeSet<String>>, kube::Error> {
    match client.list_api_group_resources(&group.api_version()).await {
        Ok(list) => Ok(Some(list.resources.into_iter().map(|r| r.name).collect())),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

async fn try_discover(client: &Client, mode: CalicoApi) -> Result<Discovered, kube::Error> {
    let candidates: &[CalicoGroup] = match mode {
        CalicoApi::Off => return Ok(Discovered { calico: None, unserved: Vec::new() }),
        CalicoApi::Crd => &[CalicoGroup::Crd],
        CalicoApi::V3 => &[CalicoGroup::V3],
        CalicoApi::Auto => &[CalicoGroup::V3, CalicoGroup::Crd],
    };
    for group in candidates {
        if let Some(resources) = served(client, *group).await? {
            let unserved = WatchedKind::ALL
                .into_iter()
                .filter(|k| k.is_calico() && !resources.contains(k.plural()))
                .map(|k| (k, format!("{}: {} is not served by the cluster; none are read", k, group.api_version())))
                .collect();
            return Ok(Discovered { calico: Some(*group), unserved });
        }
    }
    let groups: Vec<String> = candidates.iter().map(|g| g.api_version()).collect();
    let unserved = WatchedKind::ALL
        .into_iter()
        .filter(|k| k.is_calico())
        .map(|k| (k, format!("{k}: no Calico API is served ({}); none are read", groups.join(", "))))
        .collect();
    Ok(Discovered { calico: None, unserved })
}

/// Discovery, retried with backoff until the API server answers: a transient error must not be
/// taken for "Calico is not installed", which would drop every Calico policy.
async fn discover(client: &Client, config: &KubeSourceConfig, status: &Mutex<SourceStatus>) -> Discovered {
    let mut backoff = SourceBackoff::new(config.backoff);
    loop {
        match try_discover(client, config.calico).await {
            Ok(d) => return d,
            Err(e) => {
                tracing::warn!(error = %e, "Kubernetes API discovery failed; retrying");
                lock(status).discovery_errors += 1;
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(1))).await;
            }
        }
    }
}

fn key_of(kind: WatchedKind, meta: &ObjectMeta) -> ObjectKey {
    let namespace = kind.namespaced().then(|| meta.namespace.clone().unwrap_or_else(|| "default".into()));
    ObjectKey { kind, namespace, name: meta.name.clone().unwrap_or_default() }
}

/// Everything a watch task needs besides its stream.
struct Feed {
    kind: WatchedKind,
    calico: CalicoGroup,
    options: LoadOptions,
    tx: mpsc::Sender<(Input, Instant)>,
    status: Arc<Mutex<SourceStatus>>,
}

impl Feed {
    fn with_status(&self, f: impl FnOnce(&mut KindStatus)) {
        if let Some(k) = lock(&self.status).kinds.get_mut(&self.kind) {
            f(k);
        }
    }
}

/// Turns a kube-rs watcher stream into inputs for the model task.
async fn pump<K>(stream: impl Stream<Item = Result<Event<K>, watcher::Error>>, backoff: SourceBackoff, feed: Feed)
where
    K: Resource + Serialize,
{
    let stream = stream.backoff(backoff);
    futures::pin_mut!(stream);
    while let Some(item) = stream.next().await {
        let received = Instant::now();
        let convert = |o: &K| match serde_json::to_value(o) {
            Ok(v) => convert(feed.kind, feed.calico, v, feed.options),
            Err(e) => super::state::Converted {
                key: key_of(feed.kind, o.meta()),
                outcome: super::state::Outcome::Invalid(format!("cannot re-encode: {e}")),
            },
        };
        let input = match item {
            Ok(Event::Init) => {
                feed.with_status(|k| {
                    k.lists += 1;
                    k.listing = true;
                });
                Input::Init(feed.kind)
            }
            Ok(Event::InitApply(o)) => Input::Listed(convert(&o)),
            Ok(Event::InitDone) => {
                feed.with_status(|k| {
                    k.listing = false;
                    k.listed = true;
                });
                Input::InitDone(feed.kind)
            }
            Ok(Event::Apply(o)) => Input::Applied(convert(&o)),
            Ok(Event::Delete(o)) => Input::Deleted(key_of(feed.kind, o.meta())),
            Err(e) => {
                // kube-rs recovers by itself (resume the watch, or relist after 410); the
                // backoff above spaces the retries.
                tracing::warn!(kind = %feed.kind, error = %e, "watch error; retrying");
                feed.with_status(|k| {
                    k.errors += 1;
                    k.last_error = Some(e.to_string());
                });
                continue;
            }
        };
        if feed.tx.send((input, received)).await.is_err() {
            return;
        }
    }
}

async fn watch_kind(client: Client, config: Arc<KubeSourceConfig>, feed: Feed) {
    let mut wc = watcher::Config::default().page_size(config.page_size);
    if let Some(t) = config.watch_timeout {
        wc = wc.timeout(t);
    }
    if let Some(f) = feed.kind.field_selector() {
        wc = wc.fields(f);
    }
    let backoff = SourceBackoff::new(config.backoff);
    match (feed.kind.mode(), feed.kind) {
        (WatchMode::Metadata, WatchedKind::Namespace) => {
            pump(watcher::watcher(Api::<PartialObjectMeta<Namespace>>::all(client), wc), backoff, feed).await
        }
        (WatchMode::Metadata, _) => {
            pump(watcher::watcher(Api::<PartialObjectMeta<ServiceAccount>>::all(client), wc), backoff, feed).await
        }
        (WatchMode::Full, kind) => {
            let (group, version) = kind.group_version(feed.calico);
            let gvk = GroupVersionKind::gvk(group, version, kind.kind());
            let resource = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
            pump(watcher::watcher(Api::<DynamicObject>::all_with(client, &resource), wc), backoff, feed).await
        }
    }
}

/// Hands the state's publications to the consumer and mirrors them into the status.
struct Publisher {
    generation: u64,
    slot: Arc<Slot>,
    status: Arc<Mutex<SourceStatus>>,
    calico: Option<CalicoGroup>,
}

impl Publisher {
    fn publish(&mut self, state: &mut State, first_event: Option<Instant>) {
        let Some(p) = state.publish() else { return };
        self.generation += 1;
        {
            let mut s = lock(&self.status);
            s.synced = true;
            s.generation = self.generation;
            for (k, ks) in s.kinds.iter_mut() {
                ks.objects = state.objects(*k);
            }
        }
        tracing::debug!(generation = self.generation, changed = ?p.changed.len(), problems = p.problems.len(), "publishing");
        self.slot.put(Update {
            generation: self.generation,
            snapshot: p.snapshot,
            changed: p.changed,
            problems: p.problems,
            first_event,
            published: Instant::now(),
            merged: 0,
            calico: self.calico,
        });
    }
}

/// The source: discovery, the watches, and the model task with its debounce.
async fn drive(client: Client, config: KubeSourceConfig, slot: Arc<Slot>, status: Arc<Mutex<SourceStatus>>) {
    let _close = CloseOnDrop(slot.clone());
    let discovered = discover(&client, &config, &status).await;
    let calico_group = discovered.calico;
    // Calico kinds get an api_version even when Calico is absent, for status output.
    let shown_group = calico_group.unwrap_or(CalicoGroup::Crd);
    let kinds: Vec<WatchedKind> =
        WatchedKind::ALL.into_iter().filter(|k| !k.is_calico() || config.calico != CalicoApi::Off).collect();
    {
        let mut s = lock(&status);
        s.discovered = true;
        s.calico = calico_group;
        for k in &kinds {
            let served = !discovered.unserved.iter().any(|(u, _)| u == k);
            s.kinds.insert(*k, KindStatus { api_version: k.api_version(shown_group), served, ..KindStatus::default() });
        }
    }
    let mut state = State::new(kinds.iter().copied());
    for (kind, note) in &discovered.unserved {
        tracing::info!("{note}");
        state.apply(Input::Unserved(*kind, note.clone()));
    }
    let config = Arc::new(config);
    // Bounded: a slow model task slows the watchers (TCP backpressure to the API server)
    // instead of queueing without limit.
    let (tx, mut rx) = mpsc::channel::<(Input, Instant)>(4096);
    let mut tasks = tokio::task::JoinSet::new();
    for kind in kinds.iter().copied() {
        if discovered.unserved.iter().any(|(u, _)| *u == kind) {
            continue;
        }
        let feed =
            Feed { kind, calico: shown_group, options: config.load_options, tx: tx.clone(), status: status.clone() };
        tasks.spawn(watch_kind(client.clone(), config.clone(), feed));
    }
    drop(tx);

    let mut publisher = Publisher { generation: 0, slot, status, calico: calico_group };
    // The open batch: arrival of its first event and of its latest.
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    if state.synced() {
        // Nothing to watch (every kind unserved): the empty model is complete.
        publisher.publish(&mut state, None);
    }
    loop {
        // The debounce runs only after the first publication; until then every list must
        // complete first, and the first model goes out the moment the last one does.
        let deadline = match (first, last) {
            (Some(f), Some(l)) if publisher.generation > 0 => Some((l + config.debounce).min(f + config.max_delay)),
            _ => None,
        };
        // A deadline already reached is served at once: the timer wheel's 1 ms granularity would
        // otherwise add up to a millisecond to every publication (all of a zero debounce).
        if deadline.is_some_and(|d| d <= Instant::now()) {
            publisher.publish(&mut state, first);
            (first, last) = (None, None);
            continue;
        }
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some((input, received)) = msg else { break };
                // Everything already queued joins the same batch (a relist, a burst).
                let mut next = Some((input, received));
                while let Some((input, received)) = next {
                    let was_dirty = state.dirty();
                    state.apply(input);
                    if state.dirty() {
                        if !was_dirty {
                            first = Some(received);
                        }
                        last = Some(Instant::now());
                    }
                    next = rx.try_recv().ok();
                }
                if publisher.generation == 0 && state.synced() {
                    publisher.publish(&mut state, None);
                    (first, last) = (None, None);
                }
            }
            _ = timer => {
                publisher.publish(&mut state, first);
                (first, last) = (None, None);
            }
        }
    }
    // Every watch task ended (they do not, short of a panic): keep the tasks' panics visible.
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a watch task failed");
        }
    }
}
