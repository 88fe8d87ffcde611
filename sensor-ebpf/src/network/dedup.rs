//! Deduplication of identical connects within a window, counted in the kernel: the first of a
//! window is sent carrying the running count of those suppressed before it, and the daemon
//! reports the counts (see `sensor`'s dedup module).
use sensor_common::{
    network_record_flags, NetworkDedupKey, NetworkDedupState, NetworkRecord, UNIX_PATH_ROOM,
};

use crate::{emit::atomic_increment, maps::NETWORK_DEDUP};

#[inline(always)]
pub fn dedup_key(record: &NetworkRecord) -> NetworkDedupKey {
    let mut key = NetworkDedupKey {
        tgid: record.task.tgid,
        op: record.op,
        ret: record.ret,
        family: record.family,
        protocol: record.protocol,
        remote_port: record.remote_port,
        _pad_short: 0,
        _pad_word: 0,
        remote_addr: record.remote_addr,
    };
    fold_unix_path(&mut key.remote_addr, record);
    key
}

/// A Unix socket's path folded into the key's address bytes: its 8-byte words XORed into
/// the two halves, a few steps for the verifier where a byte loop is many.
#[inline(always)]
fn fold_unix_path(addr: &mut [u8; 16], record: &NetworkRecord) {
    let words = record.unix_path.as_ptr().cast::<u64>();
    let mut halves = [0u64; 2];
    let mut i = 0;
    while i < UNIX_PATH_ROOM / 8 {
        // SAFETY: `unix_path` is UNIX_PATH_ROOM bytes at an 8-byte-aligned offset of the record
        // (asserted in sensor-common), so word `i` is inside it and aligned.
        halves[i % 2] ^= unsafe { *words.add(i) };
        i += 1;
    }
    for (half, word) in addr.chunks_exact_mut(8).zip(halves) {
        for (byte, folded) in half.iter_mut().zip(word.to_ne_bytes()) {
            *byte ^= folded;
        }
    }
}

/// True when an identical record opened the current window: it is counted instead of sent.
/// Otherwise the window (re)starts now and the record takes the running count.
#[inline(always)]
pub fn counted_as_repeat(window_ns: u64, record: &mut NetworkRecord, now: u64) -> bool {
    if window_ns == 0 {
        return false;
    }
    let key = dedup_key(record);
    let Some(state) = NETWORK_DEDUP.get_ptr_mut(&key) else {
        let fresh = NetworkDedupState {
            window_start_ns: now,
            suppressed_total: 0,
        };
        let _ = NETWORK_DEDUP.insert(&key, &fresh, 0);
        record.flags |= network_record_flags::DEDUP_FIRST;
        return false;
    };
    // SAFETY: a map value pointer from the lookup just above, valid for this program run.
    let state = unsafe { &mut *state };
    if now.wrapping_sub(state.window_start_ns) >= window_ns {
        state.window_start_ns = now;
        record.suppressed_total = state.suppressed_total;
        record.flags |= network_record_flags::DEDUP_FIRST;
        return false;
    }
    // Several CPUs may count the same key at once.
    atomic_increment(&mut state.suppressed_total);
    true
}

/// Closes the window `record` opened, after the ring buffer refused it: the daemon never learns
/// of the window, so repeats counted in it would be reported with a later window's first
/// record, or never. The next identical record is sent instead.
#[inline(always)]
pub fn close_refused_window(window_ns: u64, record: &NetworkRecord, now: u64) {
    if record.flags & network_record_flags::DEDUP_FIRST == 0 {
        return;
    }
    if let Some(state) = NETWORK_DEDUP.get_ptr_mut(&dedup_key(record)) {
        // SAFETY: a map value pointer from the lookup just above, valid for this program run.
        let state = unsafe { &mut *state };
        // Compared with wrapping subtraction: this start is a whole window before `now`.
        state.window_start_ns = now.wrapping_sub(window_ns);
    }
}
