//! Kernel records to `custos.v1.Event`s: identity names, process lineage, cgroup paths, login
//! sessions and privilege changes.
//!
//! Every event is built from the record itself first (the kernel's view at the moment of the
//! hook), then completed from the process table; the table never overrides what the kernel saw.
mod bodies;
mod devices;
mod identity;
mod privileges;
mod sessions;

pub use bodies::{exit_status, file_open_body, timestamp};
pub use identity::IdentityKey;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use lru::LruCache;

use custos_proto::v1::{
    event::Body, Cgroup, Event, EventKind, EventLoss, Identity, LossReason, Process, ProcessExec,
    SessionEnd,
};
use sensor_common::{exec_flags, ExitRecord, ForkRecord, TaskInfo};

use crate::{
    cgroups::{self, CgroupResolver},
    credentials::Credentials,
    decode::{c_str, split_argv, Exec, FileOpen, Record},
    devices::DeviceTracker,
    host::HostInfo,
    identity::{NameCache, NameSource, UNSET_ID},
    people::PeopleFile,
    privacy::redact::Redactor,
    privilege_chain::Actor,
    process_table::{Image, ProcessEntry, ProcessTable, ThreadView},
    sessions::SessionTracker,
    text,
};

pub struct Enricher<S> {
    host: HostInfo,
    names: NameCache<S>,
    cgroups: CgroupResolver,
    processes: ProcessTable,
    /// Redacts secrets from arguments as they enter the process table.
    redactor: Option<Redactor>,
    /// Built identities by the kernel's ids; names in them expire like the name cache's.
    identities: LruCache<IdentityKey, (Identity, Instant)>,
    /// The organisation's identity map, if configured.
    people: Option<PeopleFile>,
    sessions: SessionTracker,
    devices: DeviceTracker,
    /// When the daemon started (CLOCK_BOOTTIME ns): sessions whose leader is older began
    /// before the sensor.
    started_boottime_ns: u64,
    /// Events a record produced besides its own, to be emitted before it (a session's start, a
    /// privilege change at exec) and after it (a session's end), in order.
    preceding: Vec<Event>,
    following: Vec<Event>,
}

/// What an enricher is built from.
pub struct EnricherParts<S> {
    pub host: HostInfo,
    pub names: NameCache<S>,
    pub cgroups: CgroupResolver,
    /// Seeded with the processes that were running before the sensor.
    pub processes: ProcessTable,
    pub redactor: Option<Redactor>,
    pub people: Option<PeopleFile>,
    pub sessions: SessionTracker,
    pub devices: DeviceTracker,
    /// How many identities are kept built.
    pub identities: std::num::NonZeroUsize,
    pub started_boottime_ns: u64,
}

/// The events one record produced, in the order they are emitted.
#[derive(Debug, Default)]
pub struct Produced {
    /// Events that come first: a session's start, a privilege change at exec.
    pub before: Vec<Event>,
    /// The record's own event; `None` for records that only update state (fork).
    pub event: Option<Event>,
    /// Events that follow it: a session's end, a device-control decision.
    pub after: Vec<Event>,
}

/// The task's audit login uid, or [`UNSET_ID`] without one (or without audit support).
pub(super) fn login_uid_of(task: &TaskInfo) -> u32 {
    if task.flags & sensor_common::task_flags::NO_AUDIT != 0 {
        UNSET_ID
    } else {
        task.loginuid
    }
}

/// How long a built identity is reused before its names are looked up again.
pub const IDENTITY_TTL: Duration = Duration::from_secs(300);

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
    pub fn new(parts: EnricherParts<S>) -> Self {
        Self {
            host: parts.host,
            names: parts.names,
            cgroups: parts.cgroups,
            processes: parts.processes,
            redactor: parts.redactor,
            identities: LruCache::new(parts.identities),
            people: parts.people,
            sessions: parts.sessions,
            devices: parts.devices,
            started_boottime_ns: parts.started_boottime_ns,
            preceding: Vec::new(),
            following: Vec::new(),
        }
    }

    /// The events `record` produces.
    pub fn enrich(&mut self, record: Record) -> Produced {
        let event = self.event(record);
        Produced {
            before: std::mem::take(&mut self.preceding),
            event,
            after: std::mem::take(&mut self.following),
        }
    }

    /// Once a second: forgets processes past their grace period, re-reads the identity map and
    /// the devices if they changed.
    pub fn housekeep(&mut self) {
        self.processes.sweep();
        self.refresh_people();
        self.devices.rescan();
    }

    /// Applies reloaded rules: device control and argument redaction.
    pub fn set_rules(
        &mut self,
        devices: Vec<crate::config::DeviceRule>,
        redactor: Option<Redactor>,
    ) {
        self.devices.rules = devices;
        self.redactor = redactor;
    }

    /// This run's id (`Event.run_id`).
    pub fn run_id(&self) -> &str {
        &self.host.run_id
    }

    /// How many processes the table knows.
    pub fn known_processes(&self) -> usize {
        self.processes.len()
    }

    /// The device tracker, for attaching the kernel's device maps at start-up.
    pub fn devices_mut(&mut self) -> &mut DeviceTracker {
        &mut self.devices
    }

    /// The event for `record`, or `None` for records that only update state (fork); side
    /// events are left in `preceding` and `following`.
    fn event(&mut self, record: Record) -> Option<Event> {
        match record {
            Record::Exec(exec) => Some(self.exec(exec)),
            Record::Exit(exit) => Some(self.exit(&exit)),
            Record::Fork(fork) => {
                self.fork(&fork);
                None
            }
            Record::FileOpen(open) => Some(self.file_open(&open)),
            Record::Cred(cred) => self.credential_change(&cred),
            Record::Device(device) => self.device_change(&device),
            Record::Mount(mount) => self.mount(&mount),
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
        let process = self.process_of(task, &exec_id);
        let mut body = file_open_body(open);
        self.note_device_write(open, &mut body);
        self.envelope(
            record.header.ktime_ns,
            task,
            &exec_id,
            process,
            Body::FileOpen(body),
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
        let mut args: Vec<Vec<u8>> = split_argv(&exec.argv)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        if let Some(redactor) = &self.redactor {
            redactor.redact(&mut args);
        }
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let image = Arc::new(Image {
            binary: exec.path,
            args,
            args_truncated: exec.flags & exec_flags::ARGV_TRUNCATED != 0,
            cwd: exec.cwd,
            path_truncated: exec.flags & (exec_flags::PATH_TRUNCATED | exec_flags::CWD_TRUNCATED)
                != 0,
            exec_id: exec_id.clone(),
        });
        let mut entry = self.entry_for(task, image);
        let parent = self
            .table_schema(entry.ppid, &entry.parent_exec_id)
            .map(|base| Process::clone(&base));
        let after = Credentials::of(task, exec.cap_effective, exec.cap_permitted);
        let before = self
            .processes
            .get(task.tgid, &exec_id)
            .and_then(|previous| {
                entry.chain = previous.chain.clone();
                previous.credentials
            });
        // Set-user-id, set-group-id and file capabilities take effect at execve.
        let changed = before.filter(|b| !b.same_ids_and_capabilities(&after));
        let actor = Actor {
            program: &entry.image.binary,
            exec_id: &exec_id,
        };
        entry.chain.exec(
            before.map(|b| b.euid),
            after.euid,
            login_uid_of(task),
            &actor,
        );
        entry.credentials = Some(after);
        entry.session_id = task.sessionid;
        self.processes.upsert(entry);
        let process = self.process_of(task, &exec_id);
        if let Some(before) = changed {
            let body = self.privilege_change("exec", Some(&before), &after, None);
            let change = self.envelope(exec.header.ktime_ns, task, &exec_id, process.clone(), body);
            self.preceding.push(change);
        }
        self.envelope(
            exec.header.ktime_ns,
            task,
            &exec_id,
            process,
            Body::Exec(ProcessExec { parent }),
        )
    }

    fn exit(&mut self, exit: &ExitRecord) -> Event {
        let task = &exit.task;
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        let event = self.envelope(
            exit.header.ktime_ns,
            task,
            &exec_id,
            process.clone(),
            Body::Exit(exit_status(exit.exit_code)),
        );
        self.processes.mark_exited(task.tgid, &exec_id);
        if let Some((session, unannounced)) = self.sessions.leader_exited(task.tgid, &exec_id) {
            if unannounced {
                // A login that never ran anything of its own (`ssh -N`) still began.
                let start = self.session_start(exit.header.ktime_ns, task, &session);
                self.following.push(start);
            }
            let end = Event {
                body: Some(Body::SessionEnd(SessionEnd {
                    session: Some(self.session_view(&session)),
                })),
                ..event.clone()
            };
            self.following.push(end);
        }
        event
    }

    fn fork(&mut self, fork: &ForkRecord) {
        let task = &fork.task;
        let mut entry = self.entry_for(task, Arc::default());
        entry.session_id = task.sessionid;
        // The child holds a copy of its parent's credentials as of the fork: what the parent
        // has now (its session id too, which changes without an exec when it logs someone in).
        if let Some(parent) = self.processes.get_mut(entry.ppid, &entry.parent_exec_id) {
            parent.session_id = task.sessionid;
            if let Some(known) = parent.credentials {
                let now = Credentials::of(task, known.cap_effective, known.cap_permitted);
                parent.credentials = Some(now);
                entry.credentials = Some(now);
            }
        }
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

    /// The event's process: the process's shared view completed with the record's thread,
    /// reusing the completion of its previous event when that came from the same thread.
    fn process_of(&mut self, task: &TaskInfo, exec_id: &str) -> Process {
        let reusable = |view: &ThreadView| {
            view.tid == task.pid && view.comm == task.comm && view.cgroup_id == task.cgroup_id
        };
        if let Some(view) = self
            .processes
            .get(task.tgid, exec_id)
            .and_then(|entry| entry.last_thread.as_ref())
            .filter(|view| reusable(view))
        {
            return view.process.clone();
        }
        let base = self.schema_of(task, exec_id);
        let (process, cgroup_known) = self.complete(&base, task);
        // A cgroup not resolved yet may be on the next event: only a full view is kept.
        if cgroup_known {
            if let Some(entry) = self.processes.get_mut(task.tgid, exec_id) {
                entry.last_thread = Some(ThreadView {
                    tid: task.pid,
                    comm: task.comm,
                    cgroup_id: task.cgroup_id,
                    process: process.clone(),
                });
            }
        }
        process
    }

    /// A process's shared view plus what only this event's record knows, and whether its
    /// cgroup path was known.
    fn complete(&mut self, base: &Process, task: &TaskInfo) -> (Process, bool) {
        let mut process = base.clone();
        process.tid = task.pid;
        process.comm = text::lossy(c_str(&task.comm));
        let path = self.cgroups.path(task.cgroup_id);
        let known = path.is_some();
        let path = path.unwrap_or_default();
        let context = cgroups::context_of(&path);
        process.cgroup = Some(Cgroup {
            id: task.cgroup_id,
            path,
            unit: context.unit,
            container_id: context.container_id,
        });
        (process, known)
    }

    fn envelope(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        exec_id: &str,
        process: Process,
        body: Body,
    ) -> Event {
        let mut identity = self.identity(task);
        // One lookup: keep the table's session id current (the session walk reads it) and
        // take the privilege chain.
        let chain = self
            .processes
            .get_mut(task.tgid, exec_id)
            .map(|entry| {
                entry.session_id = task.sessionid;
                entry.chain.now(login_uid_of(task))
            })
            .unwrap_or_default();
        identity.session = self.session_of(ktime_ns, task, exec_id);
        identity.privilege_chain = chain.hops.iter().map(|hop| self.hop_view(hop)).collect();
        identity.privilege_hops_omitted = chain.omitted;
        Event {
            seq: 0,
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(self.host.wall_time(ktime_ns))),
            identity: Some(identity),
            process: Some(process),
            body: Some(body),
        }
    }
}
