//! The network family: connect, accept and listen, seen at syscall exit with their result.
use crate::{kind, Record, RecordHeader, TaskInfo};

/// What a [`NetworkRecord`] reports.
pub mod network_op {
    pub const CONNECT: u32 = 1;
    pub const ACCEPT: u32 = 2;
    pub const LISTEN: u32 = 3;
}

/// Values of [`NetworkRecord::family`].
pub mod address_family {
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// The kernel's TCP states a connect passes through.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
}

/// Bits of [`NetworkFilterConfig::flags`].
pub mod network_flags {
    /// The network sensor is on.
    pub const ENABLED: u32 = 1 << 0;
    /// Connections whose peer is a loopback address are reported too.
    pub const LOOPBACK: u32 = 1 << 1;
    /// The state-change hook runs: a non-blocking connect in progress is reported when its
    /// outcome is known (set by the daemon once the hook is attached).
    pub const COMPLETIONS: u32 = 1 << 2;
}

/// A socket syscall returned. Addresses are in network byte order as the kernel keeps them;
/// an IPv4 address fills the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetworkRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// One of [`network_op`].
    pub op: u32,
    /// The syscall's number (one of the [`syscalls`](crate::syscalls) of the network family).
    pub syscall: u32,
    /// The return value: 0, the accepted fd, or -errno.
    pub ret: i32,
    /// The socket's fd (connect, listen: the argument; accept: the new fd, or -1).
    pub fd: i32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17), ...
    pub protocol: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// The socket's inode number.
    pub ino: u64,
}

/// Kernel-side staging area for a network record (built once, then sent or kept pending).
#[repr(C)]
pub struct NetworkBuffer {
    pub record: NetworkRecord,
}

/// Network sensor settings, in slot 0 of the `NETWORK_FILTER` array; rewritten on reload.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkFilterConfig {
    /// [`network_flags`].
    pub flags: u32,
}

/// The network sensor's settings map.
pub const NETWORK_FILTER_MAP: &str = "NETWORK_FILTER";

const _: () = assert!(core::mem::size_of::<NetworkRecord>() == 344);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for NetworkRecord {
    const KIND: u32 = kind::NETWORK;
}
