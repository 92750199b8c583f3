//! Process-wide allocator settings for the binaries.
//!
//! A training step allocates and frees tensors of a few MiB each, thousands of times per update.
//! glibc's malloc serves blocks above its mmap threshold (128 KiB at first) with fresh `mmap`s and
//! trims the heap top back to the kernel on free, so each step pays page faults and zeroing for
//! memory it just gave back: a third of a PPO update's time on burn's CPU backend, measured with
//! `perf` (README, "CPU learner speed"). Keeping freed memory in the process removes that.

/// Keeps freed memory for reuse: blocks up to 32 MiB (glibc's largest mmap threshold) come from
/// the heap, the heap is never trimmed, and it grows in 64 MiB steps. Call first thing in `main`;
/// a no-op on platforms other than Linux with glibc, whose allocators behave differently.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called before any thread
    // of ours exists, and the values are within the ranges glibc documents.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
