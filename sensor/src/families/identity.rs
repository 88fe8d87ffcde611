//! The identity of a task: ids to names, the person behind the login, the privilege chain.
use std::{sync::Arc, time::Instant};

use custos_proto::v1::{Group, Identity, Person, PrivilegeHop};
use sensor_common::{task_flags, TaskInfo, MAX_GROUPS};

use super::{login_uid_of, session::session_ref, Enricher, IDENTITY_TTL};
use crate::{
    decode::c_str,
    identity::{NameSource, UNSET_ID},
    privilege_chain::{Chain, Hop},
    sessions::ActiveSession,
    sinks::new_part_id,
    text,
};

/// Everything an [`Identity`] is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    ids: [u32; 10],
    flags: u32,
    ngroups: u32,
    groups: [u32; MAX_GROUPS],
    tty: [u8; sensor_common::TTY_LEN],
}

impl IdentityKey {
    fn of(task: &TaskInfo) -> Self {
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
            groups: task.comparable_groups(),
            tty: task.tty,
        }
    }
}

/// The identity a process's last event carried, with what it was built from. Its next event
/// built from the same carries the same one, shared rather than built and compared again; its
/// forked children start with it.
#[derive(Clone, Debug)]
pub struct IdentityView {
    key: IdentityKey,
    /// Known by address: the tracker replaces a session it learns more about.
    session: Option<Arc<ActiveSession>>,
    chain: Arc<Chain>,
    /// The enricher's identity epoch it was built in (see `Enricher::identity_epoch`).
    epoch: u64,
    identity: Arc<Identity>,
    /// Its part id: the encoders reuse its encoding by this id without comparing it.
    part_id: u64,
}

impl IdentityView {
    fn serves(
        &self,
        key: &IdentityKey,
        session: Option<&Arc<ActiveSession>>,
        chain: &Arc<Chain>,
        epoch: u64,
    ) -> bool {
        let same_session = match (&self.session, session) {
            (Some(kept), Some(now)) => Arc::ptr_eq(kept, now),
            (kept, now) => kept.is_none() && now.is_none(),
        };
        self.epoch == epoch
            && same_session
            && (Arc::ptr_eq(&self.chain, chain) || *self.chain == **chain)
            && self.key == *key
    }
}

impl<S: NameSource> Enricher<S> {
    /// The identity `task` acts with at this event of its process: the one its last event
    /// carried when built from the same ids, session and privilege chain, else built anew
    /// (and kept for the next, when the table knows the process), with its part id (0 when
    /// not kept).
    pub(super) fn identity_in_force(
        &mut self,
        ktime_ns: u64,
        task: &TaskInfo,
        exec_id: &str,
    ) -> (Arc<Identity>, u64) {
        let key = IdentityKey::of(task);
        // The table's session id is kept current first: the session walk reads it.
        if let Some(entry) = self.processes.get_mut(task.tgid, exec_id) {
            entry.session_id = task.sessionid;
        }
        let session = self.session_of(ktime_ns, task, exec_id);
        let epoch = self.identity_epoch;
        // The kept view is checked where it is, not copied out: this runs for every event.
        let (chain, served) = self
            .processes
            .get(task.tgid, exec_id)
            .map(|entry| {
                let chain = entry.chain.now(login_uid_of(task));
                let served = entry
                    .last_identity
                    .as_ref()
                    .filter(|view| view.serves(&key, session.as_ref(), &chain, epoch))
                    .map(|view| (view.identity.clone(), view.part_id));
                (chain, served)
            })
            .unwrap_or_default();
        if let Some(served) = served {
            return served;
        }
        let mut identity = self.identity(task);
        identity.session = session.as_deref().map(session_ref);
        identity.privilege_chain = chain.hops.iter().map(|hop| self.hop_view(hop)).collect();
        identity.privilege_hops_omitted = chain.omitted;
        let identity = Arc::new(identity);
        let Some(entry) = self.processes.get_mut(task.tgid, exec_id) else {
            return (identity, 0);
        };
        let part_id = new_part_id();
        entry.last_identity = Some(Arc::new(IdentityView {
            key,
            session,
            chain,
            epoch: self.identity_epoch,
            identity: identity.clone(),
            part_id,
        }));
        (identity, part_id)
    }

    /// Starts a new identity epoch: identities built before are built again at their next
    /// use, with the names and people known then. The built-identity cache goes too: a view
    /// built in the new epoch from an identity cached late in the old one would otherwise
    /// serve names for up to two lifetimes.
    pub(super) fn renew_identities(&mut self) {
        self.identities.clear();
        self.identity_epoch += 1;
        self.identity_epoch_began = Instant::now();
    }

    /// The name of user `uid`, empty when it has none.
    pub(super) fn user_name(&mut self, uid: u32) -> String {
        self.names.user(uid).unwrap_or_default()
    }

    /// The name of group `gid`, empty when it has none.
    pub(super) fn group_name(&mut self, gid: u32) -> String {
        self.names.group(gid).unwrap_or_default()
    }

    /// The identity of `task`, built once per distinct set of ids and reused while fresh.
    pub(super) fn identity(&mut self, task: &TaskInfo) -> Identity {
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
                self.renew_identities();
            }
        }
    }

    /// The identity map's entry for the person behind an identity: the login user's, else the
    /// real user's.
    pub(super) fn person_of(
        &self,
        uid: u32,
        user: Option<&str>,
        login_uid: Option<u32>,
        login_user: Option<&str>,
    ) -> Option<Person> {
        let file = self.people.as_ref()?;
        match login_uid {
            Some(login) => file.people.lookup(login, login_user).cloned(),
            None => file.people.lookup(uid, user).cloned(),
        }
    }

    pub(super) fn build_identity(&mut self, task: &TaskInfo) -> Identity {
        let groups = task
            .captured_groups()
            .iter()
            .map(|&gid| Group {
                gid,
                name: self.group_name(gid),
            })
            .collect();
        let audit = task.flags & task_flags::NO_AUDIT == 0;
        let login_uid = Some(super::login_uid_of(task)).filter(|&uid| uid != UNSET_ID);
        let user = self.names.user(task.uid);
        let login_user = login_uid.and_then(|uid| self.names.user(uid));
        let person = self.person_of(task.uid, user.as_deref(), login_uid, login_user.as_deref());
        Identity {
            session: None,
            privilege_chain: Vec::new(),
            privilege_hops_omitted: 0,
            uid: task.uid,
            user: user.unwrap_or_default(),
            gid: task.gid,
            group: self.group_name(task.gid),
            euid: task.euid,
            euser: self.user_name(task.euid),
            egid: task.egid,
            egroup: self.group_name(task.egid),
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

    pub(super) fn hop_view(&mut self, hop: &Hop) -> PrivilegeHop {
        PrivilegeHop {
            from_uid: hop.from_uid,
            from_user: self.user_name(hop.from_uid),
            to_uid: hop.to_uid,
            to_user: self.user_name(hop.to_uid),
            how: hop.how.to_owned(),
            program: hop.program.clone(),
            exec_id: hop.exec_id.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_names_get_their_slash() {
        assert_eq!(tty_name(b"pts3"), "pts/3");
        assert_eq!(tty_name(b"tty1"), "tty1");
        assert_eq!(tty_name(b"ptsx"), "ptsx");
        assert_eq!(tty_name(b""), "");
    }
}
