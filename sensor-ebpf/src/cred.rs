//! Credential changes: the setuid family, setgroups and capset, seen at syscall exit.
//!
//! The record carries the credentials after the call; the daemon knows the ones before (from
//! the exec, fork and earlier credential records of the process) and reports the difference.
//! Failed calls are sent too: an EPERM from setuid is an attempted escalation.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sensor_common::{
    kind,
    syscalls::{
        CAPSET, SETFSGID, SETFSUID, SETGID, SETGROUPS, SETREGID, SETRESGID, SETRESUID, SETREUID,
        SETUID,
    },
    CredRecord, RecordHeader,
};

use crate::{
    emit::{count_drop, now_ns, submit_flags},
    kread::{self_tgid, Mem},
    maps::EVENTS,
    task::{capabilities, fill_task_info},
};

/// True for the syscalls that can change a task's credentials.
#[inline(always)]
pub fn changes_credentials(nr: u64) -> bool {
    matches!(
        nr as u32,
        SETUID
            | SETGID
            | SETREUID
            | SETREGID
            | SETGROUPS
            | SETRESUID
            | SETRESGID
            | SETFSUID
            | SETFSGID
            | CAPSET
    )
}

#[inline(always)]
pub fn on_cred_syscall<M: Mem>(nr: u64, ret: i64) {
    if (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid() {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<CredRecord>(0) else {
        count_drop(kind::PRIVILEGE_CHANGE);
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    record.header = RecordHeader {
        kind: kind::PRIVILEGE_CHANGE,
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
