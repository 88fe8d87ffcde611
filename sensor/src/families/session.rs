//! Login sessions on events: the compact reference on every event, the start event ahead of
//! the login's own first activity, the full record.
use std::{net::SocketAddr, sync::Arc};

use custos_proto::v1::{
    event::Body, Event, Process, Session, SessionKind, SessionRef, SessionStart,
};
use sensor_common::{task_flags, TaskInfo};

use super::{identity::tty_name, timestamp, Enricher};
use crate::{
    decode::c_str,
    identity::{NameSource, UNSET_ID},
    privacy::pseudonym::Pseudonymizer,
    sessions::{ActiveSession, Member},
};

/// Ancestors looked at for a noted SSH client, at most (the table's chains are acyclic, but
/// a walk is bounded anyway, like the session's members).
const MAX_ANCESTORS: usize = 64;

impl<S: NameSource> Enricher<S> {
    /// The session `task` acts in. A session is resolved on its first activity; its start event
    /// is queued ahead of the first event that is the login's own (see `login_has_begun`). The
    /// table must already hold the process's current session id (`identity_in_force` sets it).
    pub(super) fn session_of(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        exec_id: &str,
    ) -> Option<Arc<ActiveSession>> {
        let id = task.sessionid;
        if task.flags & task_flags::NO_AUDIT != 0 || id == UNSET_ID {
            return None;
        }
        let mut members = None;
        let mut session = match self.sessions.get(id) {
            Some(session) => session,
            None => {
                let walked = self.members_of(task.tgid, exec_id, id);
                let noted = self.noted_ssh_client(task.tgid, exec_id);
                let session = self.sessions.start(id, task.loginuid, &walked, noted);
                members = Some(walked);
                session
            }
        };
        if self.sessions.awaiting_start(id) && self.login_has_begun(task, exec_id, &session) {
            let members = members.unwrap_or_else(|| self.members_of(task.tgid, exec_id, id));
            let tty = tty_name(c_str(&task.tty));
            let noted = self.noted_ssh_client(task.tgid, exec_id);
            if let Some(announced) = self.sessions.announce(id, tty, &members, noted) {
                session = announced;
            }
            let start = self.session_start(ktime_ns, task, &session);
            self.preceding.push(start);
        }
        Some(session)
    }

    /// The client noted for the SSH connection the process came over: that of its nearest
    /// ancestor (or itself) exec'd as an sshd serving a connection, whatever session it is in
    /// (the sshd exec'd for a connection is in none yet).
    fn noted_ssh_client(&self, pid: u32, exec_id: &str) -> Option<SocketAddr> {
        let mut next = self.processes.get(pid, exec_id);
        for _ in 0..MAX_ANCESTORS {
            let entry = next?;
            if let Some(client) = self.sessions.noted_ssh_client(&entry.exec_id) {
                return Some(client);
            }
            next = self.processes.get(entry.ppid, &entry.parent_exec_id);
        }
        None
    }

    /// The process and its known ancestors in session `id`, the process first.
    fn members_of(&self, pid: u32, exec_id: &str, id: u32) -> Vec<Member> {
        self.processes
            .session_members(pid, exec_id, id)
            .into_iter()
            .map(|entry| Member {
                pid: entry.pid,
                exec_id: entry.exec_id.as_ref().to_owned(),
                program: entry.image.binary().to_vec(),
                start_boottime_ns: entry.start_boottime_ns,
            })
            .collect()
    }

    /// True when this event is the login's own activity. For SSH that is the first process on
    /// the login's terminal, or the program run by a process that an sshd of the session other
    /// than the leader started (the user's shell or command, once it has exec'd: before that
    /// it is sshd setting up the terminal; the leader itself runs PAM modules and the message
    /// of the day). Other sessions begin with their first activity.
    fn login_has_begun(&self, task: &TaskInfo, exec_id: &str, session: &ActiveSession) -> bool {
        let facts = &session.facts;
        if facts.kind != SessionKind::Ssh || task.tty[0] != 0 {
            return true;
        }
        let Some(entry) = self.processes.get(task.tgid, exec_id) else {
            return false;
        };
        let sshd = facts.leader_program.as_bytes();
        entry.image.binary() != sshd
            && self
                .processes
                .get(entry.ppid, &entry.parent_exec_id)
                .is_some_and(|parent| {
                    parent.session_id == session.id
                        && parent.pid != facts.leader_pid
                        && parent.image.binary() == sshd
                })
    }

    /// The start event of `session`, with its leader's process and `task`'s identity.
    pub(super) fn session_start(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        session: &ActiveSession,
    ) -> Event {
        let facts = &session.facts;
        let process = self
            .table_schema(facts.leader_pid, &facts.leader_exec_id)
            .map(|base| {
                let mut process = Process::clone(&base);
                self.complete(&mut process, task);
                process
            });
        let mut identity = self.identity(task);
        identity.session = Some(session_ref(session));
        Event {
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(self.host.wall_time(ktime_ns))),
            identity: Some(Box::new(identity)),
            process: process.map(Box::new),
            body: Some(Body::SessionStart(SessionStart {
                session: Some(self.session_view(session)),
                began_before_sensor: facts.leader_start_boottime_ns < self.started_boottime_ns,
            })),
            ..Event::default()
        }
    }

    pub(super) fn session_view(&mut self, session: &ActiveSession) -> Session {
        let facts = &session.facts;
        Session {
            id: session.id,
            kind: facts.kind as i32,
            login_uid: session.login_uid,
            login_user: self.user_name(session.login_uid),
            remote_address: facts.remote_address.clone(),
            remote_port: facts.remote_port,
            tty: facts.tty.clone(),
            seat: facts.seat.clone(),
            start_time: (facts.leader_start_boottime_ns != 0)
                .then(|| timestamp(self.host.wall_time(facts.leader_start_boottime_ns))),
            leader_pid: facts.leader_pid,
            leader_exec_id: facts.leader_exec_id.clone(),
            leader_program: facts.leader_program.clone(),
            sources: facts.sources.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The compact reference events carry.
pub(super) fn session_ref(session: &ActiveSession) -> SessionRef {
    SessionRef {
        id: session.id,
        kind: session.facts.kind as i32,
        remote_address: session.facts.remote_address.clone(),
        remote_port: session.facts.remote_port,
    }
}

/// The login user of a session is a person.
pub(crate) fn pseudonymise(session: Option<&mut Session>, p: &Pseudonymizer) {
    if let Some(session) = session {
        session.login_user = p.pseudonym(&session.login_user);
    }
}
