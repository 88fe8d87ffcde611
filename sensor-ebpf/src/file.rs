//! File opens: every open(2)-family syscall, after the kernel decided.
//!
//! One handler runs at syscall exit (`tp_btf/sys_exit`, or `raw_tracepoint/sys_exit` where BTF
//! tracepoints are refused), so the result is known: on success the opened `struct file` is
//! looked up by its new fd and its path resolved from the dentry chain (relative paths, dirfds,
//! `..` and symlinks come out as the kernel resolved them); on failure the requested path is
//! reported with the errno. Filters and deduplication run here, so dropped opens cost no copy.
//! The same handler passes credential-changing syscalls on to `cred`.
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task_btf, bpf_probe_read_kernel,
            bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use sensor_common::{
    file_flags, filter_action, filter_flags, kind, offsets::spans, open_syscall, syscalls, BlobRef,
    ExeKey, FileBuffer, FileDedupKey, FileDedupState, FileFilterConfig, RecordHeader,
    FILE_BLOB_CAP, FILE_BLOB_OFFSET_MASK, FILE_FIXED_SIZE, PATH_MAX, PREFIX_MAX,
};

use crate::{
    blob::Blob,
    block::on_ioctl,
    cred::{changes_credentials, on_cred_syscall},
    emit::{now_ns, output_bytes},
    kread::{off, rooms, self_tgid, Direct, Fields, Mem, Probe},
    maps::{
        FILE_BUF, FILE_DEDUP, FILE_FILTER, FILTER_CGROUPS, FILTER_COMMS, FILTER_EXES, FILTER_UIDS,
        OPEN_HOOK, PATH_PREFIXES, PREFIX_KEY, URING_OPENS, URING_SCRATCH, WATCHED_DEVICES,
    },
    mount::{is_mount_syscall, on_mount_syscall},
    path::{resolve, resolve_path, ResolvedPath},
    task::fill_task_info,
};

// x86_64 syscall numbers.

const AT_FDCWD: i32 = -100;
const LOOP_MAJOR: u32 = 7;
const O_WRONLY: u32 = 0o1;
const O_RDWR: u32 = 0o2;
const O_ACCMODE: u32 = 0o3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const EPERM: i64 = 1;
const EACCES: i64 = 13;

// void sys_exit(struct pt_regs *regs, long ret)
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_sys_exit::<Direct>(ctx.arg::<*const u8>(0), ctx.arg::<i64>(1));
    0
}

// tracepoint/syscalls/sys_exit_<name>, attached to each syscall this module and its
// neighbours handle, so that the thousands of other syscalls a second run no program at all.
// The record is { common fields (8 bytes), int __syscall_nr, long ret (at 16) }; the arguments
// come from the task's saved user registers.
#[tracepoint]
pub fn sys_exit_syscall(ctx: TracePointContext) -> u32 {
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    on_sys_exit::<Direct>(current_user_regs(), ret);
    0
}

/// The current task's saved user registers (the syscall number and arguments), for programs
/// that are not handed them. BTF-typed, so read with [`Direct`].
#[inline(always)]
fn current_user_regs() -> *const u8 {
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8 }
}

// raw_tracepoint/sys_exit: the same arguments, untyped.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_raw(ctx: RawTracePointContext) -> u32 {
    on_sys_exit::<Probe>(ctx.arg::<*const u8>(0), ctx.arg::<i64>(1));
    0
}

const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

// void io_uring_submit_req(struct io_kiocb *req)
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: BtfTracePointContext) -> i32 {
    on_uring_submit(ctx.arg::<*const u8>(0));
    0
}

// void io_uring_complete(struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe)
#[btf_tracepoint(function = "io_uring_complete")]
pub fn io_uring_complete(ctx: BtfTracePointContext) -> i32 {
    on_uring_complete(ctx.arg::<*const u8>(1), ctx.arg::<*const u8>(2));
    0
}

#[inline(always)]
fn uring_open_syscall(opcode: u8) -> Option<u32> {
    match opcode {
        IORING_OP_OPENAT => Some(open_syscall::IO_URING_OPENAT),
        IORING_OP_OPENAT2 => Some(open_syscall::IO_URING_OPENAT2),
        _ => None,
    }
}

/// At submission the request still holds its copy of the path: keep what completion needs.
/// `struct io_open` sits at the start of the request (its command area).
fn on_uring_submit(req: *const u8) {
    let Some(syscall) = Probe::read::<u8>(req, off!(kiocb_opcode)).and_then(uring_open_syscall)
    else {
        return;
    };
    if reporting_config().is_none() {
        return;
    }
    let Some(scratch) = URING_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let open = unsafe { &mut *scratch };
    open.syscall = syscall;
    open.dfd = Probe::read::<i32>(req, off!(io_open_dfd)).unwrap_or(AT_FDCWD);
    open.file_slot = Probe::read::<u32>(req, off!(io_open_file_slot)).unwrap_or(0);
    // open_how.flags is the first member of how.
    open.flags = Probe::read::<u64>(req, off!(io_open_how)).unwrap_or(0) as u32;
    open.path_len = 0;
    if let Some(name) = Probe::read_ptr(req, off!(io_open_filename))
        .and_then(|filename| Probe::read_ptr(filename, off!(filename_name)))
    {
        let copied = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel_str(
                open.path.as_mut_ptr().cast(),
                open.path.len() as u32,
                name.cast(),
            )
        };
        if copied > 0 {
            open.path_len = (copied - 1) as u32;
        }
    }
    let _ = URING_OPENS.insert(&(req as u64), open, 0);
}

/// At completion the result is known; report it like an open(2).
fn on_uring_complete(req: *const u8, cqe: *const u8) {
    // Every io_uring completion passes here: the opcode check comes first.
    if Probe::read::<u8>(req, off!(kiocb_opcode))
        .and_then(uring_open_syscall)
        .is_none()
    {
        return;
    }
    let key = req as u64;
    let Some(open) = (unsafe { URING_OPENS.get(&key) }) else {
        return;
    };
    let Some(config) = FILE_FILTER.get(0) else {
        return;
    };
    let config = *config;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(ret) = Direct::read::<i32>(cqe, off!(cqe_res)) else {
        return;
    };
    let request = Request {
        syscall: open.syscall,
        dfd: open.dfd,
        path: open.path.as_ptr(),
        flags: open.flags,
        kernel_path_len: Some((open.path_len as usize) & (PATH_MAX - 1)),
    };
    let fixed_slot = open.file_slot != 0;
    let denied = ret == -(EACCES as i32) || ret == -(EPERM as i32);
    if config.flags & filter_flags::ENABLED != 0
        && (denied || passes_process_filters::<Direct>(&config, &request))
    {
        if ret < 0 {
            failed::<Direct>(&config, &request, ret, denied);
        } else if !fixed_slot {
            // A fixed-file slot holds no descriptor to resolve the file by.
            if let Some(file) = file_of_fd::<Direct>(ret) {
                opened::<Direct>(&config, &request, tgid, file, ret, false);
            }
        }
    }
    let _ = URING_OPENS.remove(&key);
}

/// What the syscall asked for.
struct Request {
    syscall: u32,
    dfd: i32,
    path: *const u8,
    flags: u32,
    /// `path` is a kernel copy of `path_len` bytes (io_uring), not a user string.
    kernel_path_len: Option<usize>,
}

#[inline(always)]
fn on_sys_exit<M: Mem>(regs: *const u8, ret: i64) {
    // Runs on every syscall exit: leave as early and cheaply as possible.
    let Some(nr) = M::read::<u64>(regs, off!(regs_orig_ax)) else {
        return;
    };
    if !is_open_syscall(nr) {
        if nr == u64::from(syscalls::IOCTL) {
            on_ioctl::<M>(regs, ret);
        } else if changes_credentials(nr) {
            on_cred_syscall::<M>(nr, ret);
        } else if is_mount_syscall(nr) {
            on_mount_syscall::<M>(regs, nr, ret);
        }
        return;
    }
    let Some((config, tgid)) = reporting_config() else {
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
    } else if let Some(file) = file_of_fd::<M>(ret as i32) {
        // Writes to removable media are always reported, like denied attempts.
        let watched = on_watched_device(&config, &request, file);
        if watched || passes_process_filters::<M>(&config, &request) {
            opened::<M>(&config, &request, tgid, file, ret as i32, watched);
        }
    }
}

/// The file sensor's settings and the current process id, unless the sensor is off or the
/// current process is the daemon itself.
#[inline(always)]
fn reporting_config() -> Option<(FileFilterConfig, u32)> {
    let config = *FILE_FILTER.get(0)?;
    if config.flags & filter_flags::ENABLED == 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    (tgid != self_tgid()).then_some((config, tgid))
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
    let Some((config, tgid)) = reporting_config() else {
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
    let watched = on_watched_device(&config, &request, file);
    if watched || passes_process_filters::<Direct>(&config, &request) {
        opened::<Direct>(&config, &request, tgid, file, -1, watched);
    }
}

#[inline(always)]
fn is_open_syscall(nr: u64) -> bool {
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

#[inline(always)]
pub fn is_write(flags: u32) -> bool {
    flags & O_ACCMODE == O_WRONLY
        || flags & O_ACCMODE == O_RDWR
        || flags & (O_CREAT | O_TRUNC | O_APPEND) != 0
}

/// Applies one filter dimension: an exclude match drops; with includes present, so does no match.
#[inline(always)]
fn keep(action: Option<u32>, has_includes: bool) -> bool {
    match action {
        Some(filter_action::EXCLUDE) => false,
        Some(_) => true,
        None => !has_includes,
    }
}

#[inline(always)]
fn passes_process_filters<M: Mem>(config: &FileFilterConfig, request: &Request) -> bool {
    let f = config.flags;
    if f & filter_flags::WRITES_ONLY != 0 && !is_write(request.flags) {
        return false;
    }
    if f & filter_flags::UID_RULES != 0 {
        let uid = bpf_get_current_uid_gid() as u32;
        let action = unsafe { FILTER_UIDS.get(&uid) }.copied();
        if !keep(action, f & filter_flags::UID_INCLUDES != 0) {
            return false;
        }
    }
    if f & filter_flags::COMM_RULES != 0 {
        let comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let action = unsafe { FILTER_COMMS.get(&comm) }.copied();
        if !keep(action, f & filter_flags::COMM_INCLUDES != 0) {
            return false;
        }
    }
    if f & filter_flags::CGROUP_RULES != 0 {
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        let action = unsafe { FILTER_CGROUPS.get(&cgroup) }.copied();
        if !keep(action, f & filter_flags::CGROUP_INCLUDES != 0) {
            return false;
        }
    }
    if f & filter_flags::EXE_RULES != 0 {
        let exe = current_exe::<M>().unwrap_or_default();
        let action = unsafe { FILTER_EXES.get(&exe) }.copied();
        if !keep(action, f & filter_flags::EXE_INCLUDES != 0) {
            return false;
        }
    }
    true
}

/// True for a write open of a file on a device the daemon watches (removable media).
#[inline(always)]
fn on_watched_device(config: &FileFilterConfig, request: &Request, file: *const u8) -> bool {
    if config.flags & filter_flags::WATCHED_DEVICES == 0 || !is_write(request.flags) {
        return false;
    }
    // Loop devices are always watched: decided here, so a write right after an attach cannot
    // beat the daemon's update of the map.
    file_identity::<Probe>(file).is_some_and(|(dev, _)| {
        dev >> 20 == LOOP_MAJOR || unsafe { WATCHED_DEVICES.get(&dev) }.is_some()
    })
}

/// The current process's executable as (dev, inode).
#[inline(always)]
fn current_exe<M: Mem>() -> Option<ExeKey> {
    let mm = M::read_ptr(M::current_task(), off!(task_mm))?;
    let exe_file = M::read_ptr(mm, off!(mm_exe_file))?;
    let (dev, ino) = file_identity::<M>(exe_file)?;
    Some(ExeKey { dev, _pad: 0, ino })
}

/// (dev_t, inode number) of an open file.
#[inline(always)]
pub fn file_identity<M: Mem>(file: *const u8) -> Option<(u32, u64)> {
    let inode = M::read_ptr(file, off!(file_inode))?;
    inode_identity(inode)
}

/// (dev_t, inode number) of an inode (untyped).
#[inline(always)]
fn inode_identity(inode: *const u8) -> Option<(u32, u64)> {
    let fields = Fields::<{ spans::INODE }>::new(inode, off!(inode_span), rooms::inode());
    let ino = fields.get::<u64>(off!(inode_ino))?;
    let sb = fields.ptr(off!(inode_sb))?;
    let dev = Probe::read::<u32>(sb, off!(sb_dev))?;
    Some((dev, ino))
}

/// The `struct file` behind descriptor `fd` of the current task. The result is untyped even
/// for `Direct` (`fdt->fd` is `struct file **`, which the verifier does not type): read it
/// with `Probe`.
#[inline(always)]
pub fn file_of_fd<M: Mem>(fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let files = M::read_ptr(M::current_task(), off!(task_files))?;
    let fdt = M::read_ptr(files, off!(files_fdt))?;
    let max_fds = M::read::<u32>(fdt, off!(fdt_max_fds))?;
    if fd as u32 >= max_fds {
        return None;
    }
    let array = M::read_ptr(fdt, off!(fdt_fd))?;
    Probe::read_ptr(unsafe { array.add(fd as usize * 8) }, 0)
}

/// Prefix rules on a resolved path. A path longer than the compared bytes matches on its head.
#[inline(always)]
fn passes_path_filter(config: &FileFilterConfig, path: &ResolvedPath, flags: u32) -> bool {
    let f = config.flags;
    if f & filter_flags::PATH_RULES == 0 {
        return true;
    }
    let Some(key) = PREFIX_KEY.get_ptr_mut(0) else {
        return true;
    };
    let key = unsafe { &mut *key };
    let len = if path.len > PREFIX_MAX {
        PREFIX_MAX
    } else {
        path.len
    };
    unsafe {
        bpf_probe_read_kernel(key.data.as_mut_ptr().cast(), len as u32, path.data.cast());
    }
    key.prefix_len = (len * 8) as u32;
    let lpm_key = key as *const _ as *const aya_ebpf::maps::lpm_trie::Key<[u8; PREFIX_MAX]>;
    let action = PATH_PREFIXES.get(unsafe { &*lpm_key }).copied();
    if action == Some(filter_action::EXCLUDE_READS) {
        return is_write(flags);
    }
    keep(action, f & filter_flags::PATH_INCLUDES != 0)
}

#[inline(always)]
fn dedup_key<M: Mem>(tgid: u32, flags: u32, dev: u32, ino: u64) -> FileDedupKey {
    let task = M::current_task();
    FileDedupKey {
        tgid,
        access: flags & (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND),
        dev,
        _pad: 0,
        ino,
        mm: M::read::<u64>(task, off!(task_mm)).unwrap_or(0),
        cred: M::read::<u64>(task, off!(task_real_cred)).unwrap_or(0),
    }
}

/// Counts the open if an identical one opened the current dedup window; returns true if so.
#[inline(always)]
fn counted_as_repeat(config: &FileFilterConfig, key: &FileDedupKey, now: u64) -> bool {
    if config.dedup_window_ns == 0 {
        return false;
    }
    let Some(state) = FILE_DEDUP.get_ptr_mut(key) else {
        return false;
    };
    let state = unsafe { &mut *state };
    if now.wrapping_sub(state.window_start_ns) >= config.dedup_window_ns {
        return false;
    }
    // Several CPUs may count the same key at once: BPF's atomic add (core's AtomicU64 has no
    // fetch_add on this target).
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({counter} + 0) += {one}",
            counter = in(reg) &mut state.suppressed_total as *mut u64,
            one = in(reg) 1u64,
        );
    }
    true
}

/// Starts (or restarts) the key's window; returns the running suppressed total.
#[inline(always)]
fn open_window(key: &FileDedupKey, now: u64) -> u64 {
    if let Some(state) = FILE_DEDUP.get_ptr_mut(key) {
        let state = unsafe { &mut *state };
        state.window_start_ns = now;
        return state.suppressed_total;
    }
    let _ = FILE_DEDUP.insert(
        key,
        &FileDedupState {
            window_start_ns: now,
            suppressed_total: 0,
        },
        0,
    );
    0
}

#[inline(always)]
fn staging() -> Option<&'static mut FileBuffer> {
    FILE_BUF.get_ptr_mut(0).map(|b| unsafe { &mut *b })
}

#[inline(always)]
fn start_record(buffer: &mut FileBuffer, request: &Request, ret: i32, now: u64) {
    let record = &mut buffer.record;
    record.header = RecordHeader {
        kind: kind::FILE_OPEN,
        size: 0,
        ktime_ns: now,
    };
    record.syscall = request.syscall;
    record.flags = 0;
    record.open_flags = request.flags;
    record.fmode = 0;
    record.ret = ret;
    record.dfd = request.dfd;
    record.dev = 0;
    record._pad = 0;
    record.ino = 0;
    record.suppressed_total = 0;
    record.key_mm = 0;
    record.key_cred = 0;
    record.path = BlobRef::default();
    record.dir = BlobRef::default();
}

#[inline(always)]
fn send(buffer: &mut FileBuffer, used: usize) {
    let mut size = FILE_FIXED_SIZE + used;
    if size > FILE_FIXED_SIZE + FILE_BLOB_CAP {
        size = FILE_FIXED_SIZE + FILE_BLOB_CAP;
    }
    buffer.record.header.size = size as u32;
    output_bytes(kind::FILE_OPEN, (buffer as *const FileBuffer).cast(), size);
}

// Inlined: as a BPF subprogram returning nothing, R0 may be left holding a stack pointer,
// which the verifier refuses at a subprogram's exit. `fd` is -1 where it does not exist yet.
#[inline(always)]
fn opened<M: Mem>(
    config: &FileFilterConfig,
    request: &Request,
    tgid: u32,
    file: *const u8,
    fd: i32,
    watched: bool,
) {
    // f_mode, f_inode and f_path in one read.
    let fields = Fields::<{ spans::FILE }>::new(file, off!(file_span), rooms::file());
    let Some((dev, ino)) = fields.ptr(off!(file_inode)).and_then(inode_identity) else {
        return;
    };
    // The requested flags: the file's f_flags has O_CREAT and O_TRUNC already cleared.
    let flags = request.flags;
    let now = now_ns();
    let key = dedup_key::<M>(tgid, flags, dev, ino);
    if !watched && counted_as_repeat(config, &key, now) {
        return;
    }
    let path_off = off!(file_path);
    let dentry = fields
        .ptr(path_off + off!(path_dentry))
        .unwrap_or(core::ptr::null());
    let vfsmount = fields
        .ptr(path_off + off!(path_mnt))
        .unwrap_or(core::ptr::null());
    let Some(resolved) = resolve(dentry, vfsmount) else {
        return;
    };
    if !watched && !passes_path_filter(config, &resolved, flags) {
        return;
    }
    let Some(buffer) = staging() else {
        return;
    };
    start_record(buffer, request, if fd < 0 { 0 } else { fd }, now);
    if fd < 0 {
        buffer.record.flags |= file_flags::FD_UNKNOWN;
    }
    if watched {
        buffer.record.flags |= file_flags::WATCHED_DEVICE;
    }
    let record = &mut buffer.record;
    record.fmode = fields.get::<u32>(off!(file_mode)).unwrap_or(0);
    record.dev = dev;
    record.ino = ino;
    if resolved.truncated {
        record.flags |= file_flags::PATH_TRUNCATED;
    }
    if config.dedup_window_ns != 0 && !watched {
        record.flags |= file_flags::DEDUP_FIRST;
        record.suppressed_total = open_window(&key, now);
        record.key_mm = key.mm;
        record.key_cred = key.cred;
    }
    fill_task_info::<M>(M::current_task(), &mut record.task);
    let mut blob = Blob::<FILE_BLOB_OFFSET_MASK>::new(buffer.blob.as_mut_ptr());
    buffer.record.path = blob.kernel(resolved.data, resolved.len).unwrap_or_default();
    send(buffer, blob.used);
}

#[inline(always)]
fn failed<M: Mem>(config: &FileFilterConfig, request: &Request, ret: i32, denied: bool) {
    let Some(buffer) = staging() else {
        return;
    };
    start_record(buffer, request, ret, now_ns());
    let mut blob = Blob::<FILE_BLOB_OFFSET_MASK>::new(buffer.blob.as_mut_ptr());
    let requested = match request.kernel_path_len {
        Some(len) => blob.kernel(request.path, len).map(|piece| (piece, false)),
        None => blob.user_str(request.path),
    };
    let (path, truncated) = match requested {
        Some(piece) => piece,
        None => {
            buffer.record.flags |= file_flags::PATH_UNREADABLE;
            (BlobRef::default(), false)
        }
    };
    buffer.record.path = path;
    if truncated {
        buffer.record.flags |= file_flags::PATH_TRUNCATED;
    }
    // A relative request is relative to the cwd or to dfd; report that directory too, and
    // filter on it (the file itself does not exist to resolve).
    let first = first_byte(buffer, path);
    if path.len > 0 && first != b'/' {
        let dir = if request.dfd == AT_FDCWD {
            cwd_path::<M>()
        } else {
            file_of_fd::<M>(request.dfd)
                .and_then(|f| resolve_path::<Probe>(unsafe { f.add(off!(file_path) as usize) }))
        };
        if let Some(dir) = dir {
            if !denied && !passes_path_filter(config, &dir, request.flags) {
                return;
            }
            if dir.truncated {
                buffer.record.flags |= file_flags::DIR_TRUNCATED;
            }
            buffer.record.dir = blob.kernel(dir.data, dir.len).unwrap_or_default();
        }
    } else if !denied && path.len > 0 {
        let absolute = ResolvedPath {
            data: unsafe {
                buffer
                    .blob
                    .as_ptr()
                    .add(path.offset as usize & FILE_BLOB_OFFSET_MASK)
            },
            len: path.len as usize,
            truncated,
        };
        if !passes_path_filter(config, &absolute, request.flags) {
            return;
        }
    }
    fill_task_info::<M>(M::current_task(), &mut buffer.record.task);
    send(buffer, blob.used);
}

#[inline(always)]
fn first_byte(buffer: &FileBuffer, piece: BlobRef) -> u8 {
    let at = piece.offset as usize & FILE_BLOB_OFFSET_MASK;
    buffer.blob[at]
}

#[inline(always)]
fn cwd_path<M: Mem>() -> Option<ResolvedPath> {
    let fs = M::read_ptr(M::current_task(), off!(task_fs))?;
    resolve_path::<M>(unsafe { fs.add(off!(fs_pwd) as usize) })
}
