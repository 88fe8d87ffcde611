//! Network connections: connect, accept and listen, seen at `sys_exit` with their result, in
//! the context of the process that made the call. The socket the call used gives the family,
//! protocol and both ends; a connect's peer is read from the caller's own sockaddr, so a
//! refused or unreachable connect still names where it went.
//!
//! A non-blocking connect returns EINPROGRESS before the handshake is done. Its record is then
//! kept, by socket, until the socket leaves SYN_SENT (`inet_sock_set_state`, often in softirq
//! context, in no relation to the process): it is sent from there with the outcome, still
//! carrying the identity of the process that called connect.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sensor_common::{
    address_family::{INET as AF_INET, INET6 as AF_INET6},
    network_flags, network_op, syscalls,
    tcp_state::{ESTABLISHED as TCP_ESTABLISHED, SYN_SENT as TCP_SYN_SENT},
    NetworkRecord,
};

use crate::{
    emit::now_ns,
    file::{file_identity, file_of_fd},
    kread::{off, self_tgid, Mem, Probe},
    maps::{NETWORK_BUF, NETWORK_FILTER, PENDING_CONNECTS},
    record::{send, stage, Reserved},
    task::fill_task_info,
};

const EINPROGRESS: i32 = 115;
/// sizeof(struct sockaddr_in6): family, port, flow info, address, scope id.
const SOCKADDR_IN6_LEN: usize = 28;

// void inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk = ctx.arg::<*const u8>(0);
    let (old_state, new_state) = (ctx.arg::<i32>(1), ctx.arg::<i32>(2));
    // Only connects wait in SYN_SENT; every other change is none of this hook's business.
    if old_state == TCP_SYN_SENT {
        on_connect_outcome(sk, new_state);
    }
    0
}

/// A socket left SYN_SENT: send its pending connect with the outcome. Whoever removes the
/// pending entry sends it (this hook, or the connect's own exit when the handshake finished
/// before it), so it is sent once.
#[inline(always)]
fn on_connect_outcome(sk: *const u8, new_state: i32) {
    let key = sk as u64;
    // SAFETY: the value is copied out at once; the entry is removed below before it is sent.
    let Some(pending) = (unsafe { PENDING_CONNECTS.get(&key) }) else {
        return;
    };
    let Some(mut slot) = Reserved::<NetworkRecord>::new() else {
        return;
    };
    let record = slot.record();
    // The kept record was staged before its size was set; it goes out whole.
    *record = *pending;
    record.header.size = core::mem::size_of::<NetworkRecord>() as u32;
    set_outcome(record, sk, new_state);
    if PENDING_CONNECTS.remove(&key).is_ok() {
        slot.submit();
    } else {
        slot.discard();
    }
}

/// The outcome of a connect whose socket is now in `state`: 0 when established, else the
/// socket's error (EINPROGRESS stays when it was closed before having one).
#[inline(always)]
fn set_outcome(record: &mut NetworkRecord, sk: *const u8, state: i32) {
    if state == TCP_ESTABLISHED {
        record.ret = 0;
    } else {
        let err = Probe::read::<i32>(sk, off!(sk_err)).unwrap_or(0);
        if err > 0 {
            record.ret = -err;
        }
    }
}

#[inline(always)]
pub fn is_network_syscall(nr: u64) -> bool {
    matches!(
        nr as u32,
        syscalls::CONNECT | syscalls::ACCEPT | syscalls::ACCEPT4 | syscalls::LISTEN
    )
}

#[inline(always)]
pub fn on_network_syscall<M: Mem>(regs: *const u8, nr: u64, ret: i64) {
    let Some(flags) = NETWORK_FILTER.get(0).map(|config| config.flags) else {
        return;
    };
    if flags & network_flags::ENABLED == 0
        || (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid()
    {
        return;
    }
    let syscall = nr as u32;
    let arg_fd = M::read::<u64>(regs, off!(regs_di)).unwrap_or(u64::MAX) as i32;
    let (op, fd) = match syscall {
        syscalls::CONNECT => (network_op::CONNECT, arg_fd),
        syscalls::LISTEN => (network_op::LISTEN, arg_fd),
        // A failed accept (EAGAIN on a non-blocking socket) took no connection.
        _ if ret < 0 => return,
        _ => (network_op::ACCEPT, ret as i32),
    };
    let Some(buffer) = stage(&NETWORK_BUF, now_ns()) else {
        return;
    };
    let record = &mut buffer.record;
    record.op = op;
    record.syscall = syscall;
    record.ret = ret as i32;
    record.fd = fd;
    let sk = read_socket::<M>(record);
    if op == network_op::CONNECT {
        read_requested_peer(record, M::read::<u64>(regs, off!(regs_si)).unwrap_or(0));
    }
    let inet = record.family == AF_INET || record.family == AF_INET6;
    if !inet || (flags & network_flags::LOOPBACK == 0 && is_loopback(record)) {
        return;
    }
    fill_task_info::<M>(M::current_task(), &mut record.task);
    let in_progress = op == network_op::CONNECT && record.ret == -EINPROGRESS;
    if in_progress && flags & network_flags::COMPLETIONS != 0 && sk != 0 {
        // Kept for the state change to send with its outcome. On loopback the handshake can be
        // over before connect returns: then the entry is taken back and sent from here.
        if PENDING_CONNECTS.insert(&sk, &buffer.record, 0).is_ok() {
            let sock = sk as *const u8;
            let state = Probe::read::<u8>(sock, off!(sk_state)).map_or(TCP_SYN_SENT, i32::from);
            if state == TCP_SYN_SENT || PENDING_CONNECTS.remove(&sk).is_err() {
                return;
            }
            set_outcome(&mut buffer.record, sock, state);
        }
    }
    send(buffer, 0);
}

/// The socket behind `record.fd`: its inode, family, protocol and both ends as the kernel has
/// them now; returns its `struct sock` address (0 when there is none).
#[inline(always)]
fn read_socket<M: Mem>(record: &mut NetworkRecord) -> u64 {
    let Some(file) = file_of_fd::<M>(record.fd) else {
        return 0;
    };
    record.ino = file_identity::<Probe>(file).map_or(0, |(_, ino)| ino);
    let Some(sk) = Probe::read_ptr(file, off!(file_private_data))
        .and_then(|socket| Probe::read_ptr(socket, off!(socket_sk)))
    else {
        return 0;
    };
    record.family = Probe::read::<u16>(sk, off!(sk_family)).unwrap_or(0);
    record.protocol = Probe::read::<u16>(sk, off!(sk_protocol)).unwrap_or(0);
    record.local_port = Probe::read::<u16>(sk, off!(sk_num)).unwrap_or(0);
    record.remote_port = u16::from_be(Probe::read::<u16>(sk, off!(sk_dport)).unwrap_or(0));
    if record.family == AF_INET6 {
        record.local_addr = Probe::read::<[u8; 16]>(sk, off!(sk_v6_rcv_saddr)).unwrap_or([0; 16]);
        record.remote_addr = Probe::read::<[u8; 16]>(sk, off!(sk_v6_daddr)).unwrap_or([0; 16]);
    } else {
        let local = Probe::read::<[u8; 4]>(sk, off!(sk_rcv_saddr)).unwrap_or([0; 4]);
        let remote = Probe::read::<[u8; 4]>(sk, off!(sk_daddr)).unwrap_or([0; 4]);
        record.local_addr[..4].copy_from_slice(&local);
        record.remote_addr[..4].copy_from_slice(&remote);
    }
    sk as u64
}

/// The peer a connect asked for, from the caller's `struct sockaddr` at `addr`.
#[inline(always)]
fn read_requested_peer(record: &mut NetworkRecord, addr: u64) {
    let mut sockaddr = [0u8; SOCKADDR_IN6_LEN];
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

/// True when the peer (for listen, the local address) is a loopback address: 127.0.0.0/8,
/// ::1, or an IPv4-mapped 127.x address.
#[inline(always)]
fn is_loopback(record: &NetworkRecord) -> bool {
    let addr = if record.op == network_op::LISTEN {
        &record.local_addr
    } else {
        &record.remote_addr
    };
    if record.family == AF_INET {
        return addr[0] == 127;
    }
    let head_zero = addr[..10].iter().all(|b| *b == 0);
    let mapped = head_zero && addr[10] == 0xff && addr[11] == 0xff;
    let one = head_zero && addr[10..15].iter().all(|b| *b == 0) && addr[15] == 1;
    (mapped && addr[12] == 127) || one
}
