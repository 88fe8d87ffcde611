//! Privilege changes: credential syscalls and set-user-id execs compared with what the process
//! had, and the chain of effective users since the login.

use custos_proto::v1::{event::Body, Credentials as CredentialsView, Event, PrivilegeChange};
use sensor_common::PrivilegeChangeRecord;

use super::{errno_name, Enricher};
use crate::{
    credentials::{self, capability_names, Credentials},
    identity::NameSource,
    privacy::pseudonym::Pseudonymizer,
    privilege_chain::Actor,
};

impl<S: NameSource> Enricher<S> {
    /// A credential syscall's record: a privilege change when the credentials differ from what
    /// the process had (or the call failed), nothing otherwise (a no-op call, or another thread
    /// of the process making the same change).
    pub(crate) fn privilege_record(&mut self, record: &PrivilegeChangeRecord) -> Option<Event> {
        let task = &record.task;
        let exec_id = self.exec_id_of(task.tgid, task.start_boottime_ns);
        self.know_process(task, &exec_id);
        let failed = record.ret < 0 && !credentials::returns_previous_id(record.syscall);
        let after = Credentials::of(task, record.cap_effective, record.cap_permitted);
        let how = credentials::syscall_name(record.syscall);
        let entry = self.processes.get_mut(task.tgid, &exec_id)?;
        let before = entry.credentials;
        if !failed {
            if before == Some(after) {
                return None;
            }
            entry.credentials = Some(after);
            let actor = Actor {
                program: entry.image.binary(),
                exec_id: &entry.image.exec_id,
            };
            entry.chain.changed(before.as_ref(), &after, how, &actor);
        }
        let errno = failed.then(|| record.ret.unsigned_abs());
        let after = if failed {
            before.unwrap_or(after)
        } else {
            after
        };
        let body = self.privilege_change(how, before.as_ref(), &after, errno);
        let process = self.process_of(task, &exec_id);
        Some(self.envelope(record.header.ktime_ns, task, &exec_id, process, body))
    }

    pub(super) fn privilege_change(
        &mut self,
        how: &str,
        before: Option<&Credentials>,
        after: &Credentials,
        errno: Option<u32>,
    ) -> Body {
        let gained = match before {
            Some(before) => after.cap_effective & !before.cap_effective,
            None => 0,
        };
        Body::PrivilegeChange(PrivilegeChange {
            how: how.to_owned(),
            before: before.map(|c| Box::new(self.credentials_view(c))),
            after: Some(Box::new(self.credentials_view(after))),
            capabilities_gained: capability_names(gained),
            escalation: errno.is_none() && before.is_some_and(|b| after.escalates_from(b)),
            errno,
            error: errno.map(errno_name).unwrap_or_default(),
        })
    }

    pub(super) fn credentials_view(&mut self, c: &Credentials) -> CredentialsView {
        CredentialsView {
            uid: c.uid,
            user: self.user_name(c.uid),
            euid: c.euid,
            euser: self.user_name(c.euid),
            suid: c.suid,
            fsuid: c.fsuid,
            gid: c.gid,
            group: self.group_name(c.gid),
            egid: c.egid,
            egroup: self.group_name(c.egid),
            sgid: c.sgid,
            fsgid: c.fsgid,
            groups: c.groups().to_vec(),
            capabilities_effective: capability_names(c.cap_effective),
            capabilities_permitted: capability_names(c.cap_permitted),
        }
    }
}

/// Every user and group name on both sides of the change.
pub(crate) fn pseudonymise(change: &mut PrivilegeChange, p: &Pseudonymizer) {
    for creds in change.before.iter_mut().chain(change.after.iter_mut()) {
        for name in [
            &mut creds.user,
            &mut creds.euser,
            &mut creds.group,
            &mut creds.egroup,
        ] {
            *name = p.pseudonym(name);
        }
    }
}
