//! Per-worker counters: written by one worker, read by anyone.
//!
//! Each worker owns one [`WorkerStats`], padded to its own cache lines so workers never share a line.
//! A counter has a single writer, so an increment is a relaxed load and store — plain moves on x86,
//! no locked read-modify-write — and readers see a value that is at most one batch old.

use crossbeam_utils::CachePadded;
use moat_wire::DropReason;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the dataplane dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// The frame failed parsing.
    Wire(DropReason),
    /// The rule table denied it.
    Policy,
    /// The peer interface's TX ring had no room.
    TxRingFull,
    /// The kernel handed back a descriptor outside the UMEM or for a frame it did not own.
    BadDescriptor,
    /// A tracked connection that the current table no longer allows (re-checked after a swap).
    Revoked,
    /// Not a valid packet of its connection (TCP state or sequence, an ICMP error quoting no flow);
    /// the tracker counts the finer reason.
    ConntrackInvalid,
    /// A new flow found the flow table full of connections that may not be evicted.
    ConntrackFull,
    /// The mailbox of the worker owning the connection was full.
    HandoffFull,
    /// A handed-over frame found no free UMEM frame to be copied into.
    NoFreeFrame,
}

impl DropCause {
    /// Number of distinct causes (size of the counter array).
    pub const COUNT: usize = DropReason::COUNT + 8;

    /// Dense index in `0..COUNT`.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            DropCause::Wire(reason) => reason.index(),
            DropCause::Policy => DropReason::COUNT,
            DropCause::TxRingFull => DropReason::COUNT + 1,
            DropCause::BadDescriptor => DropReason::COUNT + 2,
            DropCause::Revoked => DropReason::COUNT + 3,
            DropCause::ConntrackInvalid => DropReason::COUNT + 4,
            DropCause::ConntrackFull => DropReason::COUNT + 5,
            DropCause::HandoffFull => DropReason::COUNT + 6,
            DropCause::NoFreeFrame => DropReason::COUNT + 7,
        }
    }

    /// Every cause, in index order.
    pub fn all() -> impl Iterator<Item = DropCause> {
        DropReason::ALL.into_iter().map(DropCause::Wire).chain([
            DropCause::Policy,
            DropCause::TxRingFull,
            DropCause::BadDescriptor,
            DropCause::Revoked,
            DropCause::ConntrackInvalid,
            DropCause::ConntrackFull,
            DropCause::HandoffFull,
            DropCause::NoFreeFrame,
        ])
    }

    /// Stable snake_case name (metrics label, stats JSON key).
    pub fn name(self) -> &'static str {
        match self {
            DropCause::Wire(reason) => reason.name(),
            DropCause::Policy => "policy_denied",
            DropCause::TxRingFull => "tx_ring_full",
            DropCause::BadDescriptor => "bad_descriptor",
            DropCause::Revoked => "revoked",
            DropCause::ConntrackInvalid => "conntrack_invalid",
            DropCause::ConntrackFull => "conntrack_full",
            DropCause::HandoffFull => "handoff_full",
            DropCause::NoFreeFrame => "no_free_frame",
        }
    }
}

/// A counter with exactly one writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one worker.
#[derive(Debug)]
pub struct WorkerStats {
    inner: CachePadded<Counters>,
}

#[derive(Debug)]
struct Counters {
    rx_packets: Counter,
    rx_bytes: Counter,
    tx_packets: Counter,
    tx_bytes: Counter,
    /// Non-IP frames (ARP, LLDP, …) bridged without policy.
    bridged_non_ip: Counter,
    dropped: [Counter; DropCause::COUNT],
    batches: Counter,
    /// Times the worker went to sleep in poll(2) for lack of traffic.
    idle_waits: Counter,
    /// Generation of the rule table used by the last batch.
    table_generation: Counter,
    /// Frames copied to the worker owning their connection.
    handed_off: Counter,
    /// Frames received from other workers' handoff.
    handoff_received: Counter,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            inner: CachePadded::new(Counters {
                rx_packets: Counter::default(),
                rx_bytes: Counter::default(),
                tx_packets: Counter::default(),
                tx_bytes: Counter::default(),
                bridged_non_ip: Counter::default(),
                dropped: std::array::from_fn(|_| Counter::default()),
                batches: Counter::default(),
                idle_waits: Counter::default(),
                table_generation: Counter::default(),
                handed_off: Counter::default(),
                handoff_received: Counter::default(),
            }),
        }
    }
}

impl WorkerStats {
    #[inline]
    pub fn received(&self, bytes: u32) {
        self.inner.rx_packets.add(1);
        self.inner.rx_bytes.add(u64::from(bytes));
    }

    #[inline]
    pub fn transmitted(&self, bytes: u32) {
        self.inner.tx_packets.add(1);
        self.inner.tx_bytes.add(u64::from(bytes));
    }

    #[inline]
    pub fn bridged_non_ip(&self) {
        self.inner.bridged_non_ip.add(1);
    }

    #[inline]
    pub fn dropped(&self, cause: DropCause) {
        if let Some(counter) = self.inner.dropped.get(cause.index()) {
            counter.add(1);
        }
    }

    #[inline]
    pub fn batch(&self, generation: u64) {
        self.inner.batches.add(1);
        self.inner.table_generation.set(generation);
    }

    #[inline]
    pub fn handed_off(&self) {
        self.inner.handed_off.add(1);
    }

    #[inline]
    pub fn handoff_received(&self) {
        self.inner.handoff_received.add(1);
    }

    #[inline]
    pub fn idle_wait(&self) {
        self.inner.idle_waits.add(1);
    }

    /// A consistent-enough copy for reporting (each counter is read once).
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.inner;
        StatsSnapshot {
            rx_packets: c.rx_packets.get(),
            rx_bytes: c.rx_bytes.get(),
            tx_packets: c.tx_packets.get(),
            tx_bytes: c.tx_bytes.get(),
            bridged_non_ip: c.bridged_non_ip.get(),
            dropped: DropCause::all().map(|cause| (cause, c.dropped[cause.index()].get())).collect(),
            batches: c.batches.get(),
            idle_waits: c.idle_waits.get(),
            table_generation: c.table_generation.get(),
            handed_off: c.handed_off.get(),
            handoff_received: c.handoff_received.get(),
        }
    }
}

/// Point-in-time copy of a worker's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub bridged_non_ip: u64,
    /// Every cause with its count, zeros included, in index order.
    pub dropped: Vec<(DropCause, u64)>,
    pub batches: u64,
    pub idle_waits: u64,
    pub table_generation: u64,
    pub handed_off: u64,
    pub handoff_received: u64,
}

impl StatsSnapshot {
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    pub fn dropped_by(&self, cause: DropCause) -> u64 {
        self.dropped.iter().find(|(c, _)| *c == cause).map_or(0, |(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_indices_are_dense_and_names_unique() {
        let causes: Vec<DropCause> = DropCause::all().collect();
        assert_eq!(causes.len(), DropCause::COUNT);
        for (i, cause) in causes.iter().enumerate() {
            assert_eq!(cause.index(), i);
        }
        let mut names: Vec<&str> = causes.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropCause::COUNT);
    }

    #[test]
    fn counters_add_up() {
        let stats = WorkerStats::default();
        stats.received(100);
        stats.received(60);
        stats.transmitted(100);
        stats.dropped(DropCause::Policy);
        stats.dropped(DropCause::Policy);
        stats.dropped(DropCause::TxRingFull);
        stats.batch(7);
        let s = stats.snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes), (2, 160, 1, 100));
        assert_eq!(s.dropped_by(DropCause::Policy), 2);
        assert_eq!(s.dropped_total(), 3);
        assert_eq!(s.table_generation, 7);
    }
}
