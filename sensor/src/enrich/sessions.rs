//! Login sessions on events: the compact reference on every event, the start event on a
//! session's first activity, the full record.
use custos_proto::v1::{event::Body, Event, Session, SessionRef, SessionStart};
use sensor_common::{task_flags, TaskInfo};

use super::{bodies::timestamp, Enricher};
use crate::{
    identity::{NameSource, UNSET_ID},
    sessions::{ActiveSession, Member},
};

impl<S: NameSource> Enricher<S> {
    /// The session `task` acts in. The first activity of a session resolves it and queues its
    /// start event ahead of the event being built. The table must already hold the process's
    /// current session id (`envelope` sets it).
    pub(super) fn session_of(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        exec_id: &str,
    ) -> Option<SessionRef> {
        let id = task.sessionid;
        if task.flags & task_flags::NO_AUDIT != 0 || id == UNSET_ID {
            return None;
        }
        let session = match self.sessions.get(id) {
            Some(session) => session,
            None => {
                let members: Vec<Member> = self
                    .processes
                    .session_members(task.tgid, exec_id, id)
                    .into_iter()
                    .map(|entry| Member {
                        pid: entry.pid,
                        exec_id: entry.exec_id.clone(),
                        program: entry.image.binary.clone(),
                        start_boottime_ns: entry.start_boottime_ns,
                    })
                    .collect();
                let session = self.sessions.start(id, task.loginuid, &members);
                let start = self.session_start(ktime_ns, task, &session, &members);
                self.preceding.push(start);
                session
            }
        };
        // sshd's own activity may have opened the session; its shell knows the client.
        let session = self.sessions.learn_client(id, task.tgid).unwrap_or(session);
        Some(SessionRef {
            id,
            kind: session.facts.kind as i32,
            remote_address: session.facts.remote_address.clone(),
        })
    }

    pub(super) fn session_start(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        session: &ActiveSession,
        members: &[Member],
    ) -> Event {
        let leader = members.last();
        let process = leader
            .and_then(|leader| self.table_schema(leader.pid, &leader.exec_id))
            .map(|base| self.complete(&base, task).0);
        let mut identity = self.identity(task);
        identity.session = Some(SessionRef {
            id: session.id,
            kind: session.facts.kind as i32,
            remote_address: session.facts.remote_address.clone(),
        });
        Event {
            run_id: self.host.run_id.clone(),
            boot_id: self.host.boot_id.clone(),
            host: self.host.host.clone(),
            time: Some(timestamp(self.host.wall_time(ktime_ns))),
            identity: Some(identity),
            process,
            body: Some(Body::SessionStart(SessionStart {
                session: Some(self.session_view(session)),
                began_before_sensor: session.facts.leader_start_boottime_ns
                    < self.started_boottime_ns,
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
            login_user: self.names.user(session.login_uid).unwrap_or_default(),
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
