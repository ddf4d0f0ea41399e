//! Starting and stopping the whole dataplane: redirectors, sockets and one worker per (pair, queue).
//!
//! Start-up order is chosen so no frame is ever forwarded unchecked: the redirector is attached first
//! (with no sockets registered it drops — or, if so configured, passes — every frame), then each
//! worker's sockets are bound and their fill rings filled, and only then are the sockets registered
//! in the redirector's XSKMAP. Shut-down is the reverse: workers stop and drain, sockets are
//! unregistered, the redirectors detach when dropped.

use crate::classify::TableHandle;
use crate::conntrack::{ConntrackConfig, ConntrackCounters, ConntrackSnapshot, FlowTable, RecordQueue};
use crate::stats::{StatsSnapshot, WorkerStats};
use crate::worker::handoff::{PairRoute, Steering};
use crate::worker::{Worker, WorkerConfig, WorkerExit};
use crate::xsk::{BindMode, BindPolicy, SocketStats, Umem, UmemConfig, XskSocket};
use moat_bpf::{BpfError, Redirector, RedirectorConfig, RedirectorStats};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Two interfaces between which moat forwards (a bump in the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePair {
    pub a: String,
    pub b: String,
}

impl std::fmt::Display for WirePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{}", self.a, self.b)
    }
}

impl std::str::FromStr for WirePair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split(',').map(str::trim).collect::<Vec<_>>().as_slice() {
            [a, b] if !a.is_empty() && !b.is_empty() && a != b => {
                Ok(WirePair { a: (*a).to_owned(), b: (*b).to_owned() })
            }
            _ => Err(format!("wire pair {s:?}: expected two different interfaces, IF_A,IF_B")),
        }
    }
}

/// Everything needed to start the dataplane.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    pub pairs: Vec<WirePair>,
    /// Queues served per interface; `None` = all RX queues the interfaces have.
    pub queues: Option<u32>,
    pub redirector: RedirectorConfig,
    pub umem: UmemConfig,
    pub bind: BindPolicy,
    pub worker: WorkerConfig,
    /// Pin worker `i` to the `i mod n`-th of the `n` CPUs this process may run on (its affinity mask:
    /// the cores a container was given by a static CPU manager, or by `taskset`).
    pub pin_cores: bool,
    /// Per-worker connection tracking.
    pub conntrack: ConntrackConfig,
    /// Which worker decides a connection when a pair has several queues.
    pub steering: Steering,
    /// Flow records waiting for the control side; a full queue drops (and counts) records.
    pub record_queue: usize,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            pairs: Vec::new(),
            queues: None,
            redirector: RedirectorConfig::default(),
            umem: UmemConfig::default(),
            bind: BindPolicy::default(),
            worker: WorkerConfig::default(),
            pin_cores: false,
            conntrack: ConntrackConfig::default(),
            steering: Steering::default(),
            record_queue: DEFAULT_RECORD_QUEUE,
        }
    }
}

/// Flow records the control side has not taken yet, by default (about 1 s of 100,000 flows ending
/// per second).
pub const DEFAULT_RECORD_QUEUE: usize = 131_072;

/// Errors of starting the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("no wire pair given")]
    NoPairs,
    #[error("interface {0} appears in more than one wire pair")]
    DuplicateInterface(String),
    #[error("reading the RX queues of {ifname}: {source}")]
    Queues { ifname: String, source: std::io::Error },
    #[error("{requested} queues requested but {ifname} has only {available}")]
    TooFewQueues { ifname: String, requested: u32, available: u32 },
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("creating the UMEM for {pair} queue {queue}: {source}")]
    Umem { pair: String, queue: u32, source: std::io::Error },
    #[error("{0}")]
    Socket(std::io::Error),
    #[error("starting worker thread: {0}")]
    Thread(std::io::Error),
}

/// Identity of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub pair: WirePair,
    pub queue: u32,
    pub mode: BindMode,
    pub cpu: Option<usize>,
}

struct RunningWorker {
    info: WorkerInfo,
    stats: Arc<WorkerStats>,
    conntrack: Arc<ConntrackCounters>,
    thread: JoinHandle<WorkerExit>,
}

/// The running dataplane. Dropping it without `stop` still stops the workers and detaches.
pub struct Dataplane {
    workers: Vec<RunningWorker>,
    /// Socket statistics are read through a second handle to each socket's fd.
    socket_fds: Vec<(WorkerInfo, [std::os::fd::OwnedFd; 2])>,
    redirectors: Vec<Redirector>,
    records: Arc<RecordQueue>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("workers", &self.workers.len()).finish_non_exhaustive()
    }
}

/// Final report of a stopped dataplane.
#[derive(Debug, Clone)]
pub struct DataplaneReport {
    pub workers: Vec<(WorkerInfo, StatsSnapshot, Option<WorkerExit>)>,
    pub redirectors: Vec<(String, RedirectorStats)>,
    /// Kernel counters of each worker's sockets (side A, side B), read just before stopping.
    pub sockets: Vec<(WorkerInfo, [Option<SocketStats>; 2])>,
    /// Connection-tracking counters of each worker, after the workers ended their flows.
    pub conntrack: Vec<(WorkerInfo, ConntrackSnapshot)>,
}

impl Dataplane {
    /// Attaches to every pair and starts the workers.
    pub fn start(config: &DataplaneConfig, tables: Arc<TableHandle>) -> Result<Dataplane, DataplaneError> {
        if config.pairs.is_empty() {
            return Err(DataplaneError::NoPairs);
        }
        let mut seen = std::collections::HashSet::new();
        for pair in &config.pairs {
            for ifname in [&pair.a, &pair.b] {
                if !seen.insert(ifname.clone()) {
                    return Err(DataplaneError::DuplicateInterface(ifname.clone()));
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(RecordQueue::new(config.record_queue.max(1)));
        let mut dataplane = Dataplane {
            workers: Vec::new(),
            socket_fds: Vec::new(),
            redirectors: Vec::new(),
            records: Arc::clone(&records),
            stop,
        };
        let cpus = allowed_cpus();
        for pair in &config.pairs {
            let queues = queue_count(pair, config.queues)?;
            let red_a = Redirector::attach(&pair.a, &config.redirector)?;
            let red_b = Redirector::attach(&pair.b, &config.redirector)?;
            // Every mailbox exists before the first worker starts: the first may hand frames to the last.
            let mailboxes = (queues > 1 && config.steering == Steering::Hash)
                .then(|| PairRoute::mailboxes(usize::try_from(queues).unwrap_or(1)));
            for queue in 0..queues {
                let umem = Umem::new(config.umem).map_err(|source| DataplaneError::Umem {
                    pair: pair.to_string(),
                    queue,
                    source,
                })?;
                let a = XskSocket::bind(&umem, &pair.a, red_a.ifindex(), queue, None, config.bind)
                    .map_err(DataplaneError::Socket)?;
                let b = XskSocket::bind(&umem, &pair.b, red_b.ifindex(), queue, Some(&a), config.bind)
                    .map_err(DataplaneError::Socket)?;
                let index = dataplane.workers.len();
                let cpu = if config.pin_cores { cpus.get(index % cpus.len().max(1)).copied() } else { None };
                let info = WorkerInfo { pair: pair.clone(), queue, mode: a.mode(), cpu };
                let fds = [a.fd().try_clone_to_owned(), b.fd().try_clone_to_owned()];
                let [Ok(fd_a), Ok(fd_b)] = fds else {
                    return Err(DataplaneError::Socket(std::io::Error::other("duplicating socket fd")));
                };
                let stats = Arc::new(WorkerStats::default());
                let flows = FlowTable::new(config.conntrack.clone(), Arc::clone(&records));
                let conntrack = Arc::clone(flows.counters());
                let route = mailboxes.as_ref().map(|m| PairRoute { mailboxes: Arc::clone(m), me: queue as usize });
                let worker =
                    Worker::new(umem, a, b, Arc::clone(&tables), Arc::clone(&stats), config.worker, flows, route);
                red_a.register_socket(queue, fd_a.as_fd())?;
                red_b.register_socket(queue, fd_b.as_fd())?;
                let stop = Arc::clone(&dataplane.stop);
                let thread = std::thread::Builder::new()
                    .name(format!("moat-w{index}"))
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            pin_to_cpu(cpu);
                        }
                        worker.run(&stop)
                    })
                    .map_err(DataplaneError::Thread)?;
                dataplane.socket_fds.push((info.clone(), [fd_a, fd_b]));
                dataplane.workers.push(RunningWorker { info, stats, conntrack, thread });
            }
            dataplane.redirectors.push(red_a);
            dataplane.redirectors.push(red_b);
        }
        Ok(dataplane)
    }

    /// Workers and their live counters.
    pub fn stats(&self) -> Vec<(WorkerInfo, StatsSnapshot)> {
        self.workers.iter().map(|w| (w.info.clone(), w.stats.snapshot())).collect()
    }

    /// Connection-tracking counters of every worker.
    pub fn conntrack_stats(&self) -> Vec<(WorkerInfo, ConntrackSnapshot)> {
        self.workers.iter().map(|w| (w.info.clone(), w.conntrack.snapshot())).collect()
    }

    /// Where workers put the records of ended flows (the control side takes them).
    pub fn records(&self) -> &Arc<RecordQueue> {
        &self.records
    }

    /// Kernel statistics of every socket (per worker: side A, side B).
    pub fn socket_stats(&self) -> Vec<(WorkerInfo, [Option<SocketStats>; 2])> {
        self.socket_fds.iter().map(|(info, [a, b])| (info.clone(), [socket_stats(a), socket_stats(b)])).collect()
    }

    pub fn redirector_stats(&self) -> Vec<(String, RedirectorStats)> {
        self.redirectors.iter().filter_map(|r| r.stats().ok().map(|s| (r.ifname().to_owned(), s))).collect()
    }

    /// Stops the workers, drains them, detaches and reports.
    pub fn stop(mut self) -> DataplaneReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> DataplaneReport {
        let redirectors = self.redirector_stats();
        let sockets = self.socket_stats();
        self.stop.store(true, Ordering::Relaxed);
        let mut workers = Vec::new();
        let mut conntrack = Vec::new();
        for worker in self.workers.drain(..) {
            let exit = worker.thread.join().ok();
            conntrack.push((worker.info.clone(), worker.conntrack.snapshot()));
            workers.push((worker.info, worker.stats.snapshot(), exit));
        }
        for redirector in &self.redirectors {
            for (info, _) in &self.socket_fds {
                if info.pair.a == redirector.ifname() || info.pair.b == redirector.ifname() {
                    // Detaching below makes this moot; unregistering first only narrows the window.
                    let _ = redirector.unregister_socket(info.queue);
                }
            }
        }
        self.socket_fds.clear();
        self.redirectors.clear();
        DataplaneReport { workers, redirectors, sockets, conntrack }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.shutdown();
        }
    }
}

/// Number of RX queues of an interface: the driver's channel count, or 1 for drivers that do not
/// report channels (single-queue devices).
pub fn rx_queue_count(ifname: &str) -> std::io::Result<u32> {
    Ok(moat_bpf::interface_rx_queues(ifname)?.unwrap_or(1))
}

fn queue_count(pair: &WirePair, requested: Option<u32>) -> Result<u32, DataplaneError> {
    let mut available = u32::MAX;
    for ifname in [&pair.a, &pair.b] {
        let n = rx_queue_count(ifname).map_err(|source| DataplaneError::Queues { ifname: ifname.clone(), source })?;
        if let Some(requested) = requested
            && requested > n
        {
            return Err(DataplaneError::TooFewQueues { ifname: ifname.clone(), requested, available: n });
        }
        available = available.min(n);
    }
    Ok(requested.unwrap_or(available).clamp(1, moat_bpf::MAX_QUEUES))
}

fn socket_stats(fd: &std::os::fd::OwnedFd) -> Option<SocketStats> {
    crate::xsk::socket_stats_of(fd.as_fd()).ok()
}

/// The CPUs this thread may run on, in order; `[0]` if the mask cannot be read.
fn allowed_cpus() -> Vec<usize> {
    let allowed: Vec<usize> = match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    };
    if allowed.is_empty() { vec![0] } else { allowed }
}

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Pinning is an optimisation: a worker that cannot be pinned still works.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_pair_syntax() {
        assert_eq!("eth0,eth1".parse::<WirePair>().unwrap(), WirePair { a: "eth0".into(), b: "eth1".into() });
        for bad in ["eth0", "eth0,eth0", "eth0,", "a,b,c"] {
            assert!(bad.parse::<WirePair>().unwrap_err().contains(bad));
        }
    }

    #[test]
    fn workers_are_pinned_within_the_affinity_mask() {
        let allowed = allowed_cpus();
        let mask = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap();
        assert!(!allowed.is_empty());
        assert!(allowed.iter().all(|&c| mask.is_set(c).unwrap()));
        assert!(allowed.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn no_pairs_is_an_error() {
        let err = Dataplane::start(&DataplaneConfig::default(), TableHandle::new(crate::RuleTable::fail_closed()));
        assert!(matches!(err, Err(DataplaneError::NoPairs)));
    }

    #[test]
    fn one_interface_in_two_pairs_is_an_error() {
        let config = DataplaneConfig {
            pairs: vec!["x0,x1".parse().unwrap(), "x1,x2".parse().unwrap()],
            ..DataplaneConfig::default()
        };
        let err = Dataplane::start(&config, TableHandle::new(crate::RuleTable::fail_closed()));
        assert!(matches!(err, Err(DataplaneError::DuplicateInterface(ref i)) if i == "x1"));
    }
}
