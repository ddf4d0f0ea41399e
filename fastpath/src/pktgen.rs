//! An AF_XDP transmit-only traffic generator (`moat pktgen`).
//!
//! The kernel here has no pktgen module, so moat brings its own: frames are written once into the
//! UMEM from templates, then the same frames are transmitted over and over — the loop only moves
//! descriptors between the completion ring, the pool and the TX ring, so the generator's own cost per
//! packet is a few memory operations, and what limits the rate is the kernel path being measured.

use crate::xsk::{BindPolicy, Umem, UmemConfig, XskSocket};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// When the generator stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenLimit {
    /// Stop after this many frames (`None` = no limit).
    pub count: Option<u64>,
    /// Stop after this long (`None` = no limit).
    pub duration: Option<Duration>,
    /// Frames per second at most (`None` = as fast as the kernel takes them). A paced flood is one
    /// the receiver can see whole, whatever else the machine is doing.
    pub rate: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenReport {
    /// Frames the kernel reported transmitted (completion ring).
    pub completed: u64,
    /// Frames queued on the TX ring.
    pub queued: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl GenReport {
    pub fn packets_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.completed as f64 / secs } else { 0.0 }
    }
}

/// A transmit-only AF_XDP socket with its frames pre-written.
#[derive(Debug)]
pub struct TxGenerator {
    socket: XskSocket,
    umem: Umem,
    /// Length of the template written into each frame, by frame index.
    frame_len: Vec<u32>,
    frame_shift: u32,
}

impl TxGenerator {
    /// Binds to `ifname` queue `queue` and writes `templates` round-robin into every frame.
    pub fn new(ifname: &str, queue: u32, templates: &[Vec<u8>], bind: BindPolicy) -> io::Result<TxGenerator> {
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_owned());
        if templates.is_empty() {
            return Err(invalid("no frame templates"));
        }
        let config = UmemConfig::default();
        if templates.iter().any(|t| t.len() < 14 || t.len() > config.frame_size as usize) {
            return Err(invalid("frame templates must be 14..=2048 bytes"));
        }
        let ifindex = moat_bpf::interface_index(ifname).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        let mut umem = Umem::new(config)?;
        let socket = XskSocket::bind(&umem, ifname, ifindex, queue, None, bind)?;
        let frame_shift = config.frame_size.trailing_zeros();
        let mut frame_len = vec![0u32; config.frame_count as usize];
        let mut frames = Vec::with_capacity(config.frame_count as usize);
        while let Some(frame) = umem.pool_mut().alloc() {
            frames.push(frame);
        }
        for (i, mut frame) in frames.into_iter().enumerate() {
            let template = &templates[i % templates.len()];
            let len = u32::try_from(template.len()).map_err(|_| invalid("template too long"))?;
            if let Some(bytes) = umem.bytes_mut(&mut frame, 0, len) {
                bytes.copy_from_slice(template);
            }
            if let Some(slot) = usize::try_from(frame.base() >> frame_shift).ok().and_then(|i| frame_len.get_mut(i)) {
                *slot = len;
            }
            umem.pool_mut().release(frame);
        }
        Ok(TxGenerator { socket, umem, frame_len, frame_shift })
    }

    /// Transmits until `limit` or `stop`.
    pub fn run(&mut self, limit: GenLimit, stop: &AtomicBool) -> GenReport {
        let ring = self.socket.ring_size();
        let batch = 64;
        let start = Instant::now();
        let deadline = limit.duration.map(|d| start + d);
        let (mut queued, mut completed, mut bytes) = (0u64, 0u64, 0u64);
        let mut iterations = 0u32;
        loop {
            completed += u64::from(self.socket.reclaim_completed(self.umem.pool_mut(), ring));
            let budget = limit.count.map_or(u64::MAX, |c| c.saturating_sub(queued));
            if budget == 0 {
                if completed >= queued || start.elapsed() > Duration::from_secs(1) + limit.duration.unwrap_or_default()
                {
                    break;
                }
                self.socket.kick_tx();
                continue;
            }
            if let Some(rate) = limit.rate {
                let allowed = u128::from(rate) * start.elapsed().as_micros() / 1_000_000;
                if u128::from(queued) >= allowed {
                    std::thread::sleep(Duration::from_micros(100));
                    if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    continue;
                }
            }
            let want = u32::try_from(budget.min(u64::from(batch))).unwrap_or(batch);
            let room = self.socket.tx_free(want);
            let mut n = 0;
            while n < room {
                let Some(frame) = self.umem.pool_mut().alloc() else { break };
                let len = usize::try_from(frame.base() >> self.frame_shift)
                    .ok()
                    .and_then(|i| self.frame_len.get(i).copied())
                    .unwrap_or(0);
                bytes += u64::from(len);
                self.socket.tx_write(self.umem.pool_mut(), n, frame, 0, len);
                n += 1;
            }
            self.socket.tx_submit(n);
            queued += u64::from(n);
            iterations = iterations.wrapping_add(1);
            // Checking the clock and the stop flag every 64 batches keeps them off the per-frame cost.
            if iterations % 64 == 0 && (stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)) {
                break;
            }
        }
        // Let the last frames complete so `completed` is the real count.
        let settle = Instant::now();
        while completed < queued && settle.elapsed() < Duration::from_millis(500) {
            self.socket.kick_tx();
            completed += u64::from(self.socket.reclaim_completed(self.umem.pool_mut(), ring));
        }
        GenReport { completed, queued, bytes, elapsed: start.elapsed() }
    }
}
