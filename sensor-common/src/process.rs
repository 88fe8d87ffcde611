//! The process family: exec, exit and fork records.
use crate::{kind, BlobRef, Record, RecordHeader, TaskInfo, BLOB_OFFSET_MASK, PATH_MAX};

/// Flags in [`ExecRecord::flags`].
pub mod exec_flags {
    /// argv was longer than [`crate::ARGV_MAX`]; what is present is a prefix.
    pub const ARGV_TRUNCATED: u32 = 1 << 0;
    /// The executable path had more components or bytes than the kernel walk allows.
    pub const PATH_TRUNCATED: u32 = 1 << 1;
    /// The working directory was truncated the same way.
    pub const CWD_TRUNCATED: u32 = 1 << 2;
    /// argv could not be read from the new process image at all.
    pub const ARGV_UNREADABLE: u32 = 1 << 3;
}

/// Capacity of the exec blob: a path, argv and a working directory, each at most 4 KiB, written
/// at offsets masked to 14 bits (see `sensor-ebpf`), so the masked offset plus one piece fits.
pub const EXEC_BLOB_CAP: usize = BLOB_OFFSET_MASK + 1 + PATH_MAX;

/// A process image was replaced (`execve`/`execveat` succeeded).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// [`exec_flags`].
    pub flags: u32,
    /// Total bytes of argv in the process image (may exceed what was captured).
    pub argv_total: u32,
    /// Absolute path of the executable (the file actually mapped, symlinks resolved).
    pub path: BlobRef,
    /// argv, NUL-separated.
    pub argv: BlobRef,
    /// Absolute working directory.
    pub cwd: BlobRef,
    /// The path execve was given (before symlinks; may be relative to `cwd`).
    pub invoked: BlobRef,
    /// Capability sets of the new image's credentials (bit n = capability n).
    pub cap_effective: u64,
    pub cap_permitted: u64,
}

/// Fixed part size of [`ExecRecord`]; the blob follows it.
pub const EXEC_FIXED_SIZE: usize = core::mem::size_of::<ExecRecord>();

/// Kernel-side staging area for an exec record: the fixed part and its blob, contiguous.
#[repr(C)]
pub struct ExecBuffer {
    pub record: ExecRecord,
    pub blob: [u8; EXEC_BLOB_CAP],
}

/// A process (thread group) ended: its last thread exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// `task_struct.exit_code`: wait(2) status (exit code << 8, or the signal number).
    pub exit_code: u32,
    pub _pad: u32,
}

/// A new process (not a thread) was forked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkRecord {
    pub header: RecordHeader,
    /// The child; its `ppid` and `parent_start_boottime_ns` name the parent.
    pub task: TaskInfo,
}

const _: () = assert!(core::mem::size_of::<ExecRecord>() == 320);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 288);
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 280);
// The exec staging buffer must fit a per-CPU array value (PCPU_MIN_UNIT_SIZE, 32 KiB).
const _: () = assert!(core::mem::size_of::<ExecBuffer>() <= 32 * 1024);
const _: () = assert!(PATH_MAX + crate::ARGV_MAX + PATH_MAX <= BLOB_OFFSET_MASK + 1);
const _: () = assert!(EXEC_FIXED_SIZE + EXEC_BLOB_CAP <= u16::MAX as usize);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for ExecRecord {
    const KIND: u32 = kind::EXEC;
}

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for ExitRecord {
    const KIND: u32 = kind::EXIT;
}

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for ForkRecord {
    const KIND: u32 = kind::FORK;
}
