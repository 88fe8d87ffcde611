//! The process family: exec, exit and fork records to events, and the process table kept
//! from them.
use std::sync::Arc;

use custos_proto::v1::{event::Body, Event, Process, ProcessExec, ProcessExit, SessionEnd};
use sensor_common::{exec_flags, ExecRecord, ExitRecord, ForkRecord, RecordHeader, TaskInfo};

use super::{login_uid_of, Enricher};
use crate::{
    credentials::Credentials,
    decode::{split_argv, with_blob, DecodeError},
    identity::NameSource,
    privilege_chain::Actor,
    process_table::Image,
};

/// An exec record with its variable parts copied out of the ring buffer.
#[derive(Clone, Debug)]
pub struct Exec {
    pub header: RecordHeader,
    pub task: TaskInfo,
    pub flags: u32,
    pub path: Vec<u8>,
    /// argv as in the process image: NUL-separated, NUL-terminated.
    pub argv: Vec<u8>,
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
        argv: blob.piece(record.argv)?,
        cwd: blob.piece(record.cwd)?,
        invoked: blob.piece(record.invoked)?,
        cap_effective: record.cap_effective,
        cap_permitted: record.cap_permitted,
    })
}

impl<S: NameSource> Enricher<S> {
    pub(crate) fn exec(&mut self, exec: Exec) -> Event {
        let task = &exec.task;
        let mut args: Vec<Vec<u8>> = split_argv(&exec.argv)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect();
        if let Some(redactor) = &self.redactor {
            redactor.redact(&mut args);
        }
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let invoked = invoked_path(&exec.invoked, &exec.cwd);
        let image = Arc::new(Image {
            binary: exec.path,
            invoked,
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

    pub(crate) fn exit(&mut self, exit: &ExitRecord) -> Event {
        let task = &exit.task;
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let process = self.last_process_of(task, &exec_id);
        let event = self.envelope(
            exit.header.ktime_ns,
            task,
            &exec_id,
            process,
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

    pub(crate) fn fork(&mut self, fork: &ForkRecord) {
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
/// named, since the point is the name the caller used (`/usr/bin/vim`, not `vim.basic`).
pub(crate) fn invoked_path(invoked: &[u8], cwd: &[u8]) -> Vec<u8> {
    if invoked.is_empty() || invoked.starts_with(b"/") || cwd.is_empty() {
        return invoked.to_vec();
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
            String::from_utf8(invoked_path(invoked.as_bytes(), cwd.as_bytes())).unwrap()
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
