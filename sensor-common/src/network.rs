//! The network family: connect, accept, listen and bind, seen at syscall exit with their
//! result, and the end of each reported TCP connection with its duration and bytes.
use crate::{kind, Record, RecordHeader, TaskInfo};

/// What a [`NetworkRecord`] reports.
pub mod network_op {
    pub const CONNECT: u32 = 1;
    pub const ACCEPT: u32 = 2;
    pub const LISTEN: u32 = 3;
    /// A reported TCP connection (connected or accepted) ended.
    pub const CLOSE: u32 = 4;
    /// A datagram socket took a local address (the UDP counterpart of listen).
    pub const BIND: u32 = 5;
    /// A process other than the one that connected or accepted sent on a reported connection
    /// (an inherited or passed socket): reported once per connection and such process.
    pub const SHARED_SEND: u32 = 6;
}

/// Values of [`NetworkRecord::family`].
pub mod address_family {
    /// In a connect: the socket's association with its peer is dissolved.
    pub const UNSPEC: u16 = 0;
    pub const UNIX: u16 = 1;
    pub const INET: u16 = 2;
    pub const INET6: u16 = 10;
}

/// The kernel's TCP states the network programs look at.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const FIN_WAIT2: i32 = 5;
    pub const CLOSE: i32 = 7;
    pub const CLOSE_WAIT: i32 = 8;
    pub const LAST_ACK: i32 = 9;
    pub const CLOSING: i32 = 11;
}

/// Bits of [`NetworkFilterConfig::flags`].
pub mod network_flags {
    /// The network sensor is on.
    pub const ENABLED: u32 = 1 << 0;
    /// Connections whose peer is a loopback address are reported too.
    pub const LOOPBACK: u32 = 1 << 1;
    /// The state-change hook runs: a non-blocking connect in progress is reported when its
    /// outcome is known, and connections are reported when they end (set by the daemon once
    /// the hook is attached).
    pub const COMPLETIONS: u32 = 1 << 2;
    /// `NETWORK_ADDRS` holds rules; with `ADDR_INCLUDES`, some of them include.
    pub const ADDR_RULES: u32 = 1 << 3;
    pub const ADDR_INCLUDES: u32 = 1 << 4;
    /// `NETWORK_PORTS` holds rules (on the remote port; a listen's or bind's own port).
    pub const PORT_RULES: u32 = 1 << 5;
    pub const PORT_INCLUDES: u32 = 1 << 6;
    /// `NETWORK_UIDS` holds rules (on the real uid).
    pub const UID_RULES: u32 = 1 << 7;
    pub const UID_INCLUDES: u32 = 1 << 8;
    /// `NETWORK_COMMS` holds rules (on the command name).
    pub const COMM_RULES: u32 = 1 << 9;
    pub const COMM_INCLUDES: u32 = 1 << 10;
    /// The socket-end hook runs (`tcp_destroy_sock`): a connect whose socket closed without
    /// an error left in it (the application took the error first) waits for the application's
    /// `getsockopt(SO_ERROR)` or the socket's end, instead of being sent as in progress (set by
    /// the daemon once the hook is attached).
    pub const SOCKET_ENDS: u32 = 1 << 11;
}

pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

/// Bits of [`NetworkRecord::flags`].
pub mod network_record_flags {
    /// The first record of a dedup window: identical ones that follow within the window are
    /// counted in `NETWORK_DEDUP` instead of sent.
    pub const DEDUP_FIRST: u32 = 1 << 0;
    /// Kernel-side only, on a kept connect: its socket closed with no error left in it; the
    /// record waits for the error the application was handed (see `SOCKET_ENDS`).
    pub const AWAITING_ERROR: u32 = 1 << 1;
}

/// Bytes of a Unix socket path (`sun_path`).
pub const UNIX_PATH_MAX: usize = 108;
/// Room for a Unix socket path in a record: a power of two, so that a length masked with
/// `UNIX_PATH_ROOM - 1` is one every verifier can prove fits; 8-byte words for the dedup key.
pub const UNIX_PATH_ROOM: usize = 128;

/// A socket syscall returned, or a reported connection ended. Addresses are in network byte
/// order as the kernel keeps them; an IPv4 address fills the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetworkRecord {
    pub header: RecordHeader,
    /// The caller; for a close, the process that connected or accepted.
    pub task: TaskInfo,
    /// One of [`network_op`].
    pub op: u32,
    /// The syscall's number (one of the [`syscalls`](crate::syscalls) of the network family);
    /// for a close, the one that opened the connection.
    pub syscall: u32,
    /// The return value: 0, the accepted fd, or -errno.
    pub ret: i32,
    /// The socket's fd (connect, listen, bind: the argument; accept: the new fd, or -1).
    pub fd: i32,
    /// One of [`address_family`].
    pub family: u16,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17), ...; 0 for Unix sockets.
    pub protocol: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// The socket's inode number.
    pub ino: u64,
    /// Close: nanoseconds since the connection was reported.
    pub duration_ns: u64,
    /// Close: payload bytes sent (each once, retransmissions not counted) and received.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// With [`network_record_flags::DEDUP_FIRST`]: the key's running count of identical
    /// records the kernel counted instead of sending, when this record opened its window; it
    /// only grows (see [`NetworkDedupKey`]).
    pub suppressed_total: u64,
    /// Bytes of `unix_path` used.
    pub unix_path_len: u32,
    /// [`network_record_flags`].
    pub flags: u32,
    /// A Unix connect's path (`sun_path`, a pathname with its NUL; an abstract name starts
    /// with a NUL): the kernel's copy where the connect succeeded, else as the caller gave it.
    /// Bytes past `unix_path_len` are zero.
    pub unix_path: [u8; UNIX_PATH_ROOM],
    /// In the kernel's table of open connections: the last other process that sent on it.
    pub shared_tgid: u32,
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
    pub _pad: u32,
    /// Identical connects within this window are counted, not sent; 0 turns that off.
    pub dedup_window_ns: u64,
}

/// An LPM-trie key for address rules: IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`),
/// so that one trie holds both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkAddrKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}

/// "The same connect" for deduplication: same process, operation, outcome and peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetworkDedupKey {
    pub tgid: u32,
    pub op: u32,
    pub ret: i32,
    pub family: u16,
    pub protocol: u16,
    pub remote_port: u16,
    /// Padding as two integers, not a byte array: the kernel side zeroes an array with a call
    /// to the byte-at-a-time `memset`, for every connection.
    pub _pad_short: u16,
    pub _pad_word: u32,
    pub remote_addr: [u8; 16],
}

/// A dedup window and the running count of what it suppressed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkDedupState {
    pub window_start_ns: u64,
    pub suppressed_total: u64,
}

/// The network sensor's maps.
pub const NETWORK_FILTER_MAP: &str = "NETWORK_FILTER";
pub const NETWORK_ADDRS_MAP: &str = "NETWORK_ADDRS";
pub const NETWORK_PORTS_MAP: &str = "NETWORK_PORTS";
pub const NETWORK_UIDS_MAP: &str = "NETWORK_UIDS";
pub const NETWORK_COMMS_MAP: &str = "NETWORK_COMMS";
pub const NETWORK_DEDUP_MAP: &str = "NETWORK_DEDUP";
/// Dedup windows the kernel keeps for connects (an LRU map).
pub const NETWORK_DEDUP_ENTRIES: u32 = 16384;
/// Reported TCP connections still open, by `struct sock` address.
pub const CONNECTIONS_MAP: &str = "CONNECTIONS";

const _: () = assert!(core::mem::size_of::<NetworkRecord>() == 520);
const _: () = assert!(core::mem::offset_of!(NetworkRecord, unix_path) % 8 == 0);
const _: () = assert!(core::mem::size_of::<NetworkAddrKey>() == 20);
const _: () = assert!(core::mem::size_of::<NetworkDedupKey>() == 40);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for NetworkRecord {
    const KIND: u32 = kind::NETWORK;
}
