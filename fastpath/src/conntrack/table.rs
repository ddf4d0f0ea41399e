//! The flow table: an arena of fixed-size entries, a bucketised two-choice index, per-class FIFO
//! lists for eviction, and an expiry cursor. See the module documentation for the design.

use super::counters::{ConntrackCounters, EvictionClass};
use super::key::{self, HashSeed, Identity, KEY_META_MASK, KeyKind, PacketKey};
use super::tcp::{self, ACK_SLACK, Event, RST_WINDOW, Step, TcpState};
use super::{
    ConntrackConfig, CtDrop, DirectionCounts, EndReason, FlowKind, FlowRecord, FlowState, InvalidReason, MAX_CAPACITY,
    MAX_TIMEOUT, MIN_CAPACITY, Outcome, RecordQueue, Timeouts, TrackInput, VlanIds,
};
use crate::classify::{Admission, FlowKey, Verdict, policy::TraceId};
use moat_wire::ip::protocol;
use moat_wire::{Fragment, IpSummary, TcpFlags, Transport, VlanTags};
use std::sync::Arc;
use std::time::Duration;

/// "No entry" in list links.
const NIL: u32 = u32::MAX;
/// Index slots per bucket: one cache line of `u32`.
const SLOTS: usize = 16;
/// Entries per bucket at full capacity (of 16 slots): the index costs under 6 bytes per flow,
/// nearly every key finds room in its first bucket (98.8% in a full 20,000-entry table), and both
/// being full is rare enough to be settled by moving one occupant.
const ENTRIES_PER_BUCKET: usize = 11;
/// Packets whose memory `track_batch` requests before deciding the first of them.
const PIPELINE: usize = 16;
/// Endpoint value standing for "no endpoint" in a stored admission.
const NO_ENDPOINT: u32 = u32::MAX;

/// One cache line of index slots. A slot is `tag << index_bits | entry index`, 0 when empty (tags
/// are never 0).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket([u32; SLOTS]);

/// Which list an entry is on; eviction takes list heads in this order (after expired ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Class {
    Free = 0,
    Tombstone = 1,
    Embryonic = 2,
    Closing = 3,
    Established = 4,
}

const CLASSES: usize = 5;

impl Class {
    fn from_bits(bits: u8) -> Class {
        match bits {
            1 => Class::Tombstone,
            2 => Class::Embryonic,
            3 => Class::Closing,
            4 => Class::Established,
            _ => Class::Free,
        }
    }
}

// `Entry::meta`: key bits (kind, family) 0..3, class 3..6, then two flags.
const CLASS_SHIFT: u8 = 3;
const CLASS_MASK: u8 = 0b111 << CLASS_SHIFT;
/// A tombstone of a flow that was allowed and then revoked (otherwise: denied from the start).
const REVOKED: u8 = 1 << 6;
/// TCP picked up mid-stream: the acknowledgment bound is not checked (the first packets seen may
/// be retransmissions far behind what the other side already acknowledged).
const PICKED_UP: u8 = 1 << 7;

// `Entry::state`: TCP states are `TcpState as u8` (1..=9); other protocols have an unreplied and
// a replied state (replied = unreplied + 1), one pair per timeout family.
const UDP_UNREPLIED: u8 = 10;
const SCTP_UNREPLIED: u8 = 12;
const ICMP_UNREPLIED: u8 = 14;
const GENERIC_UNREPLIED: u8 = 16;
const STATES: usize = 18;

/// One tracked flow: 120 bytes, key first (compared on every lookup), then what every packet
/// updates, then what only records and re-checks read.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Entry {
    /// Initiator then responder address (see `PacketKey`).
    addr: [[u64; 2]; 2],
    /// Initiator then responder port (echo: identifier on the requester's side).
    ports: [u16; 2],
    /// VLAN ids << 8 | IP protocol.
    vlan_proto: u32,
    /// Key bits, class, REVOKED, PICKED_UP.
    meta: u8,
    state: u8,
    /// TCP flags seen per direction (0 = nothing seen from that side yet).
    tcp_flags: [u8; 2],
    /// Low 32 bits of the rule table generation that decided the flow.
    generation: u32,
    /// Milliseconds (`now_ns / 1e6`, wrapping).
    last_seen_ms: u32,
    /// Per direction, the end of the highest TCP segment seen (an upper bound). While in SYN_SENT
    /// the responder's slot holds the initiator's ISN + 1, the least a SYN-ACK may acknowledge.
    next_seq: [u32; 2],
    /// Seconds (`now_ns / 1e9`): first seen must survive connections older than the 49 days a
    /// 32-bit millisecond count covers.
    first_seen_s: u32,
    packets: [u64; 2],
    bytes: [u64; 2],
    /// Egress endpoint, egress trace, ingress endpoint, ingress trace.
    admission: [u32; 4],
    /// Neighbours on the class list.
    prev: u32,
    next: u32,
}

/// The per-flow cost of the arena.
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();
const _: () = assert!(ENTRY_BYTES == 120, "the entry layout is part of the memory budget");

impl Entry {
    const EMPTY: Entry = Entry {
        addr: [[0; 2]; 2],
        ports: [0; 2],
        vlan_proto: 0,
        meta: 0,
        state: 0,
        tcp_flags: [0; 2],
        generation: 0,
        last_seen_ms: 0,
        next_seq: [0; 2],
        first_seen_s: 0,
        packets: [0; 2],
        bytes: [0; 2],
        admission: [NO_ENDPOINT, 0, NO_ENDPOINT, 0],
        prev: NIL,
        next: NIL,
    };

    #[inline]
    fn class(&self) -> Class {
        Class::from_bits((self.meta & CLASS_MASK) >> CLASS_SHIFT)
    }

    /// `Some(true)` when `key` is this flow in the initiator's direction, `Some(false)` in the
    /// responder's, `None` when it is another flow.
    #[inline]
    fn orientation(&self, key: &PacketKey) -> Option<bool> {
        if self.vlan_proto != key.vlan_proto || self.meta & KEY_META_MASK != key.meta {
            return None;
        }
        if self.addr == [key.src, key.dst] && self.ports == [key.src_port, key.dst_port] {
            Some(true)
        } else if self.addr == [key.dst, key.src] && self.ports == [key.dst_port, key.src_port] {
            Some(false)
        } else {
            None
        }
    }

    /// The key in the initiator's orientation.
    fn key(&self) -> PacketKey {
        PacketKey {
            src: self.addr[0],
            dst: self.addr[1],
            src_port: self.ports[0],
            dst_port: self.ports[1],
            vlan_proto: self.vlan_proto,
            meta: self.meta & KEY_META_MASK,
        }
    }

    fn admission(&self) -> Admission {
        let side = |endpoint: u32, trace: TraceId| (endpoint != NO_ENDPOINT).then_some((endpoint, trace));
        let verdict = if self.class() == Class::Tombstone { Verdict::Deny } else { Verdict::Allow };
        Admission {
            verdict,
            egress: side(self.admission[0], self.admission[1]),
            ingress: side(self.admission[2], self.admission[3]),
        }
    }

    fn set_admission(&mut self, admission: &Admission) {
        let (ee, et) = admission.egress.unwrap_or((NO_ENDPOINT, 0));
        let (ie, it) = admission.ingress.unwrap_or((NO_ENDPOINT, 0));
        self.admission = [ee, et, ie, it];
    }

    fn is_tcp(&self) -> bool {
        (1..=9).contains(&self.state)
    }

    /// Seen from the responder (TCP: any segment; others: the replied state).
    fn replied(&self) -> bool {
        if self.is_tcp() { self.tcp_flags[1] != 0 } else { self.state >= UDP_UNREPLIED && self.state % 2 == 1 }
    }

    /// The list a live (non-tombstone) flow belongs on.
    fn live_class(&self) -> Class {
        match TcpState::from_u8(self.state) {
            Some(TcpState::Established) if self.replied() => Class::Established,
            Some(s) if s.is_closing() => Class::Closing,
            Some(_) => Class::Embryonic,
            None if self.replied() => Class::Established,
            None => Class::Embryonic,
        }
    }

    /// The end reason when the flow ends by itself in its current state.
    fn natural_end(&self) -> EndReason {
        match TcpState::from_u8(self.state) {
            _ if self.class() == Class::Tombstone => EndReason::Timeout,
            Some(TcpState::TimeWait) => EndReason::Closed,
            Some(TcpState::Close) => EndReason::Reset,
            _ => EndReason::Timeout,
        }
    }
}

/// The part of a packet that state and accounting need.
#[derive(Clone, Copy, Debug)]
struct Packet {
    len: u32,
    tcp: Option<TcpSegment>,
    echo_reply: bool,
}

#[derive(Clone, Copy, Debug)]
struct TcpSegment {
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    /// Sequence space the segment takes (upper bound).
    len: u32,
}

impl Packet {
    #[inline]
    fn of(ip: &IpSummary, frame_len: u32) -> Packet {
        let tcp = match ip.transport {
            Transport::Tcp { flags, seq, ack, .. } => {
                // A first fragment carries only part of the segment: assume the largest datagram,
                // so the segment end stays an upper bound.
                let payload = if ip.fragment == Fragment::First { usize::from(u16::MAX) } else { ip.payload_len };
                Some(TcpSegment { flags, seq, ack, len: tcp::segment_len(payload, flags) })
            }
            _ => None,
        };
        let echo_reply =
            matches!(ip.transport, Transport::Icmp(i) if matches!(i.message, moat_wire::IcmpMessage::EchoReply { .. }));
        Packet { len: frame_len, tcp, echo_reply }
    }
}

/// The head, tail and length of one class list.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
}

/// What the rule generation check says about a packet of an existing entry.
enum Gate {
    Pass,
    Drop(CtDrop),
    /// A denied tombstone that no longer holds (the rules changed, or the other side opened a flow
    /// of its own): end it and treat the packet as new.
    Supersede,
}

/// A worker's connection table: owned by one thread, no locks, every byte allocated in
/// [`FlowTable::new`]. See the module documentation.
pub struct FlowTable {
    entries: Vec<Entry>,
    buckets: Vec<Bucket>,
    bucket_count: u64,
    index_bits: u32,
    index_mask: u32,
    tag_bits: u32,
    lists: [List; CLASSES],
    len: u32,
    cursor: u32,
    seed: HashSeed,
    timeout_ms: [u32; STATES],
    tcp_unreplied_ms: u32,
    denied_ms: u32,
    revalidate: bool,
    tcp_loose: bool,
    records: Arc<RecordQueue>,
    counters: Arc<ConntrackCounters>,
    now_ns: u64,
    now_ms: u32,
    /// The last generation passed to `track` (to widen stored 32-bit generations in records).
    generation: u64,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len)
            .field("capacity", &self.entries.len())
            .field("buckets", &self.buckets.len())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

#[inline]
fn millis(d: Duration) -> u32 {
    u32::try_from(d.min(MAX_TIMEOUT).as_millis()).unwrap_or(u32::MAX)
}

#[inline]
#[allow(clippy::cast_possible_truncation)] // wrapping to 32 bits is the representation
fn low32(x: u64) -> u32 {
    x as u32
}

fn timeout_table(t: &Timeouts) -> [u32; STATES] {
    let mut table = [0u32; STATES];
    let mut set = |state: u8, d: Duration| {
        if let Some(slot) = table.get_mut(usize::from(state)) {
            *slot = millis(d);
        }
    };
    set(TcpState::SynSent as u8, t.tcp_syn_sent);
    set(TcpState::SynRecv as u8, t.tcp_syn_recv);
    set(TcpState::Established as u8, t.tcp_established);
    set(TcpState::FinWait as u8, t.tcp_fin_wait);
    set(TcpState::CloseWait as u8, t.tcp_close_wait);
    set(TcpState::LastAck as u8, t.tcp_last_ack);
    set(TcpState::TimeWait as u8, t.tcp_time_wait);
    set(TcpState::Close as u8, t.tcp_close);
    set(TcpState::SynSent2 as u8, t.tcp_syn_sent);
    set(UDP_UNREPLIED, t.udp_unreplied);
    set(UDP_UNREPLIED + 1, t.udp_replied);
    set(SCTP_UNREPLIED, t.sctp_unreplied);
    set(SCTP_UNREPLIED + 1, t.sctp_replied);
    set(ICMP_UNREPLIED, t.icmp);
    set(ICMP_UNREPLIED + 1, t.icmp);
    set(GENERIC_UNREPLIED, t.generic);
    set(GENERIC_UNREPLIED + 1, t.generic);
    table
}

impl FlowTable {
    /// A table for `config.capacity` flows. Allocates (and touches) all its memory now; nothing
    /// after this allocates.
    pub fn new(config: ConntrackConfig, records: Arc<RecordQueue>) -> FlowTable {
        let capacity = config.capacity.clamp(MIN_CAPACITY, MAX_CAPACITY);
        let capacity32 = u32::try_from(capacity).unwrap_or(1 << 26);
        let index_bits = 32 - (capacity32 - 1).leading_zeros();
        let bucket_count = capacity.div_ceil(ENTRIES_PER_BUCKET).max(2);
        let mut table = FlowTable {
            entries: vec![Entry::EMPTY; capacity],
            buckets: vec![Bucket([0; SLOTS]); bucket_count],
            bucket_count: u64::try_from(bucket_count).unwrap_or(2),
            index_bits,
            index_mask: (1u32 << index_bits) - 1,
            tag_bits: 32 - index_bits,
            lists: [List { head: NIL, tail: NIL, len: 0 }; CLASSES],
            len: 0,
            cursor: 0,
            seed: config.hash_seed.map_or_else(HashSeed::random, HashSeed::from_u64),
            timeout_ms: timeout_table(&config.timeouts),
            tcp_unreplied_ms: millis(config.timeouts.tcp_unreplied),
            denied_ms: millis(config.timeouts.denied),
            revalidate: config.revalidate,
            tcp_loose: config.tcp_loose,
            records,
            counters: Arc::new(ConntrackCounters::new(capacity)),
            now_ns: u64::MAX,
            now_ms: 0,
            generation: 0,
        };
        for idx in 0..capacity32 {
            table.link(idx, Class::Free);
        }
        table
    }

    /// Flows (and tombstones) in the table.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn counters(&self) -> &Arc<ConntrackCounters> {
        &self.counters
    }

    /// Memory the table holds: entries, index and the table itself. It is all allocated (and
    /// written) in `new`, so it is resident.
    pub fn bytes(&self) -> usize {
        self.entries.capacity() * ENTRY_BYTES
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + std::mem::size_of::<FlowTable>()
    }

    /// [`FlowTable::bytes`] per flow of capacity.
    pub fn bytes_per_flow(&self) -> f64 {
        self.bytes() as f64 / self.capacity().max(1) as f64
    }

    /// Decides one parsed IP packet. `now_ns` is a monotonic clock read once per batch by the
    /// caller; `generation` is the rule table generation in force; `classify` is called only when
    /// policy must be consulted (a new flow, or a re-check after a generation change), with the key
    /// in the direction to check.
    #[inline]
    pub fn track(
        &mut self,
        ip: &IpSummary,
        vlan: &VlanTags,
        frame_len: u32,
        now_ns: u64,
        generation: u64,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        self.clock(now_ns);
        self.generation = generation;
        let identity = key::identify(ip, vlan);
        let hash = match &identity {
            Identity::Flow(key) => key.hash(&self.seed),
            _ => 0,
        };
        self.decide(ip, vlan, frame_len, &identity, hash, low32(generation), classify)
    }

    /// [`FlowTable::track`] for a batch: `outcomes[i]` is the outcome of `inputs[i]`, exactly as if
    /// each were tracked in turn, but the memory each packet needs (two index buckets, then the
    /// entry they point at) is requested for several packets before any is decided, so that their
    /// cache misses overlap instead of queueing one after another.
    pub fn track_batch(
        &mut self,
        inputs: &[TrackInput],
        now_ns: u64,
        generation: u64,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
        outcomes: &mut [Outcome],
    ) {
        self.clock(now_ns);
        self.generation = generation;
        let generation32 = low32(generation);
        let mut identities = [Identity::Untracked; PIPELINE];
        let mut hashes = [0u64; PIPELINE];
        for (inputs, outcomes) in inputs.chunks(PIPELINE).zip(outcomes.chunks_mut(PIPELINE)) {
            for ((input, identity), hash) in inputs.iter().zip(identities.iter_mut()).zip(hashes.iter_mut()) {
                *identity = key::identify(&input.ip, &input.vlan);
                if let Identity::Flow(key) = identity {
                    *hash = key.hash(&self.seed);
                    self.touch_buckets(*hash);
                }
            }
            for (identity, hash) in identities.iter().zip(hashes.iter()).take(inputs.len()) {
                if let Identity::Flow(_) = identity {
                    self.touch_entry(*hash);
                }
            }
            for ((input, outcome), (identity, hash)) in
                inputs.iter().zip(outcomes.iter_mut()).zip(identities.iter().zip(hashes.iter()))
            {
                *outcome =
                    self.decide(&input.ip, &input.vlan, input.frame_len, identity, *hash, generation32, classify);
            }
        }
    }

    #[inline]
    #[allow(clippy::too_many_arguments)] // the packet path's state, passed down rather than stored
    fn decide(
        &mut self,
        ip: &IpSummary,
        vlan: &VlanTags,
        frame_len: u32,
        identity: &Identity,
        hash: u64,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        match identity {
            Identity::Flow(key) => self.track_flow(key, hash, Packet::of(ip, frame_len), generation, classify),
            Identity::Error(quote) => self.track_error(ip, quote, vlan, frame_len, generation, classify),
            Identity::Untracked => {
                // Neighbour/router discovery, timestamps and the like have no reply that pairs with
                // a request in a way a table could use, and several are multicast: remembering them
                // would fill the table with entries that never mean anything. Policy decides each.
                self.counters.untracked();
                let (icmp_type, code) = match ip.transport {
                    Transport::Icmp(i) => (i.icmp_type, i.code),
                    _ => (0, 0),
                };
                let key = FlowKey {
                    src: ip.src,
                    dst: ip.dst,
                    protocol: ip.protocol,
                    src_port: 0,
                    dst_port: 0,
                    icmp: Some((icmp_type, code)),
                };
                match classify(&key).verdict {
                    Verdict::Allow => Outcome::Forward,
                    Verdict::Deny => Outcome::Drop(CtDrop::PolicyDenied),
                }
            }
        }
    }

    /// Loads the first word of both index buckets of `hash`: the loads of a batch's packets are
    /// independent, so the core keeps many cache misses in flight. (A prefetch instruction would
    /// not hold up retirement, but is `unsafe` to call, and this module has no unsafe code.)
    #[inline]
    fn touch_buckets(&self, hash: u64) {
        let (b1, b2, _) = self.place(hash);
        let first = |b: usize| self.buckets.get(b).map_or(0, |b| b.0[0]);
        std::hint::black_box(first(b1) ^ first(b2));
    }

    /// Loads the lines of the entry the key's tag points at (the bucket is cached by now).
    #[inline]
    fn touch_entry(&self, hash: u64) {
        let (b1, b2, tag) = self.place(hash);
        let tag_mask = !self.index_mask;
        let candidate = [b1, b2].into_iter().find_map(|b| {
            let slots = &self.buckets.get(b)?.0;
            slots.iter().find(|s| **s & tag_mask == tag).map(|s| s & self.index_mask)
        });
        if let Some(e) = candidate.and_then(|idx| self.entries.get(idx as usize)) {
            // The key (first line), the per-packet state and the counters (the next one or two).
            std::hint::black_box(e.addr[0][0] ^ u64::from(e.last_seen_ms) ^ e.packets[0] ^ e.bytes[1]);
        }
    }

    /// Ends flows whose timeout passed, examining at most `budget` entries from where the last call
    /// stopped (a full sweep every `capacity / budget` calls). Returns the number ended.
    pub fn expire(&mut self, now_ns: u64, budget: usize) -> usize {
        self.clock(now_ns);
        let capacity = self.entries.len();
        let mut ended = 0;
        for _ in 0..budget.min(capacity) {
            let idx = self.cursor;
            self.cursor = if (idx as usize) + 1 >= capacity { 0 } else { idx + 1 };
            let Some(e) = self.entries.get(idx as usize) else { continue };
            if e.class() != Class::Free && self.expired(e) {
                let reason = e.natural_end();
                self.end(idx, None, reason, None);
                ended += 1;
            }
        }
        ended
    }

    /// Ends every flow with [`EndReason::Shutdown`] (a record each), for a stopping worker.
    pub fn drain(&mut self, now_ns: u64) {
        self.clock(now_ns);
        for class in [Class::Tombstone, Class::Embryonic, Class::Closing, Class::Established] {
            while let Some(head) = self.head(class) {
                self.end(head, None, EndReason::Shutdown, None);
            }
        }
    }

    /// The state of the flow `ip` belongs to, if tracked (expired flows included until swept).
    pub fn flow_state(&self, ip: &IpSummary, vlan: &VlanTags) -> Option<FlowState> {
        let Identity::Flow(key) = key::identify(ip, vlan) else { return None };
        let (idx, _) = self.find(&key, key.hash(&self.seed))?;
        let e = self.entries.get(idx as usize)?;
        Some(match e.class() {
            Class::Tombstone if e.meta & REVOKED != 0 => FlowState::Revoked,
            Class::Tombstone => FlowState::Denied,
            _ => match TcpState::from_u8(e.state) {
                Some(s) => FlowState::Tcp(s),
                None if e.replied() => FlowState::Replied,
                None => FlowState::Unreplied,
            },
        })
    }

    // ---- the packet paths ----

    #[inline]
    fn track_flow(
        &mut self,
        key: &PacketKey,
        hash: u64,
        packet: Packet,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        if let Some((idx, original)) = self.find(key, hash) {
            match self.entries.get(idx as usize) {
                Some(e) if self.expired(e) => {
                    let reason = e.natural_end();
                    self.end(idx, Some(hash), reason, None);
                }
                Some(_) => return self.existing(idx, hash, original, key, packet, generation, classify),
                None => {}
            }
        }
        self.new_flow(key, hash, packet, generation, classify)
    }

    #[inline]
    #[allow(clippy::too_many_arguments)] // the packet path's state, passed down rather than stored
    fn existing(
        &mut self,
        idx: u32,
        hash: u64,
        original: bool,
        key: &PacketKey,
        packet: Packet,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        let dir = usize::from(!original);
        match self.gate(idx, original, generation, classify) {
            Gate::Pass => {}
            Gate::Drop(drop) => {
                self.count(idx, dir, &packet, true);
                return Outcome::Drop(drop);
            }
            Gate::Supersede => {
                self.end(idx, Some(hash), EndReason::Superseded, None);
                return self.new_flow(key, hash, packet, generation, classify);
            }
        }
        if let Some(segment) = packet.tcp {
            return self.tcp(idx, hash, original, key, packet, segment, generation, classify);
        }
        let Some(e) = self.entries.get_mut(idx as usize) else { return Outcome::Drop(CtDrop::TableFull) };
        if !original && !e.replied() && e.state >= UDP_UNREPLIED {
            e.state += 1;
            let class = e.live_class();
            self.set_class(idx, class);
        }
        self.count(idx, dir, &packet, true);
        Outcome::Forward
    }

    /// Tombstones and rule generations: whether a packet of an existing entry may go on to its
    /// protocol's state machine.
    #[inline]
    fn gate(
        &mut self,
        idx: u32,
        original: bool,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Gate {
        let Some(e) = self.entries.get(idx as usize) else { return Gate::Drop(CtDrop::TableFull) };
        let current = e.generation == generation;
        match e.class() {
            Class::Tombstone if e.meta & REVOKED == 0 => {
                if !current || !original {
                    return Gate::Supersede;
                }
                self.counters.denied_packet();
                Gate::Drop(CtDrop::PolicyDenied)
            }
            Class::Tombstone => {
                if current {
                    self.counters.revoked_packet();
                    return Gate::Drop(CtDrop::Revoked);
                }
                let admission = self.recheck(idx, classify);
                if admission.verdict == Verdict::Allow {
                    self.readmit(idx, &admission, generation);
                    return Gate::Pass;
                }
                if let Some(e) = self.entries.get_mut(idx as usize) {
                    e.generation = generation;
                    e.set_admission(&admission);
                }
                self.counters.revoked_packet();
                Gate::Drop(CtDrop::Revoked)
            }
            _ if current || !self.revalidate => Gate::Pass,
            _ => {
                let admission = self.recheck(idx, classify);
                if admission.verdict == Verdict::Allow {
                    if let Some(e) = self.entries.get_mut(idx as usize) {
                        e.generation = generation;
                        e.set_admission(&admission);
                    }
                    return Gate::Pass;
                }
                self.revoke(idx, &admission, generation);
                self.counters.revoked_packet();
                Gate::Drop(CtDrop::Revoked)
            }
        }
    }

    /// Asks policy again about an existing flow, in its original direction.
    fn recheck(&mut self, idx: u32, classify: &mut impl FnMut(&FlowKey) -> Admission) -> Admission {
        self.counters.policy_checked();
        self.counters.revalidated();
        match self.entries.get(idx as usize) {
            Some(e) => classify(&e.key().policy_key()),
            None => Admission::bare(Verdict::Deny),
        }
    }

    /// A live flow the rules no longer allow: its record goes out now (end reason Revoked), and the
    /// entry stays as a tombstone that drops its packets until the rules change again.
    fn revoke(&mut self, idx: u32, admission: &Admission, generation: u32) {
        self.counters.revoked();
        self.restart_period(idx, EndReason::Revoked, Some(*admission));
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.meta |= REVOKED;
            e.generation = generation;
            e.set_admission(admission);
        }
        self.set_class(idx, Class::Tombstone);
    }

    /// A revoked flow allowed again: the tombstone's record goes out, and the connection goes on in
    /// the state it had.
    fn readmit(&mut self, idx: u32, admission: &Admission, generation: u32) {
        self.counters.readmitted();
        self.restart_period(idx, EndReason::Superseded, None);
        let Some(e) = self.entries.get_mut(idx as usize) else { return };
        e.meta &= !REVOKED;
        e.generation = generation;
        e.set_admission(admission);
        let class = e.live_class();
        self.set_class(idx, class);
    }

    /// Emits the record of an entry's current period and starts a new one (counters from zero).
    fn restart_period(&mut self, idx: u32, reason: EndReason, revoked_by: Option<Admission>) {
        let Some(e) = self.entries.get(idx as usize) else { return };
        self.emit(e, reason, revoked_by);
        let first_seen_s = self.now_s();
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.packets = [0; 2];
            e.bytes = [0; 2];
            e.first_seen_s = first_seen_s;
        }
    }

    #[allow(clippy::too_many_arguments)] // the packet path's state, passed down rather than stored
    fn tcp(
        &mut self,
        idx: u32,
        hash: u64,
        original: bool,
        key: &PacketKey,
        packet: Packet,
        segment: TcpSegment,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        let Some(e) = self.entries.get(idx as usize) else { return Outcome::Drop(CtDrop::TableFull) };
        let Some(event) = Event::of(segment.flags) else { return self.invalid(InvalidReason::TcpFlags) };
        let Some(state) = TcpState::from_u8(e.state) else { return self.invalid(InvalidReason::TcpState) };
        if event == Event::Syn && (state == TcpState::TimeWait || (state == TcpState::Close && original)) {
            // A new connection on the ports of a closed one: the old one's record goes out and
            // policy decides the new one.
            let reason = e.natural_end();
            self.end(idx, Some(hash), reason, None);
            return self.new_flow(key, hash, packet, generation, classify);
        }
        let step = tcp::step(state, original, event);
        if step == Step::Invalid {
            return self.invalid(InvalidReason::TcpState);
        }
        if let Err(reason) = check_sequence(e, state, original, event, &segment) {
            return self.invalid(reason);
        }
        let dir = usize::from(!original);
        if let Step::To(next) = step {
            let Some(e) = self.entries.get_mut(idx as usize) else { return Outcome::Drop(CtDrop::TableFull) };
            // A retransmitted FIN must not count as the other side's.
            let fin_again = event == Event::Fin && e.tcp_flags[dir] & tcp::flag_byte(TcpFlags::FIN) != 0;
            let next = if fin_again && state.is_closing() { state } else { next };
            let end = segment.seq.wrapping_add(segment.len);
            if state == TcpState::SynSent && event == Event::Syn && original {
                // A retransmitted SYN, possibly with a new ISN: the SYN-ACK must acknowledge it.
                e.next_seq = [end, segment.seq.wrapping_add(1)];
            } else if e.tcp_flags[dir] == 0 || tcp::after(end, e.next_seq[dir]) {
                e.next_seq[dir] = end;
            }
            e.tcp_flags[dir] |= tcp::flag_byte(segment.flags);
            e.state = next as u8;
            // The first reply or a state change may move the flow to another class.
            let class = e.live_class();
            if class != e.class() {
                self.set_class(idx, class);
            }
        }
        self.count(idx, dir, &packet, true);
        Outcome::Forward
    }

    /// Policy for a flow not in the table, and its entry.
    fn new_flow(
        &mut self,
        key: &PacketKey,
        hash: u64,
        packet: Packet,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        let mut picked_up = false;
        let state = match (key.kind(), packet.tcp) {
            (_, Some(segment)) => match Event::of(segment.flags) {
                None => return self.invalid(InvalidReason::TcpFlags),
                Some(Event::Syn) => TcpState::SynSent as u8,
                Some(Event::Ack) if self.tcp_loose => {
                    picked_up = true;
                    TcpState::Established as u8
                }
                Some(_) => return self.invalid(InvalidReason::TcpNotSyn),
            },
            (KeyKind::Echo, None) if packet.echo_reply => return self.invalid(InvalidReason::EchoReplyWithoutRequest),
            (KeyKind::Echo, None) => ICMP_UNREPLIED,
            (KeyKind::Ports, None) if key.protocol() == protocol::SCTP => SCTP_UNREPLIED,
            (KeyKind::Ports, None) => UDP_UNREPLIED,
            (KeyKind::Generic | KeyKind::Fragment, None) => GENERIC_UNREPLIED,
        };
        // Room first: under a flood into a full table, refusing costs a lookup, not a policy check.
        let victim = if (self.len as usize) < self.entries.len() {
            None
        } else {
            match self.victim() {
                Some(v) => Some(v),
                None => {
                    self.counters.table_full();
                    return Outcome::Drop(CtDrop::TableFull);
                }
            }
        };
        let admission = {
            self.counters.policy_checked();
            classify(&key.policy_key())
        };
        let class = if admission.verdict == Verdict::Deny {
            self.counters.denied();
            // A tombstone saves later policy checks, but is not worth a live flow's place.
            match victim {
                Some((_, EvictionClass::Embryonic | EvictionClass::Closing)) => {
                    self.counters.tombstone_skipped();
                    return Outcome::Drop(CtDrop::PolicyDenied);
                }
                _ => Class::Tombstone,
            }
        } else {
            Class::Embryonic
        };
        if let Some((v, why)) = victim {
            self.evict(v, why);
        }
        let Some(idx) = self.pop_free() else {
            self.counters.table_full();
            return Outcome::Drop(CtDrop::TableFull);
        };
        let now_s = self.now_s();
        let mut e = Entry {
            addr: [key.src, key.dst],
            ports: [key.src_port, key.dst_port],
            vlan_proto: key.vlan_proto,
            meta: key.meta | if picked_up { PICKED_UP } else { 0 },
            state,
            generation,
            last_seen_ms: self.now_ms,
            first_seen_s: now_s,
            ..Entry::EMPTY
        };
        e.set_admission(&admission);
        if let Some(segment) = packet.tcp {
            let end = segment.seq.wrapping_add(segment.len);
            // Until the responder speaks, its slot holds the least a SYN-ACK may acknowledge.
            e.next_seq = [end, segment.seq.wrapping_add(1)];
            e.tcp_flags[0] = tcp::flag_byte(segment.flags);
        }
        if let Some(slot) = self.entries.get_mut(idx as usize) {
            *slot = e;
        }
        self.link(idx, class);
        if !self.index_insert(hash, idx) {
            self.unlink(idx);
            self.link(idx, Class::Free);
            self.counters.index_full();
            return Outcome::Drop(CtDrop::TableFull);
        }
        self.len += 1;
        self.counters.inserted();
        self.publish_occupancy();
        self.count(idx, 0, &packet, true);
        if class == Class::Tombstone { Outcome::Drop(CtDrop::PolicyDenied) } else { Outcome::Forward }
    }

    /// An ICMP/ICMPv6 error: forwarded when it quotes a tracked, allowed flow (RELATED), counted on
    /// that flow in the direction the error travels, invalid otherwise.
    fn track_error(
        &mut self,
        ip: &IpSummary,
        quote: &moat_wire::QuotedPacket,
        vlan: &VlanTags,
        frame_len: u32,
        generation: u32,
        classify: &mut impl FnMut(&FlowKey) -> Admission,
    ) -> Outcome {
        // The quote is the packet its source sent; the error goes back to that source.
        if ip.dst != quote.src {
            return self.invalid(InvalidReason::IcmpErrorAddressMismatch);
        }
        let Some(quoted) = key::quoted_key(quote, vlan) else {
            return self.invalid(InvalidReason::UnrelatedIcmpError);
        };
        let hash = quoted.hash(&self.seed);
        let mut found = self.find(&quoted, hash).map(|(idx, original)| (idx, original, hash));
        if found.is_none() && quoted.kind() == KeyKind::Echo {
            // The quote says "echo" but not which way: it may be a reply.
            let reply = PacketKey { src_port: 0, dst_port: quoted.src_port, ..quoted };
            let hash = reply.hash(&self.seed);
            found = self.find(&reply, hash).map(|(idx, original)| (idx, original, hash));
        }
        let Some((idx, quote_original, hash)) = found else {
            return self.invalid(InvalidReason::UnrelatedIcmpError);
        };
        if let Some(e) = self.entries.get(idx as usize)
            && self.expired(e)
        {
            let reason = e.natural_end();
            self.end(idx, Some(hash), reason, None);
            return self.invalid(InvalidReason::UnrelatedIcmpError);
        }
        // The error travels against the quoted packet.
        let dir = usize::from(quote_original);
        let packet = Packet { len: frame_len, tcp: None, echo_reply: false };
        match self.gate(idx, true, generation, classify) {
            Gate::Pass => {
                self.counters.related();
                // Related packets are counted on the flow but do not keep it alive (as in Linux).
                self.count(idx, dir, &packet, false);
                Outcome::Forward
            }
            Gate::Drop(drop) => {
                self.count(idx, dir, &packet, false);
                Outcome::Drop(drop)
            }
            Gate::Supersede => Outcome::Drop(CtDrop::PolicyDenied),
        }
    }

    #[inline]
    fn invalid(&self, reason: InvalidReason) -> Outcome {
        self.counters.invalid(reason);
        Outcome::Drop(CtDrop::Invalid(reason))
    }

    /// Packet and byte counts (and TCP flags) of one packet, in direction `dir`; `touch` restarts
    /// the flow's timeout.
    #[inline]
    fn count(&mut self, idx: u32, dir: usize, packet: &Packet, touch: bool) {
        let now_ms = self.now_ms;
        let Some(e) = self.entries.get_mut(idx as usize) else { return };
        let dir = dir & 1;
        e.packets[dir] = e.packets[dir].wrapping_add(1);
        e.bytes[dir] = e.bytes[dir].wrapping_add(u64::from(packet.len));
        if let Some(segment) = packet.tcp {
            // A side's flags also say that its sequence numbers are tracked (`next_seq`), so a
            // packet the state machine did not take (ignored, or dropped by a revoked tombstone)
            // adds its flags only to a side already seen. Denied tombstones track no sequence.
            let denied = e.class() == Class::Tombstone && e.meta & REVOKED == 0;
            if e.tcp_flags[dir] != 0 || denied {
                e.tcp_flags[dir] |= tcp::flag_byte(segment.flags);
            }
        }
        if touch {
            e.last_seen_ms = now_ms;
        }
    }

    // ---- time ----

    #[inline]
    fn clock(&mut self, now_ns: u64) {
        if now_ns != self.now_ns {
            self.now_ns = now_ns;
            self.now_ms = low32(now_ns / 1_000_000);
        }
    }

    fn now_s(&self) -> u32 {
        low32(self.now_ns / 1_000_000_000)
    }

    #[inline]
    fn timeout_of(&self, e: &Entry) -> u32 {
        if e.class() == Class::Tombstone {
            return self.denied_ms;
        }
        if e.state == TcpState::Established as u8 && e.tcp_flags[1] == 0 {
            return self.tcp_unreplied_ms;
        }
        self.timeout_ms.get(usize::from(e.state)).copied().unwrap_or(0)
    }

    /// Idle for at least its timeout. A last-seen time "in the future" (a clock that went back)
    /// counts as just seen.
    #[inline]
    fn expired(&self, e: &Entry) -> bool {
        let idle = self.now_ms.wrapping_sub(e.last_seen_ms);
        idle < 1 << 31 && idle >= self.timeout_of(e)
    }

    // ---- ending flows and records ----

    /// Ends entry `idx`: its record goes out, and it leaves the index and returns to the free list.
    fn end(&mut self, idx: u32, hash: Option<u64>, reason: EndReason, revoked_by: Option<Admission>) {
        let Some(e) = self.entries.get(idx as usize) else { return };
        if e.class() == Class::Free {
            return;
        }
        self.emit(e, reason, revoked_by);
        let hash = hash.unwrap_or_else(|| e.key().hash(&self.seed));
        self.index_remove(hash, idx);
        self.unlink(idx);
        self.link(idx, Class::Free);
        self.len = self.len.saturating_sub(1);
        self.publish_occupancy();
    }

    fn evict(&mut self, idx: u32, why: EvictionClass) {
        let reason = match (why, self.entries.get(idx as usize)) {
            (EvictionClass::Expired, Some(e)) => e.natural_end(),
            _ => EndReason::Evicted,
        };
        self.counters.evicted(why);
        self.end(idx, None, reason, None);
    }

    /// The entry a new flow may replace: an expired one at the head of any list, else the oldest
    /// tombstone, embryonic or closing flow. Established flows are only ever replaced once expired.
    fn victim(&self) -> Option<(u32, EvictionClass)> {
        for class in [Class::Tombstone, Class::Embryonic, Class::Closing, Class::Established] {
            if let Some(head) = self.head(class)
                && self.entries.get(head as usize).is_some_and(|e| self.expired(e))
            {
                return Some((head, EvictionClass::Expired));
            }
        }
        [
            (Class::Tombstone, EvictionClass::Tombstone),
            (Class::Embryonic, EvictionClass::Embryonic),
            (Class::Closing, EvictionClass::Closing),
        ]
        .into_iter()
        .find_map(|(class, why)| self.head(class).map(|head| (head, why)))
    }

    fn emit(&self, e: &Entry, end: EndReason, revoked_by: Option<Admission>) {
        self.counters.ended(end);
        let pushed = self.records.push(self.record(e, end, revoked_by));
        self.counters.record(pushed);
    }

    fn record(&self, e: &Entry, end: EndReason, revoked_by: Option<Admission>) -> FlowRecord {
        let key = e.key();
        let kind = match key.kind() {
            KeyKind::Ports => FlowKind::Ports,
            KeyKind::Echo => FlowKind::Echo { identifier: e.ports[0] },
            KeyKind::Generic => FlowKind::Generic,
            KeyKind::Fragment => FlowKind::LaterFragments,
        };
        let vid = |shift: u32| u16::try_from((e.vlan_proto >> shift) & 0xfff).unwrap_or(0);
        let direction = |d: usize| DirectionCounts {
            packets: e.packets[d],
            bytes: e.bytes[d],
            tcp_flags: TcpFlags::from_bits(u16::from(e.tcp_flags[d])),
        };
        // Widen the stored 32-bit generation against the current one.
        let behind = low32(self.generation).wrapping_sub(e.generation);
        FlowRecord {
            key: key.policy_key(),
            kind,
            vlan: VlanIds { outer: vid(20), inner: vid(8) },
            first_seen_ns: u64::from(e.first_seen_s) * 1_000_000_000,
            last_seen_ns: self.ns_of(e.last_seen_ms),
            ended_ns: self.now_ns,
            original: direction(0),
            reply: direction(1),
            admission: e.admission(),
            generation: self.generation.wrapping_sub(u64::from(behind)),
            tcp_state: TcpState::from_u8(e.state),
            picked_up: e.meta & PICKED_UP != 0,
            end,
            revoked_by,
        }
    }

    /// The monotonic nanoseconds of a stored millisecond time (within 24 days of now).
    fn ns_of(&self, ms: u32) -> u64 {
        let behind = self.now_ms.wrapping_sub(ms);
        let behind = if behind < 1 << 31 { u64::from(behind) } else { 0 };
        let now_ms_floor = self.now_ns - self.now_ns % 1_000_000;
        now_ms_floor.saturating_sub(behind * 1_000_000)
    }

    // ---- class lists ----

    fn head(&self, class: Class) -> Option<u32> {
        let head = self.lists.get(class as usize)?.head;
        (head != NIL).then_some(head)
    }

    /// Appends `idx` to `class`'s list (it must be on none).
    fn link(&mut self, idx: u32, class: Class) {
        let Some(list) = self.lists.get_mut(class as usize) else { return };
        let tail = list.tail;
        list.tail = idx;
        if tail == NIL {
            list.head = idx;
        }
        list.len += 1;
        if let Some(t) = self.entries.get_mut(tail as usize) {
            t.next = idx;
        }
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.prev = tail;
            e.next = NIL;
            e.meta = (e.meta & !CLASS_MASK) | ((class as u8) << CLASS_SHIFT);
        }
    }

    /// Takes `idx` off its class list.
    fn unlink(&mut self, idx: u32) {
        let Some(e) = self.entries.get(idx as usize) else { return };
        let (prev, next, class) = (e.prev, e.next, e.class());
        match self.entries.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => {
                if let Some(list) = self.lists.get_mut(class as usize) {
                    list.head = next;
                }
            }
        }
        match self.entries.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => {
                if let Some(list) = self.lists.get_mut(class as usize) {
                    list.tail = prev;
                }
            }
        }
        if let Some(list) = self.lists.get_mut(class as usize) {
            list.len = list.len.saturating_sub(1);
        }
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.prev = NIL;
            e.next = NIL;
        }
    }

    fn set_class(&mut self, idx: u32, class: Class) {
        if self.entries.get(idx as usize).is_some_and(|e| e.class() != class) {
            self.unlink(idx);
            self.link(idx, class);
            self.publish_occupancy();
        }
    }

    fn pop_free(&mut self) -> Option<u32> {
        let idx = self.head(Class::Free)?;
        self.unlink(idx);
        Some(idx)
    }

    fn publish_occupancy(&self) {
        let n = |c: Class| self.lists.get(c as usize).map_or(0, |l| l.len);
        self.counters.set_occupancy(
            self.len,
            [n(Class::Tombstone), n(Class::Embryonic), n(Class::Closing), n(Class::Established)],
        );
    }

    // ---- the index ----

    /// A key's two buckets and its tag (already shifted into place).
    #[inline]
    fn place(&self, hash: u64) -> (usize, usize, u32) {
        // Multiply-shift maps 32 hash bits onto any bucket count without a division.
        let b1 = ((hash & 0xffff_ffff) * self.bucket_count) >> 32;
        let b2 = ((hash >> 32) * self.bucket_count) >> 32;
        let tag = low32(hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.tag_bits)).max(1);
        (usize::try_from(b1).unwrap_or(0), usize::try_from(b2).unwrap_or(0), tag << self.index_bits)
    }

    #[inline]
    fn find(&self, key: &PacketKey, hash: u64) -> Option<(u32, bool)> {
        let (b1, b2, tag) = self.place(hash);
        if let Some(hit) = self.find_in(b1, key, tag) {
            return Some(hit);
        }
        if b2 != b1 { self.find_in(b2, key, tag) } else { None }
    }

    #[inline]
    fn find_in(&self, bucket: usize, key: &PacketKey, tag: u32) -> Option<(u32, bool)> {
        let slots = &self.buckets.get(bucket)?.0;
        let tag_mask = !self.index_mask;
        // Compare all sixteen tags at once (vectorised), then check only the candidates.
        let mut hits = 0u32;
        for (i, slot) in slots.iter().enumerate() {
            hits |= u32::from(slot & tag_mask == tag) << i;
        }
        while hits != 0 {
            let i = hits.trailing_zeros() as usize;
            hits &= hits - 1;
            let idx = slots.get(i).copied().unwrap_or(0) & self.index_mask;
            if let Some(original) = self.entries.get(idx as usize).and_then(|e| e.orientation(key)) {
                return Some((idx, original));
            }
        }
        None
    }

    fn put(&mut self, bucket: usize, slot: u32) -> bool {
        let Some(b) = self.buckets.get_mut(bucket) else { return false };
        match b.0.iter_mut().find(|s| **s == 0) {
            Some(s) => {
                *s = slot;
                true
            }
            None => false,
        }
    }

    /// Adds entry `idx` under `hash`: into its first bucket when it has room (so that nearly every
    /// lookup reads one bucket), else its second, else after moving an occupant of either to that
    /// occupant's other bucket. `false` when that fails too.
    fn index_insert(&mut self, hash: u64, idx: u32) -> bool {
        let (b1, b2, tag) = self.place(hash);
        let slot = tag | idx;
        if self.put(b1, slot) || (b2 != b1 && self.put(b2, slot)) {
            return true;
        }
        for bucket in [b1, b2] {
            for i in 0..SLOTS {
                let Some(occupant) = self.buckets.get(bucket).and_then(|b| b.0.get(i)).copied() else { continue };
                let Some(e) = self.entries.get((occupant & self.index_mask) as usize) else { continue };
                let (o1, o2, _) = self.place(e.key().hash(&self.seed));
                let other = if o1 == bucket { o2 } else { o1 };
                if other != bucket && self.put(other, occupant) {
                    if let Some(s) = self.buckets.get_mut(bucket).and_then(|b| b.0.get_mut(i)) {
                        *s = slot;
                    }
                    return true;
                }
            }
        }
        false
    }

    fn index_remove(&mut self, hash: u64, idx: u32) {
        let (b1, b2, tag) = self.place(hash);
        let slot = tag | idx;
        for bucket in [b1, b2] {
            if let Some(s) = self.buckets.get_mut(bucket).and_then(|b| b.0.iter_mut().find(|s| **s == slot)) {
                *s = 0;
                return;
            }
        }
    }

    /// Share of live entries indexed in their first bucket (tests).
    #[cfg(test)]
    pub(crate) fn first_bucket_share(&self) -> f64 {
        let mut first = 0usize;
        for (b, bucket) in self.buckets.iter().enumerate() {
            for slot in bucket.0.iter().filter(|s| **s != 0) {
                let e = &self.entries[(slot & self.index_mask) as usize];
                first += usize::from(self.place(e.key().hash(&self.seed)).0 == b);
            }
        }
        first as f64 / self.len.max(1) as f64
    }

    #[cfg(test)]
    pub(crate) fn memory_fingerprint(&self) -> (usize, usize, usize, usize) {
        (
            self.entries.as_ptr() as usize,
            self.entries.capacity(),
            self.buckets.as_ptr() as usize,
            self.buckets.capacity(),
        )
    }

    /// Checks every structural invariant (tests): lists partition the arena, the index holds
    /// exactly the live entries, each in one of its buckets.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut seen = vec![false; self.entries.len()];
        let mut live = 0;
        for class in 0..CLASSES {
            let list = self.lists[class];
            let mut n = 0;
            let mut prev = NIL;
            let mut cur = list.head;
            while cur != NIL {
                let e = &self.entries[cur as usize];
                assert!(!seen[cur as usize], "entry {cur} on two lists");
                seen[cur as usize] = true;
                assert_eq!(e.class() as usize, class, "entry {cur} on the wrong list");
                assert_eq!(e.prev, prev);
                prev = cur;
                cur = e.next;
                n += 1;
            }
            assert_eq!(list.tail, prev);
            assert_eq!(list.len, n);
            if class != Class::Free as usize {
                live += n;
            }
        }
        assert!(seen.iter().all(|s| *s), "every entry is on a list");
        assert_eq!(live, self.len);
        let mut indexed = 0;
        for (b, bucket) in self.buckets.iter().enumerate() {
            for slot in bucket.0 {
                if slot == 0 {
                    continue;
                }
                indexed += 1;
                let idx = slot & self.index_mask;
                let e = &self.entries[idx as usize];
                assert_ne!(e.class(), Class::Free, "index points at a free entry");
                let (b1, b2, tag) = self.place(e.key().hash(&self.seed));
                assert!(b == b1 || b == b2, "entry {idx} in a bucket not its own");
                assert_eq!(slot & !self.index_mask, tag);
            }
        }
        assert_eq!(indexed, self.len, "index holds exactly the live entries");
    }
}

/// The sequence checks of one TCP segment against its connection (module docs of [`tcp`]).
#[inline]
fn check_sequence(
    e: &Entry,
    state: TcpState,
    original: bool,
    event: Event,
    segment: &TcpSegment,
) -> Result<(), InvalidReason> {
    let dir = usize::from(!original);
    let other = 1 - dir;
    match event {
        Event::Rst if state == TcpState::SynSent && !original => {
            // RFC 793: in SYN-SENT a reset is acceptable only if it acknowledges the SYN.
            if !segment.flags.ack() || !tcp::within(segment.ack, e.next_seq[1], e.next_seq[0]) {
                return Err(InvalidReason::RstOutOfWindow);
            }
            return Ok(());
        }
        Event::Rst => {
            let n = e.next_seq[dir];
            if e.tcp_flags[dir] != 0
                && !tcp::within(segment.seq, n.wrapping_sub(RST_WINDOW), n.wrapping_add(RST_WINDOW))
            {
                return Err(InvalidReason::RstOutOfWindow);
            }
            return Ok(());
        }
        Event::SynAck if state == TcpState::SynSent && !original => {
            if !tcp::within(segment.ack, e.next_seq[1], e.next_seq[0]) {
                return Err(InvalidReason::SynAckBadAck);
            }
            return Ok(());
        }
        _ => {}
    }
    if segment.flags.ack()
        && e.meta & PICKED_UP == 0
        && e.tcp_flags[other] != 0
        && tcp::after(segment.ack, e.next_seq[other].wrapping_add(ACK_SLACK))
    {
        return Err(InvalidReason::AckBeyondSent);
    }
    Ok(())
}
