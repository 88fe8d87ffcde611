//! Login sessions: what the audit session id on an event stands for.
//!
//! A session is resolved the first time the sensor sees activity in it, from sources in order of
//! authority: systemd-logind's session file (`/run/systemd/sessions/<id>`, whose ids are the
//! audit session ids), the utmp entry of a process of the session, the connection of the
//! session's sshd process, and the sensor's own process tree (the leader is the oldest ancestor
//! with the same session id; its program says how the login came). Nothing a logged-in user can
//! set (their environment) is a source. It ends when its leader exits.
use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use custos_proto::v1::SessionKind;

use crate::{
    process_table::ExecId,
    ssh_clients::{ssh_peer, SshClients},
};

/// Where session facts are read from.
#[derive(Clone, Debug)]
pub struct SessionSources {
    pub proc_root: PathBuf,
    /// systemd-logind's session state directory.
    pub logind_dir: PathBuf,
    /// The utmp file.
    pub utmp: PathBuf,
}

impl Default for SessionSources {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            logind_dir: PathBuf::from("/run/systemd/sessions"),
            utmp: PathBuf::from("/run/utmp"),
        }
    }
}

/// One process on the way from an event's process up to its session leader.
#[derive(Clone, Debug)]
pub struct Member {
    pub pid: u32,
    pub exec_id: String,
    /// The program it runs (absolute path bytes).
    pub program: Vec<u8>,
    pub start_boottime_ns: u64,
}

/// What is known about a session, before names and times are rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionFacts {
    pub kind: SessionKind,
    pub remote_address: String,
    pub remote_port: Option<u32>,
    pub tty: String,
    pub seat: String,
    pub leader_pid: u32,
    pub leader_exec_id: String,
    pub leader_program: String,
    pub leader_start_boottime_ns: u64,
    pub sources: Vec<&'static str>,
}

/// Resolves session `id` for the process chain `members` (the event's process first, the
/// leader last); `noted_client` is the SSH client noted when the login's sshd was exec'd.
pub fn resolve(
    id: u32,
    members: &[Member],
    sources: &SessionSources,
    noted_client: Option<SocketAddr>,
) -> SessionFacts {
    let mut facts = SessionFacts::default();
    if let Some(leader) = members.last() {
        facts.leader_pid = leader.pid;
        facts.leader_exec_id = leader.exec_id.clone();
        facts.leader_program = String::from_utf8_lossy(&leader.program).into_owned();
        facts.leader_start_boottime_ns = leader.start_boottime_ns;
        facts.kind = kind_of_program(&leader.program);
        facts.sources.push("process");
    }
    if facts.kind == SessionKind::Ssh {
        if let Some(peer) = noted_client.or_else(|| ssh_peer(&sources.proc_root, members)) {
            facts.remote_address = peer.ip().to_string();
            facts.remote_port = Some(u32::from(peer.port()));
            facts.sources.push("socket");
        }
    }
    if let Some(entry) = utmp_entry(&sources.utmp, members) {
        if !entry.host.is_empty() && facts.remote_address.is_empty() {
            facts.remote_address = entry.host;
        }
        if facts.tty.is_empty() {
            facts.tty = entry.line;
        }
        facts.sources.push("utmp");
    }
    if let Some(logind) = logind_session(&sources.logind_dir, id) {
        if let Some(kind) = logind.kind() {
            facts.kind = kind;
        }
        if let Some(host) = logind.get("REMOTE_HOST") {
            facts.remote_address = host.to_owned();
        }
        if let Some(tty) = logind.get("TTY") {
            facts.tty = tty.trim_start_matches("/dev/").to_owned();
        }
        if let Some(seat) = logind.get("SEAT") {
            facts.seat = seat.to_owned();
        }
        facts.sources.push("logind");
    }
    if facts.kind == SessionKind::Unspecified && !members.is_empty() {
        facts.kind = SessionKind::Other;
    }
    facts
}

/// Whether this program serves SSH logins (sshd and the programs it runs for a connection).
/// Asked at every exec, so it looks at the name only.
pub fn serves_ssh(program: &[u8]) -> bool {
    is_ssh_server(program_name(program))
}

fn is_ssh_server(name: &[u8]) -> bool {
    matches!(name, b"sshd" | b"sshd-session" | b"sshd-auth" | b"dropbear")
}

/// The file name of a program's path.
fn program_name(program: &[u8]) -> &[u8] {
    memchr::memrchr(b'/', program).map_or(program, |slash| &program[slash + 1..])
}

/// How a session opened by this program (the leader) came about.
pub fn kind_of_program(program: &[u8]) -> SessionKind {
    let name = program_name(program);
    if is_ssh_server(name) {
        return SessionKind::Ssh;
    }
    match name {
        b"login" | b"agetty" | b"getty" | b"mingetty" => SessionKind::Tty,
        b"gdm-session-worker" | b"lightdm" | b"sddm-helper" | b"xrdp-sesman" => {
            SessionKind::Graphical
        }
        b"cron" | b"crond" | b"anacron" | b"atd" => SessionKind::Cron,
        b"systemd" | b"run0" => SessionKind::Service,
        b"runc"
        | b"crun"
        | b"conmon"
        | b"containerd-shim"
        | b"containerd-shim-runc-v2"
        | b"dockerd"
        | b"containerd" => SessionKind::Container,
        _ => SessionKind::Unspecified,
    }
}

/// The login record of a session process, if utmp has one.
#[derive(Debug, PartialEq, Eq)]
struct UtmpLogin {
    line: String,
    host: String,
}

fn utmp_entry(utmp: &Path, members: &[Member]) -> Option<UtmpLogin> {
    let entries = utmp_rs::parse_from_path(utmp).ok()?;
    entries.into_iter().find_map(|entry| match entry {
        utmp_rs::UtmpEntry::UserProcess {
            pid,
            line,
            host,
            session,
            ..
        } if members
            .iter()
            .any(|m| m.pid as i32 == pid || m.pid as i32 == session) =>
        {
            Some(UtmpLogin { line, host })
        }
        _ => None,
    })
}

/// A logind session file: `KEY=value` lines.
struct LogindSession(HashMap<String, String>);

impl LogindSession {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn kind(&self) -> Option<SessionKind> {
        let service = self.get("SERVICE").unwrap_or_default();
        let kind = match service {
            "sshd" => SessionKind::Ssh,
            "login" => SessionKind::Tty,
            "cron" | "crond" | "atd" => SessionKind::Cron,
            "systemd-user" | "run0" => SessionKind::Service,
            s if s.starts_with("gdm") || s == "lightdm" || s == "sddm" => SessionKind::Graphical,
            _ => match self.get("TYPE") {
                Some("x11" | "wayland" | "mir") => SessionKind::Graphical,
                Some("tty") if self.get("REMOTE") == Some("1") => SessionKind::Ssh,
                Some("tty") => SessionKind::Tty,
                _ => return None,
            },
        };
        Some(kind)
    }
}

fn logind_session(dir: &Path, id: u32) -> Option<LogindSession> {
    let text = std::fs::read_to_string(dir.join(id.to_string())).ok()?;
    Some(parse_logind(&text))
}

fn parse_logind(text: &str) -> LogindSession {
    LogindSession(
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// A session the sensor has seen activity from.
#[derive(Clone, Debug)]
pub struct ActiveSession {
    pub id: u32,
    pub login_uid: u32,
    pub facts: SessionFacts,
}

/// The sessions seen so far, bounded; each is resolved once, on its first activity.
pub struct SessionTracker {
    pub sources: SessionSources,
    /// Looked up for every event: hashed with foldhash, like the process table.
    active: lru::LruCache<u32, Arc<ActiveSession>, foldhash::fast::RandomState>,
    /// Session ids by their leader's pid, to notice a leader's exit.
    leaders: foldhash::HashMap<u32, (String, u32)>,
    /// Sessions whose start has not been reported yet (an SSH login's start waits for the
    /// login's own process).
    unannounced: HashSet<u32>,
    /// SSH clients noted when the sshd serving each connection was exec'd.
    ssh_clients: SshClients,
}

/// Sessions remembered at once; the least recently active is forgotten first.
const MAX_SESSIONS: usize = 4096;

impl SessionTracker {
    pub fn new(sources: SessionSources) -> Self {
        Self {
            sources,
            active: lru::LruCache::with_hasher(
                std::num::NonZeroUsize::new(MAX_SESSIONS).unwrap(),
                Default::default(),
            ),
            leaders: Default::default(),
            unannounced: HashSet::new(),
            ssh_clients: SshClients::default(),
        }
    }

    /// Notes the client of the connection process `pid` serves, when `program` is an sshd
    /// serving one: read now, while the connection is sure to be open.
    pub fn note_exec(&mut self, pid: u32, exec_id: &ExecId, program: &[u8]) {
        let proc_root = &self.sources.proc_root;
        self.ssh_clients.note_exec(proc_root, pid, exec_id, program);
    }

    /// The client noted for the sshd process `exec_id`.
    pub fn noted_ssh_client(&self, exec_id: &str) -> Option<SocketAddr> {
        self.ssh_clients.noted(exec_id)
    }

    /// The session `id`, if it is known.
    pub fn get(&mut self, id: u32) -> Option<Arc<ActiveSession>> {
        self.active.get(&id).cloned()
    }

    /// Resolves and remembers a session seen for the first time; its start is yet to be
    /// reported.
    pub fn start(
        &mut self,
        id: u32,
        login_uid: u32,
        members: &[Member],
        noted_client: Option<SocketAddr>,
    ) -> Arc<ActiveSession> {
        let facts = resolve(id, members, &self.sources, noted_client);
        self.leaders
            .insert(facts.leader_pid, (facts.leader_exec_id.clone(), id));
        let session = Arc::new(ActiveSession {
            id,
            login_uid,
            facts,
        });
        self.unannounced.insert(id);
        if let Some((_, evicted)) = self.active.push(id, session.clone()) {
            if evicted.id != id {
                self.leaders.remove(&evicted.facts.leader_pid);
                self.unannounced.remove(&evicted.id);
            }
        }
        session
    }

    /// True while the session's start has not been reported.
    pub fn awaiting_start(&self, id: u32) -> bool {
        self.unannounced.contains(&id)
    }

    /// Marks the session's start as reported, completing what its first activity could not
    /// know: the terminal (`tty`, the kernel's name of the announcing process's terminal) and,
    /// for SSH, the client (`noted_client`, else the connection of an sshd among `members`).
    pub fn announce(
        &mut self,
        id: u32,
        tty: String,
        members: &[Member],
        noted_client: Option<SocketAddr>,
    ) -> Option<Arc<ActiveSession>> {
        self.unannounced.remove(&id);
        let session = self.active.peek(&id)?;
        let needs_client =
            session.facts.kind == SessionKind::Ssh && session.facts.remote_address.is_empty();
        let needs_tty = session.facts.tty.is_empty() && !tty.is_empty();
        let peer = needs_client
            .then(|| noted_client.or_else(|| ssh_peer(&self.sources.proc_root, members)))
            .flatten();
        if peer.is_none() && !needs_tty {
            return Some(session.clone());
        }
        let mut updated = ActiveSession::clone(session);
        if let Some(peer) = peer {
            updated.facts.remote_address = peer.ip().to_string();
            updated.facts.remote_port = Some(u32::from(peer.port()));
            updated.facts.sources.push("socket");
        }
        if needs_tty {
            updated.facts.tty = tty;
            updated.facts.sources.push("terminal");
        }
        let updated = Arc::new(updated);
        self.active.put(id, updated.clone());
        Some(updated)
    }

    /// The session whose leader this process was, now ended, and whether its start is still to
    /// be reported.
    pub fn leader_exited(&mut self, pid: u32, exec_id: &str) -> Option<(Arc<ActiveSession>, bool)> {
        match self.leaders.get(&pid) {
            Some((leader, _)) if leader == exec_id => {}
            _ => return None,
        }
        let (_, id) = self.leaders.remove(&pid)?;
        let unannounced = self.unannounced.remove(&id);
        self.active.pop(&id).map(|session| (session, unannounced))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A member with exec id `id-<pid>`.
    pub(crate) fn member(pid: u32, program: &str) -> Member {
        Member {
            pid,
            exec_id: format!("id-{pid}"),
            program: program.as_bytes().to_vec(),
            start_boottime_ns: 0,
        }
    }

    fn nowhere() -> SessionSources {
        SessionSources {
            proc_root: PathBuf::from("/nonexistent"),
            logind_dir: PathBuf::from("/nonexistent"),
            utmp: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn leader_programs_name_the_kind_of_login() {
        assert_eq!(kind_of_program(b"/usr/sbin/sshd"), SessionKind::Ssh);
        assert_eq!(kind_of_program(b"/usr/bin/login"), SessionKind::Tty);
        assert_eq!(kind_of_program(b"/usr/sbin/cron"), SessionKind::Cron);
        assert_eq!(
            kind_of_program(b"/usr/lib/systemd/systemd"),
            SessionKind::Service
        );
        assert_eq!(kind_of_program(b"/usr/bin/bash"), SessionKind::Unspecified);
    }

    #[test]
    fn the_leader_is_the_last_member_and_unknown_programs_are_other() {
        let members = [member(30, "/usr/bin/bash"), member(20, "/usr/sbin/sshd")];
        let facts = resolve(5, &members, &nowhere(), None);
        assert_eq!(facts.kind, SessionKind::Ssh);
        assert_eq!(
            (facts.leader_pid, facts.leader_exec_id.as_str()),
            (20, "id-20")
        );
        let facts = resolve(5, &[member(7, "/opt/thing")], &nowhere(), None);
        assert_eq!(facts.kind, SessionKind::Other);
        assert_eq!(facts.sources, ["process"]);
    }

    #[test]
    fn a_sessions_start_waits_until_it_is_announced_and_learns_its_terminal() {
        let mut tracker = SessionTracker::new(nowhere());
        let started = tracker.start(9, 1000, &[member(300, "/usr/sbin/sshd")], None);
        assert_eq!(started.facts.kind, SessionKind::Ssh);
        assert!(tracker.awaiting_start(9));
        let announced = tracker.announce(9, "pts/4".into(), &[], None).unwrap();
        assert_eq!(announced.facts.tty, "pts/4");
        assert!(!tracker.awaiting_start(9));
        assert_eq!(
            tracker.get(9).unwrap().facts.sources,
            ["process", "terminal"]
        );
        let (ended, unannounced) = tracker.leader_exited(300, "id-300").unwrap();
        assert_eq!((ended.id, unannounced), (9, false));
    }

    #[test]
    fn logind_files_override_what_the_process_tree_suggests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("12"),
            "# This is private data. Do not parse.\nUID=1000\nUSER=alice\nACTIVE=1\n\
             TYPE=tty\nCLASS=user\nREMOTE=1\nSERVICE=sshd\nREMOTE_HOST=198.51.100.4\n\
             TTY=/dev/pts/2\nLEADER=4242\n",
        )
        .unwrap();
        let sources = SessionSources {
            logind_dir: dir.path().to_owned(),
            ..nowhere()
        };
        let facts = resolve(12, &[member(4300, "/usr/bin/bash")], &sources, None);
        assert_eq!(facts.kind, SessionKind::Ssh);
        assert_eq!(facts.remote_address, "198.51.100.4");
        assert_eq!(facts.tty, "pts/2");
        assert_eq!(facts.sources, ["process", "logind"]);
        let console = parse_logind("TYPE=tty\nSERVICE=login\nSEAT=seat0\n");
        assert_eq!(console.kind(), Some(SessionKind::Tty));
        assert_eq!(console.get("SEAT"), Some("seat0"));
    }
}
