//! Per-table counters: written by the owning worker only, read by anyone (metrics, stats file).
//!
//! Same discipline as [`crate::stats`]: one cache-padded block per table, relaxed single-writer
//! counters (a plain load and store, no locked instruction), readers see values at most one batch
//! old.

use super::{EndReason, InvalidReason};
use crate::stats::Counter;
use crossbeam_utils::CachePadded;

/// Why an entry left the table to make room, in the order eviction prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictionClass {
    /// Its timeout had passed (it would have been ended by the next expiry pass anyway).
    Expired,
    /// A denied or revoked flow kept only to drop its packets cheaply.
    Tombstone,
    /// Half-open: TCP before the handshake completed, or a flow with no reply yet.
    Embryonic,
    /// A TCP connection being torn down.
    Closing,
}

impl EvictionClass {
    pub const ALL: [EvictionClass; 4] =
        [EvictionClass::Expired, EvictionClass::Tombstone, EvictionClass::Embryonic, EvictionClass::Closing];

    pub fn name(self) -> &'static str {
        match self {
            EvictionClass::Expired => "expired",
            EvictionClass::Tombstone => "tombstone",
            EvictionClass::Embryonic => "embryonic",
            EvictionClass::Closing => "closing",
        }
    }
}

/// Counters of one flow table.
#[derive(Debug)]
pub struct ConntrackCounters {
    inner: CachePadded<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    capacity: Counter,
    occupancy: Counter,
    tombstones: Counter,
    embryonic: Counter,
    closing: Counter,
    established: Counter,
    inserts: Counter,
    policy_checks: Counter,
    denied: Counter,
    denied_packets: Counter,
    tombstones_skipped: Counter,
    revalidations: Counter,
    revoked: Counter,
    revoked_packets: Counter,
    readmitted: Counter,
    related: Counter,
    untracked: Counter,
    invalid: [Counter; InvalidReason::COUNT],
    evictions: [Counter; 4],
    ended: [Counter; EndReason::COUNT],
    table_full: Counter,
    index_full: Counter,
    records_emitted: Counter,
    records_dropped: Counter,
}

impl ConntrackCounters {
    pub(crate) fn new(capacity: usize) -> ConntrackCounters {
        let counters = ConntrackCounters { inner: CachePadded::new(Inner::default()) };
        counters.inner.capacity.set(u64::try_from(capacity).unwrap_or(u64::MAX));
        counters
    }

    #[inline]
    pub(crate) fn set_occupancy(&self, total: u32, by_class: [u32; 4]) {
        let c = &self.inner;
        c.occupancy.set(u64::from(total));
        c.tombstones.set(u64::from(by_class[0]));
        c.embryonic.set(u64::from(by_class[1]));
        c.closing.set(u64::from(by_class[2]));
        c.established.set(u64::from(by_class[3]));
    }

    #[inline]
    pub(crate) fn inserted(&self) {
        self.inner.inserts.add(1);
    }

    #[inline]
    pub(crate) fn policy_checked(&self) {
        self.inner.policy_checks.add(1);
    }

    #[inline]
    pub(crate) fn denied(&self) {
        self.inner.denied.add(1);
    }

    #[inline]
    pub(crate) fn denied_packet(&self) {
        self.inner.denied_packets.add(1);
    }

    #[inline]
    pub(crate) fn tombstone_skipped(&self) {
        self.inner.tombstones_skipped.add(1);
    }

    #[inline]
    pub(crate) fn revalidated(&self) {
        self.inner.revalidations.add(1);
    }

    #[inline]
    pub(crate) fn revoked(&self) {
        self.inner.revoked.add(1);
    }

    #[inline]
    pub(crate) fn revoked_packet(&self) {
        self.inner.revoked_packets.add(1);
    }

    #[inline]
    pub(crate) fn readmitted(&self) {
        self.inner.readmitted.add(1);
    }

    #[inline]
    pub(crate) fn related(&self) {
        self.inner.related.add(1);
    }

    #[inline]
    pub(crate) fn untracked(&self) {
        self.inner.untracked.add(1);
    }

    #[inline]
    pub(crate) fn invalid(&self, reason: InvalidReason) {
        if let Some(c) = self.inner.invalid.get(reason.index()) {
            c.add(1);
        }
    }

    #[inline]
    pub(crate) fn evicted(&self, class: EvictionClass) {
        if let Some(c) = self.inner.evictions.get(class as usize) {
            c.add(1);
        }
    }

    #[inline]
    pub(crate) fn ended(&self, reason: EndReason) {
        if let Some(c) = self.inner.ended.get(reason.index()) {
            c.add(1);
        }
    }

    #[inline]
    pub(crate) fn table_full(&self) {
        self.inner.table_full.add(1);
    }

    #[inline]
    pub(crate) fn index_full(&self) {
        self.inner.index_full.add(1);
    }

    #[inline]
    pub(crate) fn record(&self, pushed: bool) {
        if pushed { self.inner.records_emitted.add(1) } else { self.inner.records_dropped.add(1) }
    }

    /// A copy for reporting (each counter read once).
    pub fn snapshot(&self) -> ConntrackSnapshot {
        let c = &self.inner;
        ConntrackSnapshot {
            capacity: c.capacity.get(),
            occupancy: c.occupancy.get(),
            tombstones: c.tombstones.get(),
            embryonic: c.embryonic.get(),
            closing: c.closing.get(),
            established: c.established.get(),
            inserts: c.inserts.get(),
            policy_checks: c.policy_checks.get(),
            denied: c.denied.get(),
            denied_packets: c.denied_packets.get(),
            tombstones_skipped: c.tombstones_skipped.get(),
            revalidations: c.revalidations.get(),
            revoked: c.revoked.get(),
            revoked_packets: c.revoked_packets.get(),
            readmitted: c.readmitted.get(),
            related: c.related.get(),
            untracked: c.untracked.get(),
            invalid: InvalidReason::ALL.map(|r| (r, c.invalid[r.index()].get())),
            evictions: EvictionClass::ALL.map(|k| (k, c.evictions[k as usize].get())),
            ended: EndReason::ALL.map(|r| (r, c.ended[r.index()].get())),
            table_full: c.table_full.get(),
            index_full: c.index_full.get(),
            records_emitted: c.records_emitted.get(),
            records_dropped: c.records_dropped.get(),
        }
    }
}

/// Point-in-time copy of a table's counters. Gauges: `capacity`, `occupancy` and the per-class
/// occupancy; everything else counts up from table creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSnapshot {
    pub capacity: u64,
    /// Entries in use (live flows and tombstones).
    pub occupancy: u64,
    pub tombstones: u64,
    pub embryonic: u64,
    pub closing: u64,
    pub established: u64,
    /// Entries created (allowed flows and denied tombstones).
    pub inserts: u64,
    /// Times policy was consulted for a new flow.
    pub policy_checks: u64,
    /// New flows policy denied.
    pub denied: u64,
    /// Packets dropped by a denied tombstone without consulting policy.
    pub denied_packets: u64,
    /// Denied flows not remembered because the table had no room that a live flow would not lose.
    pub tombstones_skipped: u64,
    /// Live flows re-checked after a rule table change.
    pub revalidations: u64,
    /// Live flows cut by a re-check.
    pub revoked: u64,
    /// Packets of revoked flows dropped.
    pub revoked_packets: u64,
    /// Revoked flows a later table allowed again.
    pub readmitted: u64,
    /// ICMP errors forwarded as related to a tracked flow.
    pub related: u64,
    /// ICMP messages decided by policy per packet (not connection-tracked).
    pub untracked: u64,
    pub invalid: [(InvalidReason, u64); InvalidReason::COUNT],
    pub evictions: [(EvictionClass, u64); 4],
    /// Flows ended, by reason (a record was emitted or counted as dropped for each).
    pub ended: [(EndReason, u64); EndReason::COUNT],
    /// New flows dropped because nothing could be evicted.
    pub table_full: u64,
    /// New flows dropped because both index buckets of their key were full (should stay 0).
    pub index_full: u64,
    pub records_emitted: u64,
    /// Records lost because the record queue was full.
    pub records_dropped: u64,
}

impl ConntrackSnapshot {
    /// Every counter under a stable snake_case name (`invalid_<reason>`, `evicted_<class>`,
    /// `ended_<reason>` for the arrays), for JSON and metrics.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = [
            ("capacity", self.capacity),
            ("occupancy", self.occupancy),
            ("tombstones", self.tombstones),
            ("embryonic", self.embryonic),
            ("closing", self.closing),
            ("established", self.established),
            ("inserts", self.inserts),
            ("policy_checks", self.policy_checks),
            ("denied", self.denied),
            ("denied_packets", self.denied_packets),
            ("tombstones_skipped", self.tombstones_skipped),
            ("revalidations", self.revalidations),
            ("revoked", self.revoked),
            ("revoked_packets", self.revoked_packets),
            ("readmitted", self.readmitted),
            ("related", self.related),
            ("untracked", self.untracked),
            ("table_full", self.table_full),
            ("index_full", self.index_full),
            ("records_emitted", self.records_emitted),
            ("records_dropped", self.records_dropped),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
        v.extend(self.invalid.iter().map(|(r, n)| (format!("invalid_{}", r.name()), *n)));
        v.extend(self.evictions.iter().map(|(k, n)| (format!("evicted_{}", k.name()), *n)));
        v.extend(self.ended.iter().map(|(r, n)| (format!("ended_{}", r.name()), *n)));
        v
    }

    /// Packets dropped as invalid, all reasons.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().map(|(_, n)| n).sum()
    }

    pub fn invalid_by(&self, reason: InvalidReason) -> u64 {
        self.invalid.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }

    pub fn evicted_by(&self, class: EvictionClass) -> u64 {
        self.evictions.iter().find(|(k, _)| *k == class).map_or(0, |(_, n)| *n)
    }

    pub fn ended_by(&self, reason: EndReason) -> u64 {
        self.ended.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    }
}
