//! Kernel records to `custos.v1.Event`s: identity names, process lineage, cgroup paths.
//!
//! Every event is built from the record itself first (the kernel's view at the moment of the
//! hook), then completed from the process table; the table never overrides what the kernel saw.
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lru::LruCache;

use custos_proto::v1::{
    event::Body, Cgroup, Event, EventKind, EventLoss, FileAccess, FileOpen as FileOpenEvent, Group,
    Identity, LossReason, Process, ProcessExec, ProcessExit,
};
use sensor_common::{
    exec_flags, file_flags, kind, open_syscall, task_flags, ExitRecord, ForkRecord, TaskInfo,
    MAX_GROUPS,
};

use crate::{
    cgroups::{self, CgroupResolver},
    decode::{c_str, split_argv, Exec, FileOpen, Record},
    host::HostInfo,
    identity::{NameCache, NameSource, UNSET_ID},
    people::PeopleFile,
    process_table::{Image, ProcessEntry, ProcessTable},
    text,
};

pub struct Enricher<S> {
    pub host: HostInfo,
    pub names: NameCache<S>,
    pub cgroups: CgroupResolver,
    pub processes: ProcessTable,
    /// Built identities by the kernel's ids; names in them expire like the name cache's.
    pub identities: LruCache<IdentityKey, (Identity, Instant)>,
    /// The organisation's identity map, if configured.
    pub people: Option<PeopleFile>,
}

/// How long a built identity is reused before its names are looked up again.
pub const IDENTITY_TTL: Duration = Duration::from_secs(300);

/// Everything an [`Identity`] is built from.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    ids: [u32; 10],
    flags: u32,
    ngroups: u32,
    groups: [u32; MAX_GROUPS],
    tty: [u8; sensor_common::TTY_LEN],
}

impl IdentityKey {
    fn of(task: &TaskInfo) -> Self {
        let captured = (task.ngroups as usize).min(MAX_GROUPS);
        let mut groups = [0; MAX_GROUPS];
        groups[..captured].copy_from_slice(&task.groups[..captured]);
        Self {
            ids: [
                task.uid,
                task.gid,
                task.euid,
                task.egid,
                task.suid,
                task.sgid,
                task.fsuid,
                task.fsgid,
                task.loginuid,
                task.sessionid,
            ],
            flags: task.flags,
            ngroups: task.ngroups,
            groups,
            tty: task.tty,
        }
    }
}

/// The schema's Process for a table entry (without the per-event thread, comm and cgroup).
fn schema_process(host: &HostInfo, entry: &ProcessEntry) -> Process {
    let binary = text::from_bytes(&entry.image.binary);
    let cwd = text::from_bytes(&entry.image.cwd);
    let args: Vec<_> = entry
        .image
        .args
        .iter()
        .map(|a| text::from_bytes(a))
        .collect();
    let any_raw = args.iter().any(|a| a.raw.is_some());
    Process {
        pid: entry.pid,
        tid: entry.pid,
        ppid: entry.ppid,
        exec_id: entry.exec_id.clone(),
        parent_exec_id: entry.parent_exec_id.clone(),
        binary: binary.text,
        binary_raw: binary.raw.unwrap_or_default(),
        args_raw: if any_raw {
            entry.image.args.clone()
        } else {
            Vec::new()
        },
        args: args.into_iter().map(|a| a.text).collect(),
        args_truncated: entry.image.args_truncated,
        cwd: cwd.text,
        cwd_raw: cwd.raw.unwrap_or_default(),
        start_time: Some(timestamp(host.wall_time(entry.start_boottime_ns))),
        path_truncated: entry.image.path_truncated,
        ..Process::default()
    }
}

impl<S: NameSource> Enricher<S> {
    /// The event for `record`, or `None` for records that only update state (fork).
    pub fn event(&mut self, record: Record) -> Option<Event> {
        match record {
            Record::Exec(exec) => Some(self.exec(exec)),
            Record::Exit(exit) => Some(self.exit(&exit)),
            Record::Fork(fork) => {
                self.fork(&fork);
                None
            }
            Record::FileOpen(open) => Some(self.file_open(&open)),
        }
    }

    fn file_open(&mut self, open: &FileOpen) -> Event {
        let record = &open.fixed;
        let task = &record.task;
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        if self.processes.get(task.tgid, &exec_id).is_none() {
            // Started before a fork hook could see it (or the hook is off): it runs what its
            // parent ran until it execs.
            self.processes.inherit(self.entry_for(task, Arc::default()));
        }
        let base = self.schema_of(task, &exec_id);
        let process = self.complete(&base, task);
        self.envelope(
            record.header.ktime_ns,
            task,
            process,
            Body::FileOpen(file_open_body(open)),
        )
    }

    /// The schema view of the process `task` belongs to: the table's shared one, or, for a
    /// process the table does not know, one built from the record alone.
    fn schema_of(&self, task: &TaskInfo, exec_id: &str) -> Arc<Process> {
        self.table_schema(task.tgid, exec_id).unwrap_or_else(|| {
            Arc::new(schema_process(
                &self.host,
                &self.entry_for(task, Arc::default()),
            ))
        })
    }

    /// The table's schema view of a process, built once per process and shared by its events.
    fn table_schema(&self, pid: u32, exec_id: &str) -> Option<Arc<Process>> {
        let host = &self.host;
        self.processes.get(pid, exec_id).map(|entry| {
            entry
                .schema
                .get_or_init(|| Arc::new(schema_process(host, entry)))
                .clone()
        })
    }

    fn exec(&mut self, exec: Exec) -> Event {
        let task = &exec.task;
        let image = Arc::new(Image {
            binary: exec.path,
            args: split_argv(&exec.argv)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect(),
            args_truncated: exec.flags & exec_flags::ARGV_TRUNCATED != 0,
            cwd: exec.cwd,
            path_truncated: exec.flags & (exec_flags::PATH_TRUNCATED | exec_flags::CWD_TRUNCATED)
                != 0,
        });
        let entry = self.entry_for(task, image);
        let parent = self
            .table_schema(entry.ppid, &entry.parent_exec_id)
            .map(|base| Process::clone(&base));
        let exec_id = entry.exec_id.clone();
        self.processes.upsert(entry);
        let base = self.schema_of(task, &exec_id);
        let process = self.complete(&base, task);
        self.envelope(
            exec.header.ktime_ns,
            task,
            process,
            Body::Exec(ProcessExec { parent }),
        )
    }

    fn exit(&mut self, exit: &ExitRecord) -> Event {
        let task = &exit.task;
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let base = self.schema_of(task, &exec_id);
        self.processes.mark_exited(task.tgid, &exec_id);
        let process = self.complete(&base, task);
        self.envelope(
            exit.header.ktime_ns,
            task,
            process,
            Body::Exit(exit_status(exit.exit_code)),
        )
    }

    fn fork(&mut self, fork: &ForkRecord) {
        let entry = self.entry_for(&fork.task, Arc::default());
        self.processes.inherit(entry);
    }

    /// A loss event (no identity or process: it is about the sensor itself).
    pub fn loss(&mut self, kind: EventKind, count: u64, reason: LossReason, sink: &str) -> Event {
        let now = SystemTime::now();
        Event {
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(now)),
            body: Some(Body::Loss(EventLoss {
                kind: kind as i32,
                count,
                reason: reason as i32,
                sink: sink.to_owned(),
            })),
            ..Event::default()
        }
    }

    fn entry_for(&self, task: &TaskInfo, image: Arc<Image>) -> ProcessEntry {
        ProcessEntry::new(
            task.tgid,
            task.ppid,
            task.start_boottime_ns,
            self.host.exec_id(task.tgid, task.start_boottime_ns),
            self.host.exec_id(task.ppid, task.parent_start_boottime_ns),
            image,
        )
    }

    /// A process's shared view plus what only this event's record knows.
    fn complete(&mut self, base: &Process, task: &TaskInfo) -> Process {
        let mut process = base.clone();
        process.tid = task.pid;
        process.comm = text::lossy(c_str(&task.comm));
        let path = self.cgroups.path(task.cgroup_id).unwrap_or_default();
        let context = cgroups::context_of(&path);
        process.cgroup = Some(Cgroup {
            id: task.cgroup_id,
            path,
            unit: context.unit,
            container_id: context.container_id,
        });
        process
    }

    /// The identity of `task`, built once per distinct set of ids and reused while fresh.
    fn identity(&mut self, task: &TaskInfo) -> Identity {
        let key = IdentityKey::of(task);
        if let Some((identity, built)) = self.identities.get(&key) {
            if built.elapsed() < IDENTITY_TTL {
                return identity.clone();
            }
        }
        let identity = self.build_identity(task);
        self.identities.put(key, (identity.clone(), Instant::now()));
        identity
    }

    /// Re-reads the identity map if it changed; built identities then carry stale people.
    pub fn refresh_people(&mut self) {
        if let Some(people) = &mut self.people {
            if people.refresh() {
                self.identities.clear();
            }
        }
    }

    fn build_identity(&mut self, task: &TaskInfo) -> Identity {
        let captured = (task.ngroups as usize).min(MAX_GROUPS);
        let groups = task.groups[..captured]
            .iter()
            .map(|&gid| Group {
                gid,
                name: self.names.group(gid).unwrap_or_default(),
            })
            .collect();
        let audit = task.flags & task_flags::NO_AUDIT == 0;
        let login_uid = (audit && task.loginuid != UNSET_ID).then_some(task.loginuid);
        let user = self.names.user(task.uid);
        let login_user = login_uid.and_then(|uid| self.names.user(uid));
        let person = self.people.as_ref().and_then(|file| match login_uid {
            Some(uid) => file.people.lookup(uid, login_user.as_deref()).cloned(),
            None => file.people.lookup(task.uid, user.as_deref()).cloned(),
        });
        Identity {
            uid: task.uid,
            user: user.unwrap_or_default(),
            gid: task.gid,
            group: self.names.group(task.gid).unwrap_or_default(),
            euid: task.euid,
            euser: self.names.user(task.euid).unwrap_or_default(),
            egid: task.egid,
            egroup: self.names.group(task.egid).unwrap_or_default(),
            groups,
            groups_truncated: task.flags & task_flags::GROUPS_TRUNCATED != 0,
            login_uid,
            login_user: login_user.unwrap_or_default(),
            session_id: (audit && task.sessionid != UNSET_ID).then_some(task.sessionid),
            tty: tty_name(c_str(&task.tty)),
            suid: task.suid,
            sgid: task.sgid,
            fsuid: task.fsuid,
            fsgid: task.fsgid,
            person,
        }
    }

    fn envelope(&mut self, ktime_ns: u64, task: &TaskInfo, process: Process, body: Body) -> Event {
        Event {
            seq: 0,
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(self.host.wall_time(ktime_ns))),
            identity: Some(self.identity(task)),
            process: Some(process),
            body: Some(body),
        }
    }
}

/// The schema's FileOpen from a kernel record.
pub fn file_open_body(open: &FileOpen) -> FileOpenEvent {
    let record = &open.fixed;
    let succeeded = record.ret >= 0;
    let path = if succeeded || open.path.first() == Some(&b'/') || open.dir.is_empty() {
        text::from_bytes(&open.path)
    } else {
        let mut joined = open.dir.clone();
        if joined.last() != Some(&b'/') {
            joined.push(b'/');
        }
        joined.extend_from_slice(&open.path);
        text::from_bytes(&joined)
    };
    let flags = record.open_flags;
    let errno = (!succeeded).then(|| record.ret.unsigned_abs());
    FileOpenEvent {
        path: path.text,
        path_raw: path.raw.unwrap_or_default(),
        path_truncated: record.flags & (file_flags::PATH_TRUNCATED | file_flags::DIR_TRUNCATED)
            != 0,
        access: Some(file_access(flags)),
        flags,
        syscall: syscall_name(record.syscall).to_owned(),
        fd: succeeded.then_some(record.ret),
        errno,
        error: errno.map(errno_name).unwrap_or_default(),
        denied: matches!(errno, Some(e) if e == libc::EACCES as u32 || e == libc::EPERM as u32),
        device_major: succeeded.then_some(record.dev >> 20),
        device_minor: succeeded.then_some(record.dev & 0xfffff),
        inode: succeeded.then_some(record.ino),
        repeats: 0,
        repeat_summary: false,
    }
}

fn file_access(flags: u32) -> FileAccess {
    let mode = flags as i32 & libc::O_ACCMODE;
    FileAccess {
        read: mode == libc::O_RDONLY || mode == libc::O_RDWR,
        write: mode == libc::O_WRONLY || mode == libc::O_RDWR,
        create: flags as i32 & libc::O_CREAT != 0,
        truncate: flags as i32 & libc::O_TRUNC != 0,
        append: flags as i32 & libc::O_APPEND != 0,
    }
}

fn syscall_name(syscall: u32) -> &'static str {
    match syscall {
        open_syscall::OPEN => "open",
        open_syscall::OPENAT => "openat",
        open_syscall::OPENAT2 => "openat2",
        open_syscall::CREAT => "creat",
        open_syscall::IO_URING_OPENAT => "io_uring_openat",
        open_syscall::IO_URING_OPENAT2 => "io_uring_openat2",
        _ => "unknown",
    }
}

/// "ENOENT" for 2; the number for errors this libc does not name.
fn errno_name(errno: u32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno as i32));
    if name == "UnknownErrno" {
        errno.to_string()
    } else {
        name
    }
}

/// wait(2) status to exit code or signal.
pub fn exit_status(status: u32) -> ProcessExit {
    let signal = status & 0x7f;
    if signal == 0 {
        ProcessExit {
            code: Some(((status >> 8) & 0xff) as i32),
            signal: None,
            core_dumped: false,
        }
    } else {
        ProcessExit {
            code: None,
            signal: Some(signal),
            core_dumped: status & 0x80 != 0,
        }
    }
}

/// The kernel names pseudo-terminals `pts3`; users know them as `pts/3`.
pub fn tty_name(kernel_name: &[u8]) -> String {
    let name = text::lossy(kernel_name);
    match name.strip_prefix("pts") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("pts/{n}"),
        _ => name,
    }
}

pub fn event_kind(record_kind: u32) -> EventKind {
    match record_kind {
        kind::EXEC => EventKind::ProcessExec,
        kind::EXIT => EventKind::ProcessExit,
        kind::FORK => EventKind::ProcessFork,
        kind::FILE_OPEN => EventKind::FileOpen,
        _ => EventKind::Unspecified,
    }
}

/// The event kind of a body kind name as `sinks::spool::body_kind` gives it.
pub fn event_kind_named(name: &str) -> EventKind {
    match name {
        "exec" => EventKind::ProcessExec,
        "exit" => EventKind::ProcessExit,
        "file_open" => EventKind::FileOpen,
        "loss" => EventKind::Loss,
        _ => EventKind::Unspecified,
    }
}

pub fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decodes_codes_and_signals() {
        assert_eq!(exit_status(3 << 8).code, Some(3));
        let killed = exit_status(9);
        assert_eq!(
            (killed.code, killed.signal, killed.core_dumped),
            (None, Some(9), false)
        );
        let dumped = exit_status(11 | 0x80);
        assert_eq!((dumped.signal, dumped.core_dumped), (Some(11), true));
    }

    #[test]
    fn errno_names_and_access_bits() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(100_000), "100000");
        let access = file_access((libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32);
        assert!(access.write && access.create && access.truncate && !access.read);
        assert!(file_access(libc::O_RDWR as u32).read);
    }

    #[test]
    fn pty_names_get_their_slash() {
        assert_eq!(tty_name(b"pts3"), "pts/3");
        assert_eq!(tty_name(b"tty1"), "tty1");
        assert_eq!(tty_name(b"ptsx"), "ptsx");
        assert_eq!(tty_name(b""), "");
    }
}
