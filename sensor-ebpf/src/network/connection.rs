//! Reported TCP connections, kept by socket until they end; the end is reported with the
//! connection's duration and payload bytes, under the identity of the process that connected
//! or accepted (the socket may have been used by others since, or be closed in softirq).
//! Another process sending on it (an inherited or passed socket) is reported when it starts,
//! under its own identity.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sensor_common::{network_op, tcp_state, NetworkRecord, IPPROTO_TCP};

use crate::{
    emit::{count_untracked, now_ns},
    kread::{off, Mem, Probe},
    maps::CONNECTIONS,
    record::{copy_words, Reserved},
    task::fill_task_info,
};

/// Keeps a reported connection until it ends. A full table is counted: its end will not be
/// reported, and the daemon says so in a loss event.
#[inline(always)]
pub fn track(sk: u64, record: &NetworkRecord) {
    if sk == 0 || record.protocol != IPPROTO_TCP {
        return;
    }
    if CONNECTIONS.insert(&sk, record, 0).is_err() {
        count_untracked(sensor_common::kind::NETWORK);
    }
}

/// A socket reached TCP_CLOSE from `old_state`: report the end of its connection if it was
/// reported.
#[inline(always)]
pub fn on_close(sk: *const u8, old_state: i32) {
    let key = sk as u64;
    // SAFETY: the value is copied into the slot at once; the entry is removed before it is sent.
    let Some(opened) = (unsafe { CONNECTIONS.get(&key) }) else {
        return;
    };
    let Some(mut slot) = Reserved::<NetworkRecord>::new() else {
        let _ = CONNECTIONS.remove(&key);
        return;
    };
    let record = slot.record();
    follow_up(record, opened, network_op::CLOSE);
    let sent = Probe::read::<u64>(sk, off!(tcp_bytes_sent)).unwrap_or(0);
    let retransmitted = Probe::read::<u64>(sk, off!(tcp_bytes_retrans)).unwrap_or(0);
    record.bytes_sent = sent.saturating_sub(retransmitted);
    // The counter follows the receive sequence, in which the peer's FIN takes one.
    let received = Probe::read::<u64>(sk, off!(tcp_bytes_received)).unwrap_or(0);
    record.bytes_received = received.saturating_sub(u64::from(fin_received(old_state)));
    if CONNECTIONS.remove(&key).is_ok() {
        slot.submit();
    } else {
        slot.discard();
    }
}

/// Something was sent on `sk`, in the sender's context: if the socket carries a reported
/// connection and the sender is neither its owner nor the last other sender, report the use.
#[inline(always)]
pub fn on_send<M: Mem>(sk: *const u8) {
    let key = sk as u64;
    let Some(opened) = CONNECTIONS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a map value pointer from the lookup just above, valid for this program run.
    let opened = unsafe { &mut *opened };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if opened.task.tgid == tgid || opened.shared_tgid == tgid {
        return;
    }
    // Remembered once its record is in the ring: a refused one (a counted drop) leaves the
    // sender's next send to be reported.
    let Some(mut slot) = Reserved::<NetworkRecord>::new() else {
        return;
    };
    opened.shared_tgid = tgid;
    let record = slot.record();
    follow_up(record, opened, network_op::SHARED_SEND);
    record.fd = -1;
    fill_task_info::<M>(M::current_task(), &mut record.task);
    slot.submit();
}

/// A record about a followed connection (`op`: its end, or another process's send): the
/// opening record's ends and identity, timed now, with the time since it opened.
#[inline(always)]
fn follow_up(record: &mut NetworkRecord, opened: &NetworkRecord, op: u32) {
    let now = now_ns();
    copy_words(record, opened);
    record.header.size = core::mem::size_of::<NetworkRecord>() as u32;
    record.duration_ns = now.wrapping_sub(record.header.ktime_ns);
    record.header.ktime_ns = now;
    record.op = op;
    record.ret = 0;
    record.suppressed_total = 0;
    record.flags = 0;
}

/// Whether a connection leaving `old_state` for CLOSE had received the peer's FIN.
#[inline(always)]
fn fin_received(old_state: i32) -> bool {
    matches!(
        old_state,
        tcp_state::CLOSE_WAIT | tcp_state::LAST_ACK | tcp_state::CLOSING | tcp_state::FIN_WAIT2
    )
}
