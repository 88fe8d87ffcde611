//! The acting task and its credentials, read from `task_struct` and `cred`.
use aya_ebpf::helpers::{
    bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_cgroup_id, bpf_probe_read_kernel},
};
use sensor_common::{offsets::MISSING, task_flags, TaskInfo, COMM_LEN, MAX_GROUPS};

use crate::kread::{off, opaque, Mem};

const UNSET_ID: u32 = u32::MAX;

/// Fills `info` from `task` (a `struct task_struct *`).
#[inline(always)]
pub fn fill_task_info<M: Mem>(task: *const u8, info: &mut TaskInfo) {
    info.flags = 0;
    info.tgid = M::read::<u32>(task, off!(task_tgid)).unwrap_or(0);
    info.pid = M::read::<u32>(task, off!(task_pid)).unwrap_or(0);

    let leader = M::read_ptr(task, off!(task_group_leader)).unwrap_or(task);
    info.start_boottime_ns = M::read::<u64>(leader, off!(task_start_boottime)).unwrap_or(0);

    match M::read_ptr(task, off!(task_real_parent)) {
        Some(parent) => {
            info.ppid = M::read::<u32>(parent, off!(task_tgid)).unwrap_or(0);
            let parent_leader = M::read_ptr(parent, off!(task_group_leader)).unwrap_or(parent);
            info.parent_start_boottime_ns =
                M::read::<u64>(parent_leader, off!(task_start_boottime)).unwrap_or(0);
        }
        None => {
            info.ppid = 0;
            info.parent_start_boottime_ns = 0;
        }
    }
    info.cgroup_id = cgroup_id::<M>(task);

    fill_credentials::<M>(task, info);
    fill_audit::<M>(task, info);
    fill_tty::<M>(task, info);
    M::read_bytes_into::<COMM_LEN>(task, off!(task_comm), &mut info.comm);
}

/// The id of `task`'s cgroup (v2), read through typed pointers where `M` has them: three
/// loads that a helper call cost more than. Otherwise the current task's, from the helper:
/// `task` itself or, for a fork, its parent, whose cgroup the child starts in.
#[inline(always)]
fn cgroup_id<M: Mem>(task: *const u8) -> u64 {
    if M::TYPED {
        let id = M::read_ptr(task, off!(task_cgroups))
            .and_then(|css_set| M::read_ptr(css_set, off!(css_set_dfl_cgrp)))
            .and_then(|cgroup| M::read_ptr(cgroup, off!(cgroup_kn)))
            .and_then(|node| M::read::<u64>(node, off!(kernfs_node_id)));
        if let Some(id) = id {
            return id;
        }
    }
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

#[inline(always)]
fn fill_credentials<M: Mem>(task: *const u8, info: &mut TaskInfo) {
    info.ngroups = 0;
    let Some(cred) = M::read_ptr(task, off!(task_real_cred)) else {
        // Hidden from the optimiser: eight stores of one constant become a call to the
        // byte-at-a-time `memset`, whose loop the verifier walks byte by byte wherever the
        // task is read.
        let unset = opaque(UNSET_ID);
        info.uid = unset;
        info.gid = unset;
        info.euid = unset;
        info.egid = unset;
        info.suid = unset;
        info.sgid = unset;
        info.fsuid = unset;
        info.fsgid = unset;
        return;
    };
    info.uid = M::read::<u32>(cred, off!(cred_uid)).unwrap_or(UNSET_ID);
    info.gid = M::read::<u32>(cred, off!(cred_gid)).unwrap_or(UNSET_ID);
    info.euid = M::read::<u32>(cred, off!(cred_euid)).unwrap_or(UNSET_ID);
    info.egid = M::read::<u32>(cred, off!(cred_egid)).unwrap_or(UNSET_ID);
    info.suid = M::read::<u32>(cred, off!(cred_suid)).unwrap_or(UNSET_ID);
    info.sgid = M::read::<u32>(cred, off!(cred_sgid)).unwrap_or(UNSET_ID);
    info.fsuid = M::read::<u32>(cred, off!(cred_fsuid)).unwrap_or(UNSET_ID);
    info.fsgid = M::read::<u32>(cred, off!(cred_fsgid)).unwrap_or(UNSET_ID);

    let Some(group_info) = M::read_ptr(cred, off!(cred_group_info)) else {
        return;
    };
    let ngroups = M::read::<i32>(group_info, off!(group_info_ngroups)).unwrap_or(0);
    if ngroups <= 0 {
        return;
    }
    let ngroups = ngroups as u32;
    info.ngroups = ngroups;
    let mut captured = ngroups as usize;
    if captured > MAX_GROUPS {
        captured = MAX_GROUPS;
        info.flags |= task_flags::GROUPS_TRUNCATED;
    }
    let gid_offset = off!(group_info_gid);
    if gid_offset == MISSING {
        return;
    }
    let size = (captured * 4) as u32;
    if size > (MAX_GROUPS * 4) as u32 {
        return;
    }
    // SAFETY: `size` was checked against the `groups` array just above.
    unsafe {
        bpf_probe_read_kernel(
            info.groups.as_mut_ptr().cast(),
            size,
            group_info.add(gid_offset as usize).cast(),
        );
    }
}

#[inline(always)]
fn fill_audit<M: Mem>(task: *const u8, info: &mut TaskInfo) {
    let loginuid_offset = off!(task_loginuid);
    if loginuid_offset == MISSING {
        info.flags |= task_flags::NO_AUDIT;
        info.loginuid = UNSET_ID;
        info.sessionid = UNSET_ID;
        return;
    }
    info.loginuid = M::read::<u32>(task, loginuid_offset).unwrap_or(UNSET_ID);
    info.sessionid = M::read::<u32>(task, off!(task_sessionid)).unwrap_or(UNSET_ID);
}

#[inline(always)]
fn fill_tty<M: Mem>(task: *const u8, info: &mut TaskInfo) {
    info.tty[0] = 0;
    let Some(signal) = M::read_ptr(task, off!(task_signal)) else {
        return;
    };
    let Some(tty) = M::read_ptr(signal, off!(signal_tty)) else {
        return;
    };
    let name_offset = off!(tty_name);
    if name_offset == MISSING {
        return;
    }
    let name = tty.wrapping_add(name_offset as usize);
    // SAFETY: the helper checks the source and stops at the destination's length.
    if unsafe { bpf_probe_read_kernel_str_bytes(name, &mut info.tty) }.is_err() {
        info.tty[0] = 0;
    }
}

/// The effective and permitted capability sets of `task`'s credentials (`kernel_cap_t` is 64
/// bits on every kernel: one u64, or two u32 words in the same little-endian order).
#[inline(always)]
pub fn capabilities<M: Mem>(task: *const u8) -> (u64, u64) {
    let Some(cred) = M::read_ptr(task, off!(task_real_cred)) else {
        return (0, 0);
    };
    (
        M::read::<u64>(cred, off!(cred_cap_effective)).unwrap_or(0),
        M::read::<u64>(cred, off!(cred_cap_permitted)).unwrap_or(0),
    )
}

/// True when the thread group of `task` has no live thread left (its last thread is exiting).
#[inline(always)]
pub fn thread_group_dead<M: Mem>(task: *const u8) -> bool {
    let Some(signal) = M::read_ptr(task, off!(task_signal)) else {
        return true;
    };
    M::read::<i32>(signal, off!(signal_live)).unwrap_or(0) == 0
}
