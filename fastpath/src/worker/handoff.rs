//! Handing frames to the worker that owns their connection.
//!
//! Connection tracking is per worker and lock-free, so both directions of a connection must be
//! decided by the same worker. A worker serves one RX queue on both interfaces of its wire pair,
//! and which queue a frame arrives on is the NIC's (or, for veth, the sender's) choice: the two
//! directions of one connection can arrive on different queues. An AF_XDP socket only receives
//! from the queue it is bound to, so XDP cannot steer a frame to another queue's socket.
//!
//! moat therefore assigns every connection an **owner**: worker `owner_hash % n` among the `n`
//! workers of the pair, where the hash is symmetric (the same for both directions, and for an ICMP
//! error the same as for the connection it quotes). A worker that receives a frame it does not own
//! copies it into the owner's [`Mailbox`] and returns its own frame to the kernel at once; the
//! owner drains its mailbox every iteration, copies each frame into one of its own UMEM frames
//! and decides and forwards it like one of its own. The copy costs one `memcpy` of the frame —
//! small next to the kernel's copy-mode AF_XDP copy — and no frame ever crosses UMEMs, so each
//! worker's frame ledger stays single-owner.
//!
//! With one queue per interface there is nothing to hand off. On NICs configured for symmetric
//! RSS (both directions hashed to one queue) the receiving worker can own its flows and skip the
//! handoff: [`Steering::Queue`].
//!
//! A mailbox is a bounded lock-free queue (`crossbeam_queue::ArrayQueue`, multi-producer, one
//! consumer in practice) of fixed-size slots allocated at start: pushing copies into a slot and
//! never allocates. A full mailbox drops the frame (`handoff_full`, counted) rather than block
//! a worker on another.

use crossbeam_queue::ArrayQueue;

/// Largest frame a mailbox slot holds: the UMEM frame size, so every received frame fits.
pub const SLOT_BYTES: usize = 2048;

/// Slots per mailbox: 2 MiB per worker, a few batches of every peer.
pub const MAILBOX_SLOTS: usize = 1024;

/// Who decides a connection's frames when a pair has several queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Steering {
    /// The worker chosen by the connection's symmetric hash; others hand frames to it. Correct
    /// whatever queue each direction arrives on.
    #[default]
    Hash,
    /// The worker that receives a frame decides it. Only correct when the NIC delivers both
    /// directions of a connection to the same queue (symmetric RSS).
    Queue,
}

/// Which way a frame crosses the wire pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// Received on interface A, leaves on B.
    AToB,
    BToA,
}

/// One frame on its way to its owner.
#[derive(Debug, Clone)]
pub struct HandedFrame {
    pub crossing: Crossing,
    len: u16,
    bytes: [u8; SLOT_BYTES],
}

impl HandedFrame {
    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// The inbox of one worker.
#[derive(Debug)]
pub struct Mailbox {
    queue: ArrayQueue<HandedFrame>,
}

/// Why a frame could not be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffError {
    /// The owner's mailbox is full (the owner is behind).
    Full,
    /// Larger than a slot (cannot happen with 2048-byte UMEM frames).
    TooLarge,
}

impl Mailbox {
    pub fn new(slots: usize) -> Mailbox {
        Mailbox { queue: ArrayQueue::new(slots.max(1)) }
    }

    /// Copies `frame` into the mailbox.
    #[inline]
    pub fn push(&self, crossing: Crossing, frame: &[u8]) -> Result<(), HandoffError> {
        let len = u16::try_from(frame.len()).map_err(|_| HandoffError::TooLarge)?;
        if frame.len() > SLOT_BYTES {
            return Err(HandoffError::TooLarge);
        }
        if self.queue.is_full() {
            return Err(HandoffError::Full);
        }
        let mut slot = HandedFrame { crossing, len, bytes: [0; SLOT_BYTES] };
        if let Some(dst) = slot.bytes.get_mut(..frame.len()) {
            dst.copy_from_slice(frame);
        }
        self.queue.push(slot).map_err(|_| HandoffError::Full)
    }

    /// The oldest frame, if any.
    #[inline]
    pub fn pop(&self) -> Option<HandedFrame> {
        self.queue.pop()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The mailboxes of all workers of one wire pair, indexed by queue, and this worker's place.
#[derive(Debug, Clone)]
pub struct PairRoute {
    pub mailboxes: std::sync::Arc<[Mailbox]>,
    /// This worker's index in `mailboxes`.
    pub me: usize,
}

impl PairRoute {
    /// Mailboxes for `workers` workers of one pair.
    pub fn mailboxes(workers: usize) -> std::sync::Arc<[Mailbox]> {
        (0..workers).map(|_| Mailbox::new(MAILBOX_SLOTS)).collect()
    }

    /// Index of the worker owning a connection with this symmetric hash.
    #[inline]
    pub fn owner(&self, hash: u64) -> usize {
        let n = self.mailboxes.len().max(1) as u64;
        // Lemire's multiply-shift: uniform over n without a division; the result is below n.
        usize::try_from((u128::from(hash) * u128::from(n)) >> 64).unwrap_or(0)
    }

    pub fn mine(&self) -> Option<&Mailbox> {
        self.mailboxes.get(self.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn frames_travel_in_order_with_their_bytes_and_crossing() {
        let mailbox = Mailbox::new(4);
        mailbox.push(Crossing::AToB, &[1, 2, 3]).unwrap();
        mailbox.push(Crossing::BToA, &[9; SLOT_BYTES]).unwrap();
        let first = mailbox.pop().unwrap();
        assert_eq!((first.crossing, first.bytes()), (Crossing::AToB, &[1u8, 2, 3][..]));
        let second = mailbox.pop().unwrap();
        assert_eq!((second.crossing, second.bytes().len()), (Crossing::BToA, SLOT_BYTES));
        assert!(mailbox.pop().is_none());
    }

    #[test]
    fn a_full_mailbox_refuses_instead_of_blocking_and_oversize_is_refused() {
        let mailbox = Mailbox::new(2);
        mailbox.push(Crossing::AToB, &[0; 60]).unwrap();
        mailbox.push(Crossing::AToB, &[0; 60]).unwrap();
        assert_eq!(mailbox.push(Crossing::AToB, &[0; 60]), Err(HandoffError::Full));
        assert_eq!(mailbox.push(Crossing::AToB, &[0; SLOT_BYTES + 1]), Err(HandoffError::TooLarge));
    }

    #[test]
    fn owners_are_spread_over_all_workers_and_in_range() {
        let route = PairRoute { mailboxes: PairRoute::mailboxes(3), me: 0 };
        let mut seen = [0u32; 3];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..30_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seen[route.owner(x)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 9_000), "{seen:?}");
    }

    #[test]
    fn producers_on_other_threads_reach_the_owner() {
        let boxes = PairRoute::mailboxes(2);
        let producer = {
            let boxes = Arc::clone(&boxes);
            std::thread::spawn(move || {
                for i in 0..500u16 {
                    while boxes[1].push(Crossing::AToB, &i.to_be_bytes()).is_err() {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut got = Vec::new();
        while got.len() < 500 {
            if let Some(f) = boxes[1].pop() {
                got.push(u16::from_be_bytes([f.bytes()[0], f.bytes()[1]]));
            }
        }
        producer.join().unwrap();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
    }
}
