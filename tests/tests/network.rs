//! Network connections with the identity behind them, caused by real programs on loopback:
//! Python's http.server (Debian's python3) listens and accepts, curl run as nobody connects; a
//! connect to a closed port is reported with its errno; loopback is off unless configured. In
//! a network namespace the test creates: connects to an address nobody answers for, failed by
//! the kernel, abandoned by curl, or dissolved by Python with the error read first.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    free_port,
    net::{network, VethNamespace},
    of_kind, require_root, wait_listening, Sensor, TestConfig, PATIENCE,
};
use serde_json::Value;

/// `python3 -m http.server` on `address`, stopped at drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(address: &str) -> Result<Self> {
        let port = free_port()?;
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "http.server", "--bind", address, &port.to_string()])
            .current_dir("/tmp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python3 -m http.server")?;
        let server = Self { child, port };
        let target = if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        wait_listening(&target, PATIENCE).context("http.server did not start")?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program` run as nobody, without groups.
fn as_nobody(program: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    command
}

/// curl's connects (the tests' own readiness probes connect too) whose `network` part matches.
fn curl_connects<'a>(
    events: &'a [Value],
    matches: impl Fn(&Value) -> bool + 'a,
) -> impl Iterator<Item = &'a Value> + 'a {
    network(events, "CONNECT", matches).filter(|e| e["process"]["binary"] == "/usr/bin/curl")
}

/// curl, as nobody, fetching `url`; its exit code and the local port it used (0 when it never
/// connected).
fn curl_as_nobody(url: &str) -> Result<(i32, u16)> {
    curl_as_nobody_with(&[], url)
}

/// [`curl_as_nobody`] with more of curl's options.
fn curl_as_nobody_with(options: &[&str], url: &str) -> Result<(i32, u16)> {
    let out = as_nobody("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{local_port}"])
        .args(options)
        .arg(url)
        .output()
        .context("running curl through setpriv")?;
    let port = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Ok((out.status.code().unwrap_or(-1), port))
}

#[test]
fn curl_to_a_local_web_server_is_a_listen_a_connect_and_an_accept() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start(&TestConfig::new().network_loopback(true))?;
    let server = HttpServer::start("127.0.0.1")?;
    let (code, curl_port) = curl_as_nobody(&format!("http://127.0.0.1:{}/", server.port))?;
    ensure!(code == 0 && curl_port != 0, "curl exited {code}");
    let port = u64::from(server.port);
    let (connect, accept) =
        sensor.wait_for("curl's connect and the server's accept", |events| {
            let connect = curl_connects(events, move |n| n["remotePort"] == port).next()?;
            let accept = network(events, "ACCEPT", |n| {
                n["remotePort"] == u64::from(curl_port)
            })
            .next()?;
            Some((connect.clone(), accept.clone()))
        })?;
    let events = sensor.events()?;
    let server_pid = server.pid();
    let listen = network(&events, "LISTEN", move |n| n["localPort"] == port)
        .find(|e| e["process"]["pid"] == server_pid)
        .with_context(|| {
            let listens: Vec<_> = network(&events, "LISTEN", |_| true).collect();
            format!("the server's listen (pid {server_pid}, port {port}) among {listens:?}")
        })?;

    assert_eq!(connect["identity"]["user"], "nobody");
    assert_eq!(connect["process"]["binary"], "/usr/bin/curl");
    let out = &connect["network"];
    assert_eq!(out["syscall"], "connect");
    assert_eq!(
        (out["family"].as_str(), out["protocol"].as_str()),
        (Some("ipv4"), Some("tcp"))
    );
    assert_eq!(out["remoteAddress"], "127.0.0.1");
    assert_eq!(out["localPort"], u64::from(curl_port), "{out}");
    assert!(out["errno"].is_null(), "{out}");
    assert_ne!(out["socketInode"], "0");

    for (event, what) in [(&accept, "accept"), (listen, "listen")] {
        assert_eq!(event["process"]["pid"], server.pid(), "{what}: {event}");
        assert_eq!(event["identity"]["user"], "root", "{what}");
        assert_eq!(event["network"]["localAddress"], "127.0.0.1", "{what}");
        assert_eq!(event["network"]["localPort"], port, "{what}");
    }
    assert_eq!(accept["network"]["remoteAddress"], "127.0.0.1");
    assert!(accept["network"]["syscall"]
        .as_str()
        .unwrap_or_default()
        .starts_with("accept"));
    assert_eq!(listen["network"]["remoteAddress"], "");
    sensor.stop()
}

#[test]
fn a_refused_connect_names_its_errno_and_ipv6_peers_are_reported() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start(&TestConfig::new().network_loopback(true))?;
    let closed = free_port()?;
    let (code, _) = curl_as_nobody(&format!("http://127.0.0.1:{closed}/"))?;
    ensure!(code != 0, "curl reached a closed port");
    let server = HttpServer::start("::1")?;
    let v6_port = server.port;
    let (code, _) = curl_as_nobody(&format!("http://[::1]:{v6_port}/"))?;
    ensure!(code == 0, "curl over IPv6 exited {code}");
    let (refused, v6) = sensor.wait_for("the refused and the IPv6 connects", |events| {
        let refused = curl_connects(events, move |n| n["remotePort"] == u64::from(closed));
        let v6 = curl_connects(events, move |n| n["remotePort"] == u64::from(v6_port));
        let (refused, v6) = (refused.last()?, v6.last()?);
        Some((refused.clone(), v6.clone()))
    })?;
    assert_eq!(refused["network"]["remoteAddress"], "127.0.0.1");
    assert_eq!(refused["network"]["error"], "ECONNREFUSED", "{refused}");
    assert_eq!(refused["network"]["errno"], 111);
    assert_eq!(refused["identity"]["user"], "nobody");
    assert_eq!(v6["network"]["family"], "ipv6");
    assert_eq!(v6["network"]["remoteAddress"], "::1");
    assert!(v6["network"]["errno"].is_null(), "{v6}");
    sensor.stop()
}

/// By default loopback connections are left out (in the kernel); the same curl is then seen
/// only as a program run.
#[test]
fn loopback_connections_are_off_by_default() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let server = HttpServer::start("127.0.0.1")?;
    let (code, _) = curl_as_nobody(&format!("http://127.0.0.1:{}/", server.port))?;
    ensure!(code == 0, "curl exited {code}");
    let events = sensor.wait_for("curl's exit", |events| {
        of_kind(events, "exit")
            .any(|e| e["process"]["binary"] == "/usr/bin/curl")
            .then(|| events.to_vec())
    })?;
    let port = u64::from(server.port);
    assert_eq!(
        curl_connects(&events, move |n| n["remotePort"] == port).count(),
        0,
        "a loopback connect was reported with loopback off"
    );
    sensor.stop()
}

/// A connect whose handshake fails long after the call returned (nobody answers ARP for the
/// address) is reported when the kernel gives up, from the state-change hook outside the
/// process, still with the identity of the process that called connect.
#[test]
fn an_unreachable_peer_is_reported_with_its_errno_when_the_kernel_gives_up() -> Result<()> {
    require_root();
    let _namespace = VethNamespace::create()?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let started = Instant::now();
    let (code, _) = curl_as_nobody("http://10.77.0.9:8080/")?;
    ensure!(code != 0, "curl reached an address nobody has");
    let unreachable = sensor.wait_for("the unreachable connect", |events| {
        curl_connects(events, |n| n["remoteAddress"] == "10.77.0.9")
            .next()
            .cloned()
    })?;
    let out = &unreachable["network"];
    assert_eq!(out["error"], "EHOSTUNREACH", "{unreachable}");
    assert_eq!(out["remotePort"], 8080);
    assert_eq!(out["localAddress"], "10.77.0.1");
    assert_eq!(unreachable["identity"]["user"], "nobody");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the outcome came from neighbour resolution giving up, seconds after the call"
    );
    sensor.stop()
}

/// A connect its program abandons before the kernel gives up (curl's own connect timeout, one
/// second, against neighbour resolution's three) is reported when the socket goes, still in
/// progress, with the identity of the process that called connect.
#[test]
fn a_connect_its_program_abandons_is_reported_in_progress() -> Result<()> {
    require_root();
    let _namespace = VethNamespace::create()?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let (code, _) = curl_as_nobody_with(&["--connect-timeout", "1"], "http://10.77.0.9:8080/")?;
    ensure!(
        code == 28,
        "curl exited {code}, not with its connect timeout (28)"
    );
    let abandoned = sensor.wait_for("the abandoned connect", |events| {
        curl_connects(events, |n| n["remoteAddress"] == "10.77.0.9")
            .next()
            .cloned()
    })?;
    assert_eq!(abandoned["network"]["error"], "EINPROGRESS", "{abandoned}");
    assert_eq!(abandoned["network"]["remotePort"], 8080);
    assert_eq!(abandoned["identity"]["user"], "nobody");
    sensor.stop()
}

/// Runs `script` with Debian's python3 as nobody; what it printed, once it succeeded.
fn python_as_nobody(script: &str) -> Result<String> {
    let out = as_nobody("/usr/bin/python3")
        .args(["-c", script])
        .output()
        .context("running python3")?;
    ensure!(
        out.status.success(),
        "python3: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every event the sensor has sent once a python3 process has exited.
fn events_until_python_exits(sensor: &mut Sensor) -> Result<Vec<Value>> {
    sensor.wait_for("python's exit", |events| {
        of_kind(events, "exit")
            .any(|e| e["process"]["comm"] == "python3")
            .then(|| events.to_vec())
    })
}

/// python3's connects whose `network` part matches.
fn python_connects<'a>(
    events: &'a [Value],
    matches: impl Fn(&Value) -> bool + 'a,
) -> impl Iterator<Item = &'a Value> + 'a {
    network(events, "CONNECT", matches).filter(|e| e["process"]["comm"] == "python3")
}

/// Python's socket module: a non-blocking connect to an address nobody answers for, dissolved
/// (connect(2) with AF_UNSPEC) while in progress, then the socket's error read with
/// getsockopt(SO_ERROR), as an event loop reads a connect's outcome.
const DISSOLVED_CONNECT: &str = r#"
import ctypes, socket, time
s = socket.socket()
s.setblocking(False)
try:
    s.connect(("10.77.0.9", 8080))
except BlockingIOError:
    pass
time.sleep(0.2)
unspec = ctypes.create_string_buffer(16)
assert ctypes.CDLL(None).connect(s.fileno(), unspec, 16) == 0
print(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
"#;

/// The kernel writes a failed connect's error before the socket leaves SYN_SENT, so an
/// application polling the socket can take the error before the sensor sees the state change;
/// the error the application was handed is then the one reported. A dissolved connect makes
/// that order certain: the kernel closes the socket first and sets ECONNRESET after. The
/// dissolving call itself is no connection and is not reported as one.
#[test]
fn an_error_the_application_took_first_is_the_one_reported() -> Result<()> {
    require_root();
    let _namespace = VethNamespace::create()?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let handed = python_as_nobody(DISSOLVED_CONNECT)?;
    ensure!(handed.trim() == "104", "python3 was handed {handed}");
    let events = events_until_python_exits(&mut sensor)?;
    let connects: Vec<&Value> =
        python_connects(&events, |n| n["remoteAddress"] == "10.77.0.9").collect();
    // The connect with AF_UNSPEC dissolved the socket's association: it connected nowhere.
    assert_eq!(connects.len(), 1, "{connects:?}");
    let reset = connects[0];
    assert_eq!(reset["network"]["remotePort"], 8080);
    assert_eq!(reset["network"]["error"], "ECONNRESET", "{reset}");
    assert_eq!(reset["network"]["localAddress"], "10.77.0.1");
    assert_eq!(reset["identity"]["user"], "nobody");
    sensor.stop()
}

/// Python's socket module: a non-blocking connect dissolved while in progress, then the same
/// socket connected elsewhere and closed before either could finish.
const RECONNECTED_SOCKET: &str = r#"
import ctypes, socket, time
s = socket.socket()
s.setblocking(False)
for peer in ("10.77.0.9", "10.77.0.10"):
    try:
        s.connect((peer, 8080))
    except BlockingIOError:
        pass
    time.sleep(0.2)
    if peer.endswith(".9"):
        assert ctypes.CDLL(None).connect(s.fileno(), ctypes.create_string_buffer(16), 16) == 0
s.close()
"#;

/// A socket whose first connect was dissolved and which then connected again: both connects
/// are reported (each kept by socket until its outcome; the second does not replace the first).
#[test]
fn both_connects_of_a_reused_socket_are_reported() -> Result<()> {
    require_root();
    let _namespace = VethNamespace::create()?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    python_as_nobody(RECONNECTED_SOCKET)?;
    let events = events_until_python_exits(&mut sensor)?;
    let mut peers: Vec<String> = python_connects(&events, |n| n["remotePort"] == 8080)
        .map(|e| {
            e["network"]["remoteAddress"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    peers.sort();
    assert_eq!(peers, ["10.77.0.10", "10.77.0.9"]);
    sensor.stop()
}
