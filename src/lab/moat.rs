//! Running `moat run` inside a lab namespace: start, wait until it is ready, stop, read its counters.

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
            queues: None,
            default_action: None,
            xdp_mode: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(15),
        }
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
        cmd.arg("--manifests").arg(&opts.manifests);
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
