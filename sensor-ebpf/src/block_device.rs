//! Block devices: new disks, loop devices created, attached and detached, read-only switches.
//!
//! New disks and their removal are seen at `device_add_disk` and `del_gendisk` (fexit/fentry,
//! else kprobes); where neither can be hooked, new disks are seen where their backing device
//! registers (`writeback_bdi_register`). Either way in the context of whoever caused it
//! (losetup for a loop device, a kernel worker for a USB drive).
//! Loop devices and BLKROSET are seen at `sys_exit` of their ioctls, so only what succeeded is
//! reported.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::{btf_tracepoint, fentry, fexit, kprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext},
};
use sensor_common::{block_device_op, file_flags, BlockDeviceBuffer};

use crate::{
    blob::Blob,
    emit::now_ns,
    file::file_of_fd,
    kread::{off, self_tgid, Direct, Mem, Probe},
    maps::BLOCK_DEVICE_BUF,
    path::resolve_path,
    record::{send, stage},
    task::fill_task_info,
};

const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_ADD: u32 = 0x4C80;
const LOOP_CTL_REMOVE: u32 = 0x4C81;
const BLKROSET: u32 = 0x125D;

// void writeback_bdi_register(struct backing_dev_info *bdi)
#[btf_tracepoint(function = "writeback_bdi_register")]
pub fn writeback_bdi_register(ctx: BtfTracePointContext) -> i32 {
    on_bdi_register(ctx.arg::<*const u8>(0));
    0
}

// int device_add_disk(struct device *parent, struct gendisk *disk,
//                     const struct attribute_group **groups)
// At exit the disk is in sysfs, so the daemon can describe it; the return value follows the
// three arguments.
#[fexit(function = "device_add_disk")]
pub fn device_add_disk_fexit(ctx: FExitContext) -> i32 {
    if ctx.arg::<i32>(3) == 0 {
        on_disk(ctx.arg::<*const u8>(1), block_device_op::DISK_ADDED);
    }
    0
}

#[kprobe(function = "device_add_disk")]
pub fn device_add_disk_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(disk) = ctx.arg::<*const u8>(1) {
        on_disk(disk, block_device_op::DISK_ADDED);
    }
    0
}

// void del_gendisk(struct gendisk *disk)
#[fentry(function = "del_gendisk")]
pub fn del_gendisk_fentry(ctx: FEntryContext) -> i32 {
    on_disk(ctx.arg::<*const u8>(0), block_device_op::DISK_REMOVED);
    0
}

#[kprobe(function = "del_gendisk")]
pub fn del_gendisk_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(disk) = ctx.arg::<*const u8>(0) {
        on_disk(disk, block_device_op::DISK_REMOVED);
    }
    0
}

/// A disk came or goes: its device number and name from the `struct gendisk`.
#[inline(always)]
fn on_disk(disk: *const u8, op: u32) {
    let Some(buffer) = start(op, 0) else {
        return;
    };
    buffer.record.dev = disk_dev(disk);
    buffer.record.name = Probe::read::<[u8; 32]>(disk, off!(gendisk_disk_name)).unwrap_or([0; 32]);
    fill_task_info::<Probe>(Probe::current_task(), &mut buffer.record.task);
    send(buffer, 0);
}

/// The kernel dev_t (major << 20 | minor) of a `struct gendisk`'s whole disk.
#[inline(always)]
pub fn disk_dev(disk: *const u8) -> u32 {
    let major = Probe::read::<i32>(disk, off!(gendisk_major)).unwrap_or(0) as u32;
    let minor = Probe::read::<i32>(disk, off!(gendisk_first_minor)).unwrap_or(0) as u32;
    (major << 20) | (minor & 0xfffff)
}

/// The kernel refused `op` ([`block_device_op::DENIED_MOUNT`] or [`block_device_op::DENIED_OPEN`])
/// on
/// denied device `dev`.
#[inline(always)]
pub fn report_denial(op: u32, dev: u32, ret: i32) {
    let Some(buffer) = start(op, ret) else {
        return;
    };
    buffer.record.dev = dev;
    fill_task_info::<Probe>(Probe::current_task(), &mut buffer.record.task);
    send(buffer, 0);
}

fn on_bdi_register(bdi: *const u8) {
    let Some(buffer) = start(block_device_op::DISK_ADDED, 0) else {
        return;
    };
    let name_offset = off!(bdi_dev_name);
    if name_offset != sensor_common::offsets::MISSING {
        buffer.record.name = crate::kread::read_at::<[u8; 32]>(bdi, name_offset).unwrap_or([0; 32]);
    }
    fill_task_info::<Direct>(Direct::current_task(), &mut buffer.record.task);
    send(buffer, 0);
}

/// An ioctl returned: report the loop and read-only ones that succeeded.
#[inline(always)]
pub fn on_ioctl<M: Mem>(regs: *const u8, ret: i64) {
    if ret < 0 {
        return;
    }
    let Some(cmd) = M::read::<u64>(regs, off!(regs_si)) else {
        return;
    };
    let cmd = cmd as u32;
    let op = match cmd {
        LOOP_SET_FD | LOOP_CONFIGURE => block_device_op::LOOP_ATTACHED,
        LOOP_CLR_FD => block_device_op::LOOP_DETACHED,
        LOOP_CTL_ADD => block_device_op::LOOP_ADDED,
        LOOP_CTL_REMOVE => block_device_op::LOOP_REMOVED,
        BLKROSET => block_device_op::READ_ONLY_SET,
        _ => return,
    };
    if (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid() {
        return;
    }
    let fd = M::read::<u64>(regs, off!(regs_di)).unwrap_or(u64::MAX) as i32;
    let arg = M::read::<u64>(regs, off!(regs_dx)).unwrap_or(0);
    let Some(buffer) = start(op, ret as i32) else {
        return;
    };
    let record = &mut buffer.record;
    match op {
        block_device_op::LOOP_ADDED => record.value = ret as u32,
        block_device_op::LOOP_REMOVED => record.value = arg as u32,
        _ => record.dev = device_of_fd::<M>(fd),
    }
    if op == block_device_op::READ_ONLY_SET {
        let mut flag: i32 = 0;
        // SAFETY: a 4-byte read into a local i32; a fault leaves it 0.
        unsafe {
            bpf_probe_read_user((&mut flag as *mut i32).cast(), 4, arg as *const _);
        }
        record.value = flag as u32;
    }
    let mut used = 0;
    if op == block_device_op::LOOP_ATTACHED {
        // LOOP_SET_FD passes the backing fd; LOOP_CONFIGURE a struct loop_config that starts
        // with it.
        let backing_fd = if cmd == LOOP_SET_FD {
            arg as i32
        } else {
            let mut fd: u32 = u32::MAX;
            // SAFETY: a 4-byte read into a local u32; a fault leaves it u32::MAX.
            unsafe {
                bpf_probe_read_user((&mut fd as *mut u32).cast(), 4, arg as *const _);
            }
            fd as i32
        };
        if let Some(resolved) = file_of_fd::<M>(backing_fd)
            .and_then(|f| resolve_path::<Probe>(f.wrapping_add(off!(file_path) as usize)))
        {
            let mut blob = Blob::<0>::new(buffer.blob.as_mut_ptr());
            buffer.record.backing = blob.kernel(resolved.data, resolved.len).unwrap_or_default();
            if resolved.truncated {
                buffer.record.flags |= file_flags::PATH_TRUNCATED;
            }
            used = blob.used;
        }
    }
    fill_task_info::<M>(M::current_task(), &mut buffer.record.task);
    send(buffer, used);
}

/// The device number a device file's inode stands for (`i_rdev`).
#[inline(always)]
fn device_of_fd<M: Mem>(fd: i32) -> u32 {
    file_of_fd::<M>(fd)
        .and_then(|file| Probe::read_ptr(file, off!(file_inode)))
        .and_then(|inode| Probe::read::<u32>(inode, off!(inode_rdev)))
        .unwrap_or(0)
}

/// A zeroed block-device record for `op` with its result, in this CPU's staging buffer.
#[inline(always)]
fn start(op: u32, ret: i32) -> Option<&'static mut BlockDeviceBuffer> {
    let buffer = stage(&BLOCK_DEVICE_BUF, now_ns())?;
    buffer.record.op = op;
    buffer.record.ret = ret;
    Some(buffer)
}
