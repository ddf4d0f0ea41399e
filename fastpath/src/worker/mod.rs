//! A worker: one thread serving one RX queue of one wire pair.
//!
//! The worker owns a UMEM and two AF_XDP sockets sharing it, one on each interface of the pair, bound
//! to the same queue number. Its loop, per iteration:
//!
//! 1. load the current rule table (once per batch: the whole batch is decided by one generation)
//!    and read the clock once for the batch;
//! 2. for each direction, take up to `batch` frames from the RX ring, decide each one (parse,
//!    connection tracking, policy for new flows: [`decide`]), and queue the ones to forward on the
//!    *other* socket's TX ring — the descriptor moves, the bytes never do; frames of connections
//!    another worker owns are copied to that worker's mailbox ([`handoff`]);
//! 3. decide and forward the frames other workers handed over (copied into this worker's UMEM);
//! 4. expire a bounded slice of the flow table;
//! 5. reclaim transmitted frames from both completion rings, and top up both fill rings;
//! 6. when several iterations found nothing to do, sleep in poll(2) until traffic arrives (unless
//!    configured to busy-poll), so an idle worker does not burn a core.

pub mod decide;
pub mod handoff;

use crate::classify::{RuleTable, TableHandle};
use crate::conntrack::{FlowTable, Outcome, TrackInput, now_ns};
use crate::stats::{DropCause, WorkerStats};
use crate::xsk::{Census, Frame, Owner, Umem, XskSocket, wait_readable};
pub use decide::{Context, Decision, Triage, decide, decision_of, triage};
use handoff::{Crossing, PairRoute};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a worker decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerMode {
    /// Parse, classify, forward or drop.
    #[default]
    Filter,
    /// Forward every frame without looking at it: the baseline a filter is measured against.
    Bare,
}

/// What a worker does when there is no traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Spin forever: lowest latency, one core at 100%.
    BusyPoll,
    /// After `spins` empty iterations, sleep in poll(2) for up to `timeout_ms`.
    Sleep { spins: u32, timeout_ms: i32 },
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy::Sleep { spins: 256, timeout_ms: 100 }
    }
}

/// Worker tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Frames taken from an RX ring per batch.
    pub batch: u32,
    pub idle: IdlePolicy,
    pub mode: WorkerMode,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig { batch: 64, idle: IdlePolicy::default(), mode: WorkerMode::Filter }
    }
}

/// What a worker reports when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerExit {
    /// Frame owners after draining: everything not lent to the kernel's fill rings is back in the
    /// free list (`user == 0`, `tx == 0` unless the kernel never completed a transmission).
    pub census: Census,
    /// Kernel descriptors refused by the frame ledger over the worker's life.
    pub refused_descriptors: u64,
}

/// Flow-table slots examined for expiry per iteration: bounded work, and a full sweep of a
/// 262,144-entry table every few thousand iterations.
const EXPIRE_BUDGET: usize = 64;

/// One direction's sockets: frames arrive on `rx`, leave on `tx`.
struct Direction<'a> {
    rx: &'a mut XskSocket,
    tx: &'a mut XskSocket,
    crossing: Crossing,
}

/// A worker for one (wire pair, queue).
#[derive(Debug)]
pub struct Worker {
    // Sockets before the UMEM: fields drop in order, and the rings must go before the memory.
    a: XskSocket,
    b: XskSocket,
    umem: Umem,
    tables: Arc<TableHandle>,
    stats: Arc<WorkerStats>,
    config: WorkerConfig,
    /// TX descriptors pending after the previous iteration (to tell progress from a stuck link).
    last_pending_tx: u32,
    flows: FlowTable,
    /// Mailboxes of the pair's workers, when connections are steered by hash (several queues).
    route: Option<PairRoute>,
    batch: Batch,
}

impl Worker {
    /// Builds a worker and lends the kernel its first frames (both fill rings full), so the sockets
    /// can receive from the moment they are registered with the redirector.
    #[allow(clippy::too_many_arguments)] // each is one distinct part the dataplane wires together
    pub fn new(
        umem: Umem,
        a: XskSocket,
        b: XskSocket,
        tables: Arc<TableHandle>,
        stats: Arc<WorkerStats>,
        config: WorkerConfig,
        flows: FlowTable,
        route: Option<PairRoute>,
    ) -> Worker {
        let batch = Batch::with_capacity(config.batch);
        let mut worker = Worker { a, b, umem, tables, stats, config, last_pending_tx: 0, flows, route, batch };
        worker.refill();
        worker
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Runs until `stop` is set, then drains and reports.
    pub fn run(mut self, stop: &AtomicBool) -> WorkerExit {
        let mut idle_iterations = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let moved = self.iteration();
            if moved > 0 {
                idle_iterations = 0;
                continue;
            }
            idle_iterations = idle_iterations.saturating_add(1);
            match self.config.idle {
                IdlePolicy::BusyPoll => std::hint::spin_loop(),
                IdlePolicy::Sleep { spins, timeout_ms } if idle_iterations >= spins => {
                    self.stats.idle_wait();
                    // An error here (EINTR is already filtered) would repeat at once; fall back to
                    // spinning for this round rather than failing the worker.
                    let _ = wait_readable(&[&self.a, &self.b], timeout_ms);
                }
                IdlePolicy::Sleep { .. } => std::hint::spin_loop(),
            }
        }
        self.drain()
    }

    /// One pass over both directions; returns the number of frames received (plus one when transmissions
    /// are still pending), zero when there was nothing to do.
    pub fn iteration(&mut self) -> u32 {
        let table = self.tables.load();
        self.stats.batch(table.generation());
        let now = now_ns();
        let mut moved = 0;
        {
            let Worker { a, b, umem, stats, config, flows, route, batch, .. } = self;
            let mut cx = Context { table: &table, flows, now_ns: now, route: route.as_ref() };
            let a_to_b = Direction { rx: a, tx: b, crossing: Crossing::AToB };
            moved += forward(a_to_b, umem, stats, &mut cx, config, batch);
            let b_to_a = Direction { rx: b, tx: a, crossing: Crossing::BToA };
            moved += forward(b_to_a, umem, stats, &mut cx, config, batch);
        }
        moved += self.forward_handed_over(&table, now);
        drop(table);
        self.flows.expire(now, EXPIRE_BUDGET);
        let ring = self.a.ring_size();
        let pool = self.umem.pool_mut();
        self.a.reclaim_completed(pool, ring);
        self.b.reclaim_completed(pool, ring);
        self.refill();
        // Frames still waiting on a TX ring are work: kick them, and do not go to sleep on them — as
        // long as the kernel takes them. When it does not (peer link down), the worker may sleep; the
        // next iteration kicks again.
        let pending = self.a.flush_tx() + self.b.flush_tx();
        let progressing = pending > 0 && pending != self.last_pending_tx;
        self.last_pending_tx = pending;
        moved + u32::from(progressing)
    }

    /// Decides and forwards up to one batch of the frames other workers handed over: each is copied
    /// into a free frame of this worker's UMEM and queued on the TX ring of its way out.
    fn forward_handed_over(&mut self, table: &RuleTable, now: u64) -> u32 {
        let Worker { a, b, umem, stats, config, flows, route, .. } = self;
        let Some(mailbox) = route.as_ref().and_then(PairRoute::mine) else { return 0 };
        if mailbox.is_empty() {
            return 0;
        }
        let (room_a, room_b) = (a.tx_free(config.batch), b.tx_free(config.batch));
        let (mut queued_a, mut queued_b) = (0, 0);
        let mut taken = 0;
        // The owner decides: no further handoff.
        let mut cx = Context { table, flows, now_ns: now, route: None };
        while taken < config.batch {
            let Some(handed) = mailbox.pop() else { break };
            taken += 1;
            stats.handoff_received();
            let bytes = handed.bytes();
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            match decide(bytes, handed.crossing, &mut cx) {
                Decision::Forward | Decision::Bridge | Decision::HandedOff => {
                    let (tx, queued, room) = match handed.crossing {
                        Crossing::AToB => (&mut *b, &mut queued_b, room_b),
                        Crossing::BToA => (&mut *a, &mut queued_a, room_a),
                    };
                    if *queued >= room {
                        stats.dropped(DropCause::TxRingFull);
                        continue;
                    }
                    let Some(mut frame) = umem.pool_mut().alloc() else {
                        stats.dropped(DropCause::NoFreeFrame);
                        continue;
                    };
                    match umem.bytes_mut(&mut frame, 0, len) {
                        Some(dst) => dst.copy_from_slice(bytes),
                        None => {
                            umem.pool_mut().release(frame);
                            stats.dropped(DropCause::BadDescriptor);
                            continue;
                        }
                    }
                    tx.tx_write(umem.pool_mut(), *queued, frame, 0, len);
                    stats.transmitted(len);
                    *queued += 1;
                }
                Decision::Drop(cause) => stats.dropped(cause),
            }
        }
        a.tx_submit(queued_a);
        b.tx_submit(queued_b);
        taken
    }

    fn refill(&mut self) {
        let ring = self.a.ring_size();
        let pool = self.umem.pool_mut();
        self.a.refill(pool, ring);
        self.b.refill(pool, ring);
    }

    /// Takes back every frame the kernel will return: completions for frames still in TX rings.
    /// Frames on the fill rings stay lent until the sockets close. Every tracked flow ends with a
    /// record (end reason: shutdown).
    fn drain(mut self) -> WorkerExit {
        self.flows.drain(now_ns());
        for _ in 0..100 {
            let pool = self.umem.pool_mut();
            let ring = self.a.ring_size();
            self.a.reclaim_completed(pool, ring);
            self.b.reclaim_completed(pool, ring);
            if self.umem.pool().census().tx == 0 {
                break;
            }
            self.a.kick_tx();
            self.b.kick_tx();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        WorkerExit { census: self.umem.pool().census(), refused_descriptors: self.umem.pool().refused() }
    }
}

/// What is known about one received frame between triage and transmission.
#[derive(Debug)]
enum Pending {
    Decided(Decision),
    /// Waiting for the flow table: the index of its input in [`Batch::inputs`].
    Tracked(usize),
}

/// Per-batch scratch space, allocated once per worker for the largest batch: deciding a batch
/// allocates nothing.
#[derive(Debug)]
pub(crate) struct Batch {
    frames: Vec<(Frame, u32, u32, Pending)>,
    inputs: Vec<TrackInput>,
    outcomes: Vec<Outcome>,
}

impl Batch {
    fn with_capacity(batch: u32) -> Batch {
        let n = batch as usize;
        Batch { frames: Vec::with_capacity(n), inputs: Vec::with_capacity(n), outcomes: vec![Outcome::Forward; n] }
    }
}

/// Moves up to one batch from `dir.rx` to `dir.tx`: every frame is triaged (parsed, bridged, handed
/// to its owner, or kept for tracking), the kept ones are tracked together
/// ([`FlowTable::track_batch`](crate::conntrack::FlowTable::track_batch), whose lookups overlap
/// their cache misses), then each frame is transmitted or released in RX order. Returns the number
/// of frames received.
fn forward(
    dir: Direction<'_>,
    umem: &mut Umem,
    stats: &WorkerStats,
    cx: &mut Context<'_>,
    config: &WorkerConfig,
    batch: &mut Batch,
) -> u32 {
    let received = dir.rx.rx_available(config.batch);
    if received == 0 {
        return 0;
    }
    batch.frames.clear();
    batch.inputs.clear();
    for i in 0..received {
        let (addr, len) = dir.rx.rx_peek(i);
        let Some(frame) = umem.pool_mut().take_from_kernel(addr, Owner::Fill) else {
            stats.dropped(DropCause::BadDescriptor);
            continue;
        };
        stats.received(len);
        let offset = umem.offset_in_frame(addr);
        let pending = match config.mode {
            WorkerMode::Bare => Pending::Decided(Decision::Forward),
            WorkerMode::Filter => match umem.bytes(&frame, offset, len) {
                Some(bytes) => match triage(bytes, dir.crossing, cx.route) {
                    Triage::Done(decision) => Pending::Decided(decision),
                    Triage::Track(input) => {
                        batch.inputs.push(input);
                        Pending::Tracked(batch.inputs.len() - 1)
                    }
                },
                None => Pending::Decided(Decision::Drop(DropCause::BadDescriptor)),
            },
        };
        batch.frames.push((frame, offset, len, pending));
    }
    let tracked = batch.inputs.len();
    if tracked > 0 {
        let table = cx.table;
        let outcomes = batch.outcomes.get_mut(..tracked).unwrap_or_default();
        cx.flows.track_batch(&batch.inputs, cx.now_ns, table.generation(), &mut |key| table.admit(key), outcomes);
    }
    let room = dir.tx.tx_free(received);
    let mut queued = 0;
    for (frame, offset, len, pending) in batch.frames.drain(..) {
        let decision = match pending {
            Pending::Decided(decision) => decision,
            Pending::Tracked(k) => {
                batch.outcomes.get(k).map_or(Decision::Drop(DropCause::BadDescriptor), |o| decision_of(*o))
            }
        };
        match decision {
            Decision::Forward | Decision::Bridge if queued < room => {
                if decision == Decision::Bridge {
                    stats.bridged_non_ip();
                }
                dir.tx.tx_write(umem.pool_mut(), queued, frame, offset, len);
                stats.transmitted(len);
                queued += 1;
            }
            Decision::Forward | Decision::Bridge => {
                umem.pool_mut().release(frame);
                stats.dropped(DropCause::TxRingFull);
            }
            Decision::HandedOff => {
                umem.pool_mut().release(frame);
                stats.handed_off();
            }
            Decision::Drop(cause) => {
                umem.pool_mut().release(frame);
                stats.dropped(cause);
            }
        }
    }
    dir.rx.rx_release(received);
    dir.tx.tx_submit(queued);
    received
}
