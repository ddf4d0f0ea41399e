//! Frame ownership: who holds each UMEM frame, checked at every hand-over.
//!
//! A UMEM is cut into `count` frames of `size` bytes. At every moment each frame has exactly one
//! owner: the pool's free list, userspace (a [`Frame`] value), the kernel through a fill ring (it will
//! come back on an RX ring), or the kernel through a TX ring (it will come back on a completion ring).
//!
//! Two mechanisms make double use and leaks impossible:
//! - In userspace a frame is a [`Frame`], which is neither `Clone` nor `Copy` and is consumed by
//!   every operation that gives it away ([`FramePool::release`], [`FramePool::give_to_kernel`]). Safe
//!   code cannot hold the same frame twice or use it after handing it over.
//! - At the kernel boundary addresses come back as plain integers. [`FramePool::take_from_kernel`]
//!   checks them against the ledger (one byte per frame): an address that is out of range, or that is
//!   not currently owned by the ring it came back on, is refused and counted, never turned into a
//!   second `Frame`. This costs one byte load and store per frame.
//!
//! `FramePool::census` counts frames per owner; tests assert conservation (the counts add up to
//! `count`, and everything is back in the free list once the rings are drained).

/// The owner of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Owner {
    /// In the pool's free list.
    Free,
    /// Held by userspace as a [`Frame`].
    User,
    /// Given to the kernel on a fill ring; comes back on an RX ring.
    Fill,
    /// Given to the kernel on a TX ring; comes back on a completion ring.
    Tx,
}

/// Exclusive ownership of one UMEM frame. Not `Clone`, not `Copy`: holding one proves nobody else
/// (neither other code nor the kernel) uses the frame.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a Frame must be released, forwarded or given back to the kernel, or it leaks"]
pub struct Frame {
    /// Base address of the frame inside the UMEM.
    base: u64,
    /// Which UMEM the frame belongs to (see `Umem::id`).
    umem: u32,
}

impl Frame {
    /// Offset of the frame's first byte inside the UMEM.
    pub fn base(&self) -> u64 {
        self.base
    }

    pub(crate) fn umem_id(&self) -> u32 {
        self.umem
    }
}

/// Frames per owner at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub free: u32,
    pub user: u32,
    pub fill: u32,
    pub tx: u32,
}

impl Census {
    pub fn total(&self) -> u32 {
        self.free + self.user + self.fill + self.tx
    }
}

/// Free list and ledger of one UMEM's frames.
#[derive(Debug)]
pub struct FramePool {
    umem: u32,
    frame_shift: u32,
    ledger: Box<[Owner]>,
    free: Vec<Frame>,
    /// Addresses the kernel handed back that we could not accept (out of range, wrong owner).
    refused: u64,
}

impl FramePool {
    /// A pool of `count` frames of `1 << frame_shift` bytes, all free.
    pub fn new(umem: u32, frame_shift: u32, count: u32) -> FramePool {
        let ledger = vec![Owner::Free; count as usize].into_boxed_slice();
        // Lowest addresses on top of the stack: they are handed out first.
        let free = (0..u64::from(count)).rev().map(|i| Frame { base: i << frame_shift, umem }).collect();
        FramePool { umem, frame_shift, ledger, free, refused: 0 }
    }

    pub fn capacity(&self) -> u32 {
        // The ledger was built from a `u32` count.
        u32::try_from(self.ledger.len()).unwrap_or(u32::MAX)
    }

    pub fn free_len(&self) -> usize {
        self.free.len()
    }

    /// Number of kernel addresses refused so far (each one a kernel/driver bug or a memory error).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Takes a free frame.
    pub fn alloc(&mut self) -> Option<Frame> {
        let frame = self.free.pop()?;
        self.set(&frame, Owner::User);
        Some(frame)
    }

    /// Returns a frame to the free list.
    pub fn release(&mut self, frame: Frame) {
        self.set(&frame, Owner::Free);
        self.free.push(frame);
    }

    /// Records that `frame` goes to the kernel on a ring of kind `ring` (`Fill` or `Tx`) and returns
    /// the address to put in the descriptor. The frame is consumed: it comes back only through
    /// [`take_from_kernel`](Self::take_from_kernel).
    pub(crate) fn give_to_kernel(&mut self, frame: Frame, ring: Owner, offset: u64) -> u64 {
        debug_assert!(matches!(ring, Owner::Fill | Owner::Tx));
        self.set(&frame, ring);
        frame.base + offset
    }

    /// Turns an address the kernel handed back on a ring of kind `ring` into a [`Frame`], if the
    /// ledger says that ring owns it. Otherwise counts a refusal and returns `None`.
    pub(crate) fn take_from_kernel(&mut self, addr: u64, ring: Owner) -> Option<Frame> {
        let index = usize::try_from(addr >> self.frame_shift).ok()?;
        match self.ledger.get_mut(index) {
            Some(owner) if *owner == ring => {
                *owner = Owner::User;
                Some(Frame { base: (index as u64) << self.frame_shift, umem: self.umem })
            }
            _ => {
                self.refused += 1;
                None
            }
        }
    }

    /// Counts the frames of each owner (walks the ledger: for tests and diagnostics, not the hot path).
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for owner in self.ledger.iter() {
            match owner {
                Owner::Free => census.free += 1,
                Owner::User => census.user += 1,
                Owner::Fill => census.fill += 1,
                Owner::Tx => census.tx += 1,
            }
        }
        census
    }

    fn set(&mut self, frame: &Frame, owner: Owner) {
        // A `Frame` is only ever built by this pool for an index inside the ledger.
        if let Some(slot) = usize::try_from(frame.base >> self.frame_shift).ok().and_then(|i| self.ledger.get_mut(i)) {
            *slot = owner;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fresh_pool_is_all_free() {
        let pool = FramePool::new(0, 11, 64);
        assert_eq!(pool.census(), Census { free: 64, user: 0, fill: 0, tx: 0 });
        assert_eq!(pool.free_len(), 64);
    }

    #[test]
    fn frames_are_distinct_and_aligned() {
        let mut pool = FramePool::new(0, 11, 16);
        let frames: Vec<Frame> = std::iter::from_fn(|| pool.alloc()).collect();
        assert_eq!(frames.len(), 16);
        let mut bases: Vec<u64> = frames.iter().map(Frame::base).collect();
        bases.sort_unstable();
        bases.dedup();
        assert_eq!(bases.len(), 16);
        assert!(bases.iter().all(|b| b % 2048 == 0 && *b < 16 * 2048));
        assert!(pool.alloc().is_none());
        frames.into_iter().for_each(|f| pool.release(f));
        assert_eq!(pool.census().free, 16);
    }

    #[test]
    fn kernel_round_trip_accepts_only_what_the_ring_owns() {
        let mut pool = FramePool::new(0, 11, 8);
        let frame = pool.alloc().unwrap();
        let addr = pool.give_to_kernel(frame, Owner::Fill, 256);
        assert_eq!(pool.census().fill, 1);
        // Coming back on the wrong ring kind is refused, and the ledger is unchanged.
        assert!(pool.take_from_kernel(addr, Owner::Tx).is_none());
        assert_eq!(pool.refused(), 1);
        // The headroom offset inside the frame does not matter; the base does.
        let back = pool.take_from_kernel(addr, Owner::Fill).unwrap();
        assert_eq!(back.base(), addr - 256);
        // A second return of the same address would be a double free: refused.
        assert!(pool.take_from_kernel(addr, Owner::Fill).is_none());
        assert_eq!(pool.refused(), 2);
        pool.release(back);
        assert_eq!(pool.census(), Census { free: 8, user: 0, fill: 0, tx: 0 });
    }

    #[test]
    fn out_of_range_addresses_are_refused() {
        let mut pool = FramePool::new(0, 11, 8);
        assert!(pool.take_from_kernel(8 * 2048, Owner::Fill).is_none());
        assert!(pool.take_from_kernel(u64::MAX, Owner::Tx).is_none());
        assert_eq!(pool.refused(), 2);
        assert_eq!(pool.census().free, 8);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Alloc,
        Release(usize),
        ToKernel(usize, bool),
        FromKernel(usize, u64),
        ForgedReturn(u64, bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Alloc),
            any::<usize>().prop_map(Step::Release),
            (any::<usize>(), any::<bool>()).prop_map(|(i, tx)| Step::ToKernel(i, tx)),
            (any::<usize>(), 0u64..2048).prop_map(|(i, off)| Step::FromKernel(i, off)),
            (any::<u64>(), any::<bool>()).prop_map(|(a, tx)| Step::ForgedReturn(a % (40 * 2048), tx)),
        ]
    }

    proptest! {
        /// Whatever sequence of hand-overs happens, including forged and repeated kernel returns,
        /// every frame has exactly one owner, userspace never holds two `Frame`s for one address,
        /// and after everything is returned the pool is whole again.
        #[test]
        fn ownership_is_conserved(steps in proptest::collection::vec(step(), 1..400)) {
            const COUNT: u32 = 32;
            let mut pool = FramePool::new(7, 11, COUNT);
            let mut held: Vec<Frame> = Vec::new();
            let mut in_kernel: Vec<(u64, Owner)> = Vec::new();
            for step in steps {
                match step {
                    Step::Alloc => if let Some(f) = pool.alloc() { held.push(f) },
                    Step::Release(i) => if !held.is_empty() { let f = held.swap_remove(i % held.len()); pool.release(f) },
                    Step::ToKernel(i, tx) => if !held.is_empty() {
                        let f = held.swap_remove(i % held.len());
                        let ring = if tx { Owner::Tx } else { Owner::Fill };
                        in_kernel.push((pool.give_to_kernel(f, ring, 0), ring));
                    },
                    Step::FromKernel(i, off) => if !in_kernel.is_empty() {
                        let (addr, ring) = in_kernel.swap_remove(i % in_kernel.len());
                        let f = pool.take_from_kernel(addr + off, ring);
                        prop_assert!(f.is_some());
                        held.push(f.unwrap());
                    },
                    Step::ForgedReturn(addr, tx) => {
                        let ring = if tx { Owner::Tx } else { Owner::Fill };
                        // Only accepted if that ring really owns the frame; then it is a real return.
                        if let Some(f) = pool.take_from_kernel(addr, ring) {
                            let pos = in_kernel.iter().position(|(a, r)| a >> 11 == addr >> 11 && *r == ring);
                            prop_assert!(pos.is_some(), "forged address accepted");
                            in_kernel.swap_remove(pos.unwrap());
                            held.push(f);
                        }
                    }
                }
                let census = pool.census();
                prop_assert_eq!(census.total(), COUNT);
                prop_assert_eq!(census.user as usize, held.len());
                prop_assert_eq!(census.free as usize, pool.free_len());
                prop_assert_eq!((census.fill + census.tx) as usize, in_kernel.len());
                let mut bases: Vec<u64> = held.iter().map(Frame::base).collect();
                bases.sort_unstable();
                bases.dedup();
                prop_assert_eq!(bases.len(), held.len());
            }
            for (addr, ring) in in_kernel.drain(..) {
                held.push(pool.take_from_kernel(addr, ring).unwrap());
            }
            held.into_iter().for_each(|f| pool.release(f));
            prop_assert_eq!(pool.census(), Census { free: COUNT, user: 0, fill: 0, tx: 0 });
        }
    }
}
