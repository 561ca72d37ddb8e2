//! Keeping freed tensor buffers in the process. A training step allocates and frees
//! activations and gradients of a few to a few dozen MiB hundreds of times; glibc serves
//! blocks of 128 KiB or more with `mmap` and returns them to the system on `free`, so each
//! step faults the same memory in again, page by page, and zeroes it (a tenth of a MiniLM
//! step: docs/performance.md). Raising the `mmap` threshold to its 32 MiB ceiling and the trim
//! threshold to 1 GiB lets freed buffers be reused instead.
//!
//! The price: memory freed after a training peak stays with the process (up to the peak) until
//! it exits. That is a process-wide choice, so binaries make it: `silo-node` at start, the
//! benchmark before it measures. Elsewhere than glibc this does nothing.

/// Sets glibc's allocator to keep freed large blocks for reuse. Safe to call more than once.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; any value is accepted or refused by
    // glibc itself (the return value says which, and a refused one leaves the default).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
