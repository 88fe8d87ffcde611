//! File opens: every open(2)-family syscall, after the kernel decided.
//!
//! One handler runs at syscall exit (see `syscall_exit`), so the result is known: on success
//! the opened `struct file` is looked up by its new fd and its path resolved from the dentry
//! chain (relative paths, dirfds, `..` and symlinks come out as the kernel resolved them); on
//! failure the requested path is reported with the errno. Filters and deduplication run here,
//! so dropped opens cost no copy. Where BPF LSM runs, successful opens are reported at the
//! permission check instead, and io_uring opens at their completion.
mod access;
mod dedup;
mod filter;
mod lookup;
mod report;
mod uring;
mod verdict;

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user};
use sensor_common::{filter_flags, open_syscall, syscalls, FileFilterConfig};

pub use lookup::{file_identity, file_of_fd};
pub use verdict::{names_changed, RecentVerdict, RECENT_VERDICT_SLOTS};

use crate::{
    kread::{off, self_tgid, Direct, Mem},
    maps::{FILE_FILTER, OPEN_HOOK},
    syscall_exit::current_user_regs,
};
use filter::{on_watched_device, passes_process_filters};
use lookup::OpenedFile;
use report::{failed, opened};

const AT_FDCWD: i32 = -100;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const EPERM: i64 = 1;
const EACCES: i64 = 13;

/// What the syscall asked for.
struct Request {
    syscall: u32,
    dfd: i32,
    path: *const u8,
    flags: u32,
    /// `path` is a kernel copy of `path_len` bytes (io_uring), not a user string.
    kernel_path_len: Option<usize>,
}

/// An open syscall returned `ret`: report the file it opened, or the attempt that failed.
/// `known_task` is the current task as `M` reads it, or NULL to ask for it: a helper call the
/// caller may already have made, on the path every open takes.
#[inline(always)]
pub fn on_open_exit<M: Mem>(known_task: *const u8, regs: *const u8, nr: u64, ret: i64) {
    let task = if known_task.is_null() {
        M::current_task()
    } else {
        known_task
    };
    let Some(tgid) = M::read::<u32>(task, off!(task_tgid)) else {
        return;
    };
    let Some(config) = reporting_config(tgid) else {
        return;
    };
    if ret >= 0 && lsm_reports_opens() {
        return;
    }
    let Some(request) = decode_request::<M>(regs, nr) else {
        return;
    };
    if ret < 0 {
        // A denied attempt is always reported: it is an access outside one's permissions.
        let denied = ret == -EACCES || ret == -EPERM;
        if denied || passes_process_filters::<M>(&config, &request) {
            failed::<M>(&config, &request, ret as i32, denied);
        }
    } else if let Some(file) = OpenedFile::of_fd::<M>(task, ret as i32) {
        // Writes to removable media are always reported, like denied attempts.
        let watched = on_watched_device(&config, &request, file.inode);
        if watched || passes_process_filters::<M>(&config, &request) {
            opened::<M>(&config, &request, tgid, &file, ret as i32, watched);
        }
    }
}

/// The file sensor's settings, unless the sensor is off or the current process (`tgid`) is
/// the daemon itself.
#[inline(always)]
fn reporting_config(tgid: u32) -> Option<FileFilterConfig> {
    let config = *FILE_FILTER.get(0)?;
    if config.flags & filter_flags::ENABLED == 0 {
        return None;
    }
    (tgid != self_tgid()).then_some(config)
}

/// The current process id.
#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// True while LSM `file_open` reports successful opens.
#[inline(always)]
fn lsm_reports_opens() -> bool {
    OPEN_HOOK.get(0).is_some_and(|on| *on == 1)
}

/// A file passed the permission checks (LSM `file_open`): report it if an open syscall of the
/// current task asked for it (not the kernel opening a program for exec). Filters,
/// deduplication and the record are those of the `sys_exit` path; the fd does not exist yet.
#[inline(always)]
pub fn on_lsm_open(file: *const u8) {
    let tgid = current_tgid();
    let Some(config) = reporting_config(tgid) else {
        return;
    };
    let regs = current_user_regs();
    let Some(nr) = Direct::read::<u64>(regs, off!(regs_orig_ax)) else {
        return;
    };
    if !is_open_syscall(nr) {
        return;
    }
    let Some(request) = decode_request::<Direct>(regs, nr) else {
        return;
    };
    let Some(opened_file) = OpenedFile::of_typed(file) else {
        return;
    };
    let watched = on_watched_device(&config, &request, opened_file.inode);
    if watched || passes_process_filters::<Direct>(&config, &request) {
        opened::<Direct>(&config, &request, tgid, &opened_file, -1, watched);
    }
}

#[inline(always)]
pub fn is_open_syscall(nr: u64) -> bool {
    matches!(
        nr as u32,
        syscalls::OPENAT | syscalls::OPEN | syscalls::CREAT | syscalls::OPENAT2
    )
}

#[inline(always)]
fn decode_request<M: Mem>(regs: *const u8, nr: u64) -> Option<Request> {
    let di = M::read::<u64>(regs, off!(regs_di))?;
    let si = M::read::<u64>(regs, off!(regs_si))?;
    Some(match nr as u32 {
        syscalls::OPENAT => Request {
            syscall: open_syscall::OPENAT,
            dfd: di as i32,
            path: si as *const u8,
            flags: M::read::<u64>(regs, off!(regs_dx))? as u32,
            kernel_path_len: None,
        },
        syscalls::OPEN => Request {
            syscall: open_syscall::OPEN,
            dfd: AT_FDCWD,
            path: di as *const u8,
            flags: si as u32,
            kernel_path_len: None,
        },
        syscalls::CREAT => Request {
            syscall: open_syscall::CREAT,
            dfd: AT_FDCWD,
            path: di as *const u8,
            flags: O_CREAT | O_WRONLY | O_TRUNC,
            kernel_path_len: None,
        },
        _ => {
            // openat2(dfd, path, struct open_how *how, size): how->flags is its first u64.
            let how = M::read::<u64>(regs, off!(regs_dx))? as *const u64;
            let mut flags: u64 = 0;
            // SAFETY: an 8-byte read into a local u64; a fault leaves it 0.
            unsafe {
                bpf_probe_read_user((&mut flags as *mut u64).cast(), 8, how.cast());
            }
            Request {
                syscall: open_syscall::OPENAT2,
                dfd: di as i32,
                path: si as *const u8,
                flags: flags as u32,
                kernel_path_len: None,
            }
        }
    })
}
