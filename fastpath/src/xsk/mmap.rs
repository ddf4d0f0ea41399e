//! Owned memory mappings: the UMEM area and the ring mappings of a socket.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A region from `mmap`, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access to it is governed by the owners of
// the rings and frames built on top of it, which are themselves `Send` but not `Sync`.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Anonymous, private, pre-faulted memory for a UMEM (pre-faulting keeps page faults off the
    /// hot path).
    pub(crate) fn anonymous(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping aliases nothing; the arguments are valid by construction.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_result(ptr, len)
    }

    /// Maps one of an AF_XDP socket's rings (`offset` is one of the `XDP_PGOFF_*` constants).
    pub(crate) fn ring(fd: BorrowedFd<'_>, len: usize, offset: libc::off_t) -> io::Result<Mapping> {
        // SAFETY: mapping a ring of a live socket fd; the kernel validates `len` and `offset` and the
        // result aliases nothing in our address space.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_result(ptr, len)
    }

    fn from_result(ptr: *mut libc::c_void, len: usize) -> io::Result<Mapping> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and nothing derived from the mapping
        // outlives its owner (rings and frame slices borrow from the owning struct).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
