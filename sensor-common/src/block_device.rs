//! The block-device family: disks and loop devices appearing, changing and going away.
use crate::{kind, BlobRef, Record, RecordHeader, TaskInfo, PATH_MAX};

/// What a [`BlockDeviceRecord`] reports.
pub mod block_device_op {
    /// A new disk: from `device_add_disk` (`dev` set, `name` the disk's name) or, where that
    /// cannot be hooked, from `writeback_bdi_register` (`dev` 0, `name` holds "major:minor").
    pub const DISK_ADDED: u32 = 1;
    /// `LOOP_CTL_ADD` created loop device number `value`.
    pub const LOOP_ADDED: u32 = 2;
    /// `LOOP_CTL_REMOVE` removed loop device number `value`.
    pub const LOOP_REMOVED: u32 = 3;
    /// `LOOP_SET_FD` or `LOOP_CONFIGURE` attached the file `backing` to loop device `dev`.
    pub const LOOP_ATTACHED: u32 = 4;
    /// `LOOP_CLR_FD` detached loop device `dev`.
    pub const LOOP_DETACHED: u32 = 5;
    /// `BLKROSET` set device `dev` read-only (`value` 1) or writable (0).
    pub const READ_ONLY_SET: u32 = 6;
    /// Disk `dev` (`name`) is being removed (`del_gendisk`): a drive unplugged, a loop
    /// device removed.
    pub const DISK_REMOVED: u32 = 7;
    /// The kernel refused to mount denied device `dev` (BPF LSM `sb_set_mnt_opts`).
    pub const DENIED_MOUNT: u32 = 8;
    /// The kernel refused to open the node of denied device `dev` (BPF LSM `file_open`).
    pub const DENIED_OPEN: u32 = 9;
}

/// A block device appeared, changed or went away, and who did it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockDeviceRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// One of [`block_device_op`].
    pub op: u32,
    /// The syscall's return value (0 for kernel hooks).
    pub ret: i32,
    /// Kernel dev_t (major << 20 | minor) of the device, where the operation names one.
    pub dev: u32,
    /// Operation-specific number (see [`block_device_op`]).
    pub value: u32,
    /// NUL-padded device name from the kernel (`DISK_ADDED`).
    pub name: [u8; 32],
    /// The backing file's absolute path (`LOOP_ATTACHED`).
    pub backing: BlobRef,
    /// [`crate::file_flags::PATH_TRUNCATED`] when `backing` is a suffix.
    pub flags: u32,
}

/// Kernel-side staging area for a device record: one path at offset 0.
#[repr(C)]
pub struct BlockDeviceBuffer {
    pub record: BlockDeviceRecord,
    pub blob: [u8; PATH_MAX + 1],
}

const _: () = assert!(core::mem::size_of::<BlockDeviceRecord>() == 336);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for BlockDeviceRecord {
    const KIND: u32 = kind::BLOCK_DEVICE;
}
