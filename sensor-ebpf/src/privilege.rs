//! Privilege changes: the setuid family, setgroups and capset, seen at syscall exit.
//!
//! The record carries the credentials after the call; the daemon knows the ones before (from
//! the exec, fork and earlier credential records of the process) and reports the difference.
//! Failed calls are sent too: an EPERM from setuid is an attempted escalation.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use sensor_common::{
    syscalls::{
        CAPSET, SETFSGID, SETFSUID, SETGID, SETGROUPS, SETREGID, SETRESGID, SETRESUID, SETREUID,
        SETUID,
    },
    PrivilegeChangeRecord,
};

use crate::{
    kread::{self_tgid, Mem},
    record::Reserved,
    task::{capabilities, fill_task_info},
};

/// True for the syscalls that can change a task's credentials.
#[inline(always)]
pub fn changes_privileges(nr: u64) -> bool {
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
pub fn on_privilege_syscall<M: Mem>(nr: u64, ret: i64) {
    if (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid() {
        return;
    }
    let Some(mut change) = Reserved::<PrivilegeChangeRecord>::new() else {
        return;
    };
    let record = change.record();
    let task = M::current_task();
    fill_task_info::<M>(task, &mut record.task);
    record.syscall = nr as u32;
    record.ret = ret as i32;
    let (effective, permitted) = capabilities::<M>(task);
    record.cap_effective = effective;
    record.cap_permitted = permitted;
    change.submit();
}
