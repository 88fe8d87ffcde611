//! Reported TCP connections, kept by socket until they end; the end is reported with the
//! connection's duration and payload bytes, under the identity of the process that connected
//! or accepted (the socket may have been used by others since, or be closed in softirq).
use sensor_common::{NetworkRecord, IPPROTO_TCP};

use crate::{
    emit::{count_drop, now_ns},
    kread::{off, Mem, Probe},
    maps::CONNECTIONS,
    record::Reserved,
};

/// Keeps a reported connection until it ends. A full table counts a drop: its end will not
/// be reported.
#[inline(always)]
pub fn track(sk: u64, record: &NetworkRecord) {
    if sk == 0 || record.protocol != IPPROTO_TCP {
        return;
    }
    if CONNECTIONS.insert(&sk, record, 0).is_err() {
        count_drop(sensor_common::kind::NETWORK);
    }
}

/// A socket reached TCP_CLOSE: report the end of its connection if it was reported.
#[inline(always)]
pub fn on_close(sk: *const u8) {
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
    let now = now_ns();
    *record = *opened;
    record.header.size = core::mem::size_of::<NetworkRecord>() as u32;
    record.duration_ns = now.wrapping_sub(record.header.ktime_ns);
    record.header.ktime_ns = now;
    record.op = sensor_common::network_op::CLOSE;
    record.ret = 0;
    record.suppressed_total = 0;
    record.flags = 0;
    record.bytes_sent = Probe::read::<u64>(sk, off!(tcp_bytes_acked)).unwrap_or(0);
    record.bytes_received = Probe::read::<u64>(sk, off!(tcp_bytes_received)).unwrap_or(0);
    if CONNECTIONS.remove(&key).is_ok() {
        slot.submit();
    } else {
        slot.discard();
    }
}
