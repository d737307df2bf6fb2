//! Keep freed memory in the process instead of handing it back to the OS.
//!
//! A training step allocates and frees the same large activation buffers
//! every step. glibc serves blocks above its mmap threshold (128 KiB to
//! 32 MiB, adapting) with fresh `mmap`s and trims the heap top back to the
//! OS, so each step pays the kernel to zero those pages again: a profile of
//! the CivT stem student showed 7-9% of a CPU step in `clear_page` and page
//! faults. Raising both thresholds keeps the buffers in the heap, where the
//! next step reuses them: measured 9% faster for the stem student and 3%
//! for the plain one (`cargo bench -p kd-student --bench step_profile`).
//! Peak memory is unchanged (the same buffers are live at the peak); what
//! stays mapped between steps is at most that peak.
//!
//! Only glibc has `mallopt`; elsewhere this does nothing.

#![allow(unsafe_code)]

/// Serve blocks up to this size from the heap.
const MMAP_THRESHOLD: i32 = 1 << 30;
/// Give the heap top back to the OS only beyond this much free memory.
const TRIM_THRESHOLD: i32 = i32::MAX;

/// Call once, early, before the allocations it should govern.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called with
    // documented parameter codes and in-range values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
