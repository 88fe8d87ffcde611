//! The privilege chain: how a process came to act as its effective user since the login.
//!
//! A hop is a change of effective user that is still in force when the process next calls
//! execve, or when an event happens if the change gave up the previous identity for good (real,
//! effective and saved user ids all set to the new one). A temporary switch that keeps the old
//! identity in the real or saved id (sudo reading its policy as `daemon`, sshd reading
//! `authorized_keys` as the user) can be undone at will; it becomes a hop only if it is still in
//! force at the next execve. Consecutive changes made by one program run (the process that
//! executed the program and its forked children, until they exec) collapse into one hop from the
//! first identity to the last. The chain leads from the login user: a hop back to them starts it
//! afresh, and a process outside any login has none.
use std::sync::Arc;

use crate::{credentials::Credentials, identity::UNSET_ID};

/// One change of effective user (see `custos.v1.PrivilegeHop`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub from_uid: u32,
    pub to_uid: u32,
    pub how: &'static str,
    pub program: String,
    /// The process whose execve started the program that made the change.
    pub exec_id: String,
}

/// Hops kept per chain: a longer chain keeps its first and its newest hops.
pub const MAX_HOPS: usize = 8;

/// The hops from a login user to the current effective user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The login uid the chain starts from.
    pub login_uid: u32,
    pub hops: Vec<Hop>,
    /// Hops between the first and the newest that the bound left out.
    pub omitted: u32,
}

impl Chain {
    fn empty(login_uid: u32) -> Self {
        Self {
            login_uid,
            ..Self::default()
        }
    }

    /// This chain with `hop` added: merged into the newest hop when the same program run made
    /// both, restarted when it leads back to the login user, bounded by [`MAX_HOPS`].
    pub fn with(&self, hop: Hop) -> Chain {
        let mut chain = self.clone();
        let hop = match chain.hops.last() {
            Some(last) if same_run(last, &hop) => {
                let merged = Hop {
                    to_uid: hop.to_uid,
                    ..last.clone()
                };
                chain.hops.pop();
                merged
            }
            _ => hop,
        };
        if hop.to_uid == chain.login_uid {
            return Self::empty(chain.login_uid);
        }
        if hop.from_uid == hop.to_uid {
            return chain;
        }
        if chain.hops.len() >= MAX_HOPS {
            chain.hops.remove(1);
            chain.omitted += 1;
        }
        chain.hops.push(hop);
        chain
    }
}

/// True when both changes were made by one known program run.
fn same_run(a: &Hop, b: &Hop) -> bool {
    !a.exec_id.is_empty()
        && a.exec_id == b.exec_id
        && a.program == b.program
        && a.to_uid == b.from_uid
}

/// The chain of every process outside a login: one allocation for all their events.
static NO_LOGIN: std::sync::LazyLock<Arc<Chain>> = std::sync::LazyLock::new(Arc::default);

/// A change of effective user since the chain was last committed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    hop: Hop,
    /// The previous identity was given up (real, effective and saved ids all set).
    permanent: bool,
}

/// A process's chain: what was committed at its last exec (or inherited at fork), and a
/// change made since then that may still be undone.
#[derive(Clone, Debug)]
pub struct ChainState {
    committed: Arc<Chain>,
    /// The effective uid when the chain was committed; `None` when not known.
    base_euid: Option<u32>,
    pending: Option<Pending>,
}

/// The program run that makes a change: its path and the exec_id of the process that ran it.
pub struct Actor<'a> {
    pub program: &'a [u8],
    pub exec_id: &'a str,
}

/// Every new entry starts with the empty chain, which a fork or an exec mostly replaces at
/// once: shared, so that costs no allocation.
impl Default for ChainState {
    fn default() -> Self {
        Self {
            committed: NO_LOGIN.clone(),
            base_euid: None,
            pending: None,
        }
    }
}

impl ChainState {
    /// A process found at start-up already acting as someone other than its login user; how it
    /// got there is not known.
    pub fn before_sensor(login_uid: u32, euid: u32) -> Self {
        let mut state = Self {
            base_euid: Some(euid),
            ..Self::default()
        };
        if login_uid != UNSET_ID && euid != login_uid {
            state.committed = Arc::new(Chain::empty(login_uid).with(Hop {
                from_uid: login_uid,
                to_uid: euid,
                how: "before-sensor",
                program: String::new(),
                exec_id: String::new(),
            }));
        }
        state
    }

    /// A successful credential change from `before` (if known) to `after`.
    pub fn changed(
        &mut self,
        before: Option<&Credentials>,
        after: &Credentials,
        how: &'static str,
        actor: &Actor,
    ) {
        let base = *self
            .base_euid
            .get_or_insert(before.map_or(after.euid, |b| b.euid));
        if after.euid == base {
            self.pending = None;
            return;
        }
        let permanent = after.uid == after.euid && after.suid == after.euid;
        match &mut self.pending {
            Some(pending) => {
                pending.hop.to_uid = after.euid;
                pending.permanent = permanent;
            }
            None => {
                self.pending = Some(Pending {
                    hop: hop(base, after.euid, how, actor),
                    permanent,
                })
            }
        }
    }

    /// An execve: the change in force at the call and what the exec itself changed
    /// (set-user-id programs) become hops of the committed chain.
    pub fn exec(
        &mut self,
        before_euid: Option<u32>,
        after_euid: u32,
        login_uid: u32,
        actor: &Actor,
    ) {
        let mut chain = self.base(login_uid);
        if let Some(pending) = self.pending.take() {
            chain = chain.with(pending.hop);
        }
        if let Some(before) = before_euid.filter(|&b| b != after_euid) {
            chain = chain.with(hop(before, after_euid, "exec", actor));
        }
        // An unchanged chain keeps its allocation, so that events can tell it is the same one
        // by its address (see `IdentityView`).
        if chain != *self.committed {
            self.committed = Arc::new(chain);
        }
        self.base_euid = Some(after_euid);
    }

    /// The chain in force at an event of the process acting for `login_uid`.
    pub fn now(&self, login_uid: u32) -> Arc<Chain> {
        if login_uid == UNSET_ID {
            return NO_LOGIN.clone();
        }
        match &self.pending {
            Some(pending) if pending.permanent => {
                Arc::new(self.base(login_uid).with(pending.hop.clone()))
            }
            _ if self.committed.login_uid == login_uid => self.committed.clone(),
            _ => Arc::new(Chain::empty(login_uid)),
        }
    }

    /// The committed chain if it belongs to this login; an empty one otherwise (the process
    /// logged someone in since: pam_loginuid in sshd or cron).
    fn base(&self, login_uid: u32) -> Chain {
        if self.committed.login_uid == login_uid {
            Chain::clone(&self.committed)
        } else {
            Chain::empty(login_uid)
        }
    }
}

fn hop(from_uid: u32, to_uid: u32, how: &'static str, actor: &Actor) -> Hop {
    Hop {
        from_uid,
        to_uid,
        how,
        program: crate::text::lossy(actor.program),
        exec_id: actor.exec_id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: u32 = 1000;
    const ROOT: u32 = 0;
    const DAEMON: u32 = 1;
    const NOBODY: u32 = 65534;

    fn creds(uid: u32, euid: u32, suid: u32) -> Credentials {
        let task = crate::families::tests::task(1);
        Credentials {
            uid,
            euid,
            suid,
            ..Credentials::of(&task, 0, 0)
        }
    }

    fn sudo_run() -> Actor<'static> {
        Actor {
            program: b"/usr/bin/sudo",
            exec_id: "sudo-run",
        }
    }

    fn summary(chain: &Chain) -> Vec<(u32, u32, &str)> {
        chain
            .hops
            .iter()
            .map(|h| (h.from_uid, h.to_uid, h.program.as_str()))
            .collect()
    }

    /// alice's shell execs sudo (set-user-id root); returns sudo's state after the exec.
    fn sudo_started() -> ChainState {
        let mut state = ChainState::before_sensor(ALICE, ALICE);
        state.exec(Some(ALICE), ROOT, ALICE, &sudo_run());
        state
    }

    #[test]
    fn temporary_switches_undone_before_exec_are_not_hops() {
        let mut sudo = sudo_started();
        let (alice_root, root) = (creds(ALICE, ROOT, ROOT), creds(ROOT, ROOT, ROOT));
        sudo.changed(Some(&alice_root), &root, "setresuid", &sudo_run());
        for _ in 0..5 {
            let as_daemon = creds(ROOT, DAEMON, ROOT);
            sudo.changed(Some(&root), &as_daemon, "setresuid", &sudo_run());
            // Reading its policy as daemon: the switch can be undone, so it is no hop yet.
            assert_eq!(summary(&sudo.now(ALICE)), [(ALICE, ROOT, "/usr/bin/sudo")]);
            sudo.changed(Some(&as_daemon), &root, "setresuid", &sudo_run());
        }
        let mut child = sudo.clone();
        child.exec(
            Some(ROOT),
            ROOT,
            ALICE,
            &Actor {
                program: b"/usr/bin/cat",
                exec_id: "child",
            },
        );
        assert_eq!(summary(&child.now(ALICE)), [(ALICE, ROOT, "/usr/bin/sudo")]);
    }

    #[test]
    fn one_program_runs_changes_collapse_into_one_hop() {
        // sudo -u nobody: sudo's forked child gives up root for nobody, then execs.
        let mut child = sudo_started();
        child.changed(
            Some(&creds(ALICE, ROOT, ROOT)),
            &creds(NOBODY, NOBODY, NOBODY),
            "setresuid",
            &sudo_run(),
        );
        assert_eq!(
            summary(&child.now(ALICE)),
            [(ALICE, NOBODY, "/usr/bin/sudo")],
            "a permanent change is in force at once"
        );
        child.exec(
            Some(NOBODY),
            NOBODY,
            ALICE,
            &Actor {
                program: b"/usr/bin/id",
                exec_id: "child",
            },
        );
        let chain = child.now(ALICE);
        assert_eq!(summary(&chain), [(ALICE, NOBODY, "/usr/bin/sudo")]);
        assert_eq!(chain.hops[0].how, "exec");
    }

    #[test]
    fn another_programs_change_is_a_new_hop() {
        // sudo su - bob: su (run by sudo as root) forks a child that becomes bob.
        let mut su = sudo_started();
        let su_run = Actor {
            program: b"/usr/bin/su",
            exec_id: "su-run",
        };
        su.exec(Some(ROOT), ROOT, ALICE, &su_run);
        su.changed(
            Some(&creds(ROOT, ROOT, ROOT)),
            &creds(1002, 1002, 1002),
            "setuid",
            &su_run,
        );
        su.exec(
            Some(1002),
            1002,
            ALICE,
            &Actor {
                program: b"/bin/sh",
                exec_id: "shell",
            },
        );
        assert_eq!(
            summary(&su.now(ALICE)),
            [(ALICE, ROOT, "/usr/bin/sudo"), (ROOT, 1002, "/usr/bin/su")]
        );
    }

    #[test]
    fn a_switch_still_in_force_at_exec_is_a_hop() {
        let mut state = sudo_started();
        state.changed(
            Some(&creds(ALICE, ROOT, ROOT)),
            &creds(ALICE, DAEMON, ROOT),
            "seteuid",
            &sudo_run(),
        );
        assert_eq!(summary(&state.now(ALICE)), [(ALICE, ROOT, "/usr/bin/sudo")]);
        state.exec(
            Some(DAEMON),
            DAEMON,
            ALICE,
            &Actor {
                program: b"/bin/x",
                exec_id: "x",
            },
        );
        assert_eq!(
            summary(&state.now(ALICE)),
            [(ALICE, DAEMON, "/usr/bin/sudo")]
        );
    }

    #[test]
    fn no_login_no_chain_and_a_new_login_starts_afresh() {
        // sshd before the login: reading authorized_keys as the user, privilege separation.
        let mut sshd = ChainState::default();
        let sshd_run = Actor {
            program: b"/usr/sbin/sshd",
            exec_id: "sshd",
        };
        sshd.changed(
            Some(&creds(ROOT, ROOT, ROOT)),
            &creds(103, 103, 103),
            "setresuid",
            &sshd_run,
        );
        assert!(sshd.now(UNSET_ID).hops.is_empty());
        // After pam_loginuid, the child that becomes the user starts the chain empty.
        let mut child = ChainState::default();
        child.changed(
            Some(&creds(ROOT, ROOT, ROOT)),
            &creds(ALICE, ALICE, ALICE),
            "setresuid",
            &sshd_run,
        );
        assert!(child.now(ALICE).hops.is_empty());
    }

    #[test]
    fn a_long_chain_keeps_its_first_hop_and_counts_what_it_left_out() {
        let mut state = ChainState::before_sensor(ALICE, ALICE);
        let names: Vec<String> = (0..20).map(|i| format!("/bin/p{i}")).collect();
        let mut euid = ALICE;
        for (i, name) in names.iter().enumerate() {
            let next = 2000 + i as u32;
            state.exec(
                Some(euid),
                next,
                ALICE,
                &Actor {
                    program: name.as_bytes(),
                    exec_id: name,
                },
            );
            euid = next;
        }
        let chain = state.now(ALICE);
        assert_eq!(chain.hops.len(), MAX_HOPS);
        assert_eq!(chain.omitted, 20 - MAX_HOPS as u32);
        assert_eq!(
            (chain.hops[0].from_uid, chain.hops[0].to_uid),
            (ALICE, 2000)
        );
        assert_eq!(chain.hops[MAX_HOPS - 1].to_uid, 2019);
        state.exec(Some(euid), ALICE, ALICE, &sudo_run());
        assert!(state.now(ALICE).hops.is_empty(), "back to the login user");
    }
}
