//! The privilege family: credential-changing syscalls (setuid family, setgroups, capset).
use crate::{kind, Record, RecordHeader, TaskInfo};

/// A credential-changing syscall (setuid family, setgroups, capset) returned. `task` holds the
/// credentials after it; the daemon compares them with what it knew before.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivilegeChangeRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// The syscall's number (one of the [`syscalls`](crate::syscalls) of the credentials family).
    pub syscall: u32,
    /// Its return value (0, -errno, or for setfsuid/setfsgid the previous id).
    pub ret: i32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
}

const _: () = assert!(core::mem::size_of::<PrivilegeChangeRecord>() == 304);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for PrivilegeChangeRecord {
    const KIND: u32 = kind::PRIVILEGE_CHANGE;
}
