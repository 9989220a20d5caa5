//! A BPF array map created with `BPF_F_MMAPABLE`, mapped shared into this process: its values
//! read and written as memory, without a system call each.
use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{Result, bail};

pub struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: plain shared memory; the users go through volatile, atomic or bulk copies into
// places no packet reads.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `bytes` bytes of the values of the mmapable array map `fd`.
    pub fn new(fd: BorrowedFd<'_>, bytes: usize, what: &str) -> Result<Mapping> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = bytes.max(1).next_multiple_of(page);
        // SAFETY: a new shared mapping of the map's memory; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            bail!("cannot map {what}: {}", std::io::Error::last_os_error());
        }
        Ok(Mapping {
            base: base.cast(),
            len,
        })
    }

    /// The address `offset` bytes in; `size` bytes from there must lie inside the mapping.
    pub fn at(&self, offset: usize, size: usize) -> *mut u8 {
        assert!(offset + size <= self.len, "outside the mapping");
        // SAFETY: inside the mapping (checked above).
        unsafe { self.base.add(offset) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
