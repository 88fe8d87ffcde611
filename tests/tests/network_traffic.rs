//! What connections carry and where they go, caused by real programs: key logins over Debian's
//! sshd send data with Debian's python3 to a server in a network namespace the test makes (a
//! veth pair, so the peer is not a loopback address); Unix-socket connects as nobody; UDP;
//! address rules and deduplication applied in the kernel.
use std::{
    net::TcpStream,
    os::unix::{fs::PermissionsExt, net::UnixListener},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    free_port,
    full_ring::RingFiller,
    logins::{ensure_login_user, SshServer},
    net::{network, VethNamespace},
    of_kind, require_root, shared_root, uint64, wait_listening, Entry, Sensor, TestConfig,
    PATIENCE,
};
use serde_json::Value;

const SENDER: &str = "custos-egress-big";
const SMALL_SENDER: &str = "custos-egress-small";
const MIB: u64 = 1024 * 1024;
/// Where the namespace's end of the veth pair is.
const PEER: &str = "10.77.0.2";

/// Accepts connections one at a time and reads each to its end.
const SINK_SERVER: &str = r#"
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    conn, _ = server.accept()
    while conn.recv(1 << 20):
        pass
    conn.close()
"#;

/// A python3 sink server inside the namespace, stopped at drop.
struct SinkServer {
    child: Child,
    port: u16,
}

impl SinkServer {
    fn start(namespace: &VethNamespace) -> Result<Self> {
        let port = free_port()?;
        let child = namespace
            .command("/usr/bin/python3")
            .args(["-c", SINK_SERVER, PEER, &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the sink server")?;
        let server = Self { child, port };
        wait_listening(&format!("{PEER}:{port}"), PATIENCE)?;
        Ok(server)
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A python3 one-liner sending `bytes` to the sink, then waiting for the server to finish.
fn send_command(port: u16, bytes: u64) -> String {
    format!(
        "/usr/bin/python3 -c 'import socket; s = socket.create_connection((\"{PEER}\", {port})); \
         s.sendall(b\"x\" * {bytes}); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()'"
    )
}

/// The events of `operation` by a process of `login_user` to the sink's port.
fn by_login<'a>(
    events: &'a [Value],
    operation: &str,
    login_user: &'a str,
    port: u16,
) -> impl Iterator<Item = &'a Value> + 'a {
    network(events, operation, move |n| {
        n["remotePort"] == u64::from(port)
    })
    .filter(move |e| e["identity"]["loginUser"] == login_user)
}

fn egress_alerts<'a>(events: &'a [Value], login_user: &'a str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["alert"]["reason"] == "ALERT_REASON_BULK_EGRESS")
        .filter(|e| e["identity"]["loginUser"] == login_user)
        .collect()
}

/// 10 MiB over one connection: its close event says so within 1%, under the identity of the
/// login that sent it, and the bulk-egress rule fires for that person and not for one who
/// sent 3 MiB, 2 MiB of it by a child process on a socket its shell opened (reported as a
/// shared send under the child's own identity).
#[test]
fn bytes_sent_are_on_the_close_and_bulk_egress_alerts_per_person() -> Result<()> {
    require_root();
    for user in [SENDER, SMALL_SENDER] {
        ensure_login_user(user)?;
    }
    let namespace = VethNamespace::create()?;
    let sink = SinkServer::start(&namespace)?;
    let ssh = SshServer::start(&[SENDER, SMALL_SENDER])?;
    let rule = Entry::new()
        .set("id", "egress")
        .set("egress_bytes", (5 * MIB) as i64)
        .set("egress_minutes", 10)
        .set("internal_networks", vec!["192.168.0.0/16"]);
    let mut sensor = Sensor::start(&TestConfig::new().alert_rule(rule))?;
    ssh.run(SMALL_SENDER, &send_command(sink.port, MIB))?;
    ssh.run(SENDER, &send_command(sink.port, 10 * MIB))?;
    // bash connects, head (its child) sends on the inherited socket.
    let inherited = format!(
        "bash -c 'exec 3<>/dev/tcp/{PEER}/{}; head -c {} /dev/zero >&3; exec 3>&-'",
        sink.port,
        2 * MIB
    );
    ssh.run(SMALL_SENDER, &inherited)?;

    let port = sink.port;
    let (close, alert) = sensor.wait_for("the big close and its alert", |events| {
        let close = by_login(events, "CLOSE", SENDER, port).next()?;
        let alert = egress_alerts(events, SENDER).first().copied()?;
        Some((close.clone(), alert.clone()))
    })?;
    let sent = uint64(&close["network"]["bytesSent"]);
    ensure!(
        (10 * MIB..=10 * MIB + MIB / 10).contains(&sent),
        "10 MiB sent, the close says {sent}: {close}"
    );
    assert_eq!(close["identity"]["user"], SENDER);
    assert_eq!(close["network"]["remoteAddress"], PEER);
    assert_eq!(close["network"]["syscall"], "connect");
    assert!(uint64(&close["network"]["durationNs"]) > 0, "{close}");

    let events = sensor.wait_for("the small sender's closes", |events| {
        let closes = by_login(events, "CLOSE", SMALL_SENDER, port).count();
        (closes == 2).then(|| events.to_vec())
    })?;
    assert!(
        egress_alerts(&events, SMALL_SENDER).is_empty(),
        "3 MiB is under the threshold"
    );
    check_shared_send(&events, port)?;
    assert_eq!(
        egress_alerts(&events, SENDER).len(),
        1,
        "one alert a window"
    );
    let destination = format!("{PEER}:{port}");
    assert_eq!(alert["alert"]["destinations"][0], destination.as_str());
    assert!(uint64(&alert["alert"]["bytes"]) >= 10 * MIB);

    check_both_ends(&events, port)?;
    sensor.stop()
}

/// head's send on the connection bash opened, under head, and bash's close with all of it.
fn check_shared_send(events: &[Value], port: u16) -> Result<()> {
    let shared = by_login(events, "SHARED_SEND", SMALL_SENDER, port)
        .next()
        .context("head's send on bash's connection")?;
    assert_eq!(shared["process"]["binary"], "/usr/bin/head", "{shared}");
    let bash_close = by_login(events, "CLOSE", SMALL_SENDER, port)
        .find(|e| e["process"]["binary"] == "/usr/bin/bash")
        .context("the close of bash's connection")?;
    assert_eq!(uint64(&bash_close["network"]["bytesSent"]), 2 * MIB);
    assert_eq!(
        shared["network"]["localPort"], bash_close["network"]["localPort"],
        "the same connection"
    );
    Ok(())
}

/// The sender's connect under its login, and the server's accept of it under root.
fn check_both_ends(events: &[Value], port: u16) -> Result<()> {
    let connect = by_login(events, "CONNECT", SENDER, port)
        .next()
        .context("the sender's connect")?;
    assert_eq!(connect["identity"]["user"], SENDER);
    assert_eq!(connect["network"]["localAddress"], "10.77.0.1");
    let client_port = connect["network"]["localPort"].clone();
    let accept = network(events, "ACCEPT", |n| n["remotePort"] == client_port)
        .next()
        .context("the server's accept")?;
    assert_eq!(accept["identity"]["user"], "root");
    assert_eq!(accept["network"]["localAddress"], PEER);
    assert_eq!(accept["network"]["remoteAddress"], "10.77.0.1");
    Ok(())
}

/// Connects as nobody to two Unix sockets: one anyone may use, by a path relative to the
/// client's directory, and one only root may (the connect is refused with EACCES). Both name
/// the socket; the successful one by the path the kernel connected it to.
#[test]
fn unix_socket_connects_name_their_path_and_a_refusal() -> Result<()> {
    require_root();
    let dir = tempfile::Builder::new().prefix("custos-unix-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let open = dir.path().join("open.sock");
    let closed = dir.path().join("root-only.sock");
    let _open_listener = UnixListener::bind(&open)?;
    let _closed_listener = UnixListener::bind(&closed)?;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666))?;
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o600))?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let script = "import socket, sys\n\
                  for path in sys.argv[1:]:\n    \
                      s = socket.socket(socket.AF_UNIX)\n    \
                      try:\n        s.connect(path)\n    \
                      except PermissionError:\n        pass\n";
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg("open.sock")
        .arg(&closed)
        .current_dir(dir.path())
        .status()?;
    ensure!(status.success(), "the Unix client failed");
    let (open_path, closed_path) = (open.to_str().unwrap(), closed.to_str().unwrap());
    let (allowed, refused) = sensor.wait_for("both Unix connects", |events| {
        let to = |path: &str| {
            network(events, "CONNECT", |n| n["unixPath"] == path)
                .next()
                .cloned()
        };
        Some((to(open_path)?, to(closed_path)?))
    })?;
    for event in [&allowed, &refused] {
        assert_eq!(event["identity"]["user"], "nobody");
        assert_eq!(event["network"]["family"], "unix", "{event}");
        assert_eq!(event["network"]["remoteAddress"], "");
    }
    assert!(allowed["network"]["errno"].is_null(), "{allowed}");
    assert_eq!(refused["network"]["error"], "EACCES", "{refused}");
    check_abstract_names(&sensor)?;
    sensor.stop()
}

/// Abstract names (no file; how D-Bus and X11 often listen): one connected, one refused.
fn check_abstract_names(sensor: &Sensor) -> Result<()> {
    let name = format!("custos-test-{}", std::process::id());
    let script = "import socket, sys\n\
                  server = socket.socket(socket.AF_UNIX)\n\
                  server.bind('\\0' + sys.argv[1])\n\
                  server.listen()\n\
                  socket.socket(socket.AF_UNIX).connect('\\0' + sys.argv[1])\n\
                  try:\n    socket.socket(socket.AF_UNIX).connect('\\0' + sys.argv[1] + '-none')\n\
                  except ConnectionRefusedError:\n    pass\n";
    let status = Command::new("/usr/bin/python3")
        .args(["-c", script, &name])
        .status()?;
    ensure!(status.success(), "the abstract-name client failed");
    let (found, missing) = (format!("@{name}"), format!("@{name}-none"));
    let (connected, refused) = sensor.wait_for("both abstract connects", |events| {
        let to = |path: &str| {
            network(events, "CONNECT", |n| n["unixPath"] == path)
                .next()
                .cloned()
        };
        Some((to(&found)?, to(&missing)?))
    })?;
    assert!(connected["network"]["errno"].is_null(), "{connected}");
    assert_eq!(refused["network"]["error"], "ECONNREFUSED", "{refused}");
    Ok(())
}

/// A UDP socket's bind is reported like a listen, and a UDP connect like a TCP one; a TCP
/// socket's bind is left to its listen.
#[test]
fn udp_binds_and_connects_are_reported() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start(&TestConfig::new().network_loopback(true))?;
    let port = free_port()?;
    let script = "import socket, sys\n\
                  port = int(sys.argv[1])\n\
                  server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  server.bind(('127.0.0.1', port))\n\
                  client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  client.connect(('127.0.0.1', port))\n\
                  client.send(b'x')\n\
                  tcp = socket.socket()\n\
                  tcp.bind(('127.0.0.1', port))\n";
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script, &port.to_string()])
        .status()?;
    ensure!(status.success(), "the UDP client failed");
    let port = u64::from(port);
    let (bind, connect) = sensor.wait_for("the UDP bind and connect", |events| {
        let bind = network(events, "BIND", move |n| n["localPort"] == port).next()?;
        let connect = network(events, "CONNECT", move |n| n["remotePort"] == port).next()?;
        Some((bind.clone(), connect.clone()))
    })?;
    assert_eq!(bind["network"]["protocol"], "udp", "{bind}");
    assert_eq!(bind["network"]["localAddress"], "127.0.0.1");
    assert_eq!(bind["identity"]["user"], "nobody");
    assert_eq!(connect["network"]["protocol"], "udp", "{connect}");
    let events = sensor.events()?;
    assert_eq!(
        network(&events, "BIND", move |n| n["localPort"] == port).count(),
        1,
        "the TCP bind is not reported"
    );
    sensor.stop()
}

/// An excluded network is dropped in the kernel while other peers are reported; repeated
/// identical connects by one process are one event and a summary with the count, and every
/// connection they opened is still reported when it ends.
#[test]
fn excluded_networks_are_dropped_and_repeats_are_counted() -> Result<()> {
    require_root();
    let _namespace = VethNamespace::create()?;
    let config = TestConfig::new()
        .network_loopback(true)
        .set(&["network"], "exclude_addresses", vec!["10.77.0.0/24"])
        .set(&["network"], "dedup_window_ms", 1000);
    let mut sensor = Sensor::start(&config)?;
    let closed = free_port()?;
    let script = "import socket, sys\n\
                  for host in sys.argv[2:]:\n    \
                      for _ in range(20):\n        \
                          try:\n            socket.create_connection((host, int(sys.argv[1])))\n        \
                          except ConnectionRefusedError:\n            pass\n\
                  server = socket.create_server(('127.0.0.1', 0))\n\
                  for _ in range(5):\n    \
                      client = socket.create_connection(server.getsockname())\n    \
                      accepted, _ = server.accept()\n    \
                      client.close()\n    \
                      accepted.close()\n\
                  print(server.getsockname()[1])\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, &closed.to_string(), PEER, "127.0.0.1"])
        .output()?;
    ensure!(out.status.success(), "the client failed");
    let listening: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let closed = u64::from(closed);
    let summary = sensor.wait_for("the repeat summary", |events| {
        network(events, "CONNECT", move |n| {
            n["remotePort"] == closed && n["repeatSummary"] == true
        })
        .next()
        .cloned()
    })?;
    assert_eq!(uint64(&summary["network"]["repeats"]), 19, "{summary}");
    assert_eq!(summary["network"]["error"], "ECONNREFUSED");
    let events = sensor.wait_for("five connection ends", |events| {
        let ends = network(events, "CLOSE", move |n| {
            n["remotePort"] == listening && n["syscall"] == "connect"
        });
        (ends.count() == 5).then(|| events.to_vec())
    })?;
    let to_port: Vec<&Value> = network(&events, "CONNECT", move |n| {
        n["remotePort"] == closed && n["repeatSummary"] == false
    })
    .collect();
    assert_eq!(to_port.len(), 1, "one event for 20 identical connects");
    assert_eq!(to_port[0]["network"]["remoteAddress"], "127.0.0.1");
    let connects = network(&events, "CONNECT", move |n| {
        n["remotePort"] == listening && n["repeatSummary"] == false
    });
    assert_eq!(
        connects.count(),
        1,
        "the successful connects were repeats too"
    );
    sensor.stop()
}

/// A connect whose record the full ring buffer refused opens no deduplication window: after the
/// daemon drained the ring, the same process's identical refused connects are each reported,
/// as an event or in a repeat summary, none folded into the lost record.
#[test]
fn a_connect_the_full_ring_refused_leaves_its_repeats_reported() -> Result<()> {
    require_root();
    const AFTER: u64 = 5;
    let (_dir, root) = shared_root()?;
    let filler = RingFiller::create(&root)?;
    let config =
        filler
            .config()
            .network_loopback(true)
            .set(&["network"], "dedup_window_ms", 60_000);
    let mut sensor = Sensor::start(&config)?;
    let closed = free_port()?;
    let refused_connect = || {
        let refused = TcpStream::connect(("127.0.0.1", closed));
        ensure!(refused.is_err(), "port {closed} accepted a connection");
        Ok(())
    };
    filler.refuse(&sensor, refused_connect)?;
    for _ in 0..AFTER {
        refused_connect()?;
    }
    sensor.stop()?;
    let events = sensor.events()?;
    filler.was_full(&events)?;
    let (pid, port) = (std::process::id(), u64::from(closed));
    let connects: Vec<&Value> = network(&events, "CONNECT", move |n| n["remotePort"] == port)
        .filter(|e| e["process"]["pid"] == pid)
        .collect();
    let reported: u64 = connects
        .iter()
        .map(|e| {
            if e["network"]["repeatSummary"] == true {
                uint64(&e["network"]["repeats"])
            } else {
                1
            }
        })
        .sum();
    assert_eq!(
        reported, AFTER,
        "each connect after the drain is an event or counted in a summary: {connects:#?}"
    );
    Ok(())
}

/// Runs python3 with `args` (`-c` first) and reads the first line it prints while the ring is
/// full ([`RingFiller::refuse`]); then closes its standard input and waits for it to succeed.
/// Its pid and that line.
fn python_across_a_full_ring(
    sensor: &Sensor,
    filler: &RingFiller,
    args: &[&str],
) -> Result<(u32, String)> {
    let mut client = Command::new("/usr/bin/python3")
        .arg("-c")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting python3")?;
    let mut line = String::new();
    let read = filler.refuse(sensor, || {
        let stdout = client.stdout.as_mut().context("python's stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        Ok(())
    });
    drop(client.stdin.take());
    let exited = client.wait()?;
    read?;
    ensure!(exited.success(), "python3 exited {exited}");
    Ok((client.id(), line))
}

/// A non-blocking connect to an address nobody answers for, left open until told to close:
/// its outcome (EHOSTUNREACH, after neighbour resolution gives up) comes while the socket is
/// kept, and is not read by the program.
const UNANSWERED_CONNECT: &str = r#"
import select, socket, sys
s = socket.socket()
s.setblocking(False)
try:
    s.connect((sys.argv[1], 8080))
except BlockingIOError:
    pass
select.select([], [s], [], 30)
print("decided", flush=True)
sys.stdin.readline()
s.close()
"#;

/// A connect whose outcome the full ring buffer refused is a counted loss, and only that: it
/// is not kept to be reported again, with no outcome, when its socket closes.
#[test]
fn a_connect_outcome_the_full_ring_refused_is_not_reported_later_without_it() -> Result<()> {
    require_root();
    let _namespace = VethNamespace::create()?;
    let (_dir, root) = shared_root()?;
    let filler = RingFiller::create(&root)?;
    let mut sensor = Sensor::start(&filler.config())?;
    let (pid, said) =
        python_across_a_full_ring(&sensor, &filler, &[UNANSWERED_CONNECT, "10.77.0.9"])?;
    ensure!(said.trim() == "decided", "python3 said {said:?}");
    let events = sensor.wait_for("python's exit", |events| {
        of_kind(events, "exit")
            .any(|e| e["process"]["pid"] == pid)
            .then(|| events.to_vec())
    })?;
    filler.was_full(&events)?;
    assert!(
        of_kind(&events, "loss").any(|e| e["loss"]["kind"] == "EVENT_KIND_NETWORK"),
        "the refused outcome is counted as a loss"
    );
    let late: Vec<&Value> = network(&events, "CONNECT", |n| n["remoteAddress"] == "10.77.0.9")
        .filter(|e| e["process"]["pid"] == pid)
        .collect();
    assert!(
        late.is_empty(),
        "the refused connect came back when its socket closed: {late:#?}"
    );
    sensor.stop()
}

/// A forked child sends on its parent's loopback connection, says so, and sends again once
/// told to (its standard input closes).
const SHARED_TWICE: &str = r#"
import os, socket, sys
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
accepted = server.accept()[0]
child = os.fork()
if child == 0:
    client.sendall(b"c")
    print(os.getpid(), server.getsockname()[1], flush=True)
    sys.stdin.readline()
    client.sendall(b"d")
    os._exit(0)
os.waitpid(child, 0)
client.close()
accepted.close()
"#;

/// Another process's send on a followed connection whose record the full ring refused is a
/// counted loss, and that process's next send is reported: the refusal does not mark it as
/// already reported.
#[test]
fn a_shared_send_the_full_ring_refused_leaves_the_next_one_reported() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    let filler = RingFiller::create(&root)?;
    let mut sensor = Sensor::start(&filler.config().network_loopback(true))?;
    let (_, printed) = python_across_a_full_ring(&sensor, &filler, &[SHARED_TWICE])?;
    let mut fields = printed.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(child)), Some(Ok(port))) = (fields.next(), fields.next()) else {
        anyhow::bail!("python3 printed {printed:?}");
    };
    let events = sensor.wait_for("the connection's end", |events| {
        let close = network(events, "CLOSE", move |n| n["remotePort"] == port).next();
        close.map(|_| events.to_vec())
    })?;
    filler.was_full(&events)?;
    let shared: Vec<&Value> = network(&events, "SHARED_SEND", move |n| n["remotePort"] == port)
        .filter(|e| e["process"]["pid"] == child)
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "the child's send after the drain: {shared:#?}"
    );
    sensor.stop()
}

/// With room to follow only two open connections, the ends of the others are not reported,
/// and a loss event says how many.
#[test]
fn a_full_connection_table_is_a_counted_loss() -> Result<()> {
    require_root();
    let config =
        TestConfig::new()
            .network_loopback(true)
            .set(&["network"], "max_open_connections", 2);
    let mut sensor = Sensor::start(&config)?;
    let script = "import socket\n\
                  server = socket.create_server(('127.0.0.1', 0))\n\
                  held = []\n\
                  for _ in range(4):\n    \
                      held.append(socket.create_connection(server.getsockname()))\n    \
                      held.append(server.accept()[0])\n\
                  for s in held:\n    \
                      s.close()\n\
                  print(server.getsockname()[1])\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .output()?;
    ensure!(out.status.success(), "the client failed");
    let port: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    // Four connects and four accepts opened eight connections; two were followed.
    let untracked = sensor.wait_for("loss events for six connections", |events| {
        let losses: Vec<&Value> = events
            .iter()
            .filter(|e| e["loss"]["reason"] == "LOSS_REASON_TRACKING_TABLE_FULL")
            .collect();
        let counted: u64 = losses.iter().map(|e| uint64(&e["loss"]["count"])).sum();
        (counted >= 6).then(|| (counted, losses[0]["loss"]["kind"].clone()))
    })?;
    assert_eq!(untracked.0, 6);
    assert_eq!(untracked.1, "EVENT_KIND_NETWORK");
    let events = sensor.events()?;
    let ends = network(&events, "CLOSE", |n| {
        n["remotePort"] == port || n["localPort"] == port
    })
    .count();
    assert_eq!(ends, 2, "two connections followed");
    sensor.stop()
}

/// With classic tracepoints only (`attach = "tracepoint"`, as on kernels without tp_btf), a
/// connection is still followed to its end with its bytes, and a forked child's send on it is
/// still reported under the child.
#[test]
fn classic_tracepoints_follow_connections_too() -> Result<()> {
    require_root();
    let config = TestConfig::new()
        .network_loopback(true)
        .attach("tracepoint");
    let mut sensor = Sensor::start(&config)?;
    let script = "import os, socket\n\
                  server = socket.create_server(('127.0.0.1', 0))\n\
                  client = socket.create_connection(server.getsockname())\n\
                  accepted = server.accept()[0]\n\
                  client.sendall(b'p' * 5000)\n\
                  child = os.fork()\n\
                  if child == 0:\n    \
                      client.sendall(b'c' * 3000)\n    \
                      os._exit(0)\n\
                  os.waitpid(child, 0)\n\
                  client.close()\n\
                  got = 0\n\
                  while got < 8000:\n    \
                      got += len(accepted.recv(65536))\n\
                  accepted.close()\n\
                  print(server.getsockname()[1], child)\n";
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .output()?;
    ensure!(out.status.success(), "the client failed");
    let printed = String::from_utf8_lossy(&out.stdout);
    let mut fields = printed.split_whitespace().map(|f| f.parse::<u64>());
    let (Some(Ok(port)), Some(Ok(child))) = (fields.next(), fields.next()) else {
        anyhow::bail!("the client printed {printed:?}");
    };
    let (close, shared) = sensor.wait_for("the end and the child's send", |events| {
        let to_port = |op| network(events, op, move |n| n["remotePort"] == port).next();
        Some((to_port("CLOSE")?.clone(), to_port("SHARED_SEND")?.clone()))
    })?;
    assert_eq!(uint64(&close["network"]["bytesSent"]), 8000, "{close}");
    assert_eq!(shared["process"]["pid"], child, "{shared}");
    let log = sensor.log.join("\n");
    assert!(
        log.contains("inet_sock_set_state=tracepoint"),
        "the classic tracepoint path: {log}"
    );
    sensor.stop()
}

/// Seconds a connection outlives the bash that made it: past the daemon's grace period for
/// exited processes (10 s) and its next sweep.
const OUTLIVES_GRACE_SECS: u64 = 13;

/// bash connects, leaves the socket to a child (sleep) and exits; the connection ends when
/// the child does, after the sensor forgot bash. Its end still names bash's pid, parent and
/// identity, and no program rather than the one bash's parent runs: the last program of a
/// process the table forgot is not known.
#[test]
fn a_connection_ending_after_its_process_was_forgotten_borrows_no_program() -> Result<()> {
    require_root();
    let namespace = VethNamespace::create()?;
    let sink = SinkServer::start(&namespace)?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let script = format!(
        "exec 3<>/dev/tcp/{PEER}/{}; sleep {OUTLIVES_GRACE_SECS} & exit 0",
        sink.port
    );
    let mut bash = Command::new("/usr/bin/bash")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()?;
    let bash_pid = bash.id();
    ensure!(bash.wait()?.success(), "bash failed");
    let port = u64::from(sink.port);
    let of_bash = |events: &[Value], operation| {
        network(events, operation, |n| n["remotePort"] == port)
            .find(|e| e["process"]["pid"] == bash_pid)
            .cloned()
    };
    let connect = sensor.wait_for("bash's connect", |events| of_bash(events, "CONNECT"))?;
    assert_eq!(connect["process"]["binary"], "/usr/bin/bash", "{connect}");
    let close = sensor.wait_for_within(
        custos_tests::patience() + Duration::from_secs(OUTLIVES_GRACE_SECS),
        "the end of bash's connection",
        |events| of_bash(events, "CLOSE"),
    )?;
    let process = &close["process"];
    assert_eq!(
        process["binary"], "",
        "not bash's parent's program: {close}"
    );
    assert_eq!(process["ppid"], std::process::id(), "{close}");
    assert_eq!(process["execId"], connect["process"]["execId"]);
    assert_eq!(close["identity"]["user"], "root");
    assert_eq!(
        close["network"]["localPort"],
        connect["network"]["localPort"]
    );
    sensor.stop()
}
