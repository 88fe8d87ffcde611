//! Credential changes: the setuid family, setgroups and capset, seen at syscall exit.
//!
//! The record carries the credentials after the call; the daemon knows the ones before (from
//! the exec, fork and earlier credential records of the process) and reports the difference.
//! Failed calls are sent too: an EPERM from setuid is an attempted escalation.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sensor_common::{kind, CredRecord, RecordHeader};

use crate::{
    emit::{count_drop, now_ns, submit_flags},
    kread::{self_tgid, Mem},
    maps::EVENTS,
    task::{capabilities, fill_task_info},
};

// x86_64 syscall numbers.
const NR_SETUID: u64 = 105;
const NR_SETGID: u64 = 106;
const NR_SETREUID: u64 = 113;
const NR_SETREGID: u64 = 114;
const NR_SETGROUPS: u64 = 116;
const NR_SETRESUID: u64 = 117;
const NR_SETRESGID: u64 = 119;
const NR_SETFSUID: u64 = 122;
const NR_SETFSGID: u64 = 123;
const NR_CAPSET: u64 = 126;

/// True for the syscalls that can change a task's credentials.
#[inline(always)]
pub fn changes_credentials(nr: u64) -> bool {
    matches!(
        nr,
        NR_SETUID
            | NR_SETGID
            | NR_SETREUID
            | NR_SETREGID
            | NR_SETGROUPS
            | NR_SETRESUID
            | NR_SETRESGID
            | NR_SETFSUID
            | NR_SETFSGID
            | NR_CAPSET
    )
}

#[inline(always)]
pub fn on_cred_syscall<M: Mem>(nr: u64, ret: i64) {
    if (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<CredRecord>(0) else {
        count_drop(kind::CRED);
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    record.header = RecordHeader {
        kind: kind::CRED,
        size: core::mem::size_of::<CredRecord>() as u32,
        ktime_ns: now_ns(),
    };
    let task = M::current_task();
    fill_task_info::<M>(task, &mut record.task);
    record.syscall = nr as u32;
    record.ret = ret as i32;
    let (effective, permitted) = capabilities::<M>(task);
    record.cap_effective = effective;
    record.cap_permitted = permitted;
    entry.submit(submit_flags());
}
