//! Connection tracking: per-worker flow tables that decide every packet after the first of a
//! connection, re-check live connections when the rules change, and account every flow.
//!
//! A worker parses a frame, then calls [`FlowTable::track`] (or [`FlowTable::track_batch`] for a
//! batch) with the parsed IP packet, the frame's VLAN tags, its length, the batch's clock
//! ([`now_ns`]) and the generation of the rule table in force. Policy (`classify`, normally
//! [`RuleTable::admit`](crate::classify::RuleTable::admit)) is called only for a packet that starts
//! a flow, or for a flow whose table generation is stale. Once per loop iteration the worker calls
//! [`FlowTable::expire`] with a small budget; at stop, [`FlowTable::drain`]. Flows that end leave a
//! [`FlowRecord`] on the shared [`RecordQueue`].
//!
//! # One table per worker, no locks
//!
//! Each worker owns its [`FlowTable`] (`&mut self` on every path): no lock, no atomic
//! read-modify-write, no allocation, no system call, no logging per packet. The only shared writes
//! are the table's own counters ([`ConntrackCounters`]: one cache-padded block, a single writer,
//! relaxed stores) and, when a flow ends, one lock-free push on the record queue (a full queue drops
//! the record and counts it; a worker never waits for the control side).
//!
//! Both directions of a connection must therefore reach the same worker. With symmetric RSS they
//! do. Otherwise [`owner_hash`] decides: it is equal for both directions of a connection and, for
//! an ICMP error, equal to the hash of the connection the error quotes; its seed is fixed, so every
//! worker (and every process) computes the same number from the same packet. A worker that receives
//! a packet whose owner is another worker hands it over (`worker::handoff`), and the owner decides
//! it. The price of a fixed seed: someone who knows it can choose addresses that all steer to one
//! worker (load, not correctness). The table's *own* bucket hash uses a random per-table seed
//! ([`ConntrackConfig::hash_seed`]), so bucket collisions cannot be crafted.
//!
//! # Flow identity
//!
//! A flow is identified by both addresses (IPv4 or IPv6, with the family in the key so that an
//! IPv4-mapped IPv6 address never matches an IPv4 flow), the IP protocol, the VLAN ids (outer and
//! inner; id 0 counts as untagged, TPID and priority are not part of it) and, by protocol:
//!
//! | packet | identity | state |
//! |---|---|---|
//! | TCP | ports | TCP state machine |
//! | UDP, SCTP | ports | unreplied / replied |
//! | ICMP/ICMPv6 echo | identifier, on the requester's side | unreplied / replied; a reply without request is invalid |
//! | ICMP/ICMPv6 error | the flow its quote names (RELATED) | none of its own |
//! | other ICMP (ND, RS/RA, timestamps, …) | not tracked: policy decides each packet | — |
//! | other protocols (GRE, ESP, …) | addresses only | unreplied / replied |
//! | later fragments (no transport header) | addresses only, apart from the protocol's connections | unreplied / replied |
//!
//! Other ICMP types are not tracked because they pair with nothing a table could use: neighbour and
//! router discovery are link-local, often multicast and unsolicited, and would fill the table with
//! entries that never mean anything (Linux does not track them either). Their volume is small, so
//! asking policy each time costs little and keeps them exactly as policy says.
//!
//! An entry stores its key in the *initiator's* orientation (the sender of the first packet). A
//! lookup compares a packet's key with the stored one in both orientations, which also tells the
//! packet's direction. The bucket hash is symmetric (the two `(address, port)` ends are hashed
//! separately and added, so no comparison decides an order and no branch mispredicts on direction).
//!
//! # Memory: 120-byte entries and a 6-byte-per-flow index
//!
//! All memory is allocated, and written, in [`FlowTable::new`]: an arena of `capacity` entries and
//! the index. Nothing allocates afterwards; nothing grows. [`FlowTable::bytes`] reports the total.
//!
//! An entry (`table::Entry`, `#[repr(C)]`, 120 bytes, asserted at compile time):
//!
//! | bytes | field |
//! |---|---|
//! | 0–39 | addresses (2 × 16), ports (2 × 2), VLAN ids (24 bits) and protocol |
//! | 40–43 | key kind, family, eviction class and two flags; state; TCP flags seen per direction |
//! | 44–63 | admitting generation (low 32 bits), last seen (32-bit milliseconds), highest TCP sequence per direction, first seen (32-bit seconds) |
//! | 64–95 | packets and bytes per direction (64-bit) |
//! | 96–111 | the admission: endpoint and deciding trace of each side |
//! | 112–119 | previous and next entry on the eviction list |
//!
//! Last-seen milliseconds wrap every 49.7 days; ages are wrapping differences, exact below 24.8
//! days, and every timeout is capped at [`MAX_TIMEOUT`] (20 days) so the expiry sweep always comes
//! first. First-seen is in seconds so that it survives connections older than the wrap. The
//! generation keeps 32 bits; records widen it against the current generation.
//!
//! The index is an array of buckets, each one cache line of sixteen `u32` slots; a slot holds the
//! entry index in its low bits and a tag of the key's hash in the rest (at least 6 tag bits, which
//! bounds capacity at [`MAX_CAPACITY`]). A key may live in one of two buckets chosen by its hash;
//! it goes to the first when that has room, so a lookup reads one bucket line, compares all sixteen
//! tags at once, and reads the entries whose tag matches (a false tag match costs one entry read;
//! with 12 tag bits at 1M flows it is rare). With at most 11 entries per bucket at full capacity,
//! 98.8% of the entries of a full 20,000-flow table sit in their first bucket (unit test), and when
//! both buckets are full one occupant moves to its other bucket; a key that still finds no room is
//! refused as `TableFull` and counted (`index_full`, never seen in tests). There are no tombstones
//! in the index: deleting clears the slot.
//!
//! At 1,000,000 flows the whole table takes 125,818,528 bytes: 125.8 bytes per flow (120 for the
//! entry, 5.8 for the index), 120 MiB.
//!
//! # TCP
//!
//! The transition table is Linux nf_conntrack's (states `SYN_SENT`, `SYN_RECV`, `ESTABLISHED`,
//! `FIN_WAIT`, `CLOSE_WAIT`, `LAST_ACK`, `TIME_WAIT`, `CLOSE`, `SYN_SENT2`), with its "ignore"
//! (pass, no change) and "invalid" outcomes; flag combinations are checked against Linux's
//! `tcp_valid_flags`. It is window-agnostic but sequence-sane ([`tcp`]): the tracker keeps, per
//! direction, an upper bound of the highest sequence sent, and checks that a SYN-ACK acknowledges
//! the SYN, that a RST is near its sender's sequence (and in `SYN_SENT` acknowledges the SYN), and
//! that no ACK acknowledges data never sent. A retransmitted FIN does not count as the other side's.
//! Invalid packets are dropped and counted by reason ([`InvalidReason`]) and change nothing.
//!
//! A new TCP flow must start with a SYN. With [`ConntrackConfig::tcp_loose`] (default, as Linux's
//! `nf_conntrack_tcp_loose`) a plain ACK is picked up as `ESTABLISHED` and policy decides it in
//! that packet's direction; its acknowledgment bound is not checked (the first packets seen after a
//! restart may be retransmissions far behind), and until the other side answers it is only
//! half-open for eviction and times out after `tcp_unreplied`. A SYN on a connection in `TIME_WAIT`
//! (or, from the initiator, in `CLOSE`) ends it (record: closed / reset) and opens a new one, which
//! policy decides again.
//!
//! # ICMP errors (RELATED)
//!
//! An ICMP or ICMPv6 error (destination unreachable, packet too big, time exceeded, parameter
//! problem, …) quotes the packet that caused it, as its sender sent it, so the error travels back
//! towards the quote's source: it must be addressed to the quote's source (else
//! `IcmpErrorAddressMismatch`), and the quote's key must name a tracked flow (else
//! `UnrelatedIcmpError`, as Linux marks it INVALID). An error for a live, allowed flow is forwarded
//! and counted on that flow, in the direction it travels, without extending the flow's life; an
//! error for a denied or revoked flow is dropped like the flow. An echo quote does not say whether
//! it was a request or a reply, so both orientations are tried. The sender of an error may be any
//! router on the path (traceroute).
//!
//! # Policy, tombstones and revalidation
//!
//! Policy is asked about a new flow with the [`FlowKey`] of its first packet (ports, or ICMP type
//! and code: echo flows as the request). An allowed flow is inserted with the [`Admission`] and
//! the generation that decided it. A denied flow gets a short-lived *tombstone* (timeout
//! `Timeouts::denied`, restarted by each dropped packet): a flood of denied packets then costs a
//! lookup each instead of a policy check, and the denied flow is accounted (its record has verdict
//! Deny). A tombstone applies only to its own direction: a packet from the other side opens a flow
//! of its own, which policy decides. A tombstone never costs a live flow its place (a denied flow
//! that finds only live flows to evict is not remembered: `tombstones_skipped`).
//!
//! **Revalidation** ([`ConntrackConfig::revalidate`], on by default): when a live flow's next packet
//! comes under a different rule generation, policy is asked again with the flow's *original*
//! direction (initiator → responder), whichever direction the packet goes. Allowed: the flow
//! carries on under the new admission. Denied: the packet is dropped, the flow's record goes out
//! (end reason `Revoked`, with the decision that cut it), and the entry stays as a revoked
//! tombstone that drops the connection's packets without asking policy again until the next
//! generation change; then policy is asked again, and if it allows, the connection resumes in the
//! TCP state it had (a new record period starts). Without revalidation, live flows keep the
//! decision that admitted them (Linux's behaviour); new flows always follow the current table, and
//! denied tombstones are always re-decided after a change (they are a cache of a decision, not a
//! connection).
//!
//! # Bounded and flood-proof
//!
//! The table never holds more than its capacity. A new flow that finds it full evicts, in order:
//! an expired entry at the head of any eviction list; the oldest tombstone; the oldest half-open
//! flow (TCP before the handshake completed or picked up without reply, UDP/SCTP/echo/other without
//! reply); the oldest closing TCP connection. Each class is a FIFO list threaded through the
//! entries (8 bytes per entry), so choosing a victim costs a few list heads, never a scan.
//! Established (replied) flows are never evicted for a new flow — every new flow is half-open — so
//! under a SYN flood or a scan of millions of new flows, half-open flows replace each other (a
//! legitimate handshake still completes unless the flood turns the whole table over within its
//! round trip) while established traffic passes untouched; when the table holds nothing evictable,
//! new flows are dropped as [`CtDrop::TableFull`] before policy is asked, so refusing costs a
//! lookup. Evictions are counted by class ([`EvictionClass`]) and each evicted flow's record says
//! `Evicted`.
//!
//! **Expiry** is incremental: [`FlowTable::expire`] examines at most `budget` entries from a cursor
//! that walks the arena, and ends those whose timeout passed (the worker calls it once per
//! iteration, so a sweep of a 262,144-entry table with a budget of 64 takes 4,096 iterations). A
//! lookup that finds an expired entry ends it and treats the packet as new. Timeouts
//! ([`Timeouts`]) default to Linux's nf_conntrack values.
//!
//! # Accounting and records
//!
//! Every entry counts packets and bytes (whole frames) in each direction, TCP flags seen in each
//! direction, first and last seen, and keeps the admission (verdict, per-side endpoint and deciding
//! trace) and its generation. When a flow ends — TCP closed (after `TIME_WAIT`) or reset (after
//! `CLOSE`), idle timeout, eviction, revocation, replacement, shutdown — a [`FlowRecord`] with all of
//! it and the [`EndReason`] is pushed on the bounded lock-free [`RecordQueue`]. A revoked flow's
//! record also carries the decision that cut it; a revoked or denied entry that goes on afterwards
//! starts a new record period. Times are [`now_ns`] readings (monotonic; [`to_system_time`] turns
//! them into wall-clock time).
//!
//! # Batches
//!
//! [`FlowTable::track_batch`] decides a batch exactly as calls to `track` in order would (property
//! tested), but first computes every packet's key and hash and loads the first word of both of its
//! index buckets, then loads the entry each packet's tag points at, and only then decides. The loads
//! of different packets are independent, so their cache misses overlap; with a million flows this
//! more than doubles the established-flow rate. (A prefetch instruction would do the same without
//! waiting for the data, but calling one is `unsafe`, which this module does not use.)
//!
//! # Invariants (checked after every operation in the tests)
//!
//! - The eviction lists partition the arena; `len()` is the number of entries not on the free list
//!   and never exceeds `capacity()`.
//! - The index holds exactly the live entries, each once, in one of its key's two buckets.
//! - No packet path panics, allocates, locks or logs; invalid packets change no state.

mod counters;
mod key;
mod table;
pub mod tcp;

#[cfg(test)]
mod tests;

pub use counters::{ConntrackCounters, ConntrackSnapshot, EvictionClass};
pub use table::FlowTable;
pub use tcp::TcpState;

use crate::classify::{Admission, FlowKey};
use crossbeam_queue::ArrayQueue;
use key::{HashSeed, Identity, KeyKind, PacketKey};
use moat_wire::{IpSummary, TcpFlags, VlanTags};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Fewest entries a table has (smaller capacities are raised to this).
pub const MIN_CAPACITY: usize = 16;
/// Most entries a table can have: arena indices share a 32-bit index slot with a hash tag of at
/// least 6 bits.
pub const MAX_CAPACITY: usize = 1 << 26;
/// Longest timeout: entry times are 32-bit milliseconds compared by wrapping difference, which is
/// exact for 24.8 days; the expiry sweep visits every entry far more often than that.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(20 * 24 * 3600);

/// Flow table configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Flows per worker (clamped to [`MIN_CAPACITY`]..=[`MAX_CAPACITY`]); all memory for them is
    /// allocated when the table is created.
    pub capacity: usize,
    pub timeouts: Timeouts,
    /// Re-check live connections against the rule table in force when its generation changed, and
    /// cut the ones it no longer allows. Linux conntrack keeps them; this is on by default.
    pub revalidate: bool,
    /// Pick up TCP connections seen mid-stream (a first packet that is a plain ACK), as Linux's
    /// `nf_conntrack_tcp_loose`: policy decides them in the direction of that packet. Without it,
    /// such a packet is invalid (after a restart every open connection must then reconnect).
    pub tcp_loose: bool,
    /// Seed of the table's bucket hash. `None` (default): random per table, so that nobody can
    /// craft keys that collide in it. Fixed seeds are for reproducible benchmarks.
    pub hash_seed: Option<u64>,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            capacity: 262_144,
            timeouts: Timeouts::default(),
            revalidate: true,
            tcp_loose: true,
            hash_seed: None,
        }
    }
}

/// How long a flow may stay idle in each state before it ends. Defaults are Linux's
/// nf_conntrack defaults where Linux has the state. Values above [`MAX_TIMEOUT`] are clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    /// A connection picked up mid-stream that has not been seen in the other direction yet (Linux's
    /// `tcp_timeout_unacknowledged`): a scan of ACKs must not occupy entries for five days.
    pub tcp_unreplied: Duration,
    pub udp_unreplied: Duration,
    /// UDP after a reply (Linux's `udp_timeout_stream`).
    pub udp_replied: Duration,
    pub sctp_unreplied: Duration,
    /// SCTP after a reply (Linux's ESTABLISHED timeout for SCTP: longer than the default
    /// heartbeat interval of 30 s).
    pub sctp_replied: Duration,
    /// ICMP/ICMPv6 echo.
    pub icmp: Duration,
    /// Other protocols (GRE, ESP, …) and later fragments.
    pub generic: Duration,
    /// Tombstones of denied and revoked flows (each dropped packet restarts it).
    pub denied: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(5 * 24 * 3600),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            tcp_unreplied: s(300),
            udp_unreplied: s(30),
            udp_replied: s(120),
            sctp_unreplied: s(30),
            sctp_replied: s(210),
            icmp: s(30),
            generic: s(600),
            denied: s(10),
        }
    }
}

/// One parsed packet for [`FlowTable::track_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInput {
    pub ip: IpSummary,
    pub vlan: VlanTags,
    /// Length of the whole frame (counted in the flow's bytes).
    pub frame_len: u32,
}

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forward,
    Drop(CtDrop),
}

/// Why the tracker dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtDrop {
    /// Policy denied the flow (now, or when it was first seen).
    PolicyDenied,
    /// The flow was allowed, and a later rule table no longer allows it.
    Revoked,
    /// The packet does not fit the connection it claims to belong to.
    Invalid(InvalidReason),
    /// A new flow, and the table is full of flows that may not be evicted for it.
    TableFull,
}

/// Why a packet is invalid. Invalid packets are dropped and never change a flow's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// A flag combination no TCP sends (none, SYN+FIN, SYN+RST, FIN without ACK, …).
    TcpFlags,
    /// A new TCP flow that does not start with a SYN (a plain ACK is picked up when `tcp_loose`).
    TcpNotSyn,
    /// A TCP packet that makes no sense in the connection's state (e.g. a SYN-ACK from the initiator).
    TcpState,
    /// A SYN-ACK that does not acknowledge the initiator's SYN.
    SynAckBadAck,
    /// A RST whose sequence number is far from its sender's, or that does not acknowledge the SYN it
    /// answers.
    RstOutOfWindow,
    /// An acknowledgment of data the other side never sent.
    AckBeyondSent,
    /// An echo reply without a request.
    EchoReplyWithoutRequest,
    /// An ICMP error quoting no tracked connection (Linux marks these INVALID too).
    UnrelatedIcmpError,
    /// An ICMP error not addressed to the source of the packet it quotes.
    IcmpErrorAddressMismatch,
}

impl InvalidReason {
    pub const COUNT: usize = 9;
    pub const ALL: [InvalidReason; InvalidReason::COUNT] = [
        InvalidReason::TcpFlags,
        InvalidReason::TcpNotSyn,
        InvalidReason::TcpState,
        InvalidReason::SynAckBadAck,
        InvalidReason::RstOutOfWindow,
        InvalidReason::AckBeyondSent,
        InvalidReason::EchoReplyWithoutRequest,
        InvalidReason::UnrelatedIcmpError,
        InvalidReason::IcmpErrorAddressMismatch,
    ];

    /// Dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            InvalidReason::TcpFlags => "tcp_flags",
            InvalidReason::TcpNotSyn => "tcp_not_syn",
            InvalidReason::TcpState => "tcp_state",
            InvalidReason::SynAckBadAck => "syn_ack_bad_ack",
            InvalidReason::RstOutOfWindow => "rst_out_of_window",
            InvalidReason::AckBeyondSent => "ack_beyond_sent",
            InvalidReason::EchoReplyWithoutRequest => "echo_reply_without_request",
            InvalidReason::UnrelatedIcmpError => "unrelated_icmp_error",
            InvalidReason::IcmpErrorAddressMismatch => "icmp_error_address_mismatch",
        }
    }
}

/// Why a flow's record was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// Idle longer than its state's timeout (tombstones included).
    Timeout,
    /// TCP closed by FIN in both directions (TIME_WAIT over, or a new SYN reused the ports).
    Closed,
    /// TCP reset (CLOSE over, or a new SYN reused the ports).
    Reset,
    /// Made room for a new flow.
    Evicted,
    /// A new rule table no longer allows it; its later packets are dropped.
    Revoked,
    /// A denied or revoked entry replaced after the rules changed, or by a packet from the other
    /// side that opens a flow of its own.
    Superseded,
    /// The worker stopped.
    Shutdown,
}

impl EndReason {
    pub const COUNT: usize = 7;
    pub const ALL: [EndReason; EndReason::COUNT] = [
        EndReason::Timeout,
        EndReason::Closed,
        EndReason::Reset,
        EndReason::Evicted,
        EndReason::Revoked,
        EndReason::Superseded,
        EndReason::Shutdown,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            EndReason::Timeout => "timeout",
            EndReason::Closed => "closed",
            EndReason::Reset => "reset",
            EndReason::Evicted => "evicted",
            EndReason::Revoked => "revoked",
            EndReason::Superseded => "superseded",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// What identifies a flow besides addresses and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// TCP, UDP or SCTP: the ports in [`FlowRecord::key`].
    Ports,
    /// ICMP/ICMPv6 echo with this identifier.
    Echo { identifier: u16 },
    /// Another protocol: addresses and protocol only.
    Generic,
    /// Later fragments (no transport header) of datagrams between two addresses.
    LaterFragments,
}

/// VLAN ids of a flow; 0 means no tag (or a priority-only tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanIds {
    /// The first tag (the only one when there is one).
    pub outer: u16,
    /// The second tag of a Q-in-Q frame.
    pub inner: u16,
}

/// Packets, bytes (whole frames) and TCP flags seen in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionCounts {
    pub packets: u64,
    pub bytes: u64,
    /// Union of the flags of the segments seen (FIN … CWR).
    pub tcp_flags: TcpFlags,
}

/// One flow, as it ended: what the flow-log side receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    /// Initiator → responder, as policy saw the first packet (echo flows: the request's ICMP type).
    pub key: FlowKey,
    pub kind: FlowKind,
    pub vlan: VlanIds,
    /// Monotonic nanoseconds (see [`now_ns`], [`to_system_time`]); first seen is rounded down to
    /// the second, last seen to the millisecond.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub ended_ns: u64,
    /// Initiator → responder.
    pub original: DirectionCounts,
    /// Responder → initiator.
    pub reply: DirectionCounts,
    /// What policy decided: `Allow` for flows that passed, `Deny` for denied flows and for the
    /// tombstone of a revoked one.
    pub admission: Admission,
    /// Rule table generation of that decision.
    pub generation: u64,
    /// TCP state at the end.
    pub tcp_state: Option<TcpState>,
    /// A TCP connection picked up mid-stream (`tcp_loose`).
    pub picked_up: bool,
    pub end: EndReason,
    /// For [`EndReason::Revoked`]: the decision of the table that cut it.
    pub revoked_by: Option<Admission>,
}

/// A flow's state, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowState {
    Tcp(TcpState),
    /// Not TCP, no reply seen yet.
    Unreplied,
    /// Not TCP, seen both ways.
    Replied,
    /// Denied by policy; packets dropped without asking policy again until the rules change.
    Denied,
    /// Allowed once, cut by a later table.
    Revoked,
}

/// The bounded lock-free queue flow records travel through to the control side. A full queue never
/// blocks a worker: the record is dropped and counted (here for all workers, and in each table's
/// `records_dropped`).
#[derive(Debug)]
pub struct RecordQueue {
    queue: ArrayQueue<FlowRecord>,
    dropped: AtomicU64,
}

impl RecordQueue {
    /// A queue for `capacity` records (at least 1), allocated now.
    pub fn new(capacity: usize) -> RecordQueue {
        RecordQueue { queue: ArrayQueue::new(capacity.max(1)), dropped: AtomicU64::new(0) }
    }

    /// Adds a record; `false` (and counted) when the queue is full. Never allocates or blocks.
    #[inline]
    pub fn push(&self, record: FlowRecord) -> bool {
        match self.queue.push(record) {
            Ok(()) => true,
            Err(_) => {
                // Shared by every worker, but only touched when records are being lost.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn pop(&self) -> Option<FlowRecord> {
        self.queue.pop()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Records lost to a full queue since creation.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn epoch() -> &'static (Instant, SystemTime) {
    static EPOCH: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    EPOCH.get_or_init(|| (Instant::now(), SystemTime::now()))
}

/// Monotonic nanoseconds since the process's first call (CLOCK_MONOTONIC through `Instant`).
/// Workers read it once per batch.
pub fn now_ns() -> u64 {
    u64::try_from(epoch().0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The wall-clock time of a [`now_ns`] reading (for flow logs).
pub fn to_system_time(ns: u64) -> SystemTime {
    epoch().1 + Duration::from_nanos(ns)
}

/// Which connection a packet belongs to, as a number every worker computes alike: equal for both
/// directions of a connection, and for an ICMP error equal to the hash of the connection it quotes.
/// The seed is fixed, so threads and processes agree. A worker that receives a packet of a
/// connection another worker owns (queues not spread symmetrically) hands it over.
pub fn owner_hash(ip: &IpSummary, vlan: &VlanTags) -> u64 {
    let key = match key::identify(ip, vlan) {
        Identity::Flow(key) => key,
        Identity::Error(quote) => key::quoted_key(&quote, vlan).unwrap_or_else(|| {
            PacketKey::new(quote.src, quote.dst, 0, 0, quote.protocol, KeyKind::Generic, key::vlan_ids(vlan))
        }),
        Identity::Untracked => PacketKey::new(ip.src, ip.dst, 0, 0, ip.protocol, KeyKind::Generic, key::vlan_ids(vlan)),
    };
    key.hash(&HashSeed::OWNER)
}
