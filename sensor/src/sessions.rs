//! Login sessions: what the audit session id on an event stands for.
//!
//! A session is resolved the first time the sensor sees activity in it, from three sources in
//! order of authority: systemd-logind's session file (`/run/systemd/sessions/<id>`, whose ids
//! are the audit session ids), the utmp entry of a process of the session, and the sensor's
//! own process tree (the leader is the oldest ancestor with the same session id; its program
//! and environment say how and from where the login came). It ends when its leader exits.
use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use custos_proto::v1::SessionKind;

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
/// leader last).
pub fn resolve(id: u32, members: &[Member], sources: &SessionSources) -> SessionFacts {
    let mut facts = SessionFacts::default();
    if let Some(leader) = members.last() {
        facts.leader_pid = leader.pid;
        facts.leader_exec_id = leader.exec_id.clone();
        facts.leader_program = String::from_utf8_lossy(&leader.program).into_owned();
        facts.leader_start_boottime_ns = leader.start_boottime_ns;
        facts.kind = kind_of_program(&leader.program);
        facts.sources.push("process");
    }
    if let Some((address, port)) = members
        .iter()
        .find_map(|m| ssh_client_of_environment(&sources.proc_root, m.pid))
    {
        facts.remote_address = address;
        facts.remote_port = Some(port);
        facts.kind = SessionKind::Ssh;
        facts.sources.push("environment");
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

/// How a session opened by this program (the leader) came about.
pub fn kind_of_program(program: &[u8]) -> SessionKind {
    let name = program.rsplit(|&b| b == b'/').next().unwrap_or(program);
    match name {
        b"sshd" | b"sshd-session" | b"sshd-auth" | b"dropbear" => SessionKind::Ssh,
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

/// The SSH client address and port from a process's environment (`SSH_CONNECTION=addr port
/// server port`, or the older `SSH_CLIENT=addr port server_port`).
fn ssh_client_of_environment(proc_root: &Path, pid: u32) -> Option<(String, u32)> {
    let environ = std::fs::read(proc_root.join(pid.to_string()).join("environ")).ok()?;
    ssh_client_of(&environ)
}

/// The client of NUL-separated `KEY=value` environment bytes.
pub fn ssh_client_of(environ: &[u8]) -> Option<(String, u32)> {
    let value_of = |key: &[u8]| {
        environ.split(|&b| b == 0).find_map(|var| {
            var.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(b"="))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    let value = value_of(b"SSH_CONNECTION").or_else(|| value_of(b"SSH_CLIENT"))?;
    let mut words = value.split_whitespace();
    let address: IpAddr = words.next()?.parse().ok()?;
    let port = words.next()?.parse().ok()?;
    Some((address.to_string(), port))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pid: u32, program: &str) -> Member {
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
        let facts = resolve(5, &members, &nowhere());
        assert_eq!(facts.kind, SessionKind::Ssh);
        assert_eq!(
            (facts.leader_pid, facts.leader_exec_id.as_str()),
            (20, "id-20")
        );
        let facts = resolve(5, &[member(7, "/opt/thing")], &nowhere());
        assert_eq!(facts.kind, SessionKind::Other);
        assert_eq!(facts.sources, ["process"]);
    }

    #[test]
    fn ssh_clients_come_from_the_environment() {
        let environ = b"HOME=/root\0SSH_CONNECTION=192.0.2.7 50522 192.0.2.1 22\0";
        assert_eq!(ssh_client_of(environ), Some(("192.0.2.7".into(), 50522)));
        let older = b"SSH_CLIENT=2001:db8::5 4242 22\0";
        assert_eq!(ssh_client_of(older), Some(("2001:db8::5".into(), 4242)));
        assert_eq!(ssh_client_of(b"SSH_CONNECTION=garbage\0"), None);
        assert_eq!(ssh_client_of(b"NOT_SSH_CONNECTION=1.2.3.4 5 6 7\0"), None);
    }

    #[test]
    fn an_ssh_sessions_client_is_learnt_from_a_later_process() {
        let proc_root = tempfile::tempdir().unwrap();
        let shell = proc_root.path().join("301");
        std::fs::create_dir(&shell).unwrap();
        std::fs::write(
            shell.join("environ"),
            b"SHELL=/bin/sh\0SSH_CONNECTION=203.0.113.9 40000 10.0.0.1 22\0",
        )
        .unwrap();
        let mut tracker = SessionTracker::new(SessionSources {
            proc_root: proc_root.path().to_owned(),
            ..nowhere()
        });
        // sshd's own activity comes first: no client in its environment.
        let started = tracker.start(9, 1000, &[member(300, "/usr/lib/openssh/sshd-session")]);
        assert_eq!(
            (started.facts.kind, started.facts.remote_address.as_str()),
            (SessionKind::Ssh, "")
        );
        assert!(tracker.learn_client(9, 300).is_none());
        let learnt = tracker
            .learn_client(9, 301)
            .expect("the shell's environment has it");
        assert_eq!(learnt.facts.remote_address, "203.0.113.9");
        assert_eq!(tracker.get(9).unwrap().facts.remote_port, Some(40000));
        assert!(tracker.learn_client(9, 301).is_none(), "known now");
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
        let facts = resolve(12, &[member(4300, "/usr/bin/bash")], &sources);
        assert_eq!(facts.kind, SessionKind::Ssh);
        assert_eq!(facts.remote_address, "198.51.100.4");
        assert_eq!(facts.tty, "pts/2");
        assert_eq!(facts.sources, ["process", "logind"]);
        let console = parse_logind("TYPE=tty\nSERVICE=login\nSEAT=seat0\n");
        assert_eq!(console.kind(), Some(SessionKind::Tty));
        assert_eq!(console.get("SEAT"), Some("seat0"));
    }
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
    active: lru::LruCache<u32, std::sync::Arc<ActiveSession>>,
    /// Session ids by their leader's pid, to notice a leader's exit.
    leaders: HashMap<u32, (String, u32)>,
    /// Environment lookups left for SSH sessions whose client is not known yet.
    lookups_left: HashMap<u32, u8>,
}

/// Processes of an SSH session whose environment is read for the client before giving up: the
/// session's first activity is often sshd's own, before the shell (which has SSH_CONNECTION).
const CLIENT_LOOKUPS: u8 = 16;

/// Sessions remembered at once; the least recently active is forgotten first.
const MAX_SESSIONS: usize = 4096;

impl SessionTracker {
    pub fn new(sources: SessionSources) -> Self {
        Self {
            sources,
            active: lru::LruCache::new(std::num::NonZeroUsize::new(MAX_SESSIONS).unwrap()),
            leaders: HashMap::new(),
            lookups_left: HashMap::new(),
        }
    }

    /// For an SSH session without a known client, looks in `pid`'s environment (a bounded
    /// number of times per session); the updated session if the client turned up.
    pub fn learn_client(&mut self, id: u32, pid: u32) -> Option<std::sync::Arc<ActiveSession>> {
        let session = self.active.peek(&id)?;
        if session.facts.kind != SessionKind::Ssh || !session.facts.remote_address.is_empty() {
            return None;
        }
        let left = self.lookups_left.entry(id).or_insert(CLIENT_LOOKUPS);
        if *left == 0 {
            return None;
        }
        *left -= 1;
        let (address, port) = ssh_client_of_environment(&self.sources.proc_root, pid)?;
        let mut updated = ActiveSession::clone(session);
        updated.facts.remote_address = address;
        updated.facts.remote_port = Some(port);
        updated.facts.sources.push("environment");
        let updated = std::sync::Arc::new(updated);
        self.active.put(id, updated.clone());
        self.lookups_left.remove(&id);
        Some(updated)
    }

    /// The session `id`, if it is known.
    pub fn get(&mut self, id: u32) -> Option<std::sync::Arc<ActiveSession>> {
        self.active.get(&id).cloned()
    }

    /// Resolves and remembers a session seen for the first time.
    pub fn start(
        &mut self,
        id: u32,
        login_uid: u32,
        members: &[Member],
    ) -> std::sync::Arc<ActiveSession> {
        let facts = resolve(id, members, &self.sources);
        self.leaders
            .insert(facts.leader_pid, (facts.leader_exec_id.clone(), id));
        let session = std::sync::Arc::new(ActiveSession {
            id,
            login_uid,
            facts,
        });
        if let Some((_, evicted)) = self.active.push(id, session.clone()) {
            if evicted.id != id {
                self.leaders.remove(&evicted.facts.leader_pid);
                self.lookups_left.remove(&evicted.id);
            }
        }
        session
    }

    /// The session whose leader this process was, now ended.
    pub fn leader_exited(
        &mut self,
        pid: u32,
        exec_id: &str,
    ) -> Option<std::sync::Arc<ActiveSession>> {
        match self.leaders.get(&pid) {
            Some((leader, _)) if leader == exec_id => {}
            _ => return None,
        }
        let (_, id) = self.leaders.remove(&pid)?;
        self.lookups_left.remove(&id);
        self.active.pop(&id)
    }
}
