//! The one `sys_exit` handler, shared by the families that watch syscalls (file opens, block
//! device ioctls, privilege changes, mounts, network connections): the result is known at
//! exit, so only what the kernel did is reported. Which syscalls are watched is declared once,
//! in `sensor_common::syscalls`.
use aya_ebpf::{
    helpers::generated::bpf_task_pt_regs,
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
    EbpfContext as _,
};
use sensor_common::syscalls;

use crate::{
    block_device::on_ioctl,
    file::{is_open_syscall, names_changed, on_open_exit},
    kread::{off, Direct, Mem, Probe},
    mount::{is_mount_syscall, on_mount_syscall},
    network::{is_network_syscall, on_network_syscall},
    privilege::{changes_privileges, on_privilege_syscall},
};

// void sys_exit(struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_sys_exit::<Direct>(
        core::ptr::null(),
        ctx.arg::<*const u8>(0),
        ctx.arg::<i64>(1),
    );
    0
}

// tracepoint/syscalls/sys_exit_<name>, attached to each syscall this module and its
// neighbours handle, so that the thousands of other syscalls a second run no program at all.
// The record is { common fields (8 bytes), int __syscall_nr, long ret (at 16) }; the arguments
// come from the task's saved user registers.
#[tracepoint]
pub fn sys_exit_syscall(ctx: TracePointContext) -> u32 {
    // A plain load from the context: `read_at` is a helper call (about 90 ns on a small VM)
    // on every watched syscall's exit.
    // SAFETY: every sys_exit_<name> record has `long ret` at offset 16, and the verifier
    // checks a tracepoint program's context loads against the bounds of a trace record.
    let ret = unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(16).cast::<i64>()) };
    let task = Direct::current_task();
    on_sys_exit::<Direct>(task, user_regs_of(task), ret);
    0
}

/// The current task's saved user registers (the syscall number and arguments), for programs
/// that are not handed them. BTF-typed, so read with [`Direct`].
#[inline(always)]
pub fn current_user_regs() -> *const u8 {
    user_regs_of(Direct::current_task())
}

/// The saved user registers of `task`, the current task as typed by `Direct`.
#[inline(always)]
fn user_regs_of(task: *const u8) -> *const u8 {
    // SAFETY: a helper given a BTF-typed task; the result is checked by every reader.
    unsafe { bpf_task_pt_regs(task as *mut _) as *const u8 }
}

// raw_tracepoint/sys_exit: the same arguments, untyped.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_raw(ctx: RawTracePointContext) -> u32 {
    on_sys_exit::<Probe>(
        core::ptr::null(),
        ctx.arg::<*const u8>(0),
        ctx.arg::<i64>(1),
    );
    0
}

/// `task` is the current task where the program already has it (NULL otherwise), so that
/// the opens' handler need not ask for it again.
#[inline(always)]
fn on_sys_exit<M: Mem>(task: *const u8, regs: *const u8, ret: i64) {
    // Runs on every syscall exit: leave as early and cheaply as possible.
    let Some(nr) = M::read::<u64>(regs, off!(regs_orig_ax)) else {
        return;
    };
    if is_open_syscall(nr) {
        on_open_exit::<M>(task, regs, nr, ret);
    } else if nr == u64::from(syscalls::IOCTL) {
        on_ioctl::<M>(regs, ret);
    } else if changes_privileges(nr) {
        on_privilege_syscall::<M>(nr, ret);
    } else if is_mount_syscall(nr) {
        on_mount_syscall::<M>(regs, nr, ret);
    } else if is_network_syscall(nr) {
        on_network_syscall::<M>(regs, nr, ret);
    }
    if ret >= 0 && changes_names(nr) {
        names_changed();
    }
}

/// Syscalls that may give names new meanings: renames, a new root, mounts.
#[inline(always)]
fn changes_names(nr: u64) -> bool {
    is_mount_syscall(nr)
        || matches!(
            nr as u32,
            syscalls::RENAME | syscalls::RENAMEAT | syscalls::RENAMEAT2 | syscalls::PIVOT_ROOT
        )
}
