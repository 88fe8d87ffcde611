//! Records shared by the kernel programs (`sensor-ebpf`) and the daemon (`sensor`).
//!
//! Every record that crosses the ring buffer starts with a [`RecordHeader`]. A record is a fixed
//! `#[repr(C)]` part followed by a variable "blob" (paths, argv) whose pieces are addressed by
//! [`BlobRef`]s in the fixed part; `header.size` covers both, so the kernel only copies the bytes
//! it used. Kinds are never renumbered: a retired kind keeps its number unused.
#![no_std]

pub mod offsets;
pub use offsets::KernelOffsets;

/// Record kinds. Also the index into the per-kind drop counters.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const EXIT: u32 = 2;
    pub const FORK: u32 = 3;
    /// Number of slots in the drop-counter array (highest kind + 1, with room to grow).
    pub const COUNT: u32 = 16;
}

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

/// Flags in [`TaskInfo::flags`].
pub mod task_flags {
    /// `ngroups` is larger than [`crate::MAX_GROUPS`]; `groups` holds the first ones.
    pub const GROUPS_TRUNCATED: u32 = 1 << 0;
    /// The kernel has no audit login uid / session id (CONFIG_AUDIT off).
    pub const NO_AUDIT: u32 = 1 << 1;
}

/// Longest path the kernel-side path walk produces, as the kernel's PATH_MAX.
pub const PATH_MAX: usize = 4096;
/// Bytes of argv captured per exec (NUL-separated, as in the process image).
pub const ARGV_MAX: usize = 4096;
/// Supplementary groups captured per task.
pub const MAX_GROUPS: usize = 32;
/// Bytes of the tty name (tty_struct.name is 64 bytes; real names are short).
pub const TTY_LEN: usize = 32;
/// Bytes of `comm`, as the kernel's TASK_COMM_LEN.
pub const COMM_LEN: usize = 16;
/// Capacity of the exec blob: a path, argv and a working directory, each at most 4 KiB, written
/// at offsets masked to 14 bits (see `sensor-ebpf`), so the masked offset plus one piece fits.
pub const EXEC_BLOB_CAP: usize = BLOB_OFFSET_MASK + 1 + PATH_MAX;
/// Mask applied to blob write offsets so the verifier can bound them.
pub const BLOB_OFFSET_MASK: usize = 0x3fff;

/// Common header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Bytes of the whole record, header included.
    pub size: u32,
    /// `bpf_ktime_get_boot_ns()` when the hook fired (CLOCK_BOOTTIME).
    pub ktime_ns: u64,
}

/// A piece of a record's blob.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobRef {
    pub offset: u16,
    pub len: u16,
}

/// The task an event happened in and the identity it ran with, read from `task_struct`/`cred`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    /// Process id of the real parent.
    pub ppid: u32,
    /// [`task_flags`].
    pub flags: u32,
    /// Start of the process (group leader), CLOCK_BOOTTIME ns.
    pub start_boottime_ns: u64,
    /// Start of the parent process, CLOCK_BOOTTIME ns.
    pub parent_start_boottime_ns: u64,
    /// cgroup v2 id (the cgroup directory's inode number).
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// Audit login uid; `u32::MAX` when unset.
    pub loginuid: u32,
    /// Audit session id; `u32::MAX` when unset.
    pub sessionid: u32,
    /// Number of supplementary groups the task really has.
    pub ngroups: u32,
    pub _pad: u32,
    pub groups: [u32; MAX_GROUPS],
    /// Controlling tty name (`pts1`, `tty2`), NUL-padded; empty without one.
    pub tty: [u8; TTY_LEN],
    pub comm: [u8; COMM_LEN],
}

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
    pub _pad: u32,
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

/// Per-CPU drop counters: slot `k` counts failed ring-buffer writes of kind `k`.
pub const DROP_COUNTERS_MAP: &str = "DROPS";
/// The ring buffer all records go through.
pub const EVENTS_MAP: &str = "EVENTS";
/// The global the daemon fills with [`KernelOffsets`] before load.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// The global holding the daemon's own process id, whose activity is never reported.
pub const SELF_TGID_GLOBAL: &str = "SELF_TGID";

// Layout guards: the daemon decodes these byte for byte.
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 16);
const _: () = assert!(core::mem::size_of::<BlobRef>() == 4);
const _: () = assert!(core::mem::size_of::<TaskInfo>() == 264);
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 304);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 288);
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 280);
// The exec staging buffer must fit a per-CPU array value (PCPU_MIN_UNIT_SIZE, 32 KiB).
const _: () = assert!(core::mem::size_of::<ExecBuffer>() <= 32 * 1024);
const _: () = assert!(PATH_MAX + ARGV_MAX + PATH_MAX <= BLOB_OFFSET_MASK + 1);
const _: () = assert!(EXEC_FIXED_SIZE + EXEC_BLOB_CAP <= u16::MAX as usize);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data structs of integers, no padding holes that matter to the kernel.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
