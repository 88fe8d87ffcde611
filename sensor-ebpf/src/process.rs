//! Process lifecycle: exec, exit and fork.
//!
//! Each hook has a `tp_btf` program and, where the hook can work without the BTF arguments, a
//! classic tracepoint twin; the daemon loads whichever this kernel accepts. Both call one handler
//! with the `task_struct` pointer.
use aya_ebpf::EbpfContext as _;
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sensor_common::{exec_flags, ExitRecord, ForkRecord, ARGV_MAX, BLOB_OFFSET_MASK};

use crate::{
    blob::Blob,
    emit::now_ns,
    kread::{off, self_tgid, Direct, Mem, Probe},
    maps::EXEC_BUF,
    recent_paths::append_path,
    record::{send, stage, Reserved},
    task::{capabilities, fill_task_info, thread_group_dead},
};

// void sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    let bprm = ctx.arg::<*const u8>(2);
    let invoked = Direct::read_ptr(bprm, off!(bprm_filename));
    on_exec::<Direct>(ctx.arg::<*const u8>(0), invoked);
    0
}

// tracepoint/sched/sched_process_exec: fires in the context of the task that exec'd.
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec_tp(ctx: TracePointContext) -> u32 {
    // `__data_loc char[] filename` at offset 8: the string's offset in the low 16 bits.
    // SAFETY: reading the tracepoint's own fixed field; the helper checks the bounds.
    let invoked = unsafe { ctx.read_at::<u32>(8) }.ok().map(|loc| {
        ctx.as_ptr()
            .cast::<u8>()
            .wrapping_add((loc & 0xffff) as usize) as *const u8
    });
    on_exec::<Probe>(Probe::current_task(), invoked);
    0
}

// void sched_process_exit(struct task_struct *p, bool group_dead)
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_exit::<Direct>(ctx.arg::<*const u8>(0));
    0
}

// tracepoint/sched/sched_process_exit: fires in the context of the exiting thread.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_tp(_ctx: TracePointContext) -> u32 {
    on_exit::<Probe>(Probe::current_task());
    0
}

// void sched_process_fork(struct task_struct *parent, struct task_struct *child)
// No classic twin: its tracepoint gives pids only, not the child task.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork_btf(ctx: BtfTracePointContext) -> i32 {
    on_fork::<Direct>(ctx.arg::<*const u8>(1));
    0
}

#[inline(always)]
fn is_self<M: Mem>(task: *const u8) -> bool {
    let own = self_tgid();
    own != 0 && M::read::<u32>(task, off!(task_tgid)) == Some(own)
}

fn on_exec<M: Mem>(task: *const u8, invoked: Option<*const u8>) {
    if task.is_null() {
        return;
    }
    let Some(buffer) = stage(&EXEC_BUF, now_ns()) else {
        return;
    };
    let record = &mut buffer.record;
    fill_task_info::<M>(task, &mut record.task);
    let (effective, permitted) = capabilities::<M>(task);
    record.cap_effective = effective;
    record.cap_permitted = permitted;

    let mut blob = Blob::<BLOB_OFFSET_MASK>::new(buffer.blob.as_mut_ptr());

    // The executable: the file the new image was mapped from, resolved to an absolute path.
    let mm = M::read_ptr(task, off!(task_mm));
    let exe_file = mm.and_then(|mm| M::read_ptr(mm, off!(mm_exe_file)));
    if let Some(exe_file) = exe_file {
        let file_path = exe_file.wrapping_add(off!(file_path) as usize);
        if let Some((path, truncated)) = append_path::<M, BLOB_OFFSET_MASK>(file_path, &mut blob) {
            if truncated {
                record.flags |= exec_flags::PATH_TRUNCATED;
            }
            record.path = path;
        }
    }

    // argv, straight from the new process image.
    match mm {
        Some(mm) => {
            let start = M::read::<u64>(mm, off!(mm_arg_start)).unwrap_or(0);
            let end = M::read::<u64>(mm, off!(mm_arg_end)).unwrap_or(0);
            if end > start {
                let total = end - start;
                record.argv_total = total as u32;
                let mut len = total as usize;
                if len > ARGV_MAX {
                    len = ARGV_MAX;
                    record.flags |= exec_flags::ARGV_TRUNCATED;
                }
                match blob.user(start as *const u8, len) {
                    Some(argv) => record.argv = argv,
                    None => record.flags |= exec_flags::ARGV_UNREADABLE,
                }
            }
        }
        None => record.flags |= exec_flags::ARGV_UNREADABLE,
    }

    // The path it was invoked by, as execve got it.
    if let Some(invoked) = invoked.filter(|p| !p.is_null()) {
        record.invoked = blob.kernel_str(invoked).unwrap_or_default();
    }

    // Working directory.
    if let Some(fs) = M::read_ptr(task, off!(task_fs)) {
        let pwd = fs.wrapping_add(off!(fs_pwd) as usize);
        if let Some((cwd, truncated)) = append_path::<M, BLOB_OFFSET_MASK>(pwd, &mut blob) {
            if truncated {
                record.flags |= exec_flags::CWD_TRUNCATED;
            }
            record.cwd = cwd;
        }
    }

    let used = blob.used;
    send(buffer, used);
}

fn on_exit<M: Mem>(task: *const u8) {
    if task.is_null() || is_self::<M>(task) || !thread_group_dead::<M>(task) {
        return;
    }
    let Some(mut exit) = Reserved::<ExitRecord>::new() else {
        return;
    };
    let record = exit.record();
    fill_task_info::<M>(task, &mut record.task);
    record.exit_code = M::read::<u32>(task, off!(task_exit_code)).unwrap_or(0);
    exit.submit();
}

fn on_fork<M: Mem>(child: *const u8) {
    if child.is_null() {
        return;
    }
    // Threads share their process's identity and image: only new processes matter.
    let tgid = M::read::<u32>(child, off!(task_tgid));
    if tgid.is_none() || tgid != M::read::<u32>(child, off!(task_pid)) || is_self::<M>(child) {
        return;
    }
    // The fork's time is the child's start, which the kernel took just before this hook; not
    // reading the clock again took about a tenth off this program on a small VM.
    let started = M::read::<u64>(child, off!(task_start_boottime)).unwrap_or(0);
    let Some(mut fork) = Reserved::<ForkRecord>::stamped(started) else {
        return;
    };
    fill_task_info::<M>(child, &mut fork.record().task);
    fork.submit();
}
