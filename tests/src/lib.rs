//! Harness for the integration tests: runs the real `custos` daemon (real eBPF programs, real
//! kernel), causes real activity, and reads back the events it wrote.
use std::{
    io::{BufRead, BufReader},
    ops::ControlFlow,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use serde_json::Value;

pub mod collector;
pub mod config;
pub mod full_ring;
pub mod journal;
pub mod load;
pub mod logins;
pub mod loop_device;
pub mod nats;
pub mod net;
pub mod poll;
pub mod siem;
pub mod stall;

pub use config::{Entry, TestConfig};

/// How long to wait for the daemon to become ready or for an event to show up.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// [`PATIENCE`], or `CUSTOS_TEST_PATIENCE_SECS` where everything runs slower (an emulated VM).
pub fn patience() -> Duration {
    std::env::var("CUSTOS_TEST_PATIENCE_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(PATIENCE)
}

/// The `custos` binary under test: `CUSTOS_BIN` (set by `cargo xtask test`), else the
/// workspace's debug build.
pub fn custos_bin() -> PathBuf {
    std::env::var_os("CUSTOS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/custos"))
}

/// Runs `custos` with `args`; its standard output, once it succeeded.
pub fn custos(args: &[&std::ffi::OsStr]) -> Result<String> {
    stdout_of(Command::new(custos_bin()).args(args))
}

/// Runs `command` to its end; its standard output once it succeeded, else an error with its
/// status and standard error.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy()).collect();
    let described = format!("{program} {args:?}");
    let out = command
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{described} failed: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Fails with a clear message unless the tests run as root (they load eBPF programs).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the integration tests load eBPF programs and must run as root (cargo xtask test)"
    );
}

/// A running daemon writing JSON lines (and optionally protobuf) to files in a temp dir.
pub struct Sensor {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub json_path: PathBuf,
    pub protobuf_path: PathBuf,
    pub config_path: PathBuf,
    stderr: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Sensor {
    /// Starts the daemon with `config` plus a JSON file sink and a protobuf file sink.
    pub fn start(config: &TestConfig) -> Result<Self> {
        Self::start_with_env(config, &[])
    }

    /// Like [`Sensor::start`], with extra environment variables for the daemon.
    pub fn start_with_env(config: &TestConfig, env: &[(&str, &std::ffi::OsStr)]) -> Result<Self> {
        Self::launch(config, env, Command::new(custos_bin()), Stdio::null())
    }

    /// Like [`Sensor::start`], with the daemon's standard output a pipe the test holds: a
    /// `stdout` sink in `config` writes into it, and blocks once nobody reads it.
    pub fn start_with_stdout_pipe(config: &TestConfig) -> Result<(Self, ChildStdout)> {
        let command = Command::new(custos_bin());
        let mut sensor = Self::launch(config, &[], command, Stdio::piped())?;
        let stdout = sensor
            .child
            .as_mut()
            .and_then(|child| child.stdout.take())
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        Ok((sensor, stdout))
    }

    /// Like [`Sensor::start`], with the file-creation mask `umask` (octal, "022").
    pub fn start_with_umask(config: &TestConfig, umask: &str) -> Result<Self> {
        let mut command = Command::new("sh");
        command
            .args(["-c", "umask \"$0\" && exec \"$@\"", umask])
            .arg(custos_bin());
        Self::launch(config, &[], command, Stdio::null())
    }

    /// Like [`Sensor::start`], in a UTS namespace of its own whose host name is `host`: a
    /// second host, as far as the daemon can tell.
    pub fn start_as_host(config: &TestConfig, host: &str) -> Result<Self> {
        let mut command = Command::new("unshare");
        command
            .args([
                "--uts",
                "--",
                "sh",
                "-c",
                "hostname \"$0\" && exec \"$@\"",
                host,
            ])
            .arg(custos_bin());
        Self::launch(config, &[], command, Stdio::null())
    }

    /// Starts `command` (the daemon, or a wrapper that execs it) on `config` with `stdout` as
    /// its standard output, and waits until the daemon is ready.
    fn launch(
        config: &TestConfig,
        env: &[(&str, &std::ffi::OsStr)],
        mut command: Command,
        stdout: Stdio,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let json_path = dir.path().join("events.json");
        let protobuf_path = dir.path().join("events.pb");
        let config_path = dir.path().join("custos.toml");
        write_config(&config_path, config, &json_path, &protobuf_path)?;
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("CUSTOS_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", custos_bin().display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sensor = Sensor {
            child: Some(child),
            dir,
            json_path,
            protobuf_path,
            config_path,
            stderr: rx,
            log: Vec::new(),
        };
        sensor.wait_for_log("sensor ready")?;
        Ok(sensor)
    }

    /// Rewrites the configuration file (same sinks, new `config`) and sends SIGHUP.
    pub fn reconfigure(&mut self, config: &TestConfig) -> Result<()> {
        write_config(
            &self.config_path,
            config,
            &self.json_path,
            &self.protobuf_path,
        )?;
        signal(self.pid(), "HUP")
    }

    /// Waits until the daemon logs a line containing `needle`.
    pub fn wait_for_log(&mut self, needle: &str) -> Result<()> {
        let deadline = Instant::now() + patience();
        loop {
            if self.log.iter().any(|l| l.contains(needle)) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("custos: {line}");
                    self.log.push(line);
                }
                Err(_) => bail!(
                    "custos never logged {needle:?}; its log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Every event written so far (complete lines only).
    pub fn events(&self) -> Result<Vec<Value>> {
        read_json_lines(&self.json_path)
    }

    /// Polls the output until `found` returns `Some`, or fails after [`patience`].
    pub fn wait_for<T>(&self, what: &str, found: impl Fn(&[Value]) -> Option<T>) -> Result<T> {
        self.wait_for_within(patience(), what, found)
    }

    /// [`Sensor::wait_for`] for activity that takes longer to come (a cron job).
    pub fn wait_for_within<T>(
        &self,
        patience: Duration,
        what: &str,
        found: impl Fn(&[Value]) -> Option<T>,
    ) -> Result<T> {
        poll::poll(patience, poll::EVERY, || {
            let events = self.events()?;
            Ok(match found(&events) {
                Some(hit) => ControlFlow::Break(hit),
                None => ControlFlow::Continue(format!(
                    "{what} is not among the {} events written",
                    events.len()
                )),
            })
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for a clean exit; what was accepted must then be on disk.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(child.id(), "TERM")?;
        let status = child.wait()?;
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
        if !status.success() {
            bail!("custos exited with {status}; log:\n{}", self.log.join("\n"));
        }
        Ok(())
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

fn write_config(path: &Path, config: &TestConfig, json: &Path, protobuf: &Path) -> Result<()> {
    let config = config
        .clone()
        .sink(Entry::file_sink(json, "json"))
        .sink(Entry::file_sink(protobuf, "protobuf"));
    std::fs::write(path, config.to_toml())?;
    Ok(())
}

/// Sends a signal by name with kill(1).
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

pub fn read_json_lines(path: &Path) -> Result<Vec<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    // The last line may still be in flight; only complete lines count.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line: {l}")))
        .collect()
}

/// A copy of `source` under a unique name in a world-readable temp dir, so that any user can
/// run it and its exec events are unmistakable.
pub struct Marker {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Marker {
    pub fn new(source: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("custos-test-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let name = format!("custos-marker-{}", std::process::id());
        let path = dir.path().join(name);
        std::fs::copy(source, &path).with_context(|| format!("copying {source}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir, path })
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }
}

/// An event's `seq` (a string in the JSON mapping, as 64-bit integers are); 0 if absent.
pub fn seq(event: &Value) -> u64 {
    uint64(&event["seq"])
}

/// A 64-bit integer field, which proto3 JSON writes as a string; 0 when absent.
pub fn uint64(field: &Value) -> u64 {
    field.as_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The JSON events a command printed one per line (`custos decode`, the consumers), after it
/// succeeded.
pub fn json_lines(output: std::process::Output) -> Result<Vec<Value>> {
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// Events whose body is `kind` (`exec`, `exit`, `loss`).
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let kind = kind.to_owned();
    events.iter().filter(move |e| e.get(&kind).is_some())
}

/// The exec_id the sensor gives an existing process, computed independently from /proc.
pub fn exec_id_of(pid: u32) -> Result<String> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let start_ticks = after_comm
        .split_whitespace()
        .nth(19)
        .ok_or_else(|| anyhow!("short stat"))?;
    Ok(format!("{}:{start_ticks}:{pid}", boot_id.trim()))
}

/// Runs `program ARGS` as uid and gid `as_uid` with no supplementary groups, from a shell that
/// first sets its own audit login uid to `login_uid` (as pam_loginuid does at login): a new
/// login session. setpriv execs the program in the same process.
pub fn run_after_login(
    login_uid: u32,
    as_uid: u32,
    program: &str,
    args: &[&str],
) -> Result<std::process::ExitStatus> {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo {login_uid} > /proc/self/loginuid && exec setpriv --reuid={as_uid} \
             --regid={as_uid} --clear-groups \"$0\" \"$@\""
        ))
        .arg(program)
        .args(args)
        .status()
        .context("running a shell that logs in")
}

/// Creates a local user (idempotent) and returns its uid.
pub fn ensure_user(name: &str) -> Result<u32> {
    if let Some(uid) = uid_of(name)? {
        return Ok(uid);
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .status()
        .context("running useradd")?;
    if !status.success() {
        bail!("useradd {name} failed");
    }
    uid_of(name)?.ok_or_else(|| anyhow!("{name} missing after useradd"))
}

pub(crate) fn uid_of(name: &str) -> Result<Option<u32>> {
    let out = Command::new("id").args(["-u", name]).output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).trim().parse()?))
}

/// `user` (created if need be) as a member of `group` (created if need be); the user's uid.
pub fn ensure_member(user: &str, group: &str) -> Result<u32> {
    let known = Command::new("getent")
        .args(["group", group])
        .stdout(std::process::Stdio::null())
        .status()?
        .success();
    if !known {
        run("groupadd", &["--system", group])?;
    }
    let uid = ensure_user(user)?;
    run("usermod", &["-a", "-G", group, user])?;
    Ok(uid)
}

/// Runs `program ARGS`; its output is kept, and shown only if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    stdout_of(Command::new(program).args(args)).map(drop)
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts. It is
/// chosen below the kernel's range for the local ports of outgoing connections: a port from
/// that range, once released, can be taken by any connect on the host before the server meant
/// for it binds it (a cluster's route connections, dialling members not started yet, did).
pub fn free_port() -> Result<u16> {
    const LOWEST: u16 = 10_000;
    let outgoing_from = outgoing_ports_start();
    if outgoing_from > LOWEST + 1_000 {
        for _ in 0..1_000 {
            let port = fastrand::u16(LOWEST..outgoing_from);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The first port of the kernel's range for outgoing connections' local ports (Linux's
/// default when it cannot be read).
fn outgoing_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The segment files of a sink's spool directory, oldest first.
pub fn spool_segments(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    Ok(segments)
}

/// Waits until `address` (`host:port`, IPv6 hosts in brackets) accepts TCP connections:
/// a server the test started is ready.
pub fn wait_listening(address: &str, within: Duration) -> Result<()> {
    poll::wait_until(&format!("a listener on {address}"), within, || {
        Ok(std::net::TcpStream::connect(address).is_ok())
    })
}

/// A directory under /tmp that every user may use, removed at drop.
pub fn shared_dir() -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("custos-files-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    Ok(dir)
}

/// A [`shared_dir`] and its canonical path (the path the kernel reports).
pub fn shared_root() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = shared_dir()?;
    let root = dir.path().canonicalize()?;
    Ok((dir, root))
}

/// A bind mount of `source` on `target` (by `mount --bind`), detached when dropped, whatever
/// the test's outcome.
pub struct BindMount(PathBuf);

impl BindMount {
    pub fn new(source: &Path, target: &Path) -> Result<Self> {
        let status = Command::new("mount")
            .arg("--bind")
            .args([source, target])
            .status()
            .context("running mount --bind")?;
        ensure!(
            status.success(),
            "mount --bind {source:?} {target:?} failed: {status}"
        );
        Ok(Self(target.to_owned()))
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A [`shared_root`] holding the file `name` with `contents`: the directory, its path and the
/// file's path.
pub fn shared_file(name: &str, contents: &str) -> Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let (dir, root) = shared_root()?;
    let file = root.join(name);
    std::fs::write(&file, contents)?;
    Ok((dir, root, file))
}

/// Creates directories `names` under `root`, each holding a file `f` with its name as content.
pub fn dirs_with_a_file(root: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        std::fs::create_dir(root.join(name))?;
        std::fs::write(root.join(name).join("f"), name)?;
    }
    Ok(())
}

/// Runs the `opener` helper (`env!("CARGO_BIN_EXE_opener")` in a test) as uid/gid 65534
/// (nobody) with no supplementary groups; returns its exit code and pid.
pub fn open_as_nobody(opener: &str, args: &[&std::ffi::OsStr]) -> Result<(i32, u32)> {
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(opener)
        .args(args)
        .spawn()
        .context("running opener through setpriv")?;
    let pid = child.id();
    let status = child.wait()?;
    Ok((status.code().unwrap_or(-1), pid))
}

/// Has nobody open `file` `times` times in one opener process, which must succeed; its pid.
pub fn open_repeatedly_as_nobody(opener: &str, times: u64, file: &Path) -> Result<u32> {
    let times = times.to_string();
    let args = [
        std::ffi::OsStr::new("repeat"),
        std::ffi::OsStr::new(&times),
        file.as_os_str(),
    ];
    let (code, pid) = open_as_nobody(opener, &args)?;
    ensure!(code == 0, "the opener exited with {code}");
    Ok(pid)
}

/// The first exec event of the program at `binary` (the readable `process.binary`).
pub fn exec_of(events: &[Value], binary: &str) -> Option<Value> {
    of_kind(events, "exec")
        .find(|e| e["process"]["binary"] == binary)
        .cloned()
}

/// File-open events for `path` (matching the readable `path` field).
pub fn opens_of<'a>(events: &'a [Value], path: &str) -> Vec<&'a Value> {
    of_kind(events, "fileOpen")
        .filter(|e| e["fileOpen"]["path"] == path)
        .collect()
}

/// The body of `GET path` from the HTTP server at `address` (the daemon's metrics endpoint).
pub fn http_get(address: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// The value of `series` (a name with its labels) in a Prometheus exposition.
pub fn metric_sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
