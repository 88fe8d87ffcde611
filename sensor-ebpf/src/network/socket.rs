//! What a socket syscall was about: the socket behind its fd, and the peer it asked for.
use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str,
};
use sensor_common::{
    address_family::{INET as AF_INET, INET6 as AF_INET6, UNIX as AF_UNIX, UNSPEC as AF_UNSPEC},
    network_op, NetworkRecord, UNIX_PATH_MAX, UNIX_PATH_ROOM,
};

use crate::{
    file::{file_identity, file_of_fd},
    kread::{off, opaque, read_into, Mem, Probe},
};

/// sizeof(struct sockaddr_in6): family, port, flow info, address, scope id.
const SOCKADDR_IN6_LEN: usize = 28;
/// Bytes before `sun_path` in a `struct sockaddr_un`.
const SUN_PATH_OFFSET: u64 = 2;

/// The socket behind `record.fd`: its inode, family, protocol and both ends as the kernel has
/// them now; returns its `struct sock` address (0 when there is none).
#[inline(always)]
pub fn read_socket<M: Mem>(record: &mut NetworkRecord) -> u64 {
    let Some(file) = file_of_fd::<M>(record.fd) else {
        return 0;
    };
    record.ino = file_identity::<Probe>(file).map_or(0, |(_, ino)| ino);
    let Some(sk) = sock_of_file(file) else {
        return 0;
    };
    record.family = Probe::read::<u16>(sk, off!(sk_family)).unwrap_or(0);
    if record.family == AF_UNIX {
        return sk as u64;
    }
    record.protocol = Probe::read::<u16>(sk, off!(sk_protocol)).unwrap_or(0);
    record.local_port = Probe::read::<u16>(sk, off!(sk_num)).unwrap_or(0);
    record.remote_port = u16::from_be(Probe::read::<u16>(sk, off!(sk_dport)).unwrap_or(0));
    if record.family == AF_INET6 {
        read_into(sk, off!(sk_v6_rcv_saddr), &mut record.local_addr);
        read_into(sk, off!(sk_v6_daddr), &mut record.remote_addr);
    } else {
        let local = Probe::read::<[u8; 4]>(sk, off!(sk_rcv_saddr)).unwrap_or([0; 4]);
        let remote = Probe::read::<[u8; 4]>(sk, off!(sk_daddr)).unwrap_or([0; 4]);
        record.local_addr[..4].copy_from_slice(&local);
        record.remote_addr[..4].copy_from_slice(&remote);
    }
    sk as u64
}

/// The `struct sock` behind the caller's `fd`, if it is a socket.
#[inline(always)]
pub fn sock_of_fd<M: Mem>(fd: i32) -> Option<u64> {
    file_of_fd::<M>(fd)
        .and_then(sock_of_file)
        .map(|sk| sk as u64)
}

/// A socket file's `struct sock` (through its `struct socket`).
#[inline(always)]
fn sock_of_file(file: *const u8) -> Option<*const u8> {
    Probe::read_ptr(file, off!(file_private_data))
        .and_then(|socket| Probe::read_ptr(socket, off!(socket_sk)))
}

/// Whether a connect's `struct sockaddr` at `addr` is AF_UNSPEC: no connection, but the end of
/// the socket's association with its peer (connect(2)); the socket still names the old peer.
#[inline(always)]
pub fn dissolves_association(addr: u64) -> bool {
    let mut family: u16 = u16::MAX;
    // SAFETY: two bytes of user memory into a local; a fault leaves it unmatched.
    unsafe { bpf_probe_read_user((&mut family as *mut u16).cast(), 2, addr as *const _) };
    family == AF_UNSPEC
}

/// The peer a connect went to. The kernel's own copy decides where it has one (the socket's
/// peer address, a connected Unix socket's peer): user memory can be changed by another thread
/// after the kernel read it. A connect that failed before the kernel kept a peer is named from
/// the caller's `struct sockaddr` at `addr` of `len` bytes.
#[inline(always)]
pub fn read_peer(record: &mut NetworkRecord, sk: u64, addr: u64, len: u64) {
    if record.family == AF_UNIX {
        if !read_unix_peer(record, sk) {
            read_unix_path(record, addr, len);
        }
        return;
    }
    if record.remote_port == 0 {
        read_requested_peer(record, addr);
    }
}

/// The path of the Unix socket `sk` is connected to, as the kernel has it (a pathname with
/// its NUL); false when it has no peer (the connect failed).
#[inline(always)]
fn read_unix_peer(record: &mut NetworkRecord, sk: u64) -> bool {
    let Some(address) = Probe::read_ptr(sk as *const u8, off!(unix_peer))
        .and_then(|peer| Probe::read_ptr(peer, off!(unix_addr)))
    else {
        return false;
    };
    let len = Probe::read::<i32>(address, off!(unix_address_len)).unwrap_or(0) as u64;
    if len <= SUN_PATH_OFFSET || off!(unix_address_name) == sensor_common::offsets::MISSING {
        return false;
    }
    let path = address
        .wrapping_add(off!(unix_address_name) as usize)
        .wrapping_add(SUN_PATH_OFFSET as usize);
    let size = path_size(len);
    // SAFETY: `size` is below UNIX_PATH_ROOM, the array's length, read from kernel memory the
    // helper checks.
    let ret =
        unsafe { bpf_probe_read_kernel(record.unix_path.as_mut_ptr().cast(), size, path.cast()) };
    if ret != 0 {
        return false;
    }
    record.unix_path_len = size;
    true
}

/// Bytes of `sun_path` in a sockaddr of `len` bytes, masked so that every verifier can prove
/// the read fits `unix_path` (a sockaddr_un is never longer than the room anyway).
#[inline(always)]
fn path_size(len: u64) -> u32 {
    opaque(((len - SUN_PATH_OFFSET) as u32).min(UNIX_PATH_MAX as u32)) & (UNIX_PATH_ROOM as u32 - 1)
}

/// The peer from the caller's `struct sockaddr` at `addr`.
#[inline(always)]
fn read_requested_peer(record: &mut NetworkRecord, addr: u64) {
    // Not zeroed first (a call to the byte-wise `memset`): the helper fills it, or zeroes it
    // when it fails.
    let mut sockaddr = core::mem::MaybeUninit::<[u8; SOCKADDR_IN6_LEN]>::uninit();
    // SAFETY: at most the local array's length, from user memory the helper checks.
    let ret = unsafe {
        bpf_probe_read_user(
            sockaddr.as_mut_ptr().cast(),
            SOCKADDR_IN6_LEN as u32,
            addr as *const _,
        )
    };
    if ret != 0 {
        return;
    }
    // SAFETY: the helper succeeded, so it wrote the whole array.
    let sockaddr = unsafe { sockaddr.assume_init() };
    let family = u16::from_ne_bytes([sockaddr[0], sockaddr[1]]);
    if family != record.family {
        return;
    }
    record.remote_port = u16::from_be_bytes([sockaddr[2], sockaddr[3]]);
    if family == AF_INET6 {
        record.remote_addr.copy_from_slice(&sockaddr[8..24]);
    } else {
        record.remote_addr[..4].copy_from_slice(&sockaddr[4..8]);
    }
}

/// `sun_path` as given: `len` is the whole sockaddr's length, which bounds the path (an
/// abstract name is exactly that long). A pathname is read as a string, which stops at its
/// NUL: callers often pass a whole `sockaddr_un` with whatever their stack held after the
/// path, which must not reach the event or make identical connects differ.
#[inline(always)]
fn read_unix_path(record: &mut NetworkRecord, addr: u64, len: u64) {
    if len <= SUN_PATH_OFFSET {
        return;
    }
    let path = (addr + SUN_PATH_OFFSET) as *const _;
    let buffer = record.unix_path.as_mut_ptr().cast();
    // SAFETY: at most UNIX_PATH_MAX bytes into the record's array of UNIX_PATH_ROOM, from
    // user memory the helper checks.
    let read = unsafe { bpf_probe_read_user_str(buffer, UNIX_PATH_MAX as u32, path) };
    if read > 1 {
        record.unix_path_len = read as u32;
        return;
    }
    let size = path_size(len);
    // An abstract name: exactly its length.
    // SAFETY: `size` is below UNIX_PATH_ROOM, the array's length; user memory the helper
    // checks.
    if unsafe { bpf_probe_read_user(buffer, size, path) } == 0 {
        record.unix_path_len = size;
    } else {
        record.unix_path = [0; UNIX_PATH_ROOM];
    }
}

/// The address rules look at: the peer's, or for listen and bind the local one.
#[inline(always)]
pub fn rule_address(record: &NetworkRecord) -> (&[u8; 16], u16) {
    if record.op == network_op::LISTEN || record.op == network_op::BIND {
        (&record.local_addr, record.local_port)
    } else {
        (&record.remote_addr, record.remote_port)
    }
}

/// True when the peer (for listen and bind, the local address) is a loopback address:
/// 127.0.0.0/8, ::1, or an IPv4-mapped 127.x address.
#[inline(always)]
pub fn is_loopback(record: &NetworkRecord) -> bool {
    let (addr, _) = rule_address(record);
    if record.family == AF_INET {
        return addr[0] == 127;
    }
    let head_zero = addr[..10].iter().all(|b| *b == 0);
    let mapped = head_zero && addr[10] == 0xff && addr[11] == 0xff;
    let one = head_zero && addr[10..15].iter().all(|b| *b == 0) && addr[15] == 1;
    (mapped && addr[12] == 127) || one
}
