//! Kernel records to `custos.v1.Event`s: identity names, process lineage, cgroup paths, login
//! sessions and privilege changes.
//!
//! Every event is built from the record itself first (the kernel's view at the moment of the
//! hook), then completed from the process table; the table never overrides what the kernel saw.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use lru::LruCache;

use custos_proto::v1::{event::Body, Cgroup, Event, Identity, Process};
use sensor_common::TaskInfo;

use super::identity::IdentityKey;
use crate::{
    cgroups::{self, CgroupResolver},
    decode::c_str,
    devices::DeviceTracker,
    families::Record,
    host::HostInfo,
    identity::{NameCache, NameSource, UNSET_ID},
    people::PeopleFile,
    privacy::redact::Redactor,
    proc_scan,
    process_table::{ExecId, Image, ProcessEntry, ProcessTable, ThreadView},
    sessions::SessionTracker,
    sinks::{new_part_id, EventSource, PartIds, SharedParts},
    text,
};

pub struct Enricher<S> {
    pub(super) host: HostInfo,
    pub(super) names: NameCache<S>,
    pub(super) cgroups: CgroupResolver,
    pub(super) processes: ProcessTable,
    /// Redacts secrets from arguments as they enter the process table.
    pub(super) redactor: Option<Redactor>,
    /// Built identities by the kernel's ids; names in them expire like the name cache's.
    pub(super) identities: LruCache<IdentityKey, (Identity, Instant)>,
    /// Identities kept on processes (`IdentityView`) serve only in the epoch they were built
    /// in; a new one begins when names may have changed: every [`IDENTITY_TTL`], when the
    /// identity map changes, and at a reload.
    pub(super) identity_epoch: u64,
    pub(super) identity_epoch_began: Instant,
    /// The owner and access basis of file opens, by their inputs.
    pub(super) access_bases: crate::access::memo::BasisMemo,
    /// The organisation's identity map, if configured.
    pub(super) people: Option<PeopleFile>,
    pub(super) sessions: SessionTracker,
    pub(super) devices: DeviceTracker,
    /// When the daemon started (CLOCK_BOOTTIME ns): sessions whose leader is older began
    /// before the sensor.
    pub(super) started_boottime_ns: u64,
    /// When the fork hook is attached, when (CLOCK_BOOTTIME ns) every new process began to be
    /// recorded at its fork; see [`Self::know_process`].
    pub(super) forks_recorded_since: Option<u64>,
    /// Events a record produced besides its own, to be emitted before it (a session's start, a
    /// privilege change at exec) and after it (a session's end), in order.
    pub(super) preceding: Vec<Event>,
    pub(super) following: Vec<Event>,
    /// The part ids the record being enriched gave its own event's parts.
    pub(super) part_ids: PartIds,
    /// The parts of the record's own event that the table shares (see [`Produced::shared`]).
    pub(super) shared: SharedParts,
    /// The host's facts on every event, held apart from the record's own event.
    pub(super) source: Arc<EventSource>,
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
    /// `started_boottime_ns` when the fork hook is attached, else `None`.
    pub forks_recorded_since: Option<u64>,
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
    /// The ids of `event`'s parts that the enricher knows (0 where it does not).
    pub ids: PartIds,
    /// `event`'s parts the table shares, which the event goes without (see [`SharedParts`]).
    pub shared: SharedParts,
}

/// The task's audit login uid, or [`UNSET_ID`] without one (or without audit support).
pub(crate) fn login_uid_of(task: &TaskInfo) -> u32 {
    if task.flags & sensor_common::task_flags::NO_AUDIT != 0 {
        UNSET_ID
    } else {
        task.loginuid
    }
}

/// How long a built identity is reused before its names are looked up again.
pub const IDENTITY_TTL: Duration = Duration::from_secs(300);

/// The schema's Process for a table entry (without the per-event thread, comm and cgroup).
pub(super) fn schema_process(host: &HostInfo, entry: &ProcessEntry) -> Process {
    let mut process = entry.image.program_fields();
    set_process_ids(host, entry, &mut process);
    process
}

/// Sets the fields of `process` that its table entry gives: ids, parent and start time.
pub(super) fn set_process_ids(host: &HostInfo, entry: &ProcessEntry, process: &mut Process) {
    process.pid = entry.pid;
    process.tid = entry.pid;
    process.ppid = entry.ppid;
    process.exec_id = entry.exec_id.as_ref().to_owned();
    process.parent_exec_id = entry.parent_exec_id.as_ref().to_owned();
    process.start_time = Some(timestamp(host.wall_time(entry.start_boottime_ns)));
}

impl<S: NameSource> Enricher<S> {
    pub fn new(parts: EnricherParts<S>) -> Self {
        Self {
            names: parts.names,
            cgroups: parts.cgroups,
            processes: parts.processes,
            redactor: parts.redactor,
            identities: LruCache::new(parts.identities),
            identity_epoch: 0,
            identity_epoch_began: Instant::now(),
            access_bases: Default::default(),
            people: parts.people,
            sessions: parts.sessions,
            devices: parts.devices,
            started_boottime_ns: parts.started_boottime_ns,
            forks_recorded_since: parts.forks_recorded_since,
            preceding: Vec::new(),
            following: Vec::new(),
            part_ids: PartIds::default(),
            shared: SharedParts::default(),
            source: Arc::new(EventSource {
                run_id: parts.host.run_id.clone(),
                boot_id: parts.host.boot_id.clone(),
                host: parts.host.host.clone(),
            }),
            host: parts.host,
        }
    }

    /// The events `record` produces; its paths and arguments are moved out. Taken where it
    /// is: a record is hundreds of bytes, and moving it per call was a copy per record.
    pub fn enrich(&mut self, record: &mut Record) -> Produced {
        self.part_ids = PartIds::default();
        self.shared = SharedParts::default();
        let event = self.event(record);
        Produced {
            before: std::mem::take(&mut self.preceding),
            event,
            after: std::mem::take(&mut self.following),
            ids: std::mem::take(&mut self.part_ids),
            shared: std::mem::take(&mut self.shared),
        }
    }

    /// Once a second: forgets processes past their grace period, re-reads the identity map if
    /// it changed.
    pub fn housekeep(&mut self) {
        self.processes.sweep();
        self.access_bases.expire();
        if self.identity_epoch_began.elapsed() >= IDENTITY_TTL {
            self.renew_identities();
        }
        self.refresh_people();
    }

    /// Applies reloaded rules: device control and argument redaction.
    pub fn set_rules(
        &mut self,
        devices: Vec<crate::config::DeviceRule>,
        redactor: Option<Redactor>,
    ) {
        self.devices.rules = devices;
        self.redactor = redactor;
        self.renew_identities();
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

    /// The exec id and the event's process for a record of `task`, whose event is the
    /// record's own (its part id is noted). A process the table does not know (started before
    /// a fork hook could see it, or the hook is off) runs what its parent ran until it execs.
    pub(super) fn acting_process(&mut self, task: &TaskInfo) -> (ExecId, Arc<Process>) {
        let exec_id = self.exec_id_of(task.tgid, task.start_boottime_ns);
        self.know_process(task, &exec_id);
        let (process, part_id) = self.identified_process_of(task, &exec_id);
        self.part_ids.process = part_id;
        (exec_id, process)
    }

    /// Puts a process the table does not know on it. Most run what their parent ran: their
    /// fork was not seen (they began before the sensor, or the fork hook is off), or its
    /// record was lost and they have not exec'd since. One the table forgot (a late record,
    /// such as a connection's end, of a process that exited beyond the grace period) may have
    /// exec'd anything: its program is unknown, and it is held as exited, to go again.
    pub(super) fn know_process(&mut self, task: &TaskInfo, exec_id: &str) {
        if self.processes.get(task.tgid, exec_id).is_some() {
            return;
        }
        let entry = self.entry_for(task, Image::unknown());
        if self.was_forgotten(task) {
            self.processes.recall(entry);
        } else {
            self.processes.inherit(entry);
        }
    }

    /// Whether the table forgot a process it does not know: it began after every fork was
    /// recorded, so it was on the table, and it is no longer running.
    fn was_forgotten(&self, task: &TaskInfo) -> bool {
        let recorded = self
            .forks_recorded_since
            .is_some_and(|since| task.start_boottime_ns > since);
        recorded
            && proc_scan::start_ticks(Path::new("/proc"), task.tgid)
                != Some(self.host.start_ticks(task.start_boottime_ns))
    }

    /// A copy of the schema view of the process `task` belongs to, to complete: from the
    /// table's shared one when built; else built for this use alone, since most processes
    /// never need a shared one (it serves their children's exec events); for a process the
    /// table does not know, from the record alone.
    fn schema_copy_of(&self, task: &TaskInfo, exec_id: &str) -> Process {
        match self.processes.get(task.tgid, exec_id) {
            Some(entry) => match entry.schema.get() {
                Some((shared, _)) => Process::clone(shared),
                None => schema_process(&self.host, entry),
            },
            None => schema_process(&self.host, &self.entry_for(task, Image::unknown())),
        }
    }

    /// The table's schema view of a process, built once per process and shared by its events.
    pub(super) fn table_schema(&self, pid: u32, exec_id: &str) -> Option<Arc<Process>> {
        self.identified_table_schema(pid, exec_id)
            .map(|(view, _)| view)
    }

    /// [`Self::table_schema`] with the view's part id.
    pub(super) fn identified_table_schema(
        &self,
        pid: u32,
        exec_id: &str,
    ) -> Option<(Arc<Process>, u64)> {
        let host = &self.host;
        self.processes.get(pid, exec_id).map(|entry| {
            entry
                .schema
                .get_or_init(|| (Arc::new(schema_process(host, entry)), new_part_id()))
                .clone()
        })
    }

    /// The exec id of the process `pid` that started at `start_boottime_ns`: the table's own
    /// when it knows that process, else made anew.
    pub(super) fn exec_id_of(&self, pid: u32, start_boottime_ns: u64) -> ExecId {
        let ticks = |ns| self.host.start_ticks(ns);
        match self.processes.latest(pid) {
            // The same start time in ns is the same in ticks: most records' processes came from
            // the kernel's records with the very same figure, and are found without dividing.
            Some(entry)
                if entry.start_boottime_ns == start_boottime_ns
                    || ticks(entry.start_boottime_ns) == ticks(start_boottime_ns) =>
            {
                debug_assert_eq!(
                    entry.exec_id,
                    self.host.exec_id_from_ticks(pid, ticks(start_boottime_ns))
                );
                entry.exec_id.clone()
            }
            _ => self.host.exec_id_from_ticks(pid, ticks(start_boottime_ns)),
        }
    }

    pub(super) fn entry_for(&self, task: &TaskInfo, image: Arc<Image>) -> ProcessEntry {
        ProcessEntry::new(
            task.tgid,
            task.ppid,
            task.start_boottime_ns,
            self.exec_id_of(task.tgid, task.start_boottime_ns),
            self.exec_id_of(task.ppid, task.parent_start_boottime_ns),
            image,
        )
    }

    /// The event's process: the process's shared view completed with the record's thread,
    /// reusing the completion of its previous event when that came from the same thread.
    pub(super) fn process_of(&mut self, task: &TaskInfo, exec_id: &str) -> Process {
        Arc::unwrap_or_clone(self.identified_process_of(task, exec_id).0)
    }

    /// [`Self::process_of`] with the kept view's part id (0 when none was kept).
    pub(super) fn identified_process_of(
        &mut self,
        task: &TaskInfo,
        exec_id: &str,
    ) -> (Arc<Process>, u64) {
        if let Some(view) = self
            .processes
            .get(task.tgid, exec_id)
            .and_then(|entry| entry.last_thread.as_ref())
            .filter(|view| serves(view, task))
        {
            return (view.process.clone(), view.part_id);
        }
        let mut process = self.schema_copy_of(task, exec_id);
        let cgroup_known = self.complete(&mut process, task);
        let process = Arc::new(process);
        // A cgroup not resolved yet may be on the next event: only a full view is kept.
        if !cgroup_known {
            return (process, 0);
        }
        let part_id = self.keep_thread_view(task, exec_id, &process);
        (process, part_id)
    }

    /// Keeps `process`, the view of an event of `task`, for the next events of the same
    /// thread; its part id (0 when the table does not know the process).
    pub(super) fn keep_thread_view(
        &mut self,
        task: &TaskInfo,
        exec_id: &str,
        process: &Arc<Process>,
    ) -> u64 {
        let Some(entry) = self.processes.get_mut(task.tgid, exec_id) else {
            return 0;
        };
        let part_id = new_part_id();
        entry.last_thread = Some(ThreadView {
            tid: task.pid,
            comm: task.comm,
            cgroup_id: task.cgroup_id,
            process: process.clone(),
            part_id,
        });
        part_id
    }

    /// [`Self::identified_process_of`] for a process's last event (its exit): the kept
    /// completion is handed over rather than copied.
    pub(super) fn last_process_of(
        &mut self,
        task: &TaskInfo,
        exec_id: &str,
    ) -> (Arc<Process>, u64) {
        let kept = self
            .processes
            .get_mut(task.tgid, exec_id)
            .and_then(|entry| entry.last_thread.take())
            .filter(|view| serves(view, task));
        match kept {
            Some(view) => (view.process, view.part_id),
            None => self.identified_process_of(task, exec_id),
        }
    }

    /// Completes a process's shared view with what only this event's record knows (in place:
    /// a view is a few hundred bytes); whether its cgroup path was known.
    pub(super) fn complete(&mut self, process: &mut Process, task: &TaskInfo) -> bool {
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
        known
    }

    /// An event about the host, not one action of a process (a loss, a summary): the host's
    /// facts and `time`, no identity or process.
    pub(super) fn host_event(&self, time: SystemTime, body: Body) -> Event {
        Event {
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(time)),
            body: Some(body),
            ..Event::default()
        }
    }

    /// [`Self::envelope`] for the record's own event, whose process and identity the table
    /// shares: the event goes without them and the host's facts, and [`Produced::shared`]
    /// holds them.
    pub(super) fn shared_envelope(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        exec_id: &str,
        process: Arc<Process>,
        body: Body,
    ) -> Event {
        let (identity, part_id) = self.identity_in_force(ktime_ns, task, exec_id);
        self.shared.process = Some(process);
        self.shared.identity = Some(identity);
        self.shared.source = Some(self.source.clone());
        self.part_ids.identity = part_id;
        Event {
            time: Some(timestamp(self.host.wall_time(ktime_ns))),
            body: Some(body),
            ..Event::default()
        }
    }

    pub(super) fn envelope(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        exec_id: &str,
        process: Process,
        body: Body,
    ) -> Event {
        let (identity, _) = self.identity_in_force(ktime_ns, task, exec_id);
        let identity = Arc::unwrap_or_clone(identity);
        self.envelope_around(ktime_ns, Some(identity), Some(process), body)
    }

    fn envelope_around(
        &self,
        ktime_ns: u64,
        identity: Option<Identity>,
        process: Option<Process>,
        body: Body,
    ) -> Event {
        Event {
            seq: 0,
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(self.host.wall_time(ktime_ns))),
            identity: identity.map(Box::new),
            process: process.map(Box::new),
            kind: String::new(),
            body: Some(body),
        }
    }
}

/// True when a kept completion fits an event of `task`: same thread, name and cgroup.
fn serves(view: &ThreadView, task: &TaskInfo) -> bool {
    view.tid == task.pid && view.comm == task.comm && view.cgroup_id == task.cgroup_id
}

pub fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// "ENOENT" for 2; the number for errors this libc does not name.
pub(crate) fn errno_name(errno: u32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno as i32));
    if name == "UnknownErrno" {
        errno.to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn errno_names() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(100_000), "100000");
    }
}
