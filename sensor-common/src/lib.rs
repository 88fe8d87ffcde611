//! Records shared by the kernel programs (`sensor-ebpf`) and the daemon (`sensor`).
//!
//! Every record that crosses the ring buffer starts with a [`RecordHeader`]. A record is a fixed
//! `#[repr(C)]` part followed by a variable "blob" (paths, argv) whose pieces are addressed by
//! [`BlobRef`]s in the fixed part; `header.size` covers both, so the kernel only copies the bytes
//! it used. Kinds are never renumbered: a retired kind keeps its number unused.
//!
//! Each event family has its module, named as in the other crates: [`process`], [`file`],
//! [`privilege`], [`block_device`], [`mount`], [`device_control`], [`network`]. The event kinds
//! are declared once, in the table below (see [`kinds`]); the watched syscalls in
//! [`syscalls`], the kernel offsets in [`offsets`].
#![no_std]

pub mod block_device;
pub mod device_control;
pub mod file;
pub mod kinds;
pub mod mount;
pub mod network;
pub mod offsets;
pub mod privilege;
pub mod process;
pub mod syscalls;

pub use block_device::*;
pub use device_control::*;
pub use file::*;
pub use mount::*;
pub use network::*;
pub use offsets::KernelOffsets;
pub use privilege::*;
pub use process::*;

event_kinds! {
    // NAME = number, short name, body member (or `tracked`), record kind if the kernel sends it.
    PROCESS_EXEC = 1, "exec", "exec", record EXEC;
    PROCESS_EXIT = 2, "exit", "exit", record EXIT;
    PROCESS_FORK = 3, "fork", tracked, record FORK;
    FILE_OPEN = 4, "file_open", "file_open", record FILE_OPEN;
    LOSS = 5, "loss", "loss";
    PRIVILEGE_CHANGE = 6, "privilege_change", "privilege_change", record PRIVILEGE_CHANGE;
    SESSION_START = 7, "session_start", "session_start";
    SESSION_END = 8, "session_end", "session_end";
    BLOCK_DEVICE = 9, "block_device", "block_device", record BLOCK_DEVICE;
    MOUNT = 10, "mount", "mount", record MOUNT;
    DEVICE_CONTROL = 11, "device_control", "device_control";
    DEVICE_WRITE_SUMMARY = 12, "device_write_summary", "device_write_summary";
    ALERT = 13, "alert", "alert";
    NETWORK = 14, "network", "network", record NETWORK;
    ACCESS_USAGE = 15, "access_usage", "access_usage";
}

/// A record that crosses the ring buffer, and its kind.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a [`RecordHeader`], and are valid when every byte
/// is zero: the kernel programs build each record from zeroed memory.
pub unsafe trait Record: Copy + 'static {
    /// The record kind, one of [`kind`].
    const KIND: u32;
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

impl TaskInfo {
    /// The supplementary groups the record captured (at most [`MAX_GROUPS`]).
    pub fn captured_groups(&self) -> &[u32] {
        let captured = if (self.ngroups as usize) < MAX_GROUPS {
            self.ngroups as usize
        } else {
            MAX_GROUPS
        };
        &self.groups[..captured]
    }

    /// `groups` with the slots past the captured ones zeroed: they hold whatever the kernel's
    /// buffer held, so only this form may be compared or hashed.
    pub fn comparable_groups(&self) -> [u32; MAX_GROUPS] {
        let mut groups = [0; MAX_GROUPS];
        let captured = self.captured_groups();
        groups[..captured.len()].copy_from_slice(captured);
        groups
    }
}

/// Per-CPU drop counters: slot `k` counts failed ring-buffer writes of kind `k`; slot
/// [`UNTRACKED_BASE`]` + k` counts records of kind `k` whose follow-up will not come because
/// a kernel table that follows them (open TCP connections) was full; slot [`DROP_ANY`] counts
/// every one of them, so the daemon reads one slot a second while nothing is dropped.
pub const DROP_COUNTERS_MAP: &str = "DROPS";
/// See [`DROP_COUNTERS_MAP`].
pub const UNTRACKED_BASE: u32 = kind::COUNT;
/// Slots counting one kind and cause each (see [`DROP_COUNTERS_MAP`]).
pub const DROP_KIND_SLOTS: u32 = 2 * kind::COUNT;
/// See [`DROP_COUNTERS_MAP`].
pub const DROP_ANY: u32 = DROP_KIND_SLOTS;
/// Slots of [`DROP_COUNTERS_MAP`].
pub const DROP_SLOTS: u32 = DROP_KIND_SLOTS + 1;
/// The ring buffer all records go through.
pub const EVENTS_MAP: &str = "EVENTS";
/// Slot 0 is 1 while the daemon waits for records with no timer running: the next record
/// wakes it (and sets the slot back to 0).
pub const READER_ASLEEP_MAP: &str = "READER_ASLEEP";
/// The global the daemon fills with [`ProgramGlobals`] before load.
pub const PROGRAM_GLOBALS: &str = "GLOBALS";

/// Kernel functions the programs call. aya does not link kfunc calls, so a program writes the
/// call as a raw instruction with a marker for its immediate, and the daemon puts the
/// function's BTF id there before load (or a harmless move where the kernel lacks it, on a
/// path the verifier then finds dead).
pub mod kfunc {
    /// `call` (`BPF_JMP | BPF_CALL`) with `src_reg` 2 (`BPF_PSEUDO_KFUNC_CALL`): the low half
    /// of a kfunc call instruction read as a little-endian u64.
    const KFUNC_CALL: u64 = 0x2085;
    /// The immediate marking a call of `bpf_rdonly_cast(address, btf_id)`.
    pub const RDONLY_CAST_MARKER: u32 = 0x7ead_0c57;
    /// The whole marked instruction, as a little-endian u64.
    pub const RDONLY_CAST_CALL: u64 = ((RDONLY_CAST_MARKER as u64) << 32) | KFUNC_CALL;
    /// `r0 = 0`: what the call becomes where the kernel has no `bpf_rdonly_cast`.
    pub const CLEAR_R0: u64 = 0xb7;
}

/// Everything the daemon tells the programs before load, in one read-only global. One, so
/// that its layout is this struct's: the values every program reads first (the daemon's own
/// process id, the wakeup threshold, the task and credential offsets) share the first cache
/// lines, which a program run on a busy host otherwise fetches from memory one line each.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramGlobals {
    /// Process id of the daemon itself, whose activity is never reported.
    pub self_tgid: u32,
    /// Bytes one CPU queues before a record wakes the daemon; 0 wakes it for every record.
    pub wakeup_bytes: u32,
    /// BTF id of `struct files_struct` where the kernel has the `bpf_rdonly_cast` kfunc, so
    /// that an opened file is read with plain loads (see [`kfunc`]); 0 where it has not, and
    /// the programs read it with helper calls.
    pub files_struct_type: u32,
    pub offsets: KernelOffsets,
}

impl ProgramGlobals {
    /// What the programs see if the daemon never filled them in.
    pub const UNSET: Self = Self {
        self_tgid: 0,
        wakeup_bytes: 0,
        files_struct_type: 0,
        offsets: KernelOffsets::UNSET,
    };
}

// Layout guards: the daemon decodes these byte for byte.
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 16);
const _: () = assert!(core::mem::size_of::<BlobRef>() == 4);
const _: () = assert!(core::mem::size_of::<TaskInfo>() == 264);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data structs of integers, no padding holes that matter to the kernel.
    unsafe impl aya::Pod for super::ProgramGlobals {}
    unsafe impl aya::Pod for super::FileFilterConfig {}
    unsafe impl aya::Pod for super::PrefixKey {}
    unsafe impl aya::Pod for super::FileDedupKey {}
    unsafe impl aya::Pod for super::FileDedupState {}
    unsafe impl aya::Pod for super::ExeKey {}
    unsafe impl aya::Pod for super::NetworkFilterConfig {}
    unsafe impl aya::Pod for super::NetworkAddrKey {}
    unsafe impl aya::Pod for super::NetworkDedupKey {}
    unsafe impl aya::Pod for super::NetworkDedupState {}
}
