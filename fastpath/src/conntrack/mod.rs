//! Connection tracking: per-worker flow tables that decide every packet after the first of a
//! connection, revalidate live connections when the rules change, and account every flow.
//!
//! (Full design notes: see the end of this comment.)

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
