//! The mount family: mount(2), umount2(2) and the steps of the new mount API.
use crate::{kind, BlobRef, Record, RecordHeader, TaskInfo, BLOB_OFFSET_MASK, PATH_MAX};

/// A mount-related syscall returned: mount, umount2, or a step of the new mount API (fsopen,
/// fsconfig setting "source", fsmount, move_mount).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MountRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The syscall's number (one of the [`syscalls`](crate::syscalls) of the mount family).
    pub syscall: u32,
    /// The return value (0, a new fd, or -errno).
    pub ret: i32,
    /// mount(2)/umount2(2)/fsmount(2)/move_mount(2) flags.
    pub flags: u64,
    /// The first fd argument (fsconfig, fsmount: the fs context; move_mount: the detached mount).
    pub fd: i32,
    pub _pad: u32,
    /// Source (device or "source" value), target path and filesystem type, as passed.
    pub source: BlobRef,
    pub target: BlobRef,
    pub fstype: BlobRef,
    pub _pad2: u32,
}

pub const MOUNT_BLOB_CAP: usize = BLOB_OFFSET_MASK + 1 + PATH_MAX;

#[repr(C)]
pub struct MountBuffer {
    pub record: MountRecord,
    pub blob: [u8; MOUNT_BLOB_CAP],
}

const _: () = assert!(core::mem::size_of::<MountRecord>() == 320);
const _: () = assert!(core::mem::size_of::<MountBuffer>() <= 32 * 1024);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for MountRecord {
    const KIND: u32 = kind::MOUNT;
}
