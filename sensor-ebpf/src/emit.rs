//! Getting records to the daemon, and counting the ones that could not be.
use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;

use crate::maps::{DROPS, EVENTS};

/// Counts one record of `kind` that did not fit in the ring buffer.
#[inline(always)]
pub fn count_drop(kind: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(kind) {
        // Per-CPU slot: no other writer can race with this program on this CPU.
        unsafe { *counter += 1 };
    }
}

/// Copies `size` bytes at `data` into the ring buffer as one record.
///
/// `size` must already be bounded by the caller's buffer so the verifier accepts it.
#[inline(always)]
pub fn output_bytes(kind: u32, data: *const u8, size: usize) {
    let bytes = unsafe { core::slice::from_raw_parts(data, size) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_drop(kind);
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_boot_ns() }
}
