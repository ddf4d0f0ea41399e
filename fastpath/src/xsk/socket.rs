//! UMEM registration and AF_XDP sockets: the system calls of the fastpath.
#![allow(unsafe_code)]
// Kernel ABI values (ring offsets, struct sizes, address-family constants) are small by definition;
// the conversions below mirror the C API's own types.
#![allow(clippy::cast_possible_truncation)]

use super::frame::{Frame, FramePool, Owner};
use super::mmap::Mapping;
use super::ring::{ConsumerRing, ProducerRing, Ring};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Sizes of a UMEM and of the rings of each socket that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Bytes per frame: 2048 or 4096 (aligned chunk mode needs a power of two ≥ 2048).
    pub frame_size: u32,
    /// Frames in the UMEM. Must cover every ring that can hold frames at once.
    pub frame_count: u32,
    /// Entries of each ring (fill, completion, RX, TX); a power of two.
    pub ring_size: u32,
}

impl Default for UmemConfig {
    /// Two sockets (one wire pair) × (fill + TX) rings of 2048 entries: 8192 frames of 2 KiB = 16 MiB.
    fn default() -> Self {
        UmemConfig { frame_size: 2048, frame_count: 8192, ring_size: 2048 }
    }
}

impl UmemConfig {
    fn validate(&self) -> io::Result<()> {
        let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !(self.frame_size == 2048 || self.frame_size == 4096) {
            return invalid(format!("frame size {} is not 2048 or 4096", self.frame_size));
        }
        if !self.ring_size.is_power_of_two() || self.ring_size < 64 {
            return invalid(format!("ring size {} is not a power of two ≥ 64", self.ring_size));
        }
        if self.frame_count < 2 * self.ring_size {
            return invalid(format!("{} frames cannot fill two rings of {}", self.frame_count, self.ring_size));
        }
        Ok(())
    }
}

/// How a socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM (veth, drivers without AF_XDP support).
    Copy,
}

/// Which bind modes to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindPolicy {
    /// Zero-copy where the driver supports it, copy mode otherwise.
    #[default]
    Auto,
    /// Copy mode only.
    CopyOnly,
    /// Zero-copy or fail.
    ZeroCopyOnly,
}

/// Kernel counters of one socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames dropped by the kernel for reasons other than a full ring or empty fill ring.
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full (userspace too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (no frame to receive into).
    pub rx_fill_ring_empty: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
}

static NEXT_UMEM_ID: AtomicU32 = AtomicU32::new(1);

/// Packet buffer memory shared with the kernel, and the ledger of its frames.
#[derive(Debug)]
pub struct Umem {
    id: u32,
    config: UmemConfig,
    area: Mapping,
    pool: FramePool,
}

impl Umem {
    pub fn new(config: UmemConfig) -> io::Result<Umem> {
        config.validate()?;
        let len = config.frame_size as usize * config.frame_count as usize;
        let area = Mapping::anonymous(len)?;
        let id = NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed);
        let frame_shift = config.frame_size.trailing_zeros();
        Ok(Umem { id, config, area, pool: FramePool::new(id, frame_shift, config.frame_count) })
    }

    pub fn config(&self) -> UmemConfig {
        self.config
    }

    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    pub fn pool_mut(&mut self) -> &mut FramePool {
        &mut self.pool
    }

    /// The bytes `offset..offset + len` of `frame`, or `None` if that range leaves the frame or the
    /// frame belongs to another UMEM. The slice borrows `frame`, so the frame cannot be handed to the
    /// kernel (which consumes it) while the slice is alive.
    pub fn bytes<'a>(&'a self, frame: &'a Frame, offset: u32, len: u32) -> Option<&'a [u8]> {
        let (start, len) = self.range(frame, offset, len)?;
        // SAFETY: `range` checked the bytes lie inside this UMEM's mapping and inside one frame.
        // Holding `&Frame` proves exclusive ownership of that frame (see `frame.rs`): the kernel does
        // not write it (it is in no ring) and no `&mut` to it exists (that needs `&mut Frame`).
        Some(unsafe { std::slice::from_raw_parts(self.area.as_ptr().add(start), len) })
    }

    /// Mutable access to `offset..offset + len` of `frame` (to build frames for transmission).
    pub fn bytes_mut<'a>(&'a self, frame: &'a mut Frame, offset: u32, len: u32) -> Option<&'a mut [u8]> {
        let (start, len) = self.range(frame, offset, len)?;
        // SAFETY: as in `bytes`; `&mut Frame` additionally proves no other reference to these bytes
        // exists, because every slice of a frame borrows that frame's unique `Frame` value.
        Some(unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(start), len) })
    }

    fn range(&self, frame: &Frame, offset: u32, len: u32) -> Option<(usize, usize)> {
        if frame.umem_id() != self.id || u64::from(offset) + u64::from(len) > u64::from(self.config.frame_size) {
            return None;
        }
        let start = usize::try_from(frame.base() + u64::from(offset)).ok()?;
        let len = len as usize;
        (start + len <= self.area.len()).then_some((start, len))
    }

    /// Offset inside the frame of an address the kernel reported (headroom + packet start).
    pub fn offset_in_frame(&self, addr: u64) -> u32 {
        // The mask keeps the value below `frame_size`, which is a u32.
        (addr & u64::from(self.config.frame_size - 1)) as u32
    }

    fn register(&self, socket: BorrowedFd<'_>) -> io::Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: self.area.as_ptr() as u64,
            len: self.area.len() as u64,
            chunk_size: self.config.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        set_option(socket, libc::XDP_UMEM_REG, &reg)
    }
}

/// An AF_XDP socket bound to one queue of one interface, with its four rings.
#[derive(Debug)]
pub struct XskSocket {
    ifname: String,
    queue: u32,
    mode: BindMode,
    rx: ConsumerRing<libc::xdp_desc>,
    tx: ProducerRing<libc::xdp_desc>,
    fill: ProducerRing<u64>,
    completion: ConsumerRing<u64>,
    // Dropped last: the ring mappings above must be unmapped before the socket closes.
    fd: OwnedFd,
}

impl XskSocket {
    /// Creates a socket on `ifname` queue `queue` using `umem`. The first socket of a UMEM
    /// (`shared_with == None`) registers it; later ones share it (`XDP_SHARED_UMEM`), which lets a frame
    /// received on one interface be transmitted on another without a copy in userspace. Shared sockets
    /// inherit the first socket's bind mode.
    pub fn bind(
        umem: &Umem,
        ifname: &str,
        ifindex: u32,
        queue: u32,
        shared_with: Option<&XskSocket>,
        policy: BindPolicy,
    ) -> io::Result<XskSocket> {
        let context = |e: io::Error, what: &str| {
            io::Error::new(e.kind(), format!("AF_XDP {what} on {ifname} queue {queue}: {e}"))
        };
        let attempts: &[Option<BindMode>] = match (shared_with, policy) {
            (Some(_), _) => &[None],
            (None, BindPolicy::Auto) => &[Some(BindMode::ZeroCopy), Some(BindMode::Copy)],
            (None, BindPolicy::CopyOnly) => &[Some(BindMode::Copy)],
            (None, BindPolicy::ZeroCopyOnly) => &[Some(BindMode::ZeroCopy)],
        };
        let mut last_error = io::Error::other("no bind attempted");
        for mode in attempts {
            // A failed bind can leave a socket half set up; every attempt starts from a fresh one.
            let socket = Self::setup(umem, ifname, queue, shared_with.is_none()).map_err(|e| context(e, "setup"))?;
            match socket.bind_to(ifindex, *mode, shared_with) {
                Ok(()) => {
                    let mode = mode.or(shared_with.map(|s| s.mode)).unwrap_or(BindMode::Copy);
                    return Ok(XskSocket { mode, ..socket });
                }
                Err(e) => last_error = context(e, "bind"),
            }
        }
        Err(last_error)
    }

    fn setup(umem: &Umem, ifname: &str, queue: u32, register_umem: bool) -> io::Result<XskSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if register_umem {
            umem.register(fd.as_fd())?;
        }
        let size = umem.config.ring_size;
        for option in [libc::XDP_UMEM_FILL_RING, libc::XDP_UMEM_COMPLETION_RING, libc::XDP_RX_RING, libc::XDP_TX_RING] {
            set_option(fd.as_fd(), option, &size)?;
        }
        let offsets: libc::xdp_mmap_offsets = get_option(fd.as_fd(), libc::XDP_MMAP_OFFSETS)?;
        let desc_len = std::mem::size_of::<libc::xdp_desc>();
        let addr_len = std::mem::size_of::<u64>();
        let map = |off: &libc::xdp_ring_offset, entry: usize, pgoff: u64| {
            let len = off.desc as usize + size as usize * entry;
            Mapping::ring(fd.as_fd(), len, pgoff as libc::off_t)
        };
        let rx_map = map(&offsets.rx, desc_len, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx_map = map(&offsets.tx, desc_len, libc::XDP_PGOFF_TX_RING as u64)?;
        let fill_map = map(&offsets.fr, addr_len, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp_map = map(&offsets.cr, addr_len, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        // SAFETY: each mapping is the kernel's mapping of the named ring, of `size` entries of the given
        // type, and the offsets are the ones the kernel reported for that ring.
        let (rx, tx, fill, completion) = unsafe {
            (
                ConsumerRing::new(Ring::new(rx_map, size, &offsets.rx)),
                ProducerRing::new(Ring::new(tx_map, size, &offsets.tx)),
                ProducerRing::new(Ring::new(fill_map, size, &offsets.fr)),
                ConsumerRing::new(Ring::new(comp_map, size, &offsets.cr)),
            )
        };
        Ok(XskSocket { ifname: ifname.to_owned(), queue, mode: BindMode::Copy, rx, tx, fill, completion, fd })
    }

    fn bind_to(&self, ifindex: u32, mode: Option<BindMode>, shared_with: Option<&XskSocket>) -> io::Result<()> {
        let flags = match (mode, shared_with) {
            // Shared sockets may not set mode flags: they inherit the UMEM owner's.
            (_, Some(_)) => libc::XDP_SHARED_UMEM,
            (Some(BindMode::ZeroCopy), None) => libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP,
            (_, None) => libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
        };
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as libc::sa_family_t,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: self.queue,
            sxdp_shared_umem_fd: shared_with.map_or(0, |s| s.fd.as_raw_fd() as u32),
        };
        // SAFETY: `addr` is a fully initialised sockaddr_xdp and we pass its exact size.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_xdp).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn ring_size(&self) -> u32 {
        self.fill.size()
    }

    /// Kernel statistics of this socket.
    pub fn stats(&self) -> io::Result<SocketStats> {
        socket_stats_of(self.fd.as_fd())
    }

    /// Tops up the fill ring from the pool, at most `max` frames. Returns how many were given.
    pub fn refill(&mut self, pool: &mut FramePool, max: u32) -> u32 {
        let room = self.fill.free(max).min(max);
        let mut given = 0;
        while given < room {
            let Some(frame) = pool.alloc() else { break };
            let addr = pool.give_to_kernel(frame, Owner::Fill, 0);
            self.fill.write(given, addr);
            given += 1;
        }
        self.fill.submit(given);
        given
    }

    /// Frames waiting on the RX ring, at most `max`.
    pub fn rx_available(&mut self, max: u32) -> u32 {
        self.rx.available(max)
    }

    /// The `n`-th waiting RX descriptor: (address, length). Call `rx_release` after processing.
    pub fn rx_peek(&self, n: u32) -> (u64, u32) {
        let desc = self.rx.read(n);
        (desc.addr, desc.len)
    }

    pub fn rx_release(&mut self, n: u32) {
        self.rx.release(n);
    }

    /// Free TX slots, at most `max`.
    pub fn tx_free(&mut self, max: u32) -> u32 {
        self.tx.free(max).min(max)
    }

    /// Queues `frame` (bytes `offset..offset+len`) in TX slot `n` after the last submitted one; the
    /// caller checked `tx_free` and calls `tx_submit` after the batch.
    pub fn tx_write(&mut self, pool: &mut FramePool, n: u32, frame: Frame, offset: u32, len: u32) {
        let addr = pool.give_to_kernel(frame, Owner::Tx, u64::from(offset));
        self.tx.write(n, libc::xdp_desc { addr, len, options: 0 });
    }

    /// Publishes `n` TX descriptors and kicks the kernel if it needs it (see [`flush_tx`](Self::flush_tx)).
    pub fn tx_submit(&mut self, n: u32) {
        self.tx.submit(n);
        self.flush_tx();
    }

    /// Kicks the kernel while TX descriptors are pending and returns how many still are. In copy mode
    /// every pending frame needs a `sendto`, and one call sends at most a kernel batch (32 frames), so
    /// leftovers must be kicked again even when nothing new was queued; in zero-copy mode the driver
    /// says when it needs a kick (`XDP_RING_NEED_WAKEUP`).
    pub fn flush_tx(&mut self) -> u32 {
        let pending = self.tx.in_kernel();
        if pending > 0 && (self.mode == BindMode::Copy || self.tx.needs_wakeup()) {
            self.kick_tx();
        }
        pending
    }

    /// Asks the kernel to process the TX ring. Transient errors (ring busy, no buffers, link down)
    /// are expected under load and retried at the next batch.
    pub fn kick_tx(&self) {
        // SAFETY: sendto with a NULL buffer of length 0 is the documented AF_XDP TX doorbell.
        let rc =
            unsafe { libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
        let _ = rc; // EAGAIN/EBUSY/ENOBUFS/ENETDOWN: the frames stay queued and the next kick retries.
    }

    /// Moves completed TX frames back to the pool. Returns how many.
    pub fn reclaim_completed(&mut self, pool: &mut FramePool, max: u32) -> u32 {
        let n = self.completion.available(max);
        for i in 0..n {
            let addr = self.completion.read(i);
            if let Some(frame) = pool.take_from_kernel(addr, Owner::Tx) {
                pool.release(frame);
            }
        }
        self.completion.release(n);
        n
    }

    /// True when the kernel waits for a wakeup before it fills RX from the fill ring.
    pub fn fill_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Frames currently lent to the kernel on the fill ring (as of the last refresh).
    pub fn fill_in_kernel(&mut self) -> u32 {
        self.fill.in_kernel()
    }

    /// Frames currently lent to the kernel on the TX ring (as of the last refresh).
    pub fn tx_in_kernel(&mut self) -> u32 {
        self.tx.in_kernel()
    }
}

/// Kernel statistics of the AF_XDP socket `fd` (also through a duplicated descriptor).
pub fn socket_stats_of(fd: BorrowedFd<'_>) -> io::Result<SocketStats> {
    let s: libc::xdp_statistics = get_option(fd, libc::XDP_STATISTICS)?;
    Ok(SocketStats {
        rx_dropped: s.rx_dropped,
        rx_ring_full: s.rx_ring_full,
        rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
        rx_invalid_descs: s.rx_invalid_descs,
        tx_invalid_descs: s.tx_invalid_descs,
    })
}

/// Waits until one of `sockets` has RX frames or `timeout_ms` passes. Also serves as the RX wakeup
/// when the kernel set `XDP_RING_NEED_WAKEUP` on a fill ring.
pub fn wait_readable(sockets: &[&XskSocket], timeout_ms: i32) -> io::Result<bool> {
    let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 8];
    let count = sockets.len().min(fds.len());
    for (slot, socket) in fds.iter_mut().zip(sockets) {
        *slot = libc::pollfd { fd: socket.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    }
    // SAFETY: `fds[..count]` are initialised pollfd entries of live descriptors; poll writes only
    // `revents` inside that range.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), count as libc::nfds_t, timeout_ms) };
    match rc {
        rc if rc < 0 => {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(err) }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

fn set_option<T>(fd: BorrowedFd<'_>, option: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live, initialised `T` of the size we pass; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn get_option<T: Copy>(fd: BorrowedFd<'_>, option: libc::c_int) -> io::Result<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`, which has room for a `T`.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, option, value.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the buffer was zero-initialised and the kernel filled (a prefix of) it; `T` is a plain C
    // struct of integers for which all-zero and any kernel-written bytes are valid.
    Ok(unsafe { value.assume_init() })
}
