//! Device control in the kernel, where BPF LSM runs: denied devices' mounts and the opens of
//! their device nodes fail with EPERM. The `file_open` hook also reports successful opens for
//! the file family, at the permission check.
//!
//! An LSM program's return value is the decision; `ret` (the last argument) is what the LSMs
//! before it decided, and a refusal there stands.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use sensor_common::block_device_op;

use crate::{
    block_device::{disk_dev, report_denial},
    file::on_lsm_open,
    kread::{off, Mem, Probe},
    maps::DENIED_DEVICES,
};

const EPERM: i32 = 1;
const S_IFMT: u16 = 0o170000;
const S_IFBLK: u16 = 0o060000;

// int file_open(struct file *file)
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let file = ctx.arg::<*const u8>(0);
    let earlier = ctx.arg::<i32>(1);
    if earlier != 0 {
        return earlier;
    }
    if let Some(dev) = denied_block_node(file) {
        report_denial(block_device_op::DENIED_OPEN, dev, -EPERM);
        return -EPERM;
    }
    on_lsm_open(file);
    0
}

// int sb_set_mnt_opts(struct super_block *sb, void *mnt_opts, unsigned long kern_flags,
//                     unsigned long *set_kern_flags)
// Called once a new superblock is read, before it is mounted anywhere.
#[lsm(hook = "sb_set_mnt_opts")]
pub fn sb_set_mnt_opts(ctx: LsmContext) -> i32 {
    let sb = ctx.arg::<*const u8>(0);
    let earlier = ctx.arg::<i32>(4);
    if earlier != 0 {
        return earlier;
    }
    let Some(dev) = Probe::read::<u32>(sb, off!(sb_dev)) else {
        return 0;
    };
    // A partition of a denied disk is denied too.
    let disk = Probe::read_ptr(sb, off!(sb_bdev))
        .and_then(|bdev| Probe::read_ptr(bdev, off!(bdev_disk)))
        .map(disk_dev)
        .unwrap_or(dev);
    // SAFETY: the value is only tested for presence, never read while the daemon may rewrite it.
    if unsafe { DENIED_DEVICES.get(&dev) }.is_some()
        || unsafe { DENIED_DEVICES.get(&disk) }.is_some()
    {
        report_denial(block_device_op::DENIED_MOUNT, dev, -EPERM);
        return -EPERM;
    }
    0
}

/// The device number of a denied block device whose node `file` opens.
#[inline(always)]
fn denied_block_node(file: *const u8) -> Option<u32> {
    let inode = Probe::read_ptr(file, off!(file_inode))?;
    let mode = Probe::read::<u16>(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFBLK {
        return None;
    }
    let dev = Probe::read::<u32>(inode, off!(inode_rdev))?;
    // SAFETY: as above: presence only.
    unsafe { DENIED_DEVICES.get(&dev) }.map(|_| dev)
}
