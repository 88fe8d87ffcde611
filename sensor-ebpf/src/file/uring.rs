//! Opens through io_uring (IORING_OP_OPENAT, IORING_OP_OPENAT2): the request is kept at
//! submission, while it still holds the path, and reported at completion.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_kernel_str},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sensor_common::{filter_flags, open_syscall, PATH_MAX};

use super::{
    current_tgid,
    filter::passes_process_filters,
    lookup::OpenedFile,
    report::{failed, opened},
    reporting_config,
    verdict::names_changed,
    Request, AT_FDCWD, EACCES, EPERM,
};
use crate::{
    kread::{off, Direct, Mem, Probe},
    maps::{FILE_FILTER, URING_OPENS, URING_SCRATCH},
};

const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;
const IORING_OP_RENAMEAT: u8 = 35;

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
    if reporting_config(current_tgid()).is_none() {
        return;
    }
    let Some(scratch) = URING_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's URING_SCRATCH slot, used by one program at a time.
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
        // SAFETY: at most `open.path.len()` bytes into `open.path`; the helper checks the source.
        let copied = unsafe {
            bpf_probe_read_kernel_str(
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
    let opcode = Probe::read::<u8>(req, off!(kiocb_opcode)).unwrap_or(0);
    if opcode == IORING_OP_RENAMEAT {
        if Direct::read::<i32>(cqe, off!(cqe_res)).is_some_and(|res| res >= 0) {
            names_changed();
        }
        return;
    }
    if uring_open_syscall(opcode).is_none() {
        return;
    }
    let key = req as u64;
    // SAFETY: only this request's completion reads or removes its entry.
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
            if let Some(file) = OpenedFile::of_fd::<Direct>(Direct::current_task(), ret) {
                opened::<Direct>(&config, &request, tgid, &file, ret, false);
            }
        }
    }
    let _ = URING_OPENS.remove(&key);
}
