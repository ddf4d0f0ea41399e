//! `moat agent`: the control process of a split deployment. It reads policy (a manifests directory,
//! or the Kubernetes API), compiles rule tables and hands them to a fastpath (`moat run
//! --control-socket`) over the control link (`moat_fastpath::control_link`), and serves
//! Prometheus metrics and health endpoints.
//!
//! ```text
//!  source ──► control loop (compile) ──desired table──► link thread ──Unix socket──► fastpath
//!  (manifests dir | kube)       │                         │  ▲ Ack/Nack, Stats
//!                               └──────────► shared state ◄┘  │
//!                                              ▲ /metrics /healthz /readyz /status (HTTP thread)
//! ```
//!
//! Three threads with one shared state: the **control loop** (main thread) compiles a table per
//! source change and sets it as the desired table; the **link thread** connects to the fastpath
//! (reconnecting with backoff), sends the newest desired table it has not sent on this connection
//! (one at a time: a table is sent only after the previous one was answered, and intermediate
//! tables are skipped), and stores answers and counters; the **HTTP thread** renders the state.
//!
//! A restarted fastpath starts fail-closed (generation 0) and tells so in its hello; the link
//! thread then sends the full current table, stages included. A restarted agent finds the
//! fastpath enforcing its last table; it compiles its own and sends it, and only the stages the
//! fastpath does not hold travel (stage ids depend on content only).

use crate::cli::run::{ActionArg, PolicySource};
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use moat_control::pipeline::Pipeline;
use moat_control::source::kube::{CalicoApi, KubeSource, KubeSourceConfig, SourceStatus};
use moat_fastpath::control_link::{
    AgentHello, AgentMessage, Client, FastpathMessage, LinkError, StageId, Stats, TableBody, TableEncoder, software,
};
use moat_fastpath::{RuleTable, Verdict};
use nix::poll::{PollFd, PollFlags, poll};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Directory of Kubernetes and Calico manifests (as `moat run --manifests`), watched. Without
    /// it, the agent reads the Kubernetes API (`--kubeconfig`, else in-cluster or `KUBECONFIG`).
    #[arg(long, value_name = "DIR", conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig file for the Kubernetes API source (default: in-cluster service account, else
    /// `KUBECONFIG` or `~/.kube/config`, as kubectl does).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Which Calico API group the Kubernetes source reads.
    #[arg(long, value_enum, default_value_t = CalicoArg::Auto)]
    pub calico_api: CalicoArg,
    /// Kubernetes source: a change is compiled once no other arrived for this long (a burst is
    /// one table), and at the latest 50 ms after the first change of a burst. Default: the
    /// source's own (`KubeSourceConfig::default`).
    #[arg(long, value_name = "MS")]
    pub watch_debounce_ms: Option<u64>,
    /// Longest wait between retries of a failed watch or list (exponential from 100 ms, no jitter);
    /// default: kube-rs's client-go backoff (0.8 s doubling to 30 s, jittered).
    #[arg(long, value_name = "MS")]
    pub watch_retry_max_ms: Option<u64>,
    /// Load objects with unknown fields (dropping those fields, logged) instead of refusing them.
    #[arg(long)]
    pub lenient_fields: bool,
    /// Verdict for IP traffic no ACL rule matches (manifests directories of `*.acl` files only).
    #[arg(long, value_enum, default_value_t = ActionArg::Deny)]
    pub default_action: ActionArg,
    /// The fastpath's control socket (`moat run --control-socket`). Also accepted as
    /// --control-socket PATH, the name both containers of the DaemonSet use.
    #[arg(long, value_name = "PATH", alias = "control-socket", default_value = "/run/moat/control.sock")]
    pub fastpath_socket: PathBuf,
    /// Where /metrics, /healthz, /readyz and /status are served (port 0: any free port, written to
    /// the ready file).
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,
    /// Written (JSON: pid, metrics address) once the HTTP endpoints listen; removed at exit.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Quiet time after a change in the manifests directory before it is recompiled.
    #[arg(long, default_value_t = 20)]
    pub reload_debounce_ms: u64,
    /// First and largest delay between attempts to reach the fastpath.
    #[arg(long, default_value_t = 100)]
    pub reconnect_min_ms: u64,
    #[arg(long, default_value_t = 5000)]
    pub reconnect_max_ms: u64,
    /// /healthz fails when the control loop or the link thread has not come round for this long
    /// (a compile of a very large cluster must fit in it).
    #[arg(long, default_value_t = 120)]
    pub health_stall_secs: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CalicoArg {
    Auto,
    Crd,
    V3,
    Off,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves consistent data even if a panic unwinds through it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A table the fastpath should enforce.
#[derive(Debug, Clone)]
struct Desired {
    /// Increases with every compiled table.
    seq: u64,
    table: Arc<RuleTable>,
    /// The source change it reflects (for the update latency).
    since: Instant,
}

/// Latency histogram (seconds), Prometheus style: cumulative counts per upper bound.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

const LATENCY_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Everything the endpoints report; written by the control loop and the link thread.
#[derive(Debug)]
struct State {
    node: Option<String>,
    source: &'static str,
    started: Instant,
    source_synced: bool,
    source_status: Option<SourceStatus>,
    source_problems: usize,
    compiles: u64,
    compile_failures: u64,
    last_compile: Option<Duration>,
    desired: Option<Desired>,
    connected: bool,
    connects: u64,
    fastpath_pid: Option<u32>,
    tables_sent: u64,
    tables_acked: u64,
    tables_refused: u64,
    stages_sent: u64,
    /// Generation the fastpath acknowledged last (also learned from its hello).
    generation: u64,
    /// The first table was acknowledged by a fastpath.
    ready: bool,
    latency: Histogram,
    last_latency: Option<Duration>,
    /// Size of the last table message, and the fastpath's decode-validate-build time of the last
    /// acknowledged one.
    last_table_bytes: usize,
    last_fastpath_build: Option<Duration>,
    /// Last error per component (`source`, `compile`, `fastpath`), cleared by a success.
    errors: BTreeMap<&'static str, String>,
    stats: Option<(Stats, Instant)>,
    heartbeat_control: Instant,
    heartbeat_link: Instant,
}

type Shared = Arc<Mutex<State>>;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup)).context("installing SIGHUP")?;
    let now = Instant::now();
    let state: Shared = Arc::new(Mutex::new(State {
        node: std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()),
        source: if args.manifests.is_some() { "manifests" } else { "kubernetes" },
        started: now,
        source_synced: false,
        source_status: None,
        source_problems: 0,
        compiles: 0,
        compile_failures: 0,
        last_compile: None,
        desired: None,
        connected: false,
        connects: 0,
        fastpath_pid: None,
        tables_sent: 0,
        tables_acked: 0,
        tables_refused: 0,
        stages_sent: 0,
        generation: 0,
        ready: false,
        latency: Histogram::new(LATENCY_BOUNDS),
        last_latency: None,
        last_table_bytes: 0,
        last_fastpath_build: None,
        errors: BTreeMap::new(),
        stats: None,
        heartbeat_control: now,
        heartbeat_link: now,
    }));

    let http = http::serve(args.metrics_addr, Arc::clone(&state), Duration::from_secs(args.health_stall_secs))?;
    tracing::info!(addr = %http.addr, "metrics and health endpoints listening");
    if let Some(path) = &args.ready_file {
        let doc = json!({"pid": std::process::id(), "metrics_addr": http.addr.to_string()});
        write_atomically(path, &format!("{doc}\n"))?;
    }

    // The link thread is woken through a socket pair when a new table is desired, so a table
    // leaves as soon as it is compiled (no polling interval in the update latency).
    let (wake_tx, wake_rx) = UnixStream::pair().context("creating the wake-up pair")?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    let link = {
        let state = Arc::clone(&state);
        let stop = Arc::clone(&stop);
        let config = LinkConfig {
            path: args.fastpath_socket.clone(),
            min_backoff: Duration::from_millis(args.reconnect_min_ms.max(1)),
            max_backoff: Duration::from_millis(args.reconnect_max_ms.max(args.reconnect_min_ms.max(1))),
        };
        std::thread::Builder::new()
            .name("moat-agent-link".into())
            .spawn(move || link_thread(&config, &state, &stop, &wake_rx))
            .context("starting the link thread")?
    };
    let wake = move || {
        // A full pair buffer means a wake-up is pending anyway.
        let _ = (&wake_tx).write(&[1]);
    };

    let result = match &args.manifests {
        Some(dir) => manifests_loop(&args, dir, &state, &stop, &hangup, &wake),
        None => kube_loop(&args, &state, &stop, &wake),
    };
    stop.store(true, Ordering::Relaxed);
    wake();
    let _ = link.join();
    http.stop();
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    result?;
    tracing::info!("agent stopped");
    Ok(ExitCode::SUCCESS)
}

fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Records a compiled table as the desired one, or the compile error.
fn offer(state: &Shared, result: anyhow::Result<RuleTable>, since: Instant, took: Duration, wake: &impl Fn()) {
    let mut s = lock(state);
    match result {
        Ok(table) => {
            if s.compiles == 0
                && let Some(policy) = table.policy()
            {
                // What keeping the specs costs (they are what is sent to the fastpath), once.
                let stages = policy.policies();
                let matchers: usize = stages.iter().map(|p| p.bytes()).sum();
                let specs: usize = stages.iter().map(|p| p.spec_bytes()).sum();
                tracing::info!(
                    stages = stages.len(),
                    matcher_bytes = matchers,
                    kept_spec_bytes = specs,
                    "first table: memory of the policy stages"
                );
            }
            s.compiles += 1;
            s.last_compile = Some(took);
            s.errors.remove("compile");
            let seq = s.desired.as_ref().map_or(1, |d| d.seq + 1);
            s.desired = Some(Desired { seq, table: Arc::new(table), since });
            drop(s);
            wake();
        }
        Err(err) => {
            s.compile_failures += 1;
            s.errors.insert("compile", format!("{err:#}"));
            let generation = s.generation;
            drop(s);
            tracing::error!(error = %format!("{err:#}"), generation, "policy not compiled; the table in force stays");
        }
    }
}

fn manifests_loop(
    args: &AgentArgs,
    dir: &Path,
    state: &Shared,
    stop: &AtomicBool,
    hangup: &AtomicBool,
    wake: &impl Fn(),
) -> anyhow::Result<()> {
    let default = match args.default_action {
        ActionArg::Allow => Verdict::Allow,
        ActionArg::Deny => Verdict::Deny,
    };
    let mut source = PolicySource::new(dir, default, args.lenient_fields);
    let mut watcher = moat::watch::DirWatcher::new(dir)?;
    let debounce = Duration::from_millis(args.reload_debounce_ms);
    let mut load = |since: Instant| {
        let started = Instant::now();
        let result = source.load();
        let mut s = lock(state);
        s.source_synced |= result.is_ok();
        drop(s);
        offer(state, result, since, started.elapsed(), wake);
    };
    load(Instant::now());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        lock(state).heartbeat_control = Instant::now();
        let changed = watcher.settled(debounce);
        if changed.is_some() || hangup.swap(false, Ordering::Relaxed) {
            load(changed.unwrap_or_else(Instant::now));
        }
    }
    Ok(())
}

fn kube_config(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime
        .block_on(kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()))
        .with_context(|| format!("using {}", path.display()))
}

fn kube_loop(args: &AgentArgs, state: &Shared, stop: &AtomicBool, wake: &impl Fn()) -> anyhow::Result<()> {
    let config = args.kubeconfig.as_deref().map(kube_config).transpose()?;
    let origin = match &config {
        Some(c) => format!("kubernetes {}", c.cluster_url),
        None => "kubernetes".to_owned(),
    };
    let source_config = KubeSourceConfig {
        calico: match args.calico_api {
            CalicoArg::Auto => CalicoApi::Auto,
            CalicoArg::Crd => CalicoApi::Crd,
            CalicoArg::V3 => CalicoApi::V3,
            CalicoArg::Off => CalicoApi::Off,
        },
        load_options: if args.lenient_fields {
            moat_control::manifest::LoadOptions { unknown_fields: moat_control::manifest::UnknownFields::Warn }
        } else {
            moat_control::manifest::LoadOptions::strict()
        },
        debounce: args.watch_debounce_ms.map_or(KubeSourceConfig::default().debounce, Duration::from_millis),
        backoff: args.watch_retry_max_ms.map(|max| {
            let max = Duration::from_millis(max.max(1));
            moat_control::source::kube::BackoffConfig { initial: max.min(Duration::from_millis(100)), max }
        }),
        ..KubeSourceConfig::default()
    };
    let (handle, mut updates) =
        KubeSource::start_thread(config, source_config).context("starting the Kubernetes source")?;
    tracing::info!(origin = %origin, "watching the Kubernetes API; the fastpath fails closed until every kind is listed");
    let mut pipeline = Pipeline::new();
    let mut reported_problems = 0usize;
    let mut diff_next = false;
    // Per kind: errors counted so far and when the count last rose. A kind whose watch or list
    // failed within ERROR_WINDOW is reported as the source's last error (the source keeps no
    // "healthy again" flag: a resumed watch just stops failing).
    const ERROR_WINDOW: Duration = Duration::from_secs(60);
    let mut error_seen: BTreeMap<String, (u64, Option<Instant>)> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let next = updates.blocking_next(Duration::from_millis(100));
        let status = handle.status();
        {
            let now = Instant::now();
            let mut recent = Vec::new();
            for (k, ks) in &status.kinds {
                let entry = error_seen.entry(k.to_string()).or_insert((0, None));
                if ks.errors > entry.0 {
                    *entry = (ks.errors, Some(now));
                }
                if entry.1.is_some_and(|at| now.duration_since(at) < ERROR_WINDOW)
                    && let Some(e) = &ks.last_error
                {
                    recent.push(format!("{k}: {e}"));
                }
            }
            let mut s = lock(state);
            s.heartbeat_control = now;
            s.source_synced = status.synced;
            if recent.is_empty() {
                s.errors.remove("source");
            } else {
                s.errors.insert("source", recent.join("; "));
            }
            s.source_status = Some(status);
        }
        let update = match next {
            Ok(u) => u,
            Err(moat_control::source::kube::WaitError::Timeout) => continue,
            Err(moat_control::source::kube::WaitError::Closed) => bail!("the Kubernetes source stopped"),
        };
        if update.problems.len() != reported_problems {
            for p in update.problems.iter() {
                tracing::warn!(problem = %p, "object refused; its last valid version (if any) stays in force");
            }
            reported_problems = update.problems.len();
        }
        lock(state).source_problems = update.problems.len();
        for note in &update.snapshot.notes {
            tracing::debug!("{note}");
        }
        let since = update.first_event.unwrap_or(update.published);
        let started = Instant::now();
        // The watch says what changed: apply just that. After a failed batch the compiler's model
        // lags the source's, so the next update is diffed against the whole snapshot instead.
        let result = match update.model_changes().filter(|_| !diff_next) {
            Some(changes) => pipeline.apply(changes, &origin),
            None => pipeline.build(&update.snapshot, &origin),
        };
        diff_next = result.is_err();
        let result = result.map_err(anyhow::Error::from).map(|(table, report)| {
            tracing::info!(source_generation = update.generation, changed = ?update.changed.len(),
                endpoints = report.stats.endpoints, policies = report.stats.policies,
                compile_ms = (report.resolve_time + report.compile_time).as_secs_f64() * 1e3, "policy compiled");
            table
        });
        offer(state, result, since, started.elapsed(), wake);
    }
    handle.stop();
    Ok(())
}

struct LinkConfig {
    path: PathBuf,
    min_backoff: Duration,
    max_backoff: Duration,
}

/// A table sent and not answered yet.
struct InFlight {
    id: u64,
    seq: u64,
    since: Instant,
    sent: Instant,
    stages: HashSet<StageId>,
    table: Arc<RuleTable>,
    /// Encoding and sending.
    encode: Duration,
}

/// No message at all from the fastpath for this long (it sends counters every second and answers
/// pings): it is hung; reconnect.
const SILENCE: Duration = Duration::from_secs(15);
const PING_EVERY: Duration = Duration::from_secs(5);

fn link_thread(config: &LinkConfig, state: &Shared, stop: &AtomicBool, wake: &UnixStream) {
    let hello = AgentHello { software: software(), pid: std::process::id(), node: lock(state).node.clone() };
    let mut encoder = TableEncoder::new();
    let mut backoff = config.min_backoff;
    let mut failures = 0u64;
    while !stop.load(Ordering::Relaxed) {
        lock(state).heartbeat_link = Instant::now();
        match Client::connect(&config.path, &hello, Duration::from_secs(5)) {
            Ok(client) => {
                backoff = config.min_backoff;
                failures = 0;
                let reason = session(client, &mut encoder, state, stop, wake);
                let mut s = lock(state);
                s.connected = false;
                if let Some(reason) = reason {
                    tracing::warn!(error = %reason, "fastpath link lost; reconnecting");
                    s.errors.insert("fastpath", reason);
                }
            }
            Err(e) => {
                // Versions and strangers are configuration errors: loud every time. A missing
                // socket is normal while the fastpath (re)starts: loud once per outage.
                let refused = matches!(e, LinkError::Version { .. } | LinkError::NotMoat);
                if refused || failures == 0 {
                    tracing::error!(error = %e, socket = %config.path.display(), "cannot reach the fastpath; retrying with backoff");
                }
                failures += 1;
                lock(state).errors.insert("fastpath", e.to_string());
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    lock(state).heartbeat_link = Instant::now();
                    std::thread::sleep(Duration::from_millis(10).min(backoff));
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

/// Serves one connection; returns why it ended (`None` when stopping).
fn session(
    mut client: Client,
    encoder: &mut TableEncoder,
    state: &Shared,
    stop: &AtomicBool,
    wake: &UnixStream,
) -> Option<String> {
    let peer = client.peer().clone();
    let mut known: HashSet<StageId> = peer.stages.iter().copied().collect();
    {
        let mut s = lock(state);
        s.connected = true;
        s.connects += 1;
        s.fastpath_pid = Some(peer.pid);
        s.generation = peer.generation;
        s.errors.remove("fastpath");
    }
    if peer.generation == 0 {
        tracing::info!(
            fastpath_pid = peer.pid,
            "connected to a fastpath failing closed (generation 0): sending the full table"
        );
    } else {
        tracing::info!(fastpath_pid = peer.pid, generation = peer.generation, stages = peer.stages.len(),
            origin = %peer.origin, "connected to the fastpath: it keeps enforcing its table until ours is acknowledged");
    }
    let mut sent_seq = 0u64;
    let mut next_id = 1u64;
    let mut in_flight: Option<InFlight> = None;
    // A new connection starts from a whole table: this agent does not hold the table in force.
    let mut acked: Option<(Arc<RuleTable>, u64)> = None;
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        lock(state).heartbeat_link = Instant::now();
        if in_flight.is_none() {
            let desired = lock(state).desired.clone().filter(|d| d.seq != sent_seq);
            if let Some(d) = desired {
                sent_seq = d.seq;
                // The table the fastpath acknowledged last on this connection is the base of a
                // patch: a table derived from it travels as its differences.
                let base = acked.as_ref().map(|(t, g)| (t, *g));
                let encode_started = Instant::now();
                match encoder.encode(&d.table, next_id, &known, base) {
                    Ok(msg) => {
                        let (new_stages, patch) = match &msg.body {
                            TableBody::Policy(p) => (p.new_stages.len(), false),
                            TableBody::Patch(p) => (p.new_stages.len(), true),
                            TableBody::Acl { .. } => (0, false),
                        };
                        let stages = encoder.stage_ids();
                        let bytes = match client.send(&AgentMessage::Table(msg)) {
                            Ok(n) => n,
                            Err(e) => return Some(format!("sending a table: {e}")),
                        };
                        let mut s = lock(state);
                        s.tables_sent += 1;
                        s.stages_sent += new_stages as u64;
                        s.last_table_bytes = bytes;
                        drop(s);
                        tracing::debug!(id = next_id, new_stages, bytes, patch, "table sent");
                        in_flight = Some(InFlight {
                            id: next_id,
                            seq: d.seq,
                            since: d.since,
                            sent: Instant::now(),
                            stages,
                            table: Arc::clone(&d.table),
                            encode: encode_started.elapsed(),
                        });
                        next_id += 1;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode the table; the fastpath keeps its table");
                        lock(state).errors.insert("fastpath", format!("encoding: {e}"));
                    }
                }
            }
        }
        if last_heard.elapsed() > SILENCE {
            return Some(format!("no message from the fastpath for {} s", SILENCE.as_secs()));
        }
        if last_ping.elapsed() > PING_EVERY {
            last_ping = Instant::now();
            if let Err(e) = client.send(&AgentMessage::Ping { nonce: next_id }) {
                return Some(format!("sending a ping: {e}"));
            }
        }
        // Wait for the fastpath or a wake-up (a new table), at most 100 ms.
        let (fastpath_ready, woken) = {
            let mut fds =
                [PollFd::new(client.as_fd(), PollFlags::POLLIN), PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, 100u16);
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if woken {
            let mut buf = [0u8; 64];
            while matches!(wake.read_some(&mut buf), Some(n) if n > 0) {}
        }
        if !fastpath_ready {
            continue;
        }
        loop {
            let msg = match client.recv(Duration::from_millis(1)) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Some(e.to_string()),
            };
            last_heard = Instant::now();
            match msg {
                FastpathMessage::Ack(ack) => {
                    let Some(f) = in_flight.take_if(|f| f.id == ack.id) else { continue };
                    known = f.stages;
                    acked = Some((f.table, ack.generation));
                    let latency = f.since.elapsed();
                    let mut s = lock(state);
                    s.tables_acked += 1;
                    s.generation = ack.generation;
                    if !s.ready {
                        tracing::info!(generation = ack.generation, "first table acknowledged: ready");
                    }
                    s.ready = true;
                    s.latency.observe(latency.as_secs_f64());
                    s.last_latency = Some(latency);
                    s.last_fastpath_build = Some(Duration::from_micros(ack.build_us));
                    drop(s);
                    tracing::info!(
                        generation = ack.generation,
                        seq = f.seq,
                        stages_built = ack.stages_built,
                        stages_reused = ack.stages_reused,
                        fastpath_build_ms = ack.build_us as f64 / 1e3,
                        encode_ms = f.encode.as_secs_f64() * 1e3,
                        round_trip_ms = f.sent.elapsed().as_secs_f64() * 1e3,
                        change_to_ack_ms = latency.as_secs_f64() * 1e3,
                        "table acknowledged"
                    );
                }
                FastpathMessage::Nack(nack) => {
                    if in_flight.as_ref().is_some_and(|f| nack.id.is_none_or(|id| id == f.id)) {
                        in_flight = None;
                    }
                    tracing::error!(reason = %nack.reason, generation = nack.generation,
                        "the fastpath refused the table; it keeps enforcing the table in force");
                    let mut s = lock(state);
                    s.tables_refused += 1;
                    s.errors.insert("fastpath", format!("table refused: {}", nack.reason));
                }
                FastpathMessage::Stats(stats) => {
                    let mut s = lock(state);
                    s.generation = stats.generation;
                    s.stats = Some((stats, Instant::now()));
                }
                FastpathMessage::Pong { .. } => {}
            }
        }
    }
}

/// Non-blocking read of whatever is there.
trait ReadSome {
    fn read_some(self, buf: &mut [u8]) -> Option<usize>;
}

impl ReadSome for &UnixStream {
    fn read_some(mut self, buf: &mut [u8]) -> Option<usize> {
        std::io::Read::read(&mut self, buf).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering: Prometheus text exposition format (version 0.0.4) and the /status document.

/// Writes one metric family at a time: HELP and TYPE, then its samples.
struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    // Label values are bounded: an error message may be long.
    for c in v.chars().take(512) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        // Exact: an integral value below 2^53 converts without loss.
        #[allow(clippy::cast_possible_truncation)]
        let n = v as i64;
        format!("{n}")
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// Worker counters as metric families: (counter name in Stats, metric, type, help).
const WORKER_FAMILIES: &[(&str, &str, &str, &str)] = &[
    ("rx", "moat_worker_rx_packets_total", "counter", "Frames received by the worker."),
    ("tx", "moat_worker_tx_packets_total", "counter", "Frames transmitted by the worker."),
    ("rx_bytes", "moat_worker_rx_bytes_total", "counter", "Bytes received by the worker."),
    ("tx_bytes", "moat_worker_tx_bytes_total", "counter", "Bytes transmitted by the worker."),
    ("bridged_non_ip", "moat_worker_bridged_non_ip_total", "counter", "Non-IP frames bridged without policy."),
    ("handed_off", "moat_worker_handoffs_total", "counter", "Frames handed to the worker owning their connection."),
    ("handoff_received", "moat_worker_handoffs_received_total", "counter", "Frames received from other workers."),
    ("batches", "moat_worker_batches_total", "counter", "RX batches processed."),
    ("table_generation", "moat_worker_table_generation", "gauge", "Rule table generation of the last batch."),
];

/// Conntrack gauges (the rest of `ConntrackSnapshot::named` are counters).
const CONNTRACK_GAUGES: &[(&str, &str)] =
    &[("capacity", "moat_conntrack_capacity"), ("occupancy", "moat_conntrack_occupancy")];
const CONNTRACK_CLASSES: &[&str] = &["tombstones", "embryonic", "closing", "established"];

fn render_metrics(s: &State, now: Instant) -> String {
    let mut p = Prom { out: String::with_capacity(16 * 1024) };
    let stats = s.stats.as_ref().map(|(st, _)| st);
    let workers = stats.map(|st| st.workers.as_slice()).unwrap_or_default();
    let wl = |w: &moat_fastpath::control_link::message::WorkerStats| (w.pair.clone(), w.queue.to_string());

    for (key, name, kind, help) in WORKER_FAMILIES {
        p.family(name, kind, help);
        for w in workers {
            let (pair, queue) = wl(w);
            p.sample(name, &[("pair", &pair), ("queue", &queue)], w.counter(key) as f64);
        }
    }
    p.family("moat_worker_dropped_packets_total", "counter", "Frames dropped by the worker, by reason.");
    for w in workers {
        let (pair, queue) = wl(w);
        for (reason, n) in &w.dropped {
            p.sample(
                "moat_worker_dropped_packets_total",
                &[("pair", &pair), ("queue", &queue), ("reason", reason)],
                *n as f64,
            );
        }
    }
    let ct = |w: &moat_fastpath::control_link::message::WorkerStats, name: &str| {
        w.conntrack.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v) as f64
    };
    for (key, name) in CONNTRACK_GAUGES {
        p.family(name, "gauge", &format!("Flow table {key} (entries)."));
        for w in workers {
            let (pair, queue) = wl(w);
            p.sample(name, &[("pair", &pair), ("queue", &queue)], ct(w, key));
        }
    }
    p.family("moat_conntrack_entries", "gauge", "Flow table entries by class.");
    for w in workers {
        let (pair, queue) = wl(w);
        for class in CONNTRACK_CLASSES {
            p.sample("moat_conntrack_entries", &[("pair", &pair), ("queue", &queue), ("class", class)], ct(w, class));
        }
    }
    for (prefix, name, label, help) in [
        ("invalid_", "moat_conntrack_invalid_total", "reason", "Packets conntrack found invalid, by reason."),
        ("evicted_", "moat_conntrack_evictions_total", "class", "Flows evicted for new ones, by class."),
        ("ended_", "moat_conntrack_ended_total", "reason", "Flows ended, by reason."),
    ] {
        p.family(name, "counter", help);
        for w in workers {
            let (pair, queue) = wl(w);
            for (n, v) in w.conntrack.iter().filter(|(n, _)| n.starts_with(prefix)) {
                p.sample(name, &[("pair", &pair), ("queue", &queue), (label, &n[prefix.len()..])], *v as f64);
            }
        }
    }
    // Every other conntrack counter, one family each, in the order the fastpath sent them.
    let plain: Vec<&str> = workers
        .first()
        .map(|w| {
            w.conntrack
                .iter()
                .map(|(n, _)| n.as_str())
                .filter(|n| {
                    !["invalid_", "evicted_", "ended_"].iter().any(|p| n.starts_with(p))
                        && !CONNTRACK_CLASSES.contains(n)
                        && !CONNTRACK_GAUGES.iter().any(|(k, _)| k == n)
                })
                .collect()
        })
        .unwrap_or_default();
    for key in plain {
        let name = format!("moat_conntrack_{key}_total");
        p.family(&name, "counter", &format!("Flow table counter {key}."));
        for w in workers {
            let (pair, queue) = wl(w);
            p.sample(&name, &[("pair", &pair), ("queue", &queue)], ct(w, key));
        }
    }
    p.family("moat_redirector_packets_total", "counter", "XDP redirector outcomes per interface.");
    for r in stats.map(|st| st.redirectors.as_slice()).unwrap_or_default() {
        for (outcome, n) in &r.counters {
            p.sample("moat_redirector_packets_total", &[("interface", &r.interface), ("outcome", outcome)], *n as f64);
        }
    }
    p.family("moat_fastpath_link", "gauge", "The fastpath's own control-link counters.");
    for (k, v) in stats.map(|st| st.link.as_slice()).unwrap_or_default() {
        p.sample("moat_fastpath_link", &[("counter", k)], *v as f64);
    }
    p.single(
        "moat_fastpath_stats_age_seconds",
        "gauge",
        "Age of the last counters received from the fastpath (-1: none yet).",
        s.stats.as_ref().map_or(-1.0, |(_, at)| now.duration_since(*at).as_secs_f64()),
    );

    p.single(
        "moat_table_generation",
        "gauge",
        "Generation of the rule table the fastpath enforces.",
        s.generation as f64,
    );
    p.single("moat_agent_ready", "gauge", "1 once a fastpath acknowledged the agent's first table.", b(s.ready));
    p.single("moat_agent_fastpath_connected", "gauge", "1 while connected to the fastpath.", b(s.connected));
    p.single("moat_agent_fastpath_connects_total", "counter", "Connections to the fastpath.", s.connects as f64);
    p.single("moat_agent_tables_sent_total", "counter", "Tables sent to the fastpath.", s.tables_sent as f64);
    p.single("moat_agent_tables_acked_total", "counter", "Tables the fastpath applied.", s.tables_acked as f64);
    p.single("moat_agent_tables_refused_total", "counter", "Tables the fastpath refused.", s.tables_refused as f64);
    p.single(
        "moat_agent_stages_sent_total",
        "counter",
        "Policy stages sent (stages the fastpath held are not).",
        s.stages_sent as f64,
    );
    p.single("moat_agent_compiles_total", "counter", "Tables compiled.", s.compiles as f64);
    p.single("moat_agent_compile_failures_total", "counter", "Compilations that failed.", s.compile_failures as f64);
    p.single(
        "moat_agent_compile_seconds",
        "gauge",
        "Duration of the last compilation (source snapshot to table).",
        s.last_compile.map_or(0.0, |d| d.as_secs_f64()),
    );
    p.family(
        "moat_agent_update_latency_seconds",
        "histogram",
        "From a source change (file event, watch event) to the fastpath's acknowledgement.",
    );
    for (bound, count) in s.latency.bounds.iter().zip(&s.latency.counts) {
        p.sample("moat_agent_update_latency_seconds_bucket", &[("le", &bound.to_string())], *count as f64);
    }
    p.sample("moat_agent_update_latency_seconds_bucket", &[("le", "+Inf")], s.latency.count as f64);
    p.sample("moat_agent_update_latency_seconds_sum", &[], s.latency.sum);
    p.sample("moat_agent_update_latency_seconds_count", &[], s.latency.count as f64);
    p.single(
        "moat_agent_last_update_latency_seconds",
        "gauge",
        "The last update's latency (source change to acknowledgement).",
        s.last_latency.map_or(0.0, |d| d.as_secs_f64()),
    );
    p.single(
        "moat_agent_last_table_bytes",
        "gauge",
        "Size of the last table message sent (stages the fastpath held travel as ids).",
        s.last_table_bytes as f64,
    );
    p.single(
        "moat_agent_last_fastpath_build_seconds",
        "gauge",
        "The fastpath's decoding, validation and build of the last acknowledged table.",
        s.last_fastpath_build.map_or(0.0, |d| d.as_secs_f64()),
    );
    p.family("moat_agent_source_synced", "gauge", "1 once the source produced a complete model.");
    p.sample("moat_agent_source_synced", &[("source", s.source)], b(s.source_synced));
    p.single("moat_agent_source_problems", "gauge", "Objects the source refuses right now.", s.source_problems as f64);
    if let Some(st) = &s.source_status {
        p.family("moat_agent_source_kind_listed", "gauge", "1 once the kind's initial list completed.");
        for (k, ks) in &st.kinds {
            p.sample("moat_agent_source_kind_listed", &[("kind", &k.to_string())], b(ks.listed));
        }
        p.family("moat_agent_source_kind_lists_total", "counter", "Lists of the kind (initial and relists).");
        for (k, ks) in &st.kinds {
            p.sample("moat_agent_source_kind_lists_total", &[("kind", &k.to_string())], ks.lists as f64);
        }
        p.family("moat_agent_source_kind_errors_total", "counter", "Watch and list errors of the kind.");
        for (k, ks) in &st.kinds {
            p.sample("moat_agent_source_kind_errors_total", &[("kind", &k.to_string())], ks.errors as f64);
        }
    }
    p.family("moat_agent_last_error", "gauge", "The last error of each component, as a label (1 while it stands).");
    for (component, error) in &s.errors {
        p.sample("moat_agent_last_error", &[("component", component), ("error", error)], 1.0);
    }
    p.family("moat_agent_info", "gauge", "The agent's version and node.");
    p.sample(
        "moat_agent_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("node", s.node.as_deref().unwrap_or("")), ("source", s.source)],
        1.0,
    );
    p.single(
        "moat_agent_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        now.duration_since(s.started).as_secs_f64(),
    );
    p.out
}

/// The /status document: `moat run`'s stats-file shape (workers, redirectors, table) plus the
/// node and the agent's view.
fn render_status(s: &State) -> Value {
    let stats = s.stats.as_ref().map(|(st, _)| st);
    let workers: Vec<Value> = stats
        .map(|st| st.workers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|w| {
            let mut v = serde_json::Map::new();
            v.insert("pair".into(), json!(w.pair));
            v.insert("queue".into(), json!(w.queue));
            v.insert("bind_mode".into(), json!(w.bind_mode));
            for (k, n) in &w.counters {
                v.insert(k.clone(), json!(n));
            }
            v.insert("dropped".into(), Value::Object(w.dropped.iter().map(|(k, n)| (k.clone(), json!(n))).collect()));
            v.insert(
                "conntrack".into(),
                Value::Object(w.conntrack.iter().map(|(k, n)| (k.clone(), json!(n))).collect()),
            );
            Value::Object(v)
        })
        .collect();
    let redirectors: Vec<Value> = stats
        .map(|st| st.redirectors.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let mut v: serde_json::Map<String, Value> = r.counters.iter().map(|(k, n)| (k.clone(), json!(n))).collect();
            v.insert("interface".into(), json!(r.interface));
            Value::Object(v)
        })
        .collect();
    json!({
        "node": s.node,
        "generation": s.generation,
        "ready": s.ready,
        "workers": workers,
        "redirectors": redirectors,
        "table": {
            "generation": s.generation,
            "origin": stats.map(|st| st.origin.clone()),
            "last_change_to_enforcement_ms": s.last_latency.map(|d| d.as_secs_f64() * 1e3),
            // What `moat run`'s stats file calls the last reload error (kubectl moat status shows it):
            // the last compile error, else the fastpath's last refusal or link error.
            "last_reload_error": s.errors.get("compile").or_else(|| s.errors.get("fastpath")),
        },
        "flow_records": stats.map(|st| Value::Object(st.flow_records.iter().map(|(k, n)| (k.clone(), json!(n))).collect())),
        "control_link": stats.map(|st| Value::Object(st.link.iter().map(|(k, n)| (k.clone(), json!(n))).collect())),
        "agent": {
            "source": s.source,
            "source_synced": s.source_synced,
            "source_problems": s.source_problems,
            "connected": s.connected,
            "fastpath_pid": s.fastpath_pid,
            "connects": s.connects,
            "tables_sent": s.tables_sent,
            "tables_acked": s.tables_acked,
            "tables_refused": s.tables_refused,
            "stages_sent": s.stages_sent,
            "compiles": s.compiles,
            "compile_failures": s.compile_failures,
            "last_compile_ms": s.last_compile.map(|d| d.as_secs_f64() * 1e3),
            "last_table_bytes": s.last_table_bytes,
            "last_fastpath_build_ms": s.last_fastpath_build.map(|d| d.as_secs_f64() * 1e3),
            "errors": s.errors,
        },
    })
}

/// `None` when healthy, else what is stalled.
fn health(s: &State, now: Instant, stall: Duration) -> Option<String> {
    let mut stalled = Vec::new();
    for (what, at) in [("control loop", s.heartbeat_control), ("fastpath link", s.heartbeat_link)] {
        let age = now.duration_since(at);
        if age > stall {
            stalled.push(format!("{what} has not come round for {} s", age.as_secs()));
        }
    }
    (!stalled.is_empty()).then(|| stalled.join("; "))
}

/// The HTTP endpoints on their own thread (a one-threaded tokio runtime, hyper HTTP/1).
mod http {
    use super::{Shared, health, lock, render_metrics, render_status};
    use anyhow::Context;
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Request, Response, StatusCode};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    pub(super) struct Server {
        pub(super) addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        pub(super) fn stop(mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    }

    fn handle(req: &Request<hyper::body::Incoming>, state: &Shared, stall: Duration) -> Response<Full<Bytes>> {
        let now = Instant::now();
        let s = lock(state);
        match (req.method(), req.uri().path()) {
            (&hyper::Method::GET, "/metrics") => {
                respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render_metrics(&s, now))
            }
            (&hyper::Method::GET, "/healthz") => match health(&s, now, stall) {
                None => respond(StatusCode::OK, "text/plain", "ok\n".into()),
                Some(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
            },
            (&hyper::Method::GET, "/readyz") => {
                if s.ready {
                    respond(StatusCode::OK, "text/plain", format!("ready: generation {}\n", s.generation))
                } else {
                    let why = if !s.source_synced {
                        "the source has not produced a complete model yet"
                    } else if !s.connected {
                        "not connected to the fastpath"
                    } else {
                        "no table acknowledged by the fastpath yet"
                    };
                    respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {why}\n"))
                }
            }
            (&hyper::Method::GET, "/status") => {
                let doc = render_status(&s);
                respond(StatusCode::OK, "application/json", format!("{doc:#}\n"))
            }
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found: /metrics /healthz /readyz /status\n".into()),
        }
    }

    /// Binds at once (an address in use is an error of `moat agent`, not of a thread), then serves.
    pub(super) fn serve(addr: SocketAddr, state: Shared, stall: Duration) -> anyhow::Result<Server> {
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr} for metrics"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("moat-agent-http".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics listener");
                        return;
                    }
                };
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = &mut stop_rx => return,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let response = handle(&req, &state, stall);
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                        // A slow or stuck client must not hold a connection forever.
                        let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                    });
                }
            });
        })?;
        Ok(Server { addr, stop: Some(stop_tx), thread: Some(thread) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_values_formatted() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        let mut h = Histogram::new(LATENCY_BOUNDS);
        h.observe(0.004);
        h.observe(3.0);
        assert_eq!(h.counts[1], 0);
        assert_eq!(h.counts[2], 1);
        assert_eq!(*h.counts.last().unwrap(), 2);
        assert_eq!(h.count, 2);
    }
}
