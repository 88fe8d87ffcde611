//! The event families the daemon knows, in one place: the kernel hooks that feed them, the
//! records the kernel sends, how each is decoded and turned into events, and how each event
//! body is pseudonymised. Every match here is
//! exhaustive, so a new family is a compile error until each stage handles it. Each family's
//! code lives in `families/<family>.rs`, named as in the other crates;
//! what they share (the process table, identities, the event envelope) in [`Enricher`].
use custos_proto::v1::{event::Body, Event};
use sensor_common::{
    kind, syscalls, ExitRecord, ForkRecord, NetworkRecord, PrivilegeChangeRecord, RecordHeader,
};

mod access_usage;
mod block_device;
mod device_control;
mod enricher;
mod file;
mod identity;
mod loss;
mod mount;
mod network;
mod privilege;
mod process;
mod session;

pub use access_usage::{access_usage_body, drop_arguments};
pub(crate) use enricher::{errno_name, login_uid_of};
pub use enricher::{timestamp, Enricher, EnricherParts, Produced, IDENTITY_TTL};
pub use file::file_open_body;
pub use identity::{IdentityKey, IdentityView};
pub use process::exit_status;

use block_device::{decode_device, Device};
use file::decode_file_open;
pub use file::FileOpen;
use mount::{decode_mount, Mount};
use process::{decode_exec, Exec};

use crate::{
    decode::{fixed, read_struct, DecodeError},
    identity::NameSource,
    kernel::loader::Program,
    privacy::pseudonym::Pseudonymizer,
};

/// Declares the hooks: the `Hook` enum, each hook's name, and `HOOKS`, the programs that can
/// serve each (richest first), the sensor switch that wants it and whether the sensor refuses
/// to start without it.
macro_rules! hooks {
    ($($(#[doc = $doc:literal])* $hook:ident = $name:literal, $sensor:ident, $need:ident:
        [$($program:expr),* $(,)?];)*) => {
        /// The kernel events the sensor hooks, each served by the first of its programs that
        /// loads.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Hook {
            $($(#[doc = $doc])* $hook,)*
        }

        impl Hook {
            /// Its name in logs, metrics and `custos status`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$hook => $name,)*
                }
            }
        }

        pub(crate) const HOOKS: &[HookSpec] = &[$(HookSpec {
            hook: Hook::$hook,
            programs: &[$($program),*],
            required: hooks!(@required $need),
            sensor: Sensor::$sensor,
        },)*];
    };
    (@required required) => { true };
    (@required optional) => { false };
}

hooks! {
    /// A program was executed.
    SchedProcessExec = "sched_process_exec", Process, required: [
        Program::TpBtf("sched_process_exec_btf", "sched_process_exec"),
        Program::Tracepoint("sched_process_exec_tp", "sched", "sched_process_exec"),
    ];
    /// A process ended.
    SchedProcessExit = "sched_process_exit", Process, required: [
        Program::TpBtf("sched_process_exit_btf", "sched_process_exit"),
        Program::Tracepoint("sched_process_exit_tp", "sched", "sched_process_exit"),
    ];
    /// A process was forked (tracked, not reported).
    SchedProcessFork = "sched_process_fork", Process, optional: [
        Program::TpBtf("sched_process_fork_btf", "sched_process_fork"),
    ];
    /// Syscall results: file opens (file sensor), privilege changes, loop and read-only ioctls,
    /// mounts, network connections, renames. On the exits of those syscalls only where the
    /// kernel has syscall tracepoints; else on every syscall's exit.
    SysExit = "sys_exit", Process, required: [
        Program::SyscallTracepoints("sys_exit_syscall", syscalls::TRACEPOINTS),
        Program::TpBtf("sys_exit_btf", "sys_exit"),
        Program::RawTracepoint("sys_exit_raw", "sys_exit"),
    ];
    /// Opens at the permission check, where BPF LSM runs: successful opens are reported from
    /// here (sys_exit keeps the failures), and opens of denied devices' nodes are refused.
    FileOpen = "file_open", FileOpenLsm, optional: [
        Program::Lsm("file_open", "file_open"),
    ];
    /// A new disk: USB drives, loop devices, any new disk. Where neither device_add_disk path
    /// exists, its backing device's registration.
    DiskAdded = "disk_added", Devices, optional: [
        Program::Fexit("device_add_disk_fexit", "device_add_disk"),
        Program::Kprobe("device_add_disk_kprobe", "device_add_disk"),
        Program::TpBtf("writeback_bdi_register", "writeback_bdi_register"),
    ];
    /// A disk going away: a drive unplugged, a loop device removed.
    DiskRemoved = "disk_removed", Devices, optional: [
        Program::Fentry("del_gendisk_fentry", "del_gendisk"),
        Program::Kprobe("del_gendisk_kprobe", "del_gendisk"),
    ];
    /// A new superblock, before it is mounted: mounts of denied devices are refused here.
    SbSetMntOpts = "sb_set_mnt_opts", Devices, optional: [
        Program::Lsm("sb_set_mnt_opts", "sb_set_mnt_opts"),
    ];
    /// io_uring opens bypass the syscalls: their submission (for the path)...
    IoUringSubmitReq = "io_uring_submit_req", IoUring, optional: [
        Program::TpBtf("io_uring_submit_req", "io_uring_submit_req"),
    ];
    /// ...and their completion.
    IoUringComplete = "io_uring_complete", IoUring, optional: [
        Program::TpBtf("io_uring_complete", "io_uring_complete"),
    ];
    /// TCP state changes: the outcome of a non-blocking connect, and the end of a reported
    /// connection. Without it such a connect is reported as in progress (EINPROGRESS), and
    /// connections are not followed to their end.
    InetSockSetState = "inet_sock_set_state", Network, optional: [
        Program::TpBtf("inet_sock_set_state", "inet_sock_set_state"),
        Program::Tracepoint("inet_sock_set_state_tp", "sock", "inet_sock_set_state"),
    ];
    /// The end of every TCP socket: a connect whose error its application took before the
    /// state change was seen is sent here at the latest. Without it such a connect is reported
    /// as in progress (EINPROGRESS).
    TcpDestroySock = "tcp_destroy_sock", Network, optional: [
        Program::TpBtf("tcp_destroy_sock", "tcp_destroy_sock"),
        Program::Tracepoint("tcp_destroy_sock_tp", "tcp", "tcp_destroy_sock"),
    ];
    /// Sends on sockets, in the sender's context: another process sending on a reported
    /// connection (an inherited or passed socket).
    SockSendLength = "sock_send_length", Network, optional: [
        Program::TpBtf("sock_send_length", "sock_send_length"),
        Program::Tracepoint("sock_send_length_tp", "sock", "sock_send_length"),
    ];
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One kernel hook and the programs that can serve it, preferred first.
pub(crate) struct HookSpec {
    pub hook: Hook,
    pub programs: &'static [Program],
    /// Without a required hook the sensor refuses to start rather than run blind.
    pub required: bool,
    /// Which sensor needs the hook.
    pub sensor: Sensor,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sensor {
    Process,
    /// Opens at the permission check (file sensor) and denial of device nodes (devices).
    FileOpenLsm,
    /// Part of the file sensor, where the kernel has io_uring.
    IoUring,
    /// Block devices.
    Devices,
    /// Network connections.
    Network,
}

#[derive(Clone, Debug)]
pub enum Record {
    Exec(Exec),
    Exit(ExitRecord),
    Fork(ForkRecord),
    FileOpen(FileOpen),
    PrivilegeChange(PrivilegeChangeRecord),
    BlockDevice(Device),
    Mount(Mount),
    Network(NetworkRecord),
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: RecordHeader = read_struct(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    if header.size as usize != bytes.len() {
        return Err(DecodeError::SizeMismatch {
            kind: header.kind,
            claimed: header.size,
            actual: bytes.len(),
        });
    }
    match header.kind {
        kind::EXEC => decode_exec(bytes).map(Record::Exec),
        kind::EXIT => fixed(bytes).map(Record::Exit),
        kind::FORK => fixed(bytes).map(Record::Fork),
        kind::FILE_OPEN => decode_file_open(bytes).map(Record::FileOpen),
        kind::PRIVILEGE_CHANGE => fixed(bytes).map(Record::PrivilegeChange),
        kind::BLOCK_DEVICE => decode_device(bytes).map(Record::BlockDevice),
        kind::MOUNT => decode_mount(bytes).map(Record::Mount),
        kind::NETWORK => fixed(bytes).map(Record::Network),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

impl<S: NameSource> Enricher<S> {
    /// The event for `record`, or `None` for records that only update state (fork); side
    /// events are left in `preceding` and `following`.
    pub(crate) fn event(&mut self, record: &mut Record) -> Option<Event> {
        // Each family reads the record where it is: records are hundreds of bytes.
        match record {
            Record::Exec(exec) => Some(self.exec(exec)),
            Record::Exit(exit) => Some(self.exit(exit)),
            Record::Fork(fork) => {
                self.fork(fork);
                None
            }
            Record::FileOpen(open) => Some(self.file_open(open)),
            Record::PrivilegeChange(cred) => self.privilege_record(cred),
            Record::BlockDevice(device) => self.device_change(device),
            Record::Mount(mount) => self.mount(mount),
            Record::Network(record) => Some(self.network(record)),
        }
    }
}

/// Pseudonymises what a body says about people (names, paths under home directories).
pub fn pseudonymise(body: &mut Body, p: &Pseudonymizer) {
    match body {
        Body::FileOpen(open) => file::pseudonymise(open, p),
        Body::PrivilegeChange(change) => privilege::pseudonymise(change, p),
        Body::SessionStart(start) => session::pseudonymise(start.session.as_mut(), p),
        Body::SessionEnd(end) => session::pseudonymise(end.session.as_mut(), p),
        Body::BlockDevice(change) => block_device::pseudonymise(change, p),
        Body::DeviceControl(control) => device_control::pseudonymise(control, p),
        Body::DeviceWriteSummary(summary) => device_control::pseudonymise_summary(summary, p),
        Body::Mount(mount) => mount::pseudonymise(mount, p),
        Body::Network(connection) => network::pseudonymise(connection, p),
        Body::AccessUsage(summary) => access_usage::pseudonymise(summary, p),
        // An exec's parent is a process, pseudonymised with the others; an alert's text and
        // paths are rewritten before the identity (see `Privacy::apply`); exits and losses
        // name nobody.
        Body::Exec(_) | Body::Alert(_) | Body::Exit(_) | Body::Loss(_) => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::mem::size_of;

    use super::*;
    use sensor_common::{
        BlobRef, ExecRecord, TaskInfo, COMM_LEN, EXEC_FIXED_SIZE, MAX_GROUPS, TTY_LEN,
    };

    pub fn task(tgid: u32) -> TaskInfo {
        TaskInfo {
            tgid,
            pid: tgid,
            ppid: 1,
            flags: 0,
            start_boottime_ns: 5_000_000_000,
            parent_start_boottime_ns: 1_000_000,
            cgroup_id: 1,
            uid: 65534,
            gid: 65534,
            euid: 65534,
            egid: 65534,
            suid: 65534,
            sgid: 65534,
            fsuid: 65534,
            fsgid: 65534,
            loginuid: 1000,
            sessionid: 7,
            ngroups: 0,
            _pad: 0,
            groups: [0; MAX_GROUPS],
            tty: [0; TTY_LEN],
            comm: [0; COMM_LEN],
        }
    }

    /// A TCP record over IPv4 of `op` by `task`, its addresses zero and nothing counted.
    pub fn tcp_record(task: TaskInfo, op: u32) -> sensor_common::NetworkRecord {
        sensor_common::NetworkRecord {
            header: sensor_common::RecordHeader {
                kind: sensor_common::kind::NETWORK,
                ..Default::default()
            },
            task,
            op,
            syscall: 0,
            ret: 0,
            fd: -1,
            family: sensor_common::address_family::INET,
            protocol: sensor_common::IPPROTO_TCP,
            local_port: 0,
            remote_port: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
            ino: 0,
            duration_ns: 0,
            bytes_sent: 0,
            bytes_received: 0,
            suppressed_total: 0,
            unix_path_len: 0,
            flags: 0,
            unix_path: [0; sensor_common::UNIX_PATH_ROOM],
            shared_tgid: 0,
        }
    }

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data struct.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    pub fn exec_bytes(path: &[u8], argv: &[u8], cwd: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        let mut blob_ref = |data: &[u8]| {
            let r = BlobRef {
                offset: blob.len() as u16,
                len: data.len() as u16,
            };
            blob.extend_from_slice(data);
            r
        };
        let (path, argv, cwd) = (blob_ref(path), blob_ref(argv), blob_ref(cwd));
        let record = ExecRecord {
            header: RecordHeader {
                kind: kind::EXEC,
                size: (EXEC_FIXED_SIZE + blob.len()) as u32,
                ktime_ns: 42,
            },
            task: task(100),
            flags: 0,
            argv_total: 0,
            path,
            argv,
            cwd,
            invoked: path,
            cap_effective: 0,
            cap_permitted: 0,
        };
        let mut bytes = bytes_of(&record);
        bytes.extend_from_slice(&blob);
        bytes
    }

    #[test]
    fn decodes_exec_with_blob_pieces() {
        let bytes = exec_bytes(b"/usr/bin/marker", b"marker\0one two\0\xff\0", b"/tmp");
        let Record::Exec(exec) = decode(&bytes).unwrap() else {
            panic!("not an exec");
        };
        assert_eq!(exec.path, b"/usr/bin/marker");
        assert_eq!(exec.cwd, b"/tmp");
        assert_eq!(exec.args, [&b"marker"[..], &b"one two"[..], &b"\xff"[..]]);
        assert_eq!(exec.task.tgid, 100);
    }

    #[test]
    fn rejects_truncated_and_inconsistent_records() {
        assert_eq!(decode(&[1, 2, 3]).unwrap_err(), DecodeError::Short(3));

        let mut bytes = exec_bytes(b"/bin/x", b"x\0", b"/");
        bytes.pop();
        assert!(matches!(
            decode(&bytes).unwrap_err(),
            DecodeError::SizeMismatch {
                kind: kind::EXEC,
                ..
            }
        ));

        // A blob reference past the end of the record.
        let mut bytes = exec_bytes(b"/bin/x", b"x\0", b"/");
        let path_len_at = std::mem::offset_of!(ExecRecord, path) + 2;
        bytes[path_len_at..path_len_at + 2].copy_from_slice(&4000u16.to_ne_bytes());
        assert_eq!(
            decode(&bytes).unwrap_err(),
            DecodeError::BadBlob { kind: kind::EXEC }
        );
    }

    #[test]
    fn rejects_unknown_kind_and_short_fixed_part() {
        let header = RecordHeader {
            kind: 99,
            size: 16,
            ktime_ns: 0,
        };
        assert_eq!(
            decode(&bytes_of(&header)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        let header = RecordHeader {
            kind: kind::EXIT,
            size: 16,
            ktime_ns: 0,
        };
        assert!(matches!(
            decode(&bytes_of(&header)).unwrap_err(),
            DecodeError::TooSmall {
                kind: kind::EXIT,
                size: 16
            }
        ));
    }
}
