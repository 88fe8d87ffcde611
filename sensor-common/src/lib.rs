//! Records shared by the kernel programs (`sensor-ebpf`) and the daemon (`sensor`).
//!
//! Every record that crosses the ring buffer starts with a [`RecordHeader`]. A record is a fixed
//! `#[repr(C)]` part followed by a variable "blob" (paths, argv) whose pieces are addressed by
//! [`BlobRef`]s in the fixed part; `header.size` covers both, so the kernel only copies the bytes
//! it used. Kinds are never renumbered: a retired kind keeps its number unused.
#![no_std]

pub mod kinds;
pub mod offsets;
pub mod syscalls;
pub use kinds::kind;
pub use offsets::KernelOffsets;

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

/// Flags in [`FileOpenRecord::flags`].
pub mod file_flags {
    /// The resolved path hit the walk's depth or size limit; `path` is a suffix.
    pub const PATH_TRUNCATED: u32 = 1 << 0;
    /// The directory a relative request was resolved against was truncated the same way.
    pub const DIR_TRUNCATED: u32 = 1 << 1;
    /// The requested path (failed opens) could not be read from user memory.
    pub const PATH_UNREADABLE: u32 = 1 << 2;
    /// First open of a deduplication window: identical opens that follow are counted in the
    /// kernel (see `FileDedupKey`) instead of sent.
    pub const DEDUP_FIRST: u32 = 1 << 3;
    /// A write open on a watched device (removable media, loop devices): reported whatever the
    /// filters and deduplication say.
    pub const WATCHED_DEVICE: u32 = 1 << 4;
    /// Reported at the permission check (LSM `file_open`), before the descriptor exists:
    /// `ret` is 0, not the fd.
    pub const FD_UNKNOWN: u32 = 1 << 5;
}

/// The syscall behind a [`FileOpenRecord`].
pub mod open_syscall {
    pub const OPEN: u32 = 1;
    pub const OPENAT: u32 = 2;
    pub const OPENAT2: u32 = 3;
    pub const CREAT: u32 = 4;
    /// IORING_OP_OPENAT through io_uring.
    pub const IO_URING_OPENAT: u32 = 5;
    /// IORING_OP_OPENAT2 through io_uring.
    pub const IO_URING_OPENAT2: u32 = 6;
}

/// An io_uring open request seen at submission, kept until its completion (the kernel frees
/// its copy of the path before then).
#[repr(C)]
pub struct UringOpen {
    pub syscall: u32,
    pub dfd: i32,
    pub flags: u32,
    /// Non-zero: the file goes to a fixed-file slot, not a descriptor.
    pub file_slot: u32,
    pub path_len: u32,
    pub _pad: u32,
    pub path: [u8; PATH_MAX],
}

/// Bits of [`FileFilterConfig::flags`].
pub mod filter_flags {
    /// The file sensor is on.
    pub const ENABLED: u32 = 1 << 0;
    /// Only opens that can modify the file (write access, create, truncate) are reported.
    pub const WRITES_ONLY: u32 = 1 << 1;
    /// Per dimension: the map has rules (worth a lookup), and some are includes (so a value
    /// that matches none is dropped).
    pub const PATH_RULES: u32 = 1 << 2;
    pub const PATH_INCLUDES: u32 = 1 << 3;
    pub const UID_RULES: u32 = 1 << 4;
    pub const UID_INCLUDES: u32 = 1 << 5;
    pub const COMM_RULES: u32 = 1 << 6;
    pub const COMM_INCLUDES: u32 = 1 << 7;
    pub const CGROUP_RULES: u32 = 1 << 8;
    pub const CGROUP_INCLUDES: u32 = 1 << 9;
    pub const EXE_RULES: u32 = 1 << 10;
    pub const EXE_INCLUDES: u32 = 1 << 11;
    /// `WATCHED_DEVICES` has entries (worth a lookup on write opens).
    pub const WATCHED_DEVICES: u32 = 1 << 12;
}

/// Values of the filter maps.
pub mod filter_action {
    pub const INCLUDE: u32 = 1;
    pub const EXCLUDE: u32 = 2;
    /// Kept (a policy's sensitive path), without making the other paths need an include.
    pub const KEEP: u32 = 3;
    /// Read-only opens are dropped, opens that can modify the file kept (the dynamic loader's
    /// and locale files every process reads).
    pub const EXCLUDE_READS: u32 = 4;
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

/// A credential-changing syscall (setuid family, setgroups, capset) returned. `task` holds the
/// credentials after it; the daemon compares them with what it knew before.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CredRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The syscall's number (one of the [`syscalls`] of the credentials family).
    pub syscall: u32,
    /// Its return value (0, -errno, or for setfsuid/setfsgid the previous id).
    pub ret: i32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
}

/// What a [`DeviceRecord`] reports.
pub mod device_op {
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
pub struct DeviceRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// One of [`device_op`].
    pub op: u32,
    /// The syscall's return value (0 for kernel hooks).
    pub ret: i32,
    /// Kernel dev_t (major << 20 | minor) of the device, where the operation names one.
    pub dev: u32,
    /// Operation-specific number (see [`device_op`]).
    pub value: u32,
    /// NUL-padded device name from the kernel (`DISK_ADDED`).
    pub name: [u8; 32],
    /// The backing file's absolute path (`LOOP_ATTACHED`).
    pub backing: BlobRef,
    /// [`file_flags::PATH_TRUNCATED`] when `backing` is a suffix.
    pub flags: u32,
}

pub const DEVICE_FIXED_SIZE: usize = core::mem::size_of::<DeviceRecord>();

/// Kernel-side staging area for a device record: one path at offset 0.
#[repr(C)]
pub struct DeviceBuffer {
    pub record: DeviceRecord,
    pub blob: [u8; PATH_MAX + 1],
}

/// A mount-related syscall returned: mount, umount2, or a step of the new mount API (fsopen,
/// fsconfig setting "source", fsmount, move_mount).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MountRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The syscall's number (one of the [`syscalls`] of the mount family).
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

pub const MOUNT_FIXED_SIZE: usize = core::mem::size_of::<MountRecord>();
pub const MOUNT_BLOB_CAP: usize = BLOB_OFFSET_MASK + 1 + PATH_MAX;

#[repr(C)]
pub struct MountBuffer {
    pub record: MountRecord,
    pub blob: [u8; MOUNT_BLOB_CAP],
}

/// An open(2)-family syscall completed, successfully or not.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileOpenRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// One of [`open_syscall`].
    pub syscall: u32,
    /// [`file_flags`].
    pub flags: u32,
    /// open(2) flags: the opened file's `f_flags` on success, the requested flags on failure.
    pub open_flags: u32,
    /// The opened file's `f_mode` (FMODE_READ = 1, FMODE_WRITE = 2); 0 on failure.
    pub fmode: u32,
    /// The new file descriptor, or -errno.
    pub ret: i32,
    /// The directory fd the request was relative to (AT_FDCWD = -100).
    pub dfd: i32,
    /// Kernel dev_t of the file's filesystem (major << 20 | minor); 0 on failure.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
    /// Identical opens counted in this record's dedup window so far (the first record of a
    /// window carries the running total of the previous windows, see `sensor`'s dedup module).
    pub suppressed_total: u64,
    /// The opener's `mm` and `real_cred` pointers, part of the dedup key (a new program image
    /// or new credentials start new windows). Never output.
    pub key_mm: u64,
    pub key_cred: u64,
    /// Success: the opened file's absolute path, resolved in the kernel. Failure: the path as
    /// the caller passed it.
    pub path: BlobRef,
    /// Failure with a relative path: the directory it was relative to (cwd or `dfd`).
    pub dir: BlobRef,
}

pub const FILE_FIXED_SIZE: usize = core::mem::size_of::<FileOpenRecord>();
/// Blob offsets of file records are masked to 13 bits: a path and a directory, 4 KiB each.
pub const FILE_BLOB_OFFSET_MASK: usize = 0x1fff;
pub const FILE_BLOB_CAP: usize = FILE_BLOB_OFFSET_MASK + 1 + PATH_MAX;

/// Kernel-side staging area for a file record.
#[repr(C)]
pub struct FileBuffer {
    pub record: FileOpenRecord,
    pub blob: [u8; FILE_BLOB_CAP],
}

/// Runtime filter settings, in slot 0 of the `FILE_FILTER` array; the daemon rewrites it on
/// reload, without reloading programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileFilterConfig {
    /// [`filter_flags`].
    pub flags: u32,
    pub _pad: u32,
    /// Identical opens within this many nanoseconds of a window's first are counted, not sent;
    /// 0 turns deduplication off.
    pub dedup_window_ns: u64,
}

/// Bytes of a path compared against the prefix rules (the LPM trie's key limit is 256).
pub const PREFIX_MAX: usize = 252;

/// Key of the `PATH_PREFIXES` LPM trie: the prefix length in bits, then the path bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PrefixKey {
    pub prefix_len: u32,
    pub data: [u8; PREFIX_MAX],
}

/// Identity of "the same open" for deduplication: same process, program image and credentials,
/// same file, same access. After an execve or a credential change the opens are someone else's
/// to report, so `mm` and `cred` (the kernel objects' addresses) are part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileDedupKey {
    pub tgid: u32,
    /// open flags that define the access: O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND.
    pub access: u32,
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
    pub mm: u64,
    pub cred: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileDedupState {
    /// When the current window began (CLOCK_BOOTTIME ns).
    pub window_start_ns: u64,
    /// Opens counted instead of sent, over the life of this entry (never reset).
    pub suppressed_total: u64,
}

/// Per-CPU drop counters: slot `k` counts failed ring-buffer writes of kind `k`.
pub const DROP_COUNTERS_MAP: &str = "DROPS";
/// The ring buffer all records go through.
pub const EVENTS_MAP: &str = "EVENTS";
/// The global the daemon fills with [`KernelOffsets`] before load.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// The global holding the daemon's own process id, whose activity is never reported.
pub const SELF_TGID_GLOBAL: &str = "SELF_TGID";
/// The global holding the ring-buffer wakeup threshold in bytes.
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";
/// File-open filter maps.
pub const FILE_FILTER_MAP: &str = "FILE_FILTER";
pub const PATH_PREFIXES_MAP: &str = "PATH_PREFIXES";
pub const FILTER_UIDS_MAP: &str = "FILTER_UIDS";
pub const FILTER_COMMS_MAP: &str = "FILTER_COMMS";
pub const FILTER_CGROUPS_MAP: &str = "FILTER_CGROUPS";
/// Executables filtered by (dev, inode) of their file, see [`ExeKey`].
pub const FILTER_EXES_MAP: &str = "FILTER_EXES";
pub const FILE_DEDUP_MAP: &str = "FILE_DEDUP";
/// Devices (kernel dev_t) whose write opens are always reported.
pub const WATCHED_DEVICES_MAP: &str = "WATCHED_DEVICES";
/// Devices (kernel dev_t) the kernel refuses to mount or open (value: the deciding rule's
/// index), where BPF LSM runs.
pub const DENIED_DEVICES_MAP: &str = "DENIED_DEVICES";
/// Slot 0 is 1 while LSM `file_open` reports successful opens (`sys_exit` then reports only
/// failures).
pub const OPEN_HOOK_MAP: &str = "OPEN_HOOK";

/// An executable file, as filter key: its filesystem's dev_t and its inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

// Layout guards: the daemon decodes these byte for byte.
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 16);
const _: () = assert!(core::mem::size_of::<BlobRef>() == 4);
const _: () = assert!(core::mem::size_of::<TaskInfo>() == 264);
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 320);
const _: () = assert!(core::mem::size_of::<CredRecord>() == 304);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 288);
const _: () = assert!(core::mem::size_of::<ForkRecord>() == 280);
const _: () = assert!(core::mem::size_of::<FileOpenRecord>() == 352);
const _: () = assert!(core::mem::size_of::<DeviceRecord>() == 336);
const _: () = assert!(core::mem::size_of::<MountRecord>() == 320);
const _: () = assert!(core::mem::size_of::<MountBuffer>() <= 32 * 1024);
const _: () = assert!(core::mem::size_of::<FileBuffer>() <= 32 * 1024);
const _: () = assert!(PATH_MAX + PATH_MAX <= FILE_BLOB_OFFSET_MASK + 1);
const _: () = assert!(core::mem::size_of::<PrefixKey>() == 256);
const _: () = assert!(core::mem::size_of::<FileDedupKey>() == 40);
// The exec staging buffer must fit a per-CPU array value (PCPU_MIN_UNIT_SIZE, 32 KiB).
const _: () = assert!(core::mem::size_of::<ExecBuffer>() <= 32 * 1024);
const _: () = assert!(PATH_MAX + ARGV_MAX + PATH_MAX <= BLOB_OFFSET_MASK + 1);
const _: () = assert!(EXEC_FIXED_SIZE + EXEC_BLOB_CAP <= u16::MAX as usize);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data structs of integers, no padding holes that matter to the kernel.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::FileFilterConfig {}
    unsafe impl aya::Pod for super::PrefixKey {}
    unsafe impl aya::Pod for super::FileDedupKey {}
    unsafe impl aya::Pod for super::FileDedupState {}
    unsafe impl aya::Pod for super::ExeKey {}
}
