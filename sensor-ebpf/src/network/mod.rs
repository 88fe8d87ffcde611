//! Network connections: connect, accept, listen and bind, seen at `sys_exit` with their
//! result, in the context of the process that made the call. The socket the call used gives
//! the family, protocol and both ends (see [`socket`]: the kernel's copy of the peer where it
//! kept one, else the caller's sockaddr, so a refused connect still names where it went, and a
//! Unix connect names its socket path). Loopback, the rules ([`filter`]) and deduplication
//! ([`dedup`]) decide what is sent.
//!
//! A non-blocking connect returns EINPROGRESS before the handshake is done. Its record is then
//! kept, by socket, until the socket leaves SYN_SENT (`inet_sock_set_state`, often in softirq
//! context, in no relation to the process): it is sent from there with the outcome, still
//! carrying the identity of the process that called connect (see [`outcome`] for a socket
//! whose error the application took first). The same hook reports the end of
//! every reported TCP connection, and `sock_send_length` another process's send on it (see
//! [`connection`]).
mod connection;
mod dedup;
mod filter;
mod outcome;
mod socket;

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sensor_common::{
    address_family::{INET as AF_INET, INET6 as AF_INET6, UNIX as AF_UNIX},
    network_flags, network_op, syscalls,
    tcp_state::{CLOSE as TCP_CLOSE, SYN_SENT as TCP_SYN_SENT},
    NetworkFilterConfig, NetworkRecord, IPPROTO_TCP,
};

use crate::{
    emit::now_ns,
    kread::{off, self_tgid, Direct, Mem, Probe},
    maps::{NETWORK_BUF, NETWORK_FILTER, PENDING_CONNECTS},
    record::{send, stage},
    task::fill_task_info,
};

const EINPROGRESS: i32 = 115;

// void inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    on_state_change(
        ctx.arg::<*const u8>(0),
        ctx.arg::<i32>(1),
        ctx.arg::<i32>(2),
    );
    0
}

// tracepoint/sock/inet_sock_set_state, where tp_btf is not available: { common fields (8),
// const void *skaddr (8), int oldstate (16), int newstate (20), ... }.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's layout above; a failed read is reported, not undefined.
    let fields = unsafe {
        (
            ctx.read_at::<u64>(8),
            ctx.read_at::<i32>(16),
            ctx.read_at::<i32>(20),
        )
    };
    if let (Ok(sk), Ok(old_state), Ok(new_state)) = fields {
        on_state_change(sk as *const u8, old_state, new_state);
    }
    0
}

#[inline(always)]
fn on_state_change(sk: *const u8, old_state: i32, new_state: i32) {
    // Only connects wait in SYN_SENT, and only reported connections are followed to CLOSE;
    // every other change is none of this hook's business.
    if old_state == TCP_SYN_SENT {
        outcome::on_connect_outcome(sk, new_state);
    } else if new_state == TCP_CLOSE {
        connection::on_close(sk, old_state);
    }
}

// void tcp_destroy_sock(struct sock *sk)
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: BtfTracePointContext) -> i32 {
    outcome::on_socket_destroyed(ctx.arg::<*const u8>(0));
    0
}

// tracepoint/tcp/tcp_destroy_sock: { common fields (8), const void *skaddr (8), ... }.
#[tracepoint(category = "tcp", name = "tcp_destroy_sock")]
pub fn tcp_destroy_sock_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's layout above; a failed read is reported, not undefined.
    if let Ok(sk) = unsafe { ctx.read_at::<u64>(8) } {
        outcome::on_socket_destroyed(sk as *const u8);
    }
    0
}

// void sock_send_length(struct sock *sk, int ret, int flags), in the sender's context.
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> i32 {
    if ctx.arg::<i32>(1) > 0 {
        connection::on_send::<Direct>(ctx.arg::<*const u8>(0));
    }
    0
}

// tracepoint/sock/sock_send_length: { common fields (8), void *sk (8), u16 family (16),
// u16 protocol (18), int ret (20), int flags (24) }.
#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_length_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: the record's layout above; a failed read is reported, not undefined.
    let fields = unsafe { (ctx.read_at::<u64>(8), ctx.read_at::<i32>(20)) };
    if let (Ok(sk), Ok(ret)) = fields {
        if ret > 0 {
            connection::on_send::<Probe>(sk as *const u8);
        }
    }
    0
}

#[inline(always)]
pub fn is_network_syscall(nr: u64) -> bool {
    matches!(
        nr as u32,
        syscalls::CONNECT
            | syscalls::ACCEPT
            | syscalls::ACCEPT4
            | syscalls::LISTEN
            | syscalls::BIND
            | syscalls::GETSOCKOPT
    )
}

/// The operation a syscall's exit reports, with the socket's fd; None when there is nothing
/// to report (a failed accept took no connection).
#[inline(always)]
fn operation(syscall: u32, arg_fd: i32, ret: i64) -> Option<(u32, i32)> {
    match syscall {
        syscalls::CONNECT => Some((network_op::CONNECT, arg_fd)),
        syscalls::LISTEN => Some((network_op::LISTEN, arg_fd)),
        syscalls::BIND => Some((network_op::BIND, arg_fd)),
        _ if ret < 0 => None,
        _ => Some((network_op::ACCEPT, ret as i32)),
    }
}

#[inline(always)]
pub fn on_network_syscall<M: Mem>(regs: *const u8, nr: u64, ret: i64) {
    let Some(config) = NETWORK_FILTER.get(0).copied() else {
        return;
    };
    if config.flags & network_flags::ENABLED == 0
        || (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid()
    {
        return;
    }
    let syscall = nr as u32;
    if syscall == syscalls::GETSOCKOPT {
        outcome::on_getsockopt::<M>(regs, ret);
        return;
    }
    let arg_fd = M::read::<u64>(regs, off!(regs_di)).unwrap_or(u64::MAX) as i32;
    let Some((op, fd)) = operation(syscall, arg_fd, ret) else {
        return;
    };
    let now = now_ns();
    let Some(buffer) = stage(&NETWORK_BUF, now) else {
        return;
    };
    let record = &mut buffer.record;
    record.op = op;
    record.syscall = syscall;
    record.ret = ret as i32;
    record.fd = fd;
    let sk = socket::read_socket::<M>(record);
    if op == network_op::CONNECT {
        let addr = M::read::<u64>(regs, off!(regs_si)).unwrap_or(0);
        let len = M::read::<u64>(regs, off!(regs_dx)).unwrap_or(0);
        if socket::dissolves_association(addr) {
            return;
        }
        socket::read_peer(record, sk, addr, len);
    }
    if !wanted(&config, record) {
        return;
    }
    fill_task_info::<M>(M::current_task(), &mut record.task);
    report(&config, buffer, sk, now);
}

/// Which records the settings keep: Unix sockets only for connects, a TCP socket's bind only
/// through its listen, loopback peers only when asked for, then the rules.
#[inline(always)]
fn wanted(config: &NetworkFilterConfig, record: &NetworkRecord) -> bool {
    let inet = record.family == AF_INET || record.family == AF_INET6;
    let unix_connect = record.family == AF_UNIX && record.op == network_op::CONNECT;
    if !inet && !unix_connect {
        return false;
    }
    if record.op == network_op::BIND && record.protocol == IPPROTO_TCP {
        return false;
    }
    if inet && config.flags & network_flags::LOOPBACK == 0 && socket::is_loopback(record) {
        return false;
    }
    filter::passes(config.flags, record, inet)
}

/// Sends the staged record, or keeps a connect in progress until its outcome; follows a TCP
/// connection that is now open to its end. A repeat within the dedup window is counted
/// instead of sent, but its connection is still followed: every end is reported with its bytes.
#[inline(always)]
fn report(
    config: &NetworkFilterConfig,
    buffer: &mut sensor_common::NetworkBuffer,
    sk: u64,
    now: u64,
) {
    let follows = config.flags & network_flags::COMPLETIONS != 0 && sk != 0;
    let record = &mut buffer.record;
    let in_progress = record.op == network_op::CONNECT && record.ret == -EINPROGRESS;
    if in_progress && follows && record.protocol == IPPROTO_TCP {
        // Kept for the state change to send with its outcome. On loopback the handshake can be
        // over before connect returns: then the entry is taken back and sent from here. An
        // earlier connect still kept for the socket is sent first, not overwritten.
        outcome::send_kept(sk);
        if PENDING_CONNECTS.insert(&sk, &*record, 0).is_ok() {
            let sock = sk as *const u8;
            let state = Probe::read::<u8>(sock, off!(sk_state)).map_or(TCP_SYN_SENT, i32::from);
            if state == TCP_SYN_SENT || PENDING_CONNECTS.remove(&sk).is_err() {
                return;
            }
            outcome::set_outcome(record, sock, state);
        }
    }
    let opened =
        (record.op == network_op::CONNECT && record.ret == 0) || record.op == network_op::ACCEPT;
    if follows && opened {
        connection::track(sk, &*record);
    }
    if dedup::counted_as_repeat(config.dedup_window_ns, record, now) {
        return;
    }
    if !send(buffer, 0) {
        dedup::close_refused_window(config.dedup_window_ns, &buffer.record, now);
    }
}
