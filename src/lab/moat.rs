//! Running `moat run` inside a lab namespace (standalone on a manifests directory, or as a fastpath
//! taking tables over a control socket) and `moat agent` beside it: start, wait until ready, stop or
//! kill, read counters and the agent's HTTP endpoints.

use super::netns::{Netns, describe};
use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static PROCESS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How to start `moat run`.
#[derive(Debug, Clone)]
pub struct MoatOptions {
    /// The moat binary (`env!("CARGO_BIN_EXE_moat")` in tests, `std::env::current_exe()` in the demo).
    pub binary: PathBuf,
    /// Interface pairs, each `(IF_A, IF_B)`.
    pub wires: Vec<(String, String)>,
    /// Directory of rule files (`--manifests`).
    pub manifests: PathBuf,
    /// Fastpath mode: `--control-socket PATH` instead of `--manifests` (tables come from `moat agent`).
    pub control_socket: Option<PathBuf>,
    /// `--queues N`; `None` lets moat serve all queues of each interface.
    pub queues: Option<u32>,
    /// `--default-action allow|deny`.
    pub default_action: Option<String>,
    /// `--xdp-mode native|generic`.
    pub xdp_mode: Option<String>,
    /// More arguments after the ones above.
    pub extra_args: Vec<String>,
    /// Environment for moat (e.g. `MOAT_LOG=debug`).
    pub env: Vec<(String, String)>,
    /// How long to wait for the ready file.
    pub ready_timeout: Duration,
    /// How long to wait for moat to exit after SIGTERM before killing it.
    pub stop_timeout: Duration,
}

impl MoatOptions {
    pub fn new(binary: impl Into<PathBuf>, manifests: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            wires: Vec::new(),
            manifests: manifests.into(),
            control_socket: None,
            queues: None,
            default_action: None,
            xdp_mode: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(15),
        }
    }

    /// A fastpath taking its tables from an agent over `socket`.
    pub fn fastpath(binary: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        let mut opts = Self::new(binary, PathBuf::new());
        opts.control_socket = Some(socket.into());
        opts
    }

    pub fn wire(mut self, a: &str, b: &str) -> Self {
        self.wires.push((a.to_owned(), b.to_owned()));
        self
    }

    pub fn queues(mut self, queues: u32) -> Self {
        self.queues = Some(queues);
        self
    }

    pub fn default_action(mut self, action: &str) -> Self {
        self.default_action = Some(action.to_owned());
        self
    }

    pub fn xdp_mode(mut self, mode: &str) -> Self {
        self.xdp_mode = Some(mode.to_owned());
        self
    }
}

/// A `moat run` process inside a namespace. Dropping it without [`MoatProcess::stop`] terminates it (SIGTERM,
/// then SIGKILL).
#[derive(Debug)]
pub struct MoatProcess {
    child: Option<Child>,
    ns: Netns,
    command_line: String,
    stats_file: PathBuf,
    log_file: PathBuf,
    stop_timeout: Duration,
}

impl MoatProcess {
    /// Starts moat in `ns` with its ready, stats and log files in `workdir`, and waits until it is ready.
    pub fn start(ns: &Netns, workdir: &Path, opts: &MoatOptions) -> Result<Self> {
        let n = PROCESS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let ready_file = workdir.join(format!("moat-{n}.ready"));
        let stats_file = workdir.join(format!("moat-{n}.stats.json"));
        let log_file = workdir.join(format!("moat-{n}.log"));
        for stale in [&ready_file, &stats_file] {
            if stale.exists() {
                std::fs::remove_file(stale).with_context(|| format!("cannot remove {}", stale.display()))?;
            }
        }
        let log = File::create(&log_file).with_context(|| format!("cannot create {}", log_file.display()))?;
        let log_err = log.try_clone().context("cannot duplicate the log file handle")?;

        let mut cmd = ns.command(&opts.binary);
        cmd.arg("run");
        for (a, b) in &opts.wires {
            cmd.arg("--wire").arg(format!("{a},{b}"));
        }
        match &opts.control_socket {
            Some(socket) => cmd.arg("--control-socket").arg(socket),
            None => cmd.arg("--manifests").arg(&opts.manifests),
        };
        cmd.arg("--ready-file").arg(&ready_file);
        cmd.arg("--stats-file").arg(&stats_file);
        if let Some(q) = opts.queues {
            cmd.arg("--queues").arg(q.to_string());
        }
        if let Some(action) = &opts.default_action {
            cmd.arg("--default-action").arg(action);
        }
        if let Some(mode) = &opts.xdp_mode {
            cmd.arg("--xdp-mode").arg(mode);
        }
        cmd.args(&opts.extra_args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        // Own process group: a Ctrl-C in the terminal reaches the demo, which then stops moat in order, instead
        // of reaching moat directly.
        cmd.process_group(0);
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let command_line = describe(&cmd);
        // `ip netns exec` execs the program, so the child's pid is moat's.
        let child = cmd.spawn().with_context(|| format!("cannot start `{command_line}`"))?;
        let mut moat = Self {
            child: Some(child),
            ns: ns.clone(),
            command_line,
            stats_file,
            log_file,
            stop_timeout: opts.stop_timeout,
        };

        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            if ready_file.exists() {
                return Ok(moat);
            }
            if let Some(status) = moat.try_wait()? {
                bail!(
                    "moat exited before it was ready ({status}) in namespace {}\ncommand: {}\n--- moat output ---\n{}",
                    moat.ns.name(),
                    moat.command_line,
                    moat.log()
                );
            }
            if Instant::now() >= deadline {
                let log = moat.log();
                moat.kill();
                bail!(
                    "moat was not ready after {:?} (no {}) in namespace {}\ncommand: {}\n--- moat output ---\n{log}",
                    opts.ready_timeout,
                    ready_file.display(),
                    moat.ns.name(),
                    moat.command_line,
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What moat wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_else(|err| format!("<cannot read moat's log: {err}>"))
    }

    /// The process id (moat's own: `ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would end it: no stats file, nothing cleaned up by moat itself (the kernel
    /// detaches XDP when its BPF links close).
    pub fn kill_hard(mut self) {
        self.kill();
    }

    /// `Some(status)` once moat has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            None => bail!("moat was already stopped"),
            Some(child) => child.try_wait().context("cannot poll the moat process"),
        }
    }

    /// Sends SIGTERM, waits for moat to exit (killing it after the stop timeout), checks that it exited with
    /// success and returns the counters from its stats file.
    pub fn stop(mut self) -> Result<MoatStats> {
        let status = self.terminate()?;
        let log = self.log();
        if !status.success() {
            bail!(
                "moat exited with {status} after SIGTERM\ncommand: {}\n--- moat output ---\n{log}",
                self.command_line
            );
        }
        let text = std::fs::read_to_string(&self.stats_file).with_context(|| {
            format!("moat wrote no stats file {}\n--- moat output ---\n{log}", self.stats_file.display())
        })?;
        MoatStats::parse(&text).with_context(|| format!("parsing moat's stats file {}", self.stats_file.display()))
    }

    /// SIGTERM, bounded wait, SIGKILL if needed; returns how moat exited.
    fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("moat was already stopped") };
        if let Some(status) = child.try_wait().context("cannot poll the moat process")? {
            bail!(
                "moat had already exited ({status})\ncommand: {}\n--- moat output ---\n{}",
                self.command_line,
                self.log()
            );
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("cannot send SIGTERM to moat")?;
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            if let Some(status) = child.try_wait().context("cannot poll the moat process")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "moat did not exit within {:?} of SIGTERM and was killed\n--- moat output ---\n{}",
                    self.stop_timeout,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MoatProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Not stopped explicitly (a test failed early): stop it in order so that XDP is detached.
            if let Err(err) = self.terminate() {
                eprintln!("moat lab: stopping moat in {}: {err:#}", self.ns.name());
            }
        }
    }
}

/// The stats file moat writes on exit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MoatStats {
    pub workers: Vec<WorkerStats>,
    /// The whole document (frame census, redirector counters, …) for checks beyond the typed fields.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

/// Counters of one worker (one interface pair and queue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WorkerStats {
    /// `IF_A,IF_B`.
    pub pair: String,
    pub queue: u32,
    pub rx: u64,
    pub tx: u64,
    /// Drops by reason.
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
}

impl WorkerStats {
    pub fn total_dropped(&self) -> u64 {
        self.dropped.values().sum()
    }
}

impl MoatStats {
    pub fn parse(json: &str) -> Result<Self> {
        let mut stats: MoatStats = serde_json::from_str(json)?;
        stats.raw = serde_json::from_str(json)?;
        Ok(stats)
    }

    pub fn rx(&self) -> u64 {
        self.workers.iter().map(|w| w.rx).sum()
    }

    pub fn tx(&self) -> u64 {
        self.workers.iter().map(|w| w.tx).sum()
    }

    /// Drops summed over workers, by reason.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for w in &self.workers {
            for (reason, n) in &w.dropped {
                *out.entry(reason.clone()).or_insert(0) += n;
            }
        }
        out
    }

    /// Drops whose reason satisfies `pred`, summed.
    pub fn dropped_where(&self, pred: impl Fn(&str) -> bool) -> u64 {
        self.dropped().iter().filter(|(r, _)| pred(r)).map(|(_, n)| n).sum()
    }

    /// Workers of `pair` (`IF_A,IF_B`).
    pub fn pair<'a>(&'a self, pair: &'a str) -> impl Iterator<Item = &'a WorkerStats> + 'a {
        self.workers.iter().filter(move |w| w.pair == pair)
    }

    /// A human-readable table of the per-worker counters.
    pub fn table(&self) -> String {
        let mut out =
            format!("{:<20} {:>5} {:>10} {:>10} {:>10}  drop reasons\n", "pair", "queue", "rx", "tx", "dropped");
        for w in &self.workers {
            let reasons: Vec<String> =
                w.dropped.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r}={n}")).collect();
            out.push_str(&format!(
                "{:<20} {:>5} {:>10} {:>10} {:>10}  {}\n",
                w.pair,
                w.queue,
                w.rx,
                w.tx,
                w.total_dropped(),
                if reasons.is_empty() { "-".to_owned() } else { reasons.join(", ") }
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_parse_and_sum() {
        let json = r#"{"workers":[
            {"pair":"wa,wb","queue":0,"rx":10,"tx":7,"dropped":{"policy":3}},
            {"pair":"wa,wb","queue":1,"rx":5,"tx":5,"dropped":{"policy":0,"malformed":1},"extra":true}]}"#;
        let s = MoatStats::parse(json).unwrap();
        assert_eq!(s.rx(), 15);
        assert_eq!(s.tx(), 12);
        assert_eq!(s.dropped_where(|r| r == "policy"), 3);
        assert_eq!(s.dropped().get("malformed"), Some(&1));
        assert_eq!(s.pair("wa,wb").count(), 2);
        assert!(s.table().contains("policy=3"));
        let no_drops = MoatStats::parse(r#"{"workers":[{"pair":"a,b","queue":0,"rx":1,"tx":1}]}"#).unwrap();
        assert_eq!(no_drops.workers[0].total_dropped(), 0);
    }
}

/// How to start `moat agent` (in the test's own network namespace: it needs none of the lab's, only the
/// fastpath's socket file and a loopback port for its endpoints).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub binary: PathBuf,
    /// The fastpath's control socket (`--fastpath-socket`).
    pub socket: PathBuf,
    /// `--manifests DIR`; `None` for the Kubernetes source (`kubeconfig`).
    pub manifests: Option<PathBuf>,
    /// `--kubeconfig PATH`.
    pub kubeconfig: Option<PathBuf>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ready_timeout: Duration,
}

impl AgentOptions {
    pub fn manifests(binary: impl Into<PathBuf>, socket: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            socket: socket.into(),
            manifests: Some(dir.into()),
            kubeconfig: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
        }
    }

    pub fn kubernetes(binary: impl Into<PathBuf>, socket: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Self {
        Self { manifests: None, kubeconfig: Some(kubeconfig.into()), ..Self::manifests(binary, socket, PathBuf::new()) }
    }
}

/// A running `moat agent`; dropping it kills it.
#[derive(Debug)]
pub struct AgentProcess {
    child: Option<Child>,
    command_line: String,
    log_file: PathBuf,
    metrics_addr: std::net::SocketAddr,
}

impl AgentProcess {
    /// Starts the agent with its metrics on 127.0.0.1 (any port) and waits until its endpoints listen.
    pub fn start(workdir: &Path, opts: &AgentOptions) -> Result<Self> {
        let n = PROCESS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let ready_file = workdir.join(format!("agent-{n}.ready"));
        let log_file = workdir.join(format!("agent-{n}.log"));
        if ready_file.exists() {
            std::fs::remove_file(&ready_file).with_context(|| format!("cannot remove {}", ready_file.display()))?;
        }
        let log = File::create(&log_file).with_context(|| format!("cannot create {}", log_file.display()))?;
        let log_err = log.try_clone().context("cannot duplicate the log file handle")?;
        let mut cmd = std::process::Command::new(&opts.binary);
        cmd.arg("agent").arg("--fastpath-socket").arg(&opts.socket);
        if let Some(dir) = &opts.manifests {
            cmd.arg("--manifests").arg(dir);
        }
        if let Some(kc) = &opts.kubeconfig {
            cmd.arg("--kubeconfig").arg(kc);
        }
        cmd.args(["--metrics-addr", "127.0.0.1:0", "--reconnect-max-ms", "500"]);
        cmd.arg("--ready-file").arg(&ready_file);
        cmd.args(&opts.extra_args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        cmd.process_group(0);
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let command_line = describe(&cmd);
        let child = cmd.spawn().with_context(|| format!("cannot start `{command_line}`"))?;
        let mut agent = Self { child: Some(child), command_line, log_file, metrics_addr: ([127, 0, 0, 1], 0).into() };
        let deadline = Instant::now() + opts.ready_timeout;
        loop {
            // Written atomically (rename), so a file that exists is complete.
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                let doc: serde_json::Value = serde_json::from_str(&text).context("parsing the agent's ready file")?;
                agent.metrics_addr = doc["metrics_addr"]
                    .as_str()
                    .context("the ready file names no metrics_addr")?
                    .parse()
                    .context("metrics_addr")?;
                return Ok(agent);
            }
            if let Some(child) = agent.child.as_mut()
                && let Some(status) = child.try_wait().context("cannot poll the agent")?
            {
                bail!(
                    "moat agent exited before it was ready ({status})\ncommand: {}\n--- agent output ---\n{}",
                    agent.command_line,
                    agent.log()
                );
            }
            if Instant::now() >= deadline {
                let log = agent.log();
                agent.kill_now();
                bail!(
                    "moat agent was not ready after {:?}\ncommand: {}\n--- agent output ---\n{log}",
                    opts.ready_timeout,
                    agent.command_line
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_else(|err| format!("<cannot read the agent's log: {err}>"))
    }

    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.metrics_addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `GET path` on the agent's endpoints: status code and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.metrics_addr, path)
    }

    /// SIGKILL (a crash of the control process).
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and a clean exit within 15 s.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { bail!("the agent was already stopped") };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("cannot send SIGTERM to the agent")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().context("cannot poll the agent")? {
                if !status.success() {
                    bail!("moat agent exited with {status}\n--- agent output ---\n{}", self.log());
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("moat agent did not exit within 15 s of SIGTERM\n--- agent output ---\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A plain HTTP/1.1 GET (`Connection: close`): status code and body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).with_context(|| format!("reading the answer to GET {path}"))?;
    let (head, body) = response.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}
