//! Getting records to the daemon, and counting the ones that could not be.
use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;

use crate::{
    kread::wakeup_bytes,
    maps::{DROPS, EVENTS, QUEUED_BYTES, READER_ASLEEP},
};

const BPF_RB_NO_WAKEUP: u64 = 1 << 0;
const BPF_RB_FORCE_WAKEUP: u64 = 1 << 1;
/// `bpf_ringbuf_query`: the position up to which the reader has consumed the ring.
const BPF_RB_CONS_POS: u64 = 2;

/// One CPU's count of the bytes it queued since the reader last consumed from the ring.
pub struct QueuedBytes {
    bytes: u64,
    /// The ring's consumer position when the count began.
    consumer_pos: u64,
}

/// Ring-buffer flags for a record of `size` bytes. By default the kernel wakes the reader
/// whenever it has caught up, which for a fast reader means once per record: an interrupt and
/// a syscall per event. Instead records are queued silently and the daemon drains on a short
/// timer; a CPU wakes it once it has queued `wakeup_bytes()` since the daemon last read the ring
/// (the daemon sets it to its threshold divided by the CPUs, so all CPUs together
/// never queue more unannounced), and when the daemon has stopped its timer (nothing came for
/// a while), the first record wakes it. Each CPU counts on its own and starts again when the
/// ring's consumer position has moved: the reader writes it only while it drains, so reading
/// it costs a record little, and the daemon spends no syscall per drain resetting counts. A
/// record counted just before a drain's last read may drop out of the count, which delays a
/// wakeup by one record. Records the daemon acts on at once (see [`is_prompt`]) always wake
/// it, so the timer can be long without delaying them.
#[inline(always)]
pub fn submit_flags(kind: u32, size: usize) -> u64 {
    if is_prompt(kind) {
        return BPF_RB_FORCE_WAKEUP;
    }
    let threshold = u64::from(wakeup_bytes());
    if threshold == 0 {
        return 0;
    }
    let Some(queued) = QUEUED_BYTES.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid for the program's life; programs on
    // one CPU do not preempt each other.
    let queued = unsafe { &mut *queued };
    let consumer_pos = EVENTS.query(BPF_RB_CONS_POS);
    if queued.consumer_pos != consumer_pos {
        queued.consumer_pos = consumer_pos;
        queued.bytes = 0;
    }
    queued.bytes += size as u64;
    if queued.bytes >= threshold || wake_sleeping_reader() {
        queued.bytes = 0;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Kinds the daemon acts on while the moment lasts: a new block device or mount, which device
/// control may make read-only or detach before it is written to, and a privilege change, which
/// on a login comes while the sshd or su process that says where the session came from is
/// still there to be read. They are rare, so waking the daemon for each costs little.
#[inline(always)]
fn is_prompt(kind: u32) -> bool {
    matches!(
        kind,
        sensor_common::kind::BLOCK_DEVICE
            | sensor_common::kind::MOUNT
            | sensor_common::kind::PRIVILEGE_CHANGE
    )
}

/// True when the daemon waits with no timer running; it is then marked awake, so that only
/// the first record of a quiet spell pays for a wakeup.
#[inline(always)]
fn wake_sleeping_reader() -> bool {
    let Some(asleep) = READER_ASLEEP.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: slot 0 of an array map, valid for the program's life. Two CPUs racing here both
    // wake the reader, which is harmless.
    unsafe {
        if *asleep == 0 {
            return false;
        }
        *asleep = 0;
    }
    true
}

/// Counts one record of `kind` that did not fit in the ring buffer.
#[inline(always)]
pub fn count_drop(kind: u32) {
    count_at(kind);
}

/// Counts one record of `kind` whose follow-up will not be reported: the kernel table that
/// follows it was full.
#[inline(always)]
pub fn count_untracked(kind: u32) {
    count_at(sensor_common::UNTRACKED_BASE + kind);
}

#[inline(always)]
fn count_at(slot: u32) {
    for slot in [slot, sensor_common::DROP_ANY] {
        if let Some(counter) = DROPS.get_ptr_mut(slot) {
            // SAFETY: a per-CPU slot from the lookup above: no other writer can race with
            // this program on this CPU.
            unsafe { *counter += 1 };
        }
    }
}

/// Copies `size` bytes at `data` into the ring buffer as one record; false when the ring
/// buffer refused it (the drop is counted).
///
/// `size` must already be bounded by the caller's buffer so the verifier accepts it.
#[inline(always)]
pub fn output_bytes(kind: u32, data: *const u8, size: usize) -> bool {
    // SAFETY: callers pass a staging buffer of at least `size` bytes, bounded for the verifier.
    let bytes = unsafe { core::slice::from_raw_parts(data, size) };
    let sent = EVENTS
        .output::<[u8]>(bytes, submit_flags(kind, size))
        .is_ok();
    if !sent {
        count_drop(kind);
    }
    sent
}

/// Adds one to a counter in a map value that other CPUs may be counting too: BPF's atomic add
/// (core's AtomicU64 has no fetch_add on this target).
#[inline(always)]
pub fn atomic_increment(counter: &mut u64) {
    // SAFETY: `counter` is a valid, aligned u64 (a reference); BPF's atomic add on it.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({counter} + 0) += {one}",
            counter = in(reg) counter as *mut u64,
            one = in(reg) 1u64,
        );
    }
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}
