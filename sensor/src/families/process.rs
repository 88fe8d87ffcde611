//! The process family: exec, exit and fork records to events, and the process table kept
//! from them.
use std::sync::Arc;

use custos_proto::v1::{event::Body, Event, Process, ProcessExec, ProcessExit, SessionEnd};
use sensor_common::{exec_flags, ExecRecord, ExitRecord, ForkRecord, RecordHeader, TaskInfo};

use super::{enricher::set_process_ids, login_uid_of, Enricher};
use crate::{
    credentials::Credentials,
    decode::{split_argv, with_blob, DecodeError},
    identity::NameSource,
    privilege_chain::Actor,
    process_table::{Image, Program},
};

/// An exec record with its variable parts copied out of the ring buffer.
#[derive(Clone, Debug)]
pub struct Exec {
    pub header: RecordHeader,
    pub task: TaskInfo,
    pub flags: u32,
    pub path: Vec<u8>,
    /// argv as in the process image, split into its arguments.
    pub args: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
    /// The path execve was given, as given (empty when the hook cannot see it).
    pub invoked: Vec<u8>,
    pub cap_effective: u64,
    pub cap_permitted: u64,
}

pub(crate) fn decode_exec(bytes: &[u8]) -> Result<Exec, DecodeError> {
    let (record, blob) = with_blob::<ExecRecord>(bytes)?;
    Ok(Exec {
        header: record.header,
        task: record.task,
        flags: record.flags,
        path: blob.piece(record.path)?,
        args: split_argv(blob.slice(record.argv)?),
        cwd: blob.piece(record.cwd)?,
        invoked: blob.piece(record.invoked)?,
        cap_effective: record.cap_effective,
        cap_permitted: record.cap_permitted,
    })
}

impl<S: NameSource> Enricher<S> {
    /// The exec's event; its paths and arguments are moved out of `exec`.
    pub(crate) fn exec(&mut self, exec: &mut Exec) -> Event {
        let exec_id = self.exec_id_of(exec.task.tgid, exec.task.start_boottime_ns);
        let program = self.program_of(exec);
        let image = Arc::new(Image::of_program(&program, exec_id.clone()));
        let task = &exec.task;
        let after = Credentials::of(task, exec.cap_effective, exec.cap_permitted);
        self.place_exec(task, &exec_id);
        self.sessions
            .note_exec(task.tgid, &exec_id, &program.binary);
        let (process, cgroup_known) = self.exec_view(task, &exec_id, program);
        let before = self.load_image(task, &exec_id, image, after);
        let (parent, parent_part) = self.parent_schema_of(task.tgid, &exec_id).unzip();
        // Set-user-id, set-group-id and file capabilities take effect at execve.
        let changed = before.filter(|b| !b.same_ids_and_capabilities(&after));
        // A cgroup not resolved yet may be on the next event: only a full view is kept.
        self.part_ids.process = if cgroup_known {
            self.keep_thread_view(task, &exec_id, &process)
        } else {
            0
        };
        self.part_ids.parent = parent_part.unwrap_or(0);
        if let Some(before) = changed {
            let body = self.privilege_change("exec", Some(&before), &after, None);
            let owned = Process::clone(&process);
            let change = self.envelope(exec.header.ktime_ns, task, &exec_id, owned, body);
            self.preceding.push(change);
        }
        // The parent, shared with its other children's execs, goes apart like the process.
        let event = self.shared_envelope(
            exec.header.ktime_ns,
            task,
            &exec_id,
            process,
            Body::Exec(ProcessExec { parent: None }),
        );
        self.shared.parent = parent;
        event
    }

    /// The program an exec record loaded, its arguments redacted; its paths and arguments are
    /// moved out.
    fn program_of(&self, exec: &mut Exec) -> Program {
        let mut args = std::mem::take(&mut exec.args);
        if let Some(redactor) = &self.redactor {
            redactor.redact(&mut args);
        }
        Program {
            invoked: invoked_path(std::mem::take(&mut exec.invoked), &exec.cwd),
            binary: std::mem::take(&mut exec.path),
            args,
            args_truncated: exec.flags & exec_flags::ARGV_TRUNCATED != 0,
            cwd: std::mem::take(&mut exec.cwd),
            path_truncated: exec.flags & (exec_flags::PATH_TRUNCATED | exec_flags::CWD_TRUNCATED)
                != 0,
        }
    }

    /// The exec'ing process's view: its entry's ids, the program moved in, and the record's
    /// thread; and whether its cgroup's path was known.
    fn exec_view(
        &mut self,
        task: &TaskInfo,
        exec_id: &str,
        program: Program,
    ) -> (Arc<Process>, bool) {
        let mut view = Process::default();
        match self.processes.get(task.tgid, exec_id) {
            Some(entry) => set_process_ids(&self.host, entry, &mut view),
            None => set_process_ids(
                &self.host,
                &self.entry_for(task, Image::unknown()),
                &mut view,
            ),
        }
        program.write_into(&mut view);
        let cgroup_known = self.complete(&mut view, task);
        (Arc::new(view), cgroup_known)
    }

    /// The shared view of the parent of a process the table knows, with its part id.
    fn parent_schema_of(&self, pid: u32, exec_id: &str) -> Option<(Arc<Process>, u64)> {
        let entry = self.processes.get(pid, exec_id)?;
        self.identified_table_schema(entry.ppid, &entry.parent_exec_id)
    }

    /// Gives an exec'ing process a table entry of its own: the entry its fork made keeps its
    /// ids; a process the table does not know, or one given another parent since
    /// (reparented), gets a new entry, which keeps what the old one knew of its chain and
    /// identity.
    fn place_exec(&mut self, task: &TaskInfo, exec_id: &str) {
        let known = self.processes.get(task.tgid, exec_id);
        if known.is_none_or(|entry| entry.ppid != task.ppid) {
            let mut entry = self.entry_for(task, Image::unknown());
            if let Some(previous) = known {
                entry.chain = previous.chain.clone();
                entry.last_identity = previous.last_identity.clone();
                entry.credentials = previous.credentials;
            }
            self.processes.upsert(entry);
        }
    }

    /// Puts an exec's image on its process's table entry (in place), commits its privilege
    /// chain and notes its credentials `after` the exec; the credentials before, when known.
    fn load_image(
        &mut self,
        task: &TaskInfo,
        exec_id: &str,
        image: Arc<Image>,
        after: Credentials,
    ) -> Option<Credentials> {
        let entry = self.processes.get_mut(task.tgid, exec_id)?;
        entry.load_image(image);
        let before = entry.credentials;
        let actor = Actor {
            program: entry.image.binary(),
            exec_id,
        };
        let login_uid = login_uid_of(task);
        entry
            .chain
            .exec(before.map(|b| b.euid), after.euid, login_uid, &actor);
        entry.credentials = Some(after);
        entry.session_id = task.sessionid;
        before
    }

    pub(crate) fn exit(&mut self, exit: &ExitRecord) -> Event {
        let task = &exit.task;
        let exec_id = self.exec_id_of(task.tgid, task.start_boottime_ns);
        let (process, part_id) = self.last_process_of(task, &exec_id);
        self.part_ids.process = part_id;
        let event = self.shared_envelope(
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
                process: Some(Box::new(Process::clone(&process))),
                ..event.clone()
            };
            self.following.push(end);
        }
        event
    }

    pub(crate) fn fork(&mut self, fork: &ForkRecord) {
        let task = &fork.task;
        let mut entry = self.entry_for(task, Image::unknown());
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

/// The invoked path made absolute against the working directory, lexically: symlinks stay as
/// named, since the point is the name the caller used (`/usr/bin/vim`, not `vim.basic`). A path
/// that is already absolute is given back as it is.
pub(crate) fn invoked_path(invoked: Vec<u8>, cwd: &[u8]) -> Vec<u8> {
    if invoked.is_empty() || invoked.starts_with(b"/") || cwd.is_empty() {
        return invoked;
    }
    let mut parts: Vec<&[u8]> = cwd
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    for part in invoked.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let mut path = Vec::with_capacity(cwd.len() + invoked.len() + 1);
    for part in parts {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoked_paths_are_made_absolute_without_resolving_links() {
        let absolute = |invoked: &str, cwd: &str| {
            String::from_utf8(invoked_path(invoked.into(), cwd.as_bytes())).unwrap()
        };
        assert_eq!(absolute("/usr/bin/vim", "/home/a"), "/usr/bin/vim");
        assert_eq!(absolute("./run.sh", "/home/a"), "/home/a/run.sh");
        assert_eq!(absolute("../bin/x", "/home/a/src"), "/home/a/bin/x");
        assert_eq!(absolute("../../..//x", "/a"), "/x");
        assert_eq!(absolute("tool", "/"), "/tool");
        assert_eq!(absolute("", "/home"), "");
        assert_eq!(absolute("rel", ""), "rel");
    }

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
}

#[cfg(test)]
mod part_id_tests {
    use std::{num::NonZeroUsize, os::unix::fs::MetadataExt, path::Path, time::Duration};

    use sensor_common::{kind, network_op, ForkRecord};

    use super::*;
    use crate::{
        devices::{sysfs::DeviceSources, DeviceTracker},
        families::{decode, tests::exec_bytes, EnricherParts, Produced, Record},
        host::HostInfo,
        identity::{NameCache, Nss},
        process_table::ProcessTable,
        sessions::{SessionSources, SessionTracker},
    };

    /// An enricher whose cgroup tree is `dir` (empty but for its root) and whose session
    /// sources do not exist.
    fn scratch_enricher(dir: &Path) -> Enricher<Nss> {
        let cache = NonZeroUsize::new(16).unwrap();
        Enricher::new(EnricherParts {
            host: HostInfo {
                host: "test".into(),
                boot_id: "boot".into(),
                boot_time: std::time::UNIX_EPOCH,
                clock_ticks_per_sec: 100,
                run_id: "run".into(),
            },
            names: NameCache::new(Nss, cache, Duration::from_secs(300)),
            cgroups: crate::cgroups::CgroupResolver::new(dir, Duration::from_secs(1)),
            processes: ProcessTable::new(Duration::from_secs(10)),
            redactor: None,
            people: None,
            sessions: SessionTracker::new(SessionSources {
                proc_root: dir.join("proc"),
                logind_dir: dir.join("logind"),
                utmp: dir.join("utmp"),
            }),
            devices: DeviceTracker::new(DeviceSources::default(), Vec::new(), dir.join("utmp")),
            identities: cache,
            started_boottime_ns: 0,
            forks_recorded_since: None,
        })
    }

    fn exec_of(tgid: u32, cgroup_id: u64, binary: &[u8]) -> Record {
        let bytes = exec_bytes(binary, b"tool\0-v\0", b"/tmp");
        let Ok(Record::Exec(mut exec)) = decode(&bytes) else {
            panic!("not an exec");
        };
        exec.task.tgid = tgid;
        exec.task.pid = tgid;
        exec.task.cgroup_id = cgroup_id;
        exec.task.comm[..4].copy_from_slice(b"tool");
        Record::Exec(exec)
    }

    fn fork_of(task: TaskInfo) -> Record {
        let header = RecordHeader {
            kind: kind::FORK,
            size: 0,
            ktime_ns: 1,
        };
        Record::Fork(ForkRecord { header, task })
    }

    fn exit_of(task: TaskInfo) -> Record {
        let header = RecordHeader {
            kind: kind::EXIT,
            size: 0,
            ktime_ns: 99,
        };
        Record::Exit(ExitRecord {
            header,
            task,
            exit_code: 0,
            _pad: 0,
        })
    }

    #[test]
    fn an_enricher_gives_one_part_id_to_equal_processes_and_never_to_different_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = std::fs::metadata(dir.path()).unwrap().ino();
        let mut enricher = scratch_enricher(dir.path());
        let mut run = |tgid: u32, ppid: u32, binary: &[u8]| {
            let Record::Exec(mut exec) = exec_of(tgid, cgroup, binary) else {
                unreachable!()
            };
            exec.task.ppid = ppid;
            exec.task.parent_start_boottime_ns = exec.task.start_boottime_ns;
            let task = exec.task;
            enricher.enrich(&mut fork_of(task));
            let exec = enricher.enrich(&mut Record::Exec(exec));
            (task, exec)
        };
        // A shell and two children it runs, then the shell's exit.
        let (shell, shell_exec) = run(4242, 1, b"/usr/bin/sh");
        let (_, first) = run(4243, 4242, b"/usr/bin/tool");
        let (_, second) = run(4244, 4242, b"/usr/bin/other");
        let shell_exit = enricher.enrich(&mut exit_of(shell));
        let produced = [&shell_exec, &first, &second, &shell_exit];
        let ids: Vec<u64> = produced.iter().map(|p| p.ids.process).collect();
        assert!(
            ids.iter().all(|&id| id != 0),
            "every view was kept: {ids:?}"
        );
        assert_eq!(ids[0], ids[3], "a process's exec and exit share its view");
        for p in produced {
            assert!(p.event.as_ref().unwrap().process.is_none(), "held apart");
        }
        let shared = |p: &Produced| p.shared.process.clone().expect("the table's view");
        assert!(
            Arc::ptr_eq(&shared(&shell_exec), &shared(&shell_exit)),
            "the exit reports the very view its exec did, not a copy"
        );
        let process = |p: &Produced| Process::clone(&shared(p));
        for a in produced {
            for b in produced {
                assert_eq!(
                    a.ids.process == b.ids.process,
                    process(a) == process(b),
                    "ids {} and {}: equal exactly when the processes are",
                    a.ids.process,
                    b.ids.process
                );
            }
        }
        let parent = |p: &Produced| p.shared.parent(p.event.as_ref().unwrap()).cloned();
        assert!(
            Arc::ptr_eq(
                first.shared.parent.as_ref().unwrap(),
                second.shared.parent.as_ref().unwrap()
            ),
            "siblings' execs hold one parent view, not copies"
        );
        assert_eq!(shell_exec.ids.parent, 0, "pid 1 is not in the table");
        assert_ne!(first.ids.parent, 0);
        assert_eq!(first.ids.parent, second.ids.parent, "one parent, one id");
        assert_eq!(parent(&first), parent(&second));
        assert_eq!(parent(&first).unwrap().binary, "/usr/bin/sh");
    }
    /// Forks `ppid` into `tgid`, which then runs `binary` with `ids` applied to its task.
    fn fork_and_exec(
        enricher: &mut Enricher<Nss>,
        cgroup: u64,
        (tgid, ppid): (u32, u32),
        binary: &[u8],
        ids: impl Fn(&mut TaskInfo),
    ) -> (TaskInfo, Produced) {
        let Record::Exec(exec) = exec_of(tgid, cgroup, binary) else {
            unreachable!()
        };
        let mut task = exec.task;
        task.ppid = ppid;
        task.parent_start_boottime_ns = task.start_boottime_ns;
        enricher.enrich(&mut fork_of(task));
        exec_again(enricher, cgroup, task, binary, ids)
    }

    /// Runs `binary` in the existing process `task` (no fork), with `change` applied first;
    /// the task as changed.
    fn exec_again(
        enricher: &mut Enricher<Nss>,
        cgroup: u64,
        task: TaskInfo,
        binary: &[u8],
        change: impl Fn(&mut TaskInfo),
    ) -> (TaskInfo, Produced) {
        let Record::Exec(mut exec) = exec_of(task.tgid, cgroup, binary) else {
            unreachable!()
        };
        exec.task = task;
        change(&mut exec.task);
        let task = exec.task;
        (task, enricher.enrich(&mut Record::Exec(exec)))
    }

    #[test]
    fn an_exec_replaces_the_image_and_a_reparented_process_names_its_new_parent() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = std::fs::metadata(dir.path()).unwrap().ino();
        let mut enricher = scratch_enricher(dir.path());
        let same = |_: &mut TaskInfo| {};
        fork_and_exec(&mut enricher, cgroup, (4242, 1), b"/usr/bin/sh", same);
        let (task, first) =
            fork_and_exec(&mut enricher, cgroup, (4243, 4242), b"/usr/bin/tool", same);
        let process = |p: &Produced| p.shared.process.clone().expect("held apart");
        let parent = |p: &Produced| p.shared.parent.clone().expect("a known parent");
        // The same process runs another program, now as someone else.
        let setuid = |task: &mut TaskInfo| task.euid = 4321;
        let (_, again) = exec_again(&mut enricher, cgroup, task, b"/usr/bin/other", setuid);
        assert_eq!(process(&again).binary, "/usr/bin/other");
        assert_eq!(
            process(&first).binary,
            "/usr/bin/tool",
            "the old view is not changed"
        );
        assert_eq!(process(&again).exec_id, process(&first).exec_id);
        assert_ne!(again.ids.process, first.ids.process);
        assert_eq!(parent(&again).binary, "/usr/bin/sh");
        assert!(Arc::ptr_eq(&parent(&again), &parent(&first)));
        let change = again
            .before
            .first()
            .expect("the exec changed the effective user");
        let Some(Body::PrivilegeChange(change)) = &change.body else {
            panic!("not a privilege change: {change:?}");
        };
        assert_eq!(change.how, "exec");
        // Its parent exits and it is given to pid 1, which the table does not know; its next
        // exec names pid 1, and its credentials are still known: going back to its old user
        // is a change.
        let reparented = |task: &mut TaskInfo| {
            task.ppid = 1;
            task.parent_start_boottime_ns = 1;
        };
        let (_, adopted) = exec_again(&mut enricher, cgroup, task, b"/usr/bin/tool", reparented);
        assert_eq!(process(&adopted).ppid, 1);
        assert_ne!(
            process(&adopted).parent_exec_id,
            process(&first).parent_exec_id
        );
        assert!(adopted.shared.parent.is_none(), "pid 1 is not in the table");
        assert_eq!(
            adopted.before.len(),
            1,
            "back to user 65534: {:?}",
            adopted.before
        );
        assert_eq!(process(&adopted).exec_id, process(&first).exec_id);
    }

    #[test]
    fn processes_acting_as_the_same_identity_share_it_until_their_ids_change() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = std::fs::metadata(dir.path()).unwrap().ino();
        let mut enricher = scratch_enricher(dir.path());
        let same = |_: &mut TaskInfo| {};
        let (_, shell) = fork_and_exec(&mut enricher, cgroup, (4242, 1), b"/usr/bin/sh", same);
        let (child, child_exec) =
            fork_and_exec(&mut enricher, cgroup, (4243, 4242), b"/usr/bin/tool", same);
        let child_exit = enricher.enrich(&mut exit_of(child));
        let setuid = |task: &mut TaskInfo| task.euid = 4321;
        let (_, other) = fork_and_exec(&mut enricher, cgroup, (4244, 4242), b"/usr/bin/su", setuid);
        let identity = |p: &Produced| p.shared.identity.clone().expect("held apart");
        for p in [&shell, &child_exec, &child_exit, &other] {
            assert!(p.event.as_ref().unwrap().identity.is_none(), "held apart");
            assert_ne!(p.ids.identity, 0, "kept on the table, with an id");
        }
        for p in [&child_exec, &child_exit] {
            assert!(
                Arc::ptr_eq(&identity(&shell), &identity(p)),
                "a child under its parent's ids reports the parent's identity, not a copy"
            );
            assert_eq!(p.ids.identity, shell.ids.identity);
        }
        assert_eq!(identity(&other).euid, 4321, "a change of ids is seen");
        assert_ne!(other.ids.identity, shell.ids.identity);
        // A new epoch (a reload here) builds identities again, under new ids, from fresh
        // names rather than from the cache of built ones.
        enricher.set_rules(Vec::new(), None);
        assert_eq!(enricher.identities.len(), 0, "built identities forgotten");
        let (_, renewed) =
            fork_and_exec(&mut enricher, cgroup, (4245, 4242), b"/usr/bin/tool", same);
        assert!(!Arc::ptr_eq(&identity(&shell), &identity(&renewed)));
        assert_eq!(*identity(&shell), *identity(&renewed), "the same contents");
        assert_ne!(renewed.ids.identity, shell.ids.identity);
        let mut restored = renewed.event.clone().unwrap();
        assert!(
            restored.run_id.is_empty() && restored.host.is_empty(),
            "held apart"
        );
        renewed.shared.clone().restore(&mut restored);
        assert_eq!(restored.identity.as_deref(), Some(&*identity(&renewed)));
        let source = (&*restored.run_id, &*restored.boot_id, &*restored.host);
        assert_eq!(
            source,
            ("run", "boot", "test"),
            "the host's facts go back too"
        );
    }

    /// The end of a TCP connection `task` made, reported when the socket went.
    fn connection_end_of(task: TaskInfo) -> Record {
        let mut end = crate::families::tests::tcp_record(task, network_op::CLOSE);
        (end.local_port, end.remote_port) = (40000, 443);
        (end.ino, end.duration_ns) = (1, 1);
        Record::Network(end)
    }

    /// This test's own process as a task forked by `ppid` (its start time the real one).
    fn running_task(host: &HostInfo, ppid: TaskInfo) -> TaskInfo {
        let ticks = crate::proc_scan::start_ticks(Path::new("/proc"), std::process::id());
        let mut task = ppid;
        (task.tgid, task.pid) = (std::process::id(), std::process::id());
        (task.ppid, task.parent_start_boottime_ns) = (ppid.tgid, ppid.start_boottime_ns);
        task.start_boottime_ns = host.ticks_to_ns(ticks.expect("this process runs"));
        task
    }

    #[test]
    fn a_forgotten_process_late_record_names_no_program_and_an_unseen_fork_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = std::fs::metadata(dir.path()).unwrap().ino();
        let mut enricher = scratch_enricher(dir.path());
        enricher.processes = ProcessTable::new(Duration::ZERO);
        let same = |_: &mut TaskInfo| {};
        let (shell, _) = fork_and_exec(&mut enricher, cgroup, (4242, 1), b"/usr/bin/sh", same);
        let (tool, _) = fork_and_exec(&mut enricher, cgroup, (4243, 4242), b"/usr/bin/tool", same);
        enricher.enrich(&mut exit_of(tool));
        enricher.processes.sweep();
        let binary = |p: &Produced| p.shared.process.clone().expect("held apart").binary.clone();
        // Without the fork hook, a process the table does not know runs what its parent ran.
        let unseen = TaskInfo {
            tgid: 4244,
            pid: 4244,
            ..tool
        };
        enricher.forks_recorded_since = None;
        assert_eq!(
            binary(&enricher.enrich(&mut connection_end_of(unseen))),
            "/usr/bin/sh"
        );
        // With it, one that ran since the sensor started and has gone was forgotten: it may
        // have exec'd anything since its fork.
        enricher.forks_recorded_since = Some(1_000);
        let late = enricher.enrich(&mut connection_end_of(tool));
        assert_eq!(binary(&late), "", "not its parent's /usr/bin/sh");
        let process = late.shared.process.clone().unwrap();
        assert_eq!((process.pid, process.ppid), (4243, 4242));
        let known = enricher.known_processes();
        enricher.processes.sweep();
        assert_eq!(enricher.known_processes(), known - 1, "forgotten again");
        // One still running whose fork record was lost runs what its parent ran.
        let running = running_task(&enricher.host, shell);
        let lost_fork = enricher.enrich(&mut connection_end_of(running));
        assert_eq!(binary(&lost_fork), "/usr/bin/sh");
    }
}
