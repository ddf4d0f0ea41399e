//! `moat run`: attach to wire pairs and filter.
//!
//! **veth neighbours need TX checksum offload off.** A veth hands its peer socket buffers whose
//! TCP/UDP checksums may be left for "hardware" to finish (`CHECKSUM_PARTIAL`). Inside one host that
//! is fine, but a frame that crosses moat is copied into an AF_XDP frame and transmitted as a new
//! buffer with no such promise, so the receiver sees a bad checksum and drops it (ping works, TCP does
//! not). Physical NICs put finished checksums on the wire, so this only concerns veth topologies: the
//! hosts that send into moat over a veth must run `ethtool -K <their veth> tx off` (the lab, the
//! demo and the tests do). See ARCHITECTURE.md, "veth and checksum offload".

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use moat_bpf::{FailsafePort, NoSocketAction, RedirectorConfig, XdpMode};
use moat_control::pipeline::Pipeline;
use moat_control::source::manifests::ManifestDir;
use moat_fastpath::conntrack::ConntrackConfig;
use moat_fastpath::control_link::message::{RedirectorStats, WorkerStats as LinkWorkerStats};
use moat_fastpath::control_link::{Limits, LinkServer, ServerConfig, Stats};
use moat_fastpath::dataplane::{Dataplane, DataplaneConfig, DataplaneReport, WirePair};
use moat_fastpath::stats::StatsSnapshot;
use moat_fastpath::worker::handoff::Steering;
use moat_fastpath::worker::{IdlePolicy, WorkerConfig, WorkerMode};
use moat_fastpath::xsk::{BindMode, BindPolicy, UmemConfig};
use moat_fastpath::{RuleTable, TableHandle, Verdict};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
// Where tables come from: exactly one of the two (a group is exclusive unless told otherwise).
#[command(group(clap::ArgGroup::new("policy").required(true).args(["manifests", "control_socket"])))]
pub struct RunArgs {
    /// Two interfaces to bridge through the filter, IF_A,IF_B. Repeat for more pairs.
    #[arg(long = "wire", value_name = "IF_A,IF_B", required = true)]
    pub pairs: Vec<WirePair>,
    /// Directory of Kubernetes and Calico manifests (`*.yaml`, `*.yml`, `*.json`, recursively): pods,
    /// namespaces, service accounts, NetworkPolicies, Calico policies, tiers, network sets, host
    /// endpoints, IP pools. Watched: a change is recompiled and swapped in. A directory with no
    /// manifest but `*.acl` files is read as raw ACL rules instead (benchmarks and labs).
    /// Standalone mode; exactly one of `--manifests` and `--control-socket` is required.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Fastpath mode: take rule tables from a `moat agent` over this Unix socket instead of compiling
    /// them here. moat listens (a stale socket file is replaced), serves one agent at a time,
    /// validates every table before swapping it in, and fails closed until the first valid one;
    /// when the agent goes away, the table in force and every tracked connection stay.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// File mode of the control socket, octal. Connecting needs write permission: 600 lets only
    /// this user in; 660 also the socket's group (an agent running as another user in that group).
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = socket_mode)]
    pub control_socket_mode: u32,
    /// Largest table frame accepted from the agent, in bytes (larger ones are refused unread).
    #[arg(long, default_value_t = moat_fastpath::control_link::DEFAULT_MAX_TABLE_FRAME)]
    pub max_table_bytes: usize,
    /// How often counters are sent to the agent, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub link_stats_interval_ms: u64,
    /// Load manifests with unknown fields (dropping those fields, logged) instead of refusing them.
    /// Off by default: a misspelt field silently widens or narrows a policy.
    #[arg(long)]
    pub lenient_fields: bool,
    /// RX queues to serve per interface (default: all of them). One worker per pair and queue.
    #[arg(long)]
    pub queues: Option<u32>,
    /// Verdict for IP traffic no ACL rule matches (ACL directories only; manifests decide by Calico
    /// semantics).
    #[arg(long, value_enum, default_value_t = ActionArg::Deny)]
    pub default_action: ActionArg,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,
    /// What the XDP program does with frames of a queue that has no worker (yet): drop = fail closed.
    #[arg(long, value_enum, default_value_t = NoSocketArg::Drop)]
    pub no_socket: NoSocketArg,
    /// Ports on which frames addressed to this host always reach the kernel, as
    /// `[in:|out:]tcp|udp:PORT,…`; `none` disables. Default: Calico's failsafe ports.
    #[arg(long, value_name = "LIST")]
    pub failsafe_ports: Option<String>,
    /// AF_XDP bind mode.
    #[arg(long, value_enum, default_value_t = BindArg::Auto)]
    pub bind: BindArg,
    /// Spin on the rings instead of sleeping when idle (one core at 100% per worker).
    #[arg(long)]
    pub busy_poll: bool,
    /// Frames per RX batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch: u32,
    /// Forward every frame without parsing or policy (the baseline for benchmarks). Never use it to
    /// protect anything.
    #[arg(long)]
    pub bare: bool,
    /// Do not pin workers to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Create this file once everything is attached and forwarding.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Write final counters as JSON to this file on exit.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Log counters every N seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    pub stats_interval: u64,
    /// Connections tracked per worker (the flow table is allocated at start; when it is full, dead and
    /// embryonic flows are evicted first and established ones never for a new one).
    #[arg(long, default_value_t = ConntrackConfig::default().capacity,
          value_parser = conntrack_capacity)]
    pub conntrack_capacity: usize,
    /// Keep connections a new policy no longer allows (Linux conntrack's behaviour). By default a
    /// table swap re-checks every live connection at its next packet and cuts the revoked ones.
    #[arg(long)]
    pub conntrack_keep_on_revoke: bool,
    /// Which worker decides a connection on multi-queue pairs: `hash` (any NIC: frames of a connection
    /// another worker owns are handed to it) or `queue` (the receiving worker; only with symmetric RSS).
    #[arg(long, value_enum, default_value_t = SteeringArg::Hash)]
    pub steering: SteeringArg,
    /// Append one JSON line per ended flow (Calico flow-log field names) to this file.
    #[arg(long, value_name = "PATH")]
    pub flow_log: Option<PathBuf>,
    /// Quiet time after a change in the rule directory before it is reloaded (a burst of writes is
    /// one reload). SIGHUP reloads at once.
    #[arg(long, default_value_t = 20)]
    pub reload_debounce_ms: u64,
}

/// What reloading has done so far (reported in the stats file and the logs).
#[derive(Debug, Default)]
struct ReloadStatus {
    reloads: u64,
    failures: u64,
    last_latency: Option<Duration>,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NoSocketArg {
    Drop,
    Pass,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SteeringArg {
    Hash,
    Queue,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BindArg {
    Auto,
    Copy,
    ZeroCopy,
}

/// Where tables come from: compiled here from a watched directory, or received from an agent.
enum Policy {
    // Boxed: the compiler state is large and this enum lives once, on the stack of `run`.
    Standalone { source: Box<PolicySource>, watcher: moat::watch::DirWatcher },
    Fastpath(LinkServer),
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let default = match args.default_action {
        ActionArg::Allow => Verdict::Allow,
        ActionArg::Deny => Verdict::Deny,
    };
    // Generation 0 fails closed. In standalone mode the loaded rules become generation 1 before any
    // worker starts, so the fail-closed table only governs a later reload failure path, never
    // start-up traffic; in fastpath mode it governs until the agent's first valid table.
    let tables = TableHandle::new(RuleTable::fail_closed());
    let mut policy = match (&args.manifests, &args.control_socket) {
        (Some(dir), None) => {
            let mut source = PolicySource::new(dir, default, args.lenient_fields);
            // A start-up with broken policy still starts, failing closed, and waits for a fix: a node
            // agent that exits would leave the node to the XDP program's no-socket action instead.
            match source.load() {
                Ok(table) => {
                    tables.publish(table);
                }
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "no policy loaded: failing closed until the manifests are fixed");
                }
            }
            Policy::Standalone { source: Box::new(source), watcher: moat::watch::DirWatcher::new(dir)? }
        }
        (None, Some(path)) => {
            let config = ServerConfig {
                path: path.clone(),
                mode: args.control_socket_mode,
                max_frame: args.max_table_bytes,
                limits: Limits::default(),
            };
            Policy::Fastpath(LinkServer::start(config, Arc::clone(&tables)).context("opening the control socket")?)
        }
        _ => bail!("exactly one of --manifests and --control-socket is required"),
    };
    let config = DataplaneConfig {
        pairs: args.pairs.clone(),
        queues: args.queues,
        redirector: RedirectorConfig {
            mode: match args.xdp_mode {
                XdpModeArg::Native => XdpMode::Native,
                XdpModeArg::Generic => XdpMode::Generic,
            },
            no_socket: match args.no_socket {
                NoSocketArg::Drop => NoSocketAction::Drop,
                NoSocketArg::Pass => NoSocketAction::Pass,
            },
            failsafe: parse_failsafe(args.failsafe_ports.as_deref())?,
        },
        umem: UmemConfig::default(),
        bind: match args.bind {
            BindArg::Auto => BindPolicy::Auto,
            BindArg::Copy => BindPolicy::CopyOnly,
            BindArg::ZeroCopy => BindPolicy::ZeroCopyOnly,
        },
        worker: WorkerConfig {
            batch: args.batch,
            idle: if args.busy_poll { IdlePolicy::BusyPoll } else { IdlePolicy::default() },
            mode: if args.bare { WorkerMode::Bare } else { WorkerMode::Filter },
        },
        pin_cores: !args.no_pin,
        conntrack: ConntrackConfig {
            capacity: args.conntrack_capacity,
            revalidate: !args.conntrack_keep_on_revoke,
            ..ConntrackConfig::default()
        },
        steering: match args.steering {
            SteeringArg::Hash => Steering::Hash,
            SteeringArg::Queue => Steering::Queue,
        },
        ..DataplaneConfig::default()
    };

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup)).context("installing SIGHUP")?;
    let debounce = Duration::from_millis(args.reload_debounce_ms);
    let mut reload = ReloadStatus::default();

    let dataplane = Dataplane::start(&config, Arc::clone(&tables)).context("starting the dataplane")?;
    for (info, _) in dataplane.stats() {
        tracing::info!(pair = %info.pair, queue = info.queue, mode = ?info.mode, cpu = ?info.cpu, "worker started");
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    tracing::info!(pairs = args.pairs.len(), generation = tables.generation(), "forwarding");

    let records = Arc::clone(dataplane.records());
    let mut flow_log = FlowLog::open(args.flow_log.as_deref())?;
    let interval = (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
    let link_interval = Duration::from_millis(args.link_stats_interval_ms);
    let mut last_log = Instant::now();
    let mut last_link_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
        match &mut policy {
            Policy::Standalone { source, watcher } => {
                let changed = watcher.settled(debounce);
                if changed.is_some() || hangup.swap(false, Ordering::Relaxed) {
                    reload_rules(source, &tables, changed.unwrap_or_else(Instant::now), &mut reload);
                }
            }
            Policy::Fastpath(link) => {
                if last_link_stats.elapsed() >= link_interval {
                    last_link_stats = Instant::now();
                    link.send_stats(live_stats(&dataplane, &tables, &flow_log, &records));
                }
            }
        }
        tables.reclaim();
        flow_log.drain(&records, &tables);
        if let Some(interval) = interval
            && last_log.elapsed() >= interval
        {
            last_log = Instant::now();
            for (info, s) in dataplane.stats() {
                tracing::info!(pair = %info.pair, queue = info.queue, rx = s.rx_packets, tx = s.tx_packets,
                    dropped = s.dropped_total(), "counters");
            }
        }
    }
    tracing::info!("stopping");
    // The link first: no table is swapped in while the workers stop.
    let link = match policy {
        Policy::Fastpath(link) => Some(link.stop()),
        Policy::Standalone { .. } => None,
    };
    let report = dataplane.stop();
    // The workers ended every flow they still tracked: those records are the last ones.
    flow_log.drain(&records, &tables);
    flow_log.flush();
    let mut summary = report_json(&report, &tables);
    summary["flow_records"] = json!({"written": flow_log.written, "taken": flow_log.taken,
        "dropped_queue_full": records.dropped(), "write_errors": flow_log.errors});
    summary["table"]["reloads"] = json!(reload.reloads);
    summary["table"]["reload_failures"] = json!(reload.failures);
    summary["table"]["last_change_to_enforcement_ms"] = json!(reload.last_latency.map(|d| d.as_secs_f64() * 1e3));
    summary["table"]["last_reload_error"] = json!(reload.last_error);
    if let Some(link) = link {
        summary["table"]["origin"] = json!(tables.load().origin());
        summary["control_link"] = json!({
            "state": link.state.name(), "agent": link.agent, "connects": link.connects,
            "disconnects": link.disconnects, "refused_peers": link.refused_peers,
            "tables_applied": link.tables_applied, "tables_refused": link.tables_refused,
            "last_refusal": link.last_refusal, "last_error": link.last_error,
            "stages_cached": link.stages_cached, "stages_built": link.stages_built,
            "last_build_ms": link.last_build.map(|d| d.as_secs_f64() * 1e3),
        });
    }
    if let Some(path) = &args.stats_file {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text).with_context(|| format!("writing stats file {}", path.display()))?;
    }
    for (info, s, exit) in &report.workers {
        tracing::info!(pair = %info.pair, queue = info.queue, rx = s.rx_packets, tx = s.tx_packets,
            dropped = s.dropped_total(), frames_in_use = exit.map(|e| e.census.user), "worker stopped");
    }
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where flow records go: JSON lines (see `moat_control::flowlog`) appended to a file, or nowhere
/// (records are still taken, so the workers' queue never fills for lack of a reader).
struct FlowLog {
    out: Option<std::io::BufWriter<std::fs::File>>,
    taken: u64,
    written: u64,
    errors: u64,
}

impl FlowLog {
    fn open(path: Option<&Path>) -> anyhow::Result<FlowLog> {
        let out = match path {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening flow log {}", path.display()))?,
            )),
            None => None,
        };
        Ok(FlowLog { out, taken: 0, written: 0, errors: 0 })
    }

    /// Takes every waiting record; names come from the table in force.
    fn drain(&mut self, records: &moat_fastpath::conntrack::RecordQueue, tables: &TableHandle) {
        if records.is_empty() {
            return;
        }
        let table = tables.load();
        let mut wrote = false;
        while let Some(record) = records.pop() {
            self.taken += 1;
            let Some(out) = self.out.as_mut() else { continue };
            let doc = moat_control::flowlog::document(&record, &table);
            match serde_json::to_writer(&mut *out, &doc)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
            {
                Ok(()) => {
                    self.written += 1;
                    wrote = true;
                }
                Err(err) => {
                    // Counted and logged once per burst; the dataplane never waits for the log.
                    if self.errors == 0 {
                        tracing::error!(error = %err, "writing the flow log");
                    }
                    self.errors += 1;
                }
            }
        }
        if wrote {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut()
            && out.flush().is_err()
        {
            self.errors += 1;
        }
    }
}

/// Recompiles the rules after a change first seen at `since` and publishes them; on any error the
/// table in force stays, and the error is logged and kept for the stats file.
fn reload_rules(source: &mut PolicySource, tables: &TableHandle, since: Instant, status: &mut ReloadStatus) {
    match source.load() {
        Ok(table) => {
            let generation = tables.publish(table);
            // Workers load the table at the start of every batch: from here on every new flow is
            // decided by the new generation, and every tracked flow is re-checked against it at its
            // next packet, so publication is enforcement.
            let latency = since.elapsed();
            status.reloads += 1;
            status.last_latency = Some(latency);
            status.last_error = None;
            tracing::info!(generation, change_to_enforcement_ms = latency.as_secs_f64() * 1e3, "policy reloaded");
        }
        Err(err) => {
            status.failures += 1;
            status.last_error = Some(format!("{err:#}"));
            tracing::error!(error = %format!("{err:#}"), generation = tables.generation(),
                "policy not reloaded; the table in force stays");
        }
    }
}

/// The rule directory: Kubernetes/Calico manifests compiled through the control pipeline, or (when
/// it holds no manifest) raw ACL files.
pub(crate) struct PolicySource {
    manifests: ManifestDir,
    pipeline: Pipeline,
    acl_default: Verdict,
}

impl PolicySource {
    pub(crate) fn new(dir: &Path, acl_default: Verdict, lenient_fields: bool) -> PolicySource {
        let manifests = ManifestDir::new(dir);
        let manifests = if lenient_fields { manifests.lenient() } else { manifests };
        PolicySource { manifests, pipeline: Pipeline::new(), acl_default }
    }

    pub(crate) fn load(&mut self) -> anyhow::Result<RuleTable> {
        let dir = self.manifests.path();
        let has_manifests =
            self.manifests.has_manifests().with_context(|| format!("reading policy directory {}", dir.display()))?;
        if !has_manifests {
            return load_acl(dir, self.acl_default);
        }
        if has_acl(dir)? {
            bail!("{} holds both manifests and *.acl files; use one or the other", dir.display());
        }
        let snapshot = self.manifests.load()?;
        for note in &snapshot.notes {
            tracing::warn!("{note}");
        }
        let (table, report) = self.pipeline.build(&snapshot, &dir.display().to_string())?;
        for warning in &report.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            endpoints = report.stats.endpoints,
            policies = report.stats.policies,
            rebuilt = report.stats.built,
            resolve_ms = report.resolve_time.as_secs_f64() * 1e3,
            compile_ms = report.compile_time.as_secs_f64() * 1e3,
            "policy compiled"
        );
        Ok(table)
    }
}

fn has_acl(dir: &Path) -> anyhow::Result<bool> {
    Ok(acl_files(dir)?.next().is_some())
}

fn acl_files(dir: &Path) -> anyhow::Result<impl Iterator<Item = PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading rule directory {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("acl"))
        .collect();
    files.sort();
    Ok(files.into_iter())
}

/// Reads every `*.acl` file of `dir` in name order into one table.
pub fn load_acl(dir: &Path, default: Verdict) -> anyhow::Result<RuleTable> {
    let mut rules = Vec::new();
    let mut used = Vec::new();
    for path in acl_files(dir)? {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        rules.extend(moat_fastpath::classify::acl::parse(&text, &path.display().to_string())?);
        used.push(path.display().to_string());
    }
    if used.is_empty() {
        tracing::warn!(dir = %dir.display(), default = ?default, "no manifests and no *.acl rule files: every IP packet gets the default verdict");
    }
    tracing::info!(rules = rules.len(), "ACL rules loaded");
    Ok(RuleTable::new(rules, default, used.join(", ")))
}

fn conntrack_capacity(text: &str) -> Result<usize, String> {
    use moat_fastpath::conntrack::{MAX_CAPACITY, MIN_CAPACITY};
    let n: usize = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if (MIN_CAPACITY..=MAX_CAPACITY).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} flows per worker: must be between {MIN_CAPACITY} and {MAX_CAPACITY}"))
    }
}

fn parse_failsafe(spec: Option<&str>) -> anyhow::Result<Vec<FailsafePort>> {
    match spec {
        None => Ok(FailsafePort::calico_defaults()),
        Some("none") | Some("") => Ok(Vec::new()),
        Some(list) => list
            .split(',')
            .map(|p| p.trim().parse::<FailsafePort>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()
            .and_then(|ports| {
                if ports.len() > moat_bpf::MAX_FAILSAFE_PORTS {
                    bail!("{} failsafe ports given, at most {} fit", ports.len(), moat_bpf::MAX_FAILSAFE_PORTS)
                }
                Ok(ports)
            }),
    }
}

fn socket_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8).map_err(|e| format!("{text:?}: {e}"))?;
    if mode > 0o777 {
        return Err(format!("{text}: not a file mode (at most 777)"));
    }
    Ok(mode)
}

/// Counters for the agent (the link adds its own): the same content as the stats file's workers.
fn live_stats(
    dataplane: &Dataplane,
    tables: &TableHandle,
    flow_log: &FlowLog,
    records: &moat_fastpath::conntrack::RecordQueue,
) -> Stats {
    let conntrack = dataplane.conntrack_stats();
    let workers = dataplane
        .stats()
        .into_iter()
        .map(|(info, s)| {
            let counters = [
                ("rx", s.rx_packets),
                ("tx", s.tx_packets),
                ("rx_bytes", s.rx_bytes),
                ("tx_bytes", s.tx_bytes),
                ("bridged_non_ip", s.bridged_non_ip),
                ("batches", s.batches),
                ("idle_waits", s.idle_waits),
                ("table_generation", s.table_generation),
                ("handed_off", s.handed_off),
                ("handoff_received", s.handoff_received),
            ];
            LinkWorkerStats {
                pair: info.pair.to_string(),
                queue: info.queue,
                bind_mode: bind_mode_name(info.mode).to_owned(),
                counters: counters.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                dropped: s
                    .dropped
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(cause, n)| (cause.name().to_owned(), *n))
                    .collect(),
                conntrack: conntrack.iter().find(|(i, _)| *i == info).map(|(_, ct)| ct.named()).unwrap_or_default(),
            }
        })
        .collect();
    let redirectors = dataplane
        .redirector_stats()
        .into_iter()
        .map(|(interface, r)| RedirectorStats {
            interface,
            counters: [
                ("redirected", r.redirected),
                ("no_socket_dropped", r.no_socket_dropped),
                ("no_socket_passed", r.no_socket_passed),
                ("failsafe_passed", r.failsafe_passed),
                ("local_arp_passed", r.local_arp_passed),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        })
        .collect();
    let table = tables.load();
    Stats {
        generation: table.generation(),
        origin: table.origin().to_owned(),
        workers,
        redirectors,
        flow_records: vec![
            ("taken".to_owned(), flow_log.taken),
            ("written".to_owned(), flow_log.written),
            ("dropped_queue_full".to_owned(), records.dropped()),
            ("write_errors".to_owned(), flow_log.errors),
        ],
        ..Stats::default()
    }
}

fn bind_mode_name(mode: BindMode) -> &'static str {
    match mode {
        BindMode::ZeroCopy => "zero-copy",
        BindMode::Copy => "copy",
    }
}

/// The stats-file document: per worker counters and drop reasons (non-zero only), redirector counters.
pub fn report_json(report: &DataplaneReport, tables: &TableHandle) -> Value {
    let workers: Vec<Value> = report
        .workers
        .iter()
        .map(|(info, s, exit)| {
            let mut w = worker_json(s);
            w["pair"] = json!(info.pair.to_string());
            w["queue"] = json!(info.queue);
            w["bind_mode"] = json!(bind_mode_name(info.mode));
            if let Some((_, sides)) = report.sockets.iter().find(|(i, _)| i == info) {
                let side = |s: &Option<moat_fastpath::xsk::SocketStats>| match s {
                    Some(s) => json!({"rx_dropped": s.rx_dropped, "rx_ring_full": s.rx_ring_full,
                        "rx_fill_ring_empty": s.rx_fill_ring_empty, "rx_invalid_descs": s.rx_invalid_descs,
                        "tx_invalid_descs": s.tx_invalid_descs}),
                    None => Value::Null,
                };
                w["kernel"] = json!({"a": side(&sides[0]), "b": side(&sides[1])});
            }
            if let Some((_, ct)) = report.conntrack.iter().find(|(i, _)| i == info) {
                let named: serde_json::Map<String, Value> =
                    ct.named().into_iter().map(|(k, v)| (k, json!(v))).collect();
                w["conntrack"] = Value::Object(named);
            }
            if let Some(exit) = exit {
                w["frames"] = json!({
                    "free": exit.census.free, "in_use": exit.census.user,
                    "fill": exit.census.fill, "tx": exit.census.tx,
                    "refused_descriptors": exit.refused_descriptors,
                });
            }
            w
        })
        .collect();
    let redirectors: Vec<Value> = report
        .redirectors
        .iter()
        .map(|(ifname, r)| {
            json!({"interface": ifname, "redirected": r.redirected, "no_socket_dropped": r.no_socket_dropped,
                   "no_socket_passed": r.no_socket_passed, "failsafe_passed": r.failsafe_passed,
                   "local_arp_passed": r.local_arp_passed})
        })
        .collect();
    json!({"workers": workers, "redirectors": redirectors, "table": {"generation": tables.generation()}})
}

fn worker_json(s: &StatsSnapshot) -> Value {
    let dropped: serde_json::Map<String, Value> =
        s.dropped.iter().filter(|(_, n)| *n > 0).map(|(cause, n)| (cause.name().to_owned(), json!(n))).collect();
    json!({
        "rx": s.rx_packets, "tx": s.tx_packets, "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes,
        "bridged_non_ip": s.bridged_non_ip, "dropped": dropped, "batches": s.batches,
        "idle_waits": s.idle_waits, "table_generation": s.table_generation,
        "handed_off": s.handed_off, "handoff_received": s.handoff_received,
    })
}
