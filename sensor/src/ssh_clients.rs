//! The client of an SSH login: the peer of the TCP connection its sshd serves.
//!
//! The connection is the kernel's, not anything the logged-in user can set. It is read from
//! the sshd process's open sockets, at two moments: when an sshd serving a connection is
//! exec'd (the listener re-executes itself, or `sshd-session`, for each connection), which is
//! long before the login; and, for connections served by processes exec'd before the sensor
//! started, when the session is first seen. A command over in a moment (`ssh host true`) may
//! have closed its connection by the time its session is first seen.
use std::{net::SocketAddr, num::NonZeroUsize, path::Path};

use crate::{
    process_table::ExecId,
    sessions::{serves_ssh, Member},
};

/// Connections whose client is remembered at once; the least recently served is forgotten
/// first. Well above what sshd lets wait for authentication (its `MaxStartups`).
const REMEMBERED: usize = 1024;

/// Clients noted when the sshd serving their connection was exec'd, by its exec id.
pub struct SshClients {
    noted: lru::LruCache<ExecId, SocketAddr, foldhash::fast::RandomState>,
}

impl Default for SshClients {
    fn default() -> Self {
        Self {
            noted: lru::LruCache::with_hasher(
                NonZeroUsize::new(REMEMBERED).unwrap(),
                Default::default(),
            ),
        }
    }
}

impl SshClients {
    /// Notes the client of the connection process `pid` serves, when `program` is an sshd and
    /// the process holds one (the listener holds none).
    pub fn note_exec(&mut self, proc_root: &Path, pid: u32, exec_id: &ExecId, program: &[u8]) {
        if !serves_ssh(program) {
            return;
        }
        if let Some(peer) = connection_peer(&proc_root.join(pid.to_string())) {
            self.noted.put(exec_id.clone(), peer);
        }
    }

    /// The client noted for the sshd process `exec_id`.
    pub fn noted(&self, exec_id: &str) -> Option<SocketAddr> {
        self.noted.peek(exec_id).copied()
    }
}

/// The client of an SSH session, read now: the peer of the established TCP connection that one
/// of the session's sshd processes holds.
pub fn ssh_peer(proc_root: &Path, members: &[Member]) -> Option<SocketAddr> {
    members
        .iter()
        .filter(|m| serves_ssh(&m.program))
        .find_map(|m| connection_peer(&proc_root.join(m.pid.to_string())))
}

/// The remote end of the first established TCP connection among the process's open sockets,
/// looked up in the socket tables of the process's own network namespace.
fn connection_peer(process_dir: &Path) -> Option<SocketAddr> {
    let process = procfs::process::Process::new_with_root(process_dir.to_owned()).ok()?;
    let sockets: std::collections::HashSet<u64> = process
        .fd()
        .ok()?
        .flatten()
        .filter_map(|fd| match fd.target {
            procfs::process::FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    if sockets.is_empty() {
        return None;
    }
    let tables = [process.tcp(), process.tcp6()];
    tables
        .into_iter()
        .flatten()
        .flatten()
        .find(|entry| {
            entry.state == procfs::net::TcpState::Established && sockets.contains(&entry.inode)
        })
        .map(|entry| entry.remote_address)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::sessions::tests::member;

    #[test]
    fn an_ssh_sessions_client_is_the_peer_of_its_sshd_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_served, peer) = listener.accept().unwrap();
        assert_eq!(client.local_addr().unwrap(), peer);
        // This process holds both ends and the listener; as an "sshd" its peer is the client's
        // address as the accepted end sees it, or the listener's as the client end sees it.
        let me = member(std::process::id(), "/usr/sbin/sshd");
        let found = ssh_peer(Path::new("/proc"), &[member(1, "/usr/bin/bash"), me]).unwrap();
        assert!(
            found == peer || found == listener.local_addr().unwrap(),
            "{found} is an end of the connection"
        );
        // A process that is not sshd is never asked.
        let bash = member(std::process::id(), "/usr/bin/bash");
        assert_eq!(ssh_peer(Path::new("/proc"), &[bash]), None);
    }

    /// A `/proc` with process `pid` holding one established connection from `client` to
    /// 127.0.0.1:22, on socket inode 4242 (fd 3).
    fn proc_with_connection(pid: u32, client: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let process = root.path().join(pid.to_string());
        std::fs::create_dir_all(process.join("fd")).unwrap();
        std::fs::create_dir_all(process.join("net")).unwrap();
        std::os::unix::fs::symlink("socket:[4242]", process.join("fd/3")).unwrap();
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  \
             timeout inode\n   0: 0100007F:0016 {client} 01 00000000:00000000 00:00000000 \
             00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n"
        );
        std::fs::write(process.join("net/tcp"), table).unwrap();
        root
    }

    #[test]
    fn a_client_noted_at_an_sshds_exec_outlives_its_connection() {
        // 198.51.100.7:50522, as the kernel's table writes it (little-endian address).
        let proc = proc_with_connection(700, "076433C6:C55A");
        let mut clients = SshClients::default();
        let sshd: ExecId = "id-700".into();
        let bash: ExecId = "id-bash".into();
        clients.note_exec(proc.path(), 700, &bash, b"/usr/bin/bash");
        assert_eq!(clients.noted("id-bash"), None, "only sshd is asked");
        clients.note_exec(proc.path(), 700, &sshd, b"/usr/sbin/sshd-session");
        let client: SocketAddr = "198.51.100.7:50522".parse().unwrap();
        assert_eq!(
            ssh_peer(proc.path(), &[member(700, "/usr/sbin/sshd")]),
            Some(client)
        );
        // The connection closes: it cannot be read any more, the note still has it.
        std::fs::remove_file(proc.path().join("700/fd/3")).unwrap();
        assert_eq!(
            ssh_peer(proc.path(), &[member(700, "/usr/sbin/sshd")]),
            None
        );
        assert_eq!(clients.noted("id-700"), Some(client));
        // A listener (no connection) is not noted.
        clients.note_exec(proc.path(), 700, &"id-listener".into(), b"/usr/sbin/sshd");
        assert_eq!(clients.noted("id-listener"), None);
    }
}
