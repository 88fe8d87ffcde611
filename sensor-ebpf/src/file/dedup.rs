//! Deduplication of identical opens within a window, counted in the kernel.
use sensor_common::{FileDedupKey, FileDedupState, FileFilterConfig};

use super::{O_ACCMODE, O_APPEND, O_CREAT, O_TRUNC};
use crate::{
    emit::atomic_increment,
    kread::{off, Mem},
    maps::FILE_DEDUP,
};

#[inline(always)]
pub fn dedup_key<M: Mem>(tgid: u32, flags: u32, dev: u32, ino: u64) -> FileDedupKey {
    let task = M::current_task();
    FileDedupKey {
        tgid,
        access: flags & (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND),
        dev,
        _pad: 0,
        ino,
        mm: M::read::<u64>(task, off!(task_mm)).unwrap_or(0),
        cred: M::read::<u64>(task, off!(task_real_cred)).unwrap_or(0),
    }
}

/// Counts the open if an identical one opened the current dedup window; returns true if so.
#[inline(always)]
pub fn counted_as_repeat(config: &FileFilterConfig, key: &FileDedupKey, now: u64) -> bool {
    if config.dedup_window_ns == 0 {
        return false;
    }
    let Some(state) = FILE_DEDUP.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a map value pointer from the lookup just above, valid for this program run.
    let state = unsafe { &mut *state };
    if now.wrapping_sub(state.window_start_ns) >= config.dedup_window_ns {
        return false;
    }
    // Several CPUs may count the same key at once.
    atomic_increment(&mut state.suppressed_total);
    true
}

/// Starts (or restarts) the key's window; returns the running suppressed total.
#[inline(always)]
pub fn open_window(key: &FileDedupKey, now: u64) -> u64 {
    if let Some(state) = FILE_DEDUP.get_ptr_mut(key) {
        // SAFETY: a map value pointer from the lookup just above.
        let state = unsafe { &mut *state };
        state.window_start_ns = now;
        return state.suppressed_total;
    }
    let _ = FILE_DEDUP.insert(
        key,
        &FileDedupState {
            window_start_ns: now,
            suppressed_total: 0,
        },
        0,
    );
    0
}

/// Closes the key's window again: its first record was refused by the ring buffer, so the
/// daemon never learns of the window, and repeats counted in it would be reported with a later
/// window's first open, or never. The next identical open is sent instead.
#[inline(always)]
pub fn close_window(config: &FileFilterConfig, key: &FileDedupKey, now: u64) {
    if let Some(state) = FILE_DEDUP.get_ptr_mut(key) {
        // SAFETY: a map value pointer from the lookup just above, valid for this program run.
        let state = unsafe { &mut *state };
        // Compared with wrapping subtraction: this start is a whole window before `now`.
        state.window_start_ns = now.wrapping_sub(config.dedup_window_ns);
    }
}
