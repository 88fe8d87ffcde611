//! Real logins for the identity tests: Debian's sshd on loopback with its own host key and
//! configuration, key logins with Debian's ssh client, a sudo rule, cron jobs.
use std::{
    io::Write as _,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

/// Creates a local user who can log in (a home directory and `/bin/sh`), idempotently; returns
/// its uid.
pub fn ensure_login_user(name: &str) -> Result<u32> {
    if let Some(uid) = crate::uid_of(name)? {
        return Ok(uid);
    }
    let status = Command::new("useradd")
        .args(["--create-home", "--shell", "/bin/sh", name])
        .status()
        .context("running useradd")?;
    ensure!(status.success(), "useradd {name} failed");
    crate::uid_of(name)?.with_context(|| format!("{name} missing after useradd"))
}

/// The home directory of `user`, from NSS.
fn home_of(user: &str) -> Result<PathBuf> {
    let out = Command::new("getent").args(["passwd", user]).output()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let home = line.trim().split(':').nth(5).context("no passwd entry")?;
    Ok(PathBuf::from(home))
}

/// Debian's sshd listening on 127.0.0.1 and a free port, with a host key and configuration in
/// a temporary directory, and a client key that logs in as the users it was given. PAM is on,
/// as on a Debian host, so pam_loginuid opens an audit session for each login.
pub struct SshServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    client_key: PathBuf,
    daemon: Child,
}

impl SshServer {
    /// Starts sshd and authorises the client key for each of `users`.
    pub fn start(users: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("custos-sshd-").tempdir()?;
        let host_key = keygen(dir.path(), "host_key")?;
        let client_key = keygen(dir.path(), "client_key")?;
        let public = std::fs::read_to_string(client_key.with_extension("pub"))?;
        for user in users {
            authorize(user, &public)?;
        }
        // The privilege-separation directory sshd chroots its pre-authentication child into.
        std::fs::create_dir_all("/run/sshd")?;
        let port = crate::free_port()?;
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nUsePAM yes\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAuthorizedKeysFile .ssh/authorized_keys\n",
                host_key.display(),
                dir.path().join("sshd.pid").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("sshd.log"))?;
        let daemon = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting /usr/sbin/sshd (Debian's openssh-server)")?;
        let server = Self {
            dir,
            port,
            client_key,
            daemon,
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&self) -> Result<()> {
        let address = format!("{}:{}", Ipv4Addr::LOCALHOST, self.port);
        if let Err(err) = crate::wait_listening(&address, Duration::from_secs(10)) {
            let log = std::fs::read_to_string(self.dir.path().join("sshd.log"))?;
            bail!("sshd: {err}: {log}");
        }
        Ok(())
    }

    /// The ssh client logging in as `user`, ready for a command or `-tt`.
    pub fn client(&self, user: &str) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-i"])
            .arg(&self.client_key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@127.0.0.1"));
        ssh
    }

    /// The listening sshd's pid: the parent of the sshd each connection gets.
    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }

    /// The ssh client logging in as `user` through a relay that connects to sshd at once but
    /// passes no byte either way until `gate` exists: the connection's sshd starts, and the
    /// login waits.
    pub fn client_held_until(&self, user: &str, gate: &Path) -> Result<Command> {
        let relay = self.dir.path().join("held_relay.py");
        std::fs::write(&relay, HELD_RELAY)?;
        let mut ssh = self.client(user);
        ssh.arg("-o").arg(format!(
            "ProxyCommand=python3 {} {} {}",
            relay.display(),
            self.port,
            gate.display()
        ));
        Ok(ssh)
    }

    /// Runs `command` over a non-interactive login as `user`; fails unless it succeeds.
    pub fn run(&self, user: &str, command: &str) -> Result<String> {
        let out = self
            .client(user)
            .arg(command)
            .stdin(Stdio::null())
            .output()?;
        succeeded(&out, command)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An interactive login with a terminal (`ssh -tt`) as `user` that types `lines` once the
    /// shell shows its prompt; returns what the terminal showed.
    pub fn interactive(&self, user: &str, lines: &[&str]) -> Result<String> {
        let mut child = self
            .client(user)
            .arg("-tt")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut screen = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut chunk) {
                screen.extend_from_slice(&chunk[..n]);
                let _ = tx.send(String::from_utf8_lossy(&screen).into_owned());
            }
            String::from_utf8_lossy(&screen).into_owned()
        });
        // Typed before the shell reads its terminal, input could meet sshd's end-of-input.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| anyhow::anyhow!("no shell prompt within 30 s"))?
            .ends_with("$ ")
        {}
        let mut stdin = child.stdin.take().context("no stdin")?;
        for line in lines {
            writeln!(stdin, "{line}")?;
        }
        let status = child.wait()?;
        drop(stdin);
        let screen = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        ensure!(
            status.success(),
            "the interactive login failed ({status}): {screen}"
        );
        Ok(screen)
    }
}

/// A ProxyCommand: connects to 127.0.0.1:PORT, waits for the file GATE, then relays standard
/// input and output to the connection until either side closes.
const HELD_RELAY: &str = r#"
import os, socket, sys, threading, time
port, gate = int(sys.argv[1]), sys.argv[2]
conn = socket.create_connection(("127.0.0.1", port))
while not os.path.exists(gate):
    time.sleep(0.02)
def upstream():
    while data := os.read(0, 65536):
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
threading.Thread(target=upstream, daemon=True).start()
while data := conn.recv(65536):
    os.write(1, data)
"#;

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn succeeded(out: &Output, what: &str) -> Result<()> {
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// An ed25519 key pair without a passphrase at `dir/name` (and `.pub`).
fn keygen(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .context("running ssh-keygen")?;
    ensure!(status.success(), "ssh-keygen failed");
    Ok(path)
}

/// Puts `public_key` in `user`'s `~/.ssh/authorized_keys`, owned by them with the modes sshd's
/// StrictModes wants.
fn authorize(user: &str, public_key: &str) -> Result<()> {
    let ssh_dir = home_of(user)?.join(".ssh");
    std::fs::create_dir_all(&ssh_dir)?;
    let keys = ssh_dir.join("authorized_keys");
    std::fs::write(&keys, public_key)?;
    std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600))?;
    let owner = format!("{user}:");
    let status = Command::new("chown")
        .args(["-R", &owner])
        .arg(&ssh_dir)
        .status()?;
    ensure!(status.success(), "chown {owner} {}", ssh_dir.display());
    Ok(())
}

/// A sudoers drop-in for the duration of a test: `user` may run anything as anyone without a
/// password.
pub struct SudoRule {
    path: PathBuf,
}

impl SudoRule {
    pub fn allow_all(user: &str) -> Result<Self> {
        let path = PathBuf::from("/etc/sudoers.d/custos-tests");
        std::fs::write(&path, format!("{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440))?;
        let check = Command::new("visudo")
            .args(["-c", "-q", "-f"])
            .arg(&path)
            .status()?;
        ensure!(check.success(), "visudo rejected {}", path.display());
        Ok(Self { path })
    }
}

impl Drop for SudoRule {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Debian's cron daemon: the running one, or one started here (in the foreground, stopped at
/// drop), and a crontab installed for a user with `crontab -u`, removed at drop.
pub struct CronJob {
    user: String,
    daemon: Option<Child>,
}

impl CronJob {
    pub fn install(user: &str, line: &str) -> Result<Self> {
        let running = cron_running();
        if running {
            // cron notices a new crontab by the spool's mtime, in whole seconds, when a minute
            // starts: a crontab written in that same second would wait for the next change.
            while wall_second() < 2 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let mut install = Command::new("crontab")
            .args(["-u", user, "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        writeln!(install.stdin.take().context("no stdin")?, "{line}")?;
        ensure!(install.wait()?.success(), "crontab -u {user} failed");
        // Started after the crontab is in place, cron reads it as it starts.
        let daemon = if running {
            None
        } else {
            Some(
                Command::new("/usr/sbin/cron")
                    .arg("-f")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting /usr/sbin/cron (Debian's cron)")?,
            )
        };
        Ok(Self {
            user: user.to_owned(),
            daemon,
        })
    }
}

/// The second within the current minute.
fn wall_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() % 60)
}

impl Drop for CronJob {
    fn drop(&mut self) {
        let _ = Command::new("crontab")
            .args(["-u", &self.user, "-r"])
            .status();
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn cron_running() -> bool {
    std::fs::read_to_string("/run/crond.pid")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}/exe")).exists())
}
