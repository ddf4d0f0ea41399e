//! The four single-producer/single-consumer rings the kernel shares with an AF_XDP socket.
//!
//! Each ring is a power-of-two array of descriptors plus a producer and a consumer index in shared
//! memory. Userspace produces on the fill and TX rings and consumes the RX and completion rings. The
//! protocol (see `Documentation/networking/af_xdp.rst`): the producer writes descriptors, then
//! publishes them with a release store of the producer index; the consumer reads the producer index
//! with an acquire load, reads the descriptors, then hands the slots back with a release store of the
//! consumer index. Indices are free-running `u32`s; `index & mask` is the slot.
//!
//! All raw-pointer access of the fastpath's rings is in this file.
#![allow(unsafe_code)]
// Kernel ABI values (ring offsets, struct sizes, address-family constants) are small by definition;
// the conversions below mirror the C API's own types.
#![allow(clippy::cast_possible_truncation)]

use super::mmap::Mapping;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring of `T` descriptors (`u64` addresses for fill/completion, `xdp_desc` for RX/TX).
#[derive(Debug)]
pub(crate) struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    /// Our view of the index we advance (producer for fill/TX, consumer for RX/completion).
    local: u32,
    /// Last seen value of the index the kernel advances.
    cached_remote: u32,
    _mapping: Mapping,
}

// SAFETY: a Ring is owned by exactly one worker thread at a time; moving it to another thread moves
// the whole endpoint (the kernel is the only other party, and it synchronises through the atomics).
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Wraps a ring mapping. `offsets` come from `XDP_MMAP_OFFSETS` for this ring.
    ///
    /// # Safety
    /// `mapping` must be the kernel mapping of an AF_XDP ring of `size` entries of `T`, whose producer,
    /// consumer, flags and descriptor array lie at the given byte offsets, as reported by the kernel.
    pub(crate) unsafe fn new(mapping: Mapping, size: u32, offsets: &libc::xdp_ring_offset) -> Ring<T> {
        let base = mapping.as_ptr();
        // SAFETY: the caller guarantees the offsets lie inside the mapping (the kernel computed them
        // for exactly this mapping length), and the kernel aligns them for their types.
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(offsets.producer as usize).cast::<AtomicU32>(),
                base.add(offsets.consumer as usize).cast::<AtomicU32>(),
                base.add(offsets.flags as usize).cast::<AtomicU32>(),
                base.add(offsets.desc as usize).cast::<T>(),
            )
        };
        // The role-specific constructors (`ProducerRing::new`, `ConsumerRing::new`) load the real
        // indices; a ring is never used before passing through one of them.
        Ring { producer, consumer, flags, descs, mask: size - 1, size, local: 0, cached_remote: 0, _mapping: mapping }
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// True when the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`) before it processes this ring.
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: `flags` points at a live `u32` in the mapping for the ring's lifetime.
        unsafe { (*self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask` < size, and the descriptor array has `size` entries.
        unsafe { self.descs.add((index & self.mask) as usize) }
    }
}

/// A ring userspace produces into: fill (frame addresses for the kernel to receive into) and TX.
#[derive(Debug)]
pub(crate) struct ProducerRing<T>(Ring<T>);

impl<T: Copy> ProducerRing<T> {
    pub(crate) fn new(mut ring: Ring<T>) -> Self {
        // SAFETY: see `Ring::new`; we own the producer index, the kernel owns the consumer index.
        unsafe {
            ring.local = (*ring.producer).load(Ordering::Relaxed);
            ring.cached_remote = (*ring.consumer).load(Ordering::Acquire);
        }
        ProducerRing(ring)
    }

    /// Number of free slots, refreshing the kernel's consumer index only when the cache says fewer
    /// than `wanted` are free (one shared-memory read per batch, not per frame).
    pub(crate) fn free(&mut self, wanted: u32) -> u32 {
        let ring = &mut self.0;
        let mut free = ring.size - ring.local.wrapping_sub(ring.cached_remote);
        if free < wanted {
            // SAFETY: `consumer` points at a live `u32` in the mapping. Acquire pairs with the kernel's
            // release after it finished reading the slots it hands back.
            ring.cached_remote = unsafe { (*ring.consumer).load(Ordering::Acquire) };
            free = ring.size - ring.local.wrapping_sub(ring.cached_remote);
        }
        free
    }

    /// Writes `value` into the `n`-th slot after the last submitted one. The caller must have seen at
    /// least `n + 1` free slots and must `submit` them afterwards.
    pub(crate) fn write(&mut self, n: u32, value: T) {
        let slot = self.0.slot(self.0.local.wrapping_add(n));
        // SAFETY: the slot is free (the caller checked `free`), so the kernel does not read it until
        // we publish it with `submit`; the pointer is in bounds and aligned (see `Ring::slot`).
        unsafe { slot.write(value) };
    }

    /// Publishes `n` written slots to the kernel.
    pub(crate) fn submit(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.0.local = self.0.local.wrapping_add(n);
        // SAFETY: `producer` points at a live `u32`. Release makes the descriptor writes visible
        // before the kernel can observe the new producer index.
        unsafe { (*self.0.producer).store(self.0.local, Ordering::Release) };
    }

    /// Slots submitted and not yet consumed by the kernel (as of the last refresh).
    pub(crate) fn in_kernel(&mut self) -> u32 {
        let size = self.0.size;
        size - self.free(size)
    }

    pub(crate) fn needs_wakeup(&self) -> bool {
        self.0.needs_wakeup()
    }

    pub(crate) fn size(&self) -> u32 {
        self.0.size()
    }
}

/// A ring userspace consumes from: RX (received frames) and completion (transmitted frames).
#[derive(Debug)]
pub(crate) struct ConsumerRing<T>(Ring<T>);

impl<T: Copy> ConsumerRing<T> {
    pub(crate) fn new(mut ring: Ring<T>) -> Self {
        // SAFETY: see `Ring::new`; we own the consumer index, the kernel owns the producer index.
        unsafe {
            ring.local = (*ring.consumer).load(Ordering::Relaxed);
            ring.cached_remote = (*ring.producer).load(Ordering::Acquire);
        }
        ConsumerRing(ring)
    }

    /// Number of entries ready to read, at most `max`.
    pub(crate) fn available(&mut self, max: u32) -> u32 {
        let ring = &mut self.0;
        let mut ready = ring.cached_remote.wrapping_sub(ring.local);
        if ready < max {
            // SAFETY: `producer` points at a live `u32`. Acquire pairs with the kernel's release after
            // writing the descriptors it publishes.
            ring.cached_remote = unsafe { (*ring.producer).load(Ordering::Acquire) };
            ready = ring.cached_remote.wrapping_sub(ring.local);
        }
        ready.min(max)
    }

    /// Reads the `n`-th ready entry. The caller must have seen at least `n + 1` available entries.
    pub(crate) fn read(&self, n: u32) -> T {
        let slot = self.0.slot(self.0.local.wrapping_add(n));
        // SAFETY: the entry is published (the caller checked `available`) and the kernel does not
        // reuse the slot until we `release` it; the pointer is in bounds and aligned.
        unsafe { slot.read() }
    }

    /// Hands `n` read entries back to the kernel.
    pub(crate) fn release(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        self.0.local = self.0.local.wrapping_add(n);
        // SAFETY: `consumer` points at a live `u32`. Release orders our reads of the slots before the
        // kernel may overwrite them.
        unsafe { (*self.0.consumer).store(self.0.local, Ordering::Release) };
    }
}
