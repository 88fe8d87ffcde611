//! The outcome of a non-blocking connect, kept by socket in `PENDING_CONNECTS` until it is
//! known. Usually the state change out of SYN_SENT gives it: established, or the error the
//! kernel left in the socket. But the kernel writes that error before it changes the state,
//! and an application polling the socket can take it (`getsockopt(SO_ERROR)` clears it) in
//! between; the socket then closes with no error left. The record then waits for the error the
//! application was handed (its `getsockopt` returning), or for the socket's end, whichever
//! comes first. Whoever removes the entry sends it, so it is sent once.
use aya_ebpf::helpers::generated::bpf_probe_read_user;
use sensor_common::{
    network_flags, network_record_flags,
    tcp_state::{CLOSE as TCP_CLOSE, ESTABLISHED as TCP_ESTABLISHED},
    NetworkRecord, Record as _,
};

use super::{connection, dedup, socket, EINPROGRESS};
use crate::{
    emit::{count_drop, now_ns},
    kread::{off, Mem, Probe},
    maps::{NETWORK_FILTER, PENDING_CONNECTS},
    record::Reserved,
};

/// `SOL_SOCKET` and `SO_ERROR`, the only `getsockopt` that carries a connect's outcome.
const SOL_SOCKET: u64 = 1;
const SO_ERROR: u64 = 4;

/// A socket left SYN_SENT for `new_state`: send its pending connect with the outcome, or mark
/// it to wait for the error the application took.
#[inline(always)]
pub fn on_connect_outcome(sk: *const u8, new_state: i32) {
    let key = sk as u64;
    let Some(pending) = PENDING_CONNECTS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a map value is valid while the program runs.
    let kept = unsafe { &*pending };
    if new_state == TCP_ESTABLISHED {
        connection::track(key, kept);
        send_pending(key, kept, Some(0));
        return;
    }
    let err = Probe::read::<i32>(sk, off!(sk_err)).unwrap_or(0);
    if err > 0 {
        send_pending(key, kept, Some(-err));
        return;
    }
    let waits = NETWORK_FILTER
        .get(0)
        .is_some_and(|c| c.flags & network_flags::SOCKET_ENDS != 0);
    if new_state != TCP_CLOSE || !waits {
        send_pending(key, kept, None);
        return;
    }
    // SAFETY: as above; the application's getsockopt may write `ret` on another CPU, and each
    // side checks the other's write after its own (a miss on both is sent at the socket's end).
    unsafe {
        (*pending).flags |= network_record_flags::AWAITING_ERROR;
        if (*pending).ret != -EINPROGRESS {
            send_pending(key, &*pending, None);
        }
    }
}

/// `getsockopt` returned `ret` with the saved user registers `regs`: a socket's error handed
/// to the application. If the socket has a connect waiting for its outcome, that is it.
#[inline(always)]
pub fn on_getsockopt<M: Mem>(regs: *const u8, ret: i64) {
    let level = M::read::<u64>(regs, off!(regs_si)).unwrap_or(0);
    let name = M::read::<u64>(regs, off!(regs_dx)).unwrap_or(0);
    if ret != 0 || level != SOL_SOCKET || name != SO_ERROR {
        return;
    }
    let fd = M::read::<u64>(regs, off!(regs_di)).unwrap_or(u64::MAX) as i32;
    let Some(sk) = socket::sock_of_fd::<M>(fd) else {
        return;
    };
    let Some(pending) = PENDING_CONNECTS.get_ptr_mut(&sk) else {
        return;
    };
    let value = M::read::<u64>(regs, off!(regs_r10)).unwrap_or(0);
    let mut error: i32 = 0;
    // SAFETY: reads 4 bytes of user memory into a local; a fault leaves it 0.
    unsafe {
        bpf_probe_read_user(
            (&mut error as *mut i32).cast(),
            4,
            value as *const core::ffi::c_void,
        )
    };
    if error <= 0 {
        return;
    }
    // SAFETY: a map value is valid while the program runs; see `on_connect_outcome` for the
    // order of the two writes.
    unsafe {
        (*pending).ret = -error;
        if (*pending).flags & network_record_flags::AWAITING_ERROR != 0 {
            send_pending(sk, &*pending, None);
        }
    }
}

/// A TCP socket is being destroyed: a connect still kept for it is sent with what is known
/// (the application's error if it was seen, else in progress: it gave up before an outcome).
#[inline(always)]
pub fn on_socket_destroyed(sk: *const u8) {
    send_kept(sk as u64);
}

/// Sends the connect kept for `sk`, if any, with what is known: before the socket's end, or
/// before a new connect on the same socket (its association dissolved) takes the entry.
#[inline(always)]
pub fn send_kept(sk: u64) {
    // SAFETY: a map value is valid while the program runs; it is copied before it is removed.
    if let Some(kept) = unsafe { PENDING_CONNECTS.get(&sk) } {
        send_pending(sk, kept, None);
    }
}

/// Sends `pending`, the connect kept for `key` (its map value, looked up once by the caller),
/// with `ret` as its result if given (else the kept one),
/// unless another CPU removed it first or it is a repeat within the dedup window (which is
/// decided only now, on the outcome, so that a refusal never counts as a repeat of a success).
#[inline(always)]
fn send_pending(key: u64, pending: &NetworkRecord, ret: Option<i32>) {
    let Some(mut slot) = Reserved::<NetworkRecord>::uncounted(now_ns()) else {
        // Refused by the full ring buffer: the connect is given up here, not kept to be sent
        // again when its socket ends without the outcome it had now. It is counted lost only
        // where it is taken out of the map: another CPU may have taken and sent it meanwhile.
        if PENDING_CONNECTS.remove(&key).is_ok() {
            count_drop(NetworkRecord::KIND);
        }
        return;
    };
    let record = slot.record();
    // The kept record was staged before its size was set; it goes out whole.
    *record = *pending;
    record.header.size = core::mem::size_of::<NetworkRecord>() as u32;
    record.flags &= !network_record_flags::AWAITING_ERROR;
    if let Some(ret) = ret {
        record.ret = ret;
    }
    let window_ns = NETWORK_FILTER.get(0).map_or(0, |c| c.dedup_window_ns);
    if PENDING_CONNECTS.remove(&key).is_err()
        || dedup::counted_as_repeat(window_ns, record, now_ns())
    {
        slot.discard();
    } else {
        slot.submit();
    }
}

/// The outcome of a connect whose socket is now in `state`, seen from its own syscall's exit
/// (the handshake ended before connect returned): 0 when established, else the socket's error
/// (EINPROGRESS stays when it has none).
#[inline(always)]
pub fn set_outcome(record: &mut NetworkRecord, sk: *const u8, state: i32) {
    if state == TCP_ESTABLISHED {
        record.ret = 0;
    } else {
        let err = Probe::read::<i32>(sk, off!(sk_err)).unwrap_or(0);
        if err > 0 {
            record.ret = -err;
        }
    }
}
