//! The suite `cargo xtask vm-test` runs inside a QEMU guest booted on a distribution kernel
//! (BPF LSM, fentry and kprobes available), as the guest's only workload.
//!
//! It speaks to the host through lines on its standard output (the guest's serial console):
//! - `VMTEST hook <hook> <path>`: the path the sensor chose for each hook;
//! - `VMTEST host <request>`: something only the host can do (`usb-attach`, `usb-detach`
//!   through QMP); the suite then waits for its effect;
//! - `VMTEST result <test> ok|FAIL <detail>`, and `VMTEST done <passed> <failed>` at the end.
//!
//! Each test starts from real activity and asserts on the events the real daemon wrote.
use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::unix::fs::OpenOptionsExt as _,
    os::unix::net::{UnixListener, UnixStream},
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use custos_tests::{exec_of, of_kind, opens_of, Entry, Sensor, TestConfig};
use serde_json::Value;

/// The serial number the host gives the USB drive it plugs in (see xtask's vm_test).
const USB_SERIAL: &str = "CUSTOS-USB-0001";
/// What QEMU's usb-storage device presents.
const QEMU_USB_VENDOR: &str = "46f4";
const QEMU_USB_PRODUCT: &str = "0001";

/// The hooks and the path each must take on a kernel with BPF LSM and trampolines.
const EXPECTED_PATHS: &[(&str, &str)] = &[
    ("sched_process_exec", "tp_btf"),
    ("sys_exit", "syscall_tracepoints"),
    ("file_open", "lsm"),
    ("disk_added", "fexit"),
    ("disk_removed", "fentry"),
    ("sb_set_mnt_opts", "lsm"),
    ("inet_sock_set_state", "tp_btf"),
];

fn main() {
    let (mut passed, mut failed) = (0, 0);
    let sensor = Sensor::start(
        &TestConfig::new().network_loopback(true).device_rule(
            Entry::new()
                .set("name", "no-test-stick")
                .set("action", "deny")
                .set("serial", USB_SERIAL),
        ),
    );
    let mut sensor = match sensor {
        Ok(sensor) => sensor,
        Err(err) => {
            report("sensor_starts", Err(err));
            println!("VMTEST done 0 1");
            std::process::exit(1);
        }
    };
    let hooks = hooks_of(&sensor.log);
    for (hook, path) in &hooks {
        println!("VMTEST hook {hook} {path}");
    }
    let tests: [(&str, &Test); 6] = [
        ("hook_paths", &|_| hook_paths(&hooks)),
        ("exec", &exec),
        ("file_open", &file_open),
        ("loop_device", &loop_device),
        ("usb_attach_deny_detach", &usb_attach_deny_detach),
        ("network_connection", &network_connection),
    ];
    for (name, test) in tests {
        if report(name, test(&sensor)) {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    if report(
        "sensor_stops_cleanly",
        sensor.stop().map(|()| String::new()),
    ) {
        passed += 1;
    } else {
        failed += 1;
    }
    println!("VMTEST done {passed} {failed}");
    std::process::exit(i32::from(failed > 0));
}

/// One test: what it checked, or why it failed.
type Test<'a> = dyn Fn(&Sensor) -> Result<String> + 'a;

fn report(name: &str, result: Result<String>) -> bool {
    let ok = result.is_ok();
    match result {
        Ok(detail) => println!("VMTEST result {name} ok {detail}"),
        // One line: the host reads results line by line.
        Err(err) => println!(
            "VMTEST result {name} FAIL {}",
            format!("{err:#}").replace('\n', " | ")
        ),
    }
    let _ = std::io::stdout().flush();
    ok
}

/// `hook=path` pairs from the daemon's "sensor ready" line.
fn hooks_of(log: &[String]) -> BTreeMap<String, String> {
    log.iter()
        .find(|line| line.contains("sensor ready"))
        .and_then(|line| line.split("hooks=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|list| {
            list.split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(hook, path)| (hook.to_owned(), path.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn hook_paths(hooks: &BTreeMap<String, String>) -> Result<String> {
    for (hook, expected) in EXPECTED_PATHS {
        let chosen = hooks.get(*hook).map(String::as_str).unwrap_or("missing");
        ensure!(
            chosen == *expected,
            "{hook} attached as {chosen}, expected {expected}"
        );
    }
    Ok(format!("{} hooks", hooks.len()))
}

fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/tmp/vmtest-{label}-{nanos}")
}

/// A program run from a path of its own gives an exec event naming it.
fn exec(sensor: &Sensor) -> Result<String> {
    // busybox runs the applet its file is named after: a copy named `true` in a fresh
    // directory is a program of its own.
    let dir = unique("exec");
    fs::create_dir(&dir)?;
    let marker = format!("{dir}/true");
    fs::copy("/bin/busybox", &marker)?;
    fs::set_permissions(&marker, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let status = Command::new(&marker).status()?;
    ensure!(status.success(), "{marker}: {status}");
    let exec = sensor.wait_for("exec of the marker", |events| exec_of(events, &marker))?;
    ensure!(
        exec["identity"]["uid"] == 0,
        "uid {}",
        exec["identity"]["uid"]
    );
    Ok(format!("pid {}", exec["process"]["pid"]))
}

/// A successful open is reported from LSM file_open (no descriptor yet), a failed one from
/// the syscall's exit.
fn file_open(sensor: &Sensor) -> Result<String> {
    let path = unique("file");
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?
        .write_all(b"x")?;
    let missing = format!("{path}-missing");
    ensure!(fs::File::open(&missing).is_err(), "{missing} exists");
    let opened = sensor.wait_for("the open", |events| {
        opens_of(events, &path).first().cloned().cloned()
    })?;
    ensure!(
        opened["fileOpen"]["access"]["write"] == true,
        "not a write open: {opened}"
    );
    ensure!(
        opened["fileOpen"]["fd"].is_null(),
        "fd reported before it exists: {opened}"
    );
    let failed = sensor.wait_for("the failed open", |events| {
        opens_of(events, &missing).first().cloned().cloned()
    })?;
    ensure!(failed["fileOpen"]["error"] == "ENOENT", "{failed}");
    Ok("write open from lsm/file_open, ENOENT from sys_exit".into())
}

/// A TCP connection on loopback, made and taken by this process: its connect and accept at
/// the syscalls' exit, its end with the bytes from the state-change hook.
fn network_connection(sensor: &Sensor) -> Result<String> {
    const SENT: usize = 256 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = u64::from(listener.local_addr()?.port());
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut conn, _) = listener.accept()?;
        let mut received = Vec::new();
        conn.read_to_end(&mut received)?;
        Ok(received.len())
    });
    let mut client = TcpStream::connect(("127.0.0.1", port as u16))?;
    client.write_all(&vec![b'x'; SENT])?;
    client.shutdown(Shutdown::Write)?;
    let received = server
        .join()
        .map_err(|_| anyhow!("the server thread panicked"))??;
    ensure!(received == SENT, "the server got {received} bytes");
    drop(client);
    let to_port = |e: &&Value| e["network"]["remotePort"] == port;
    let close = sensor.wait_for("the connection's end", |events| {
        of_kind(events, "network")
            .filter(to_port)
            .find(|e| e["network"]["operation"] == "NETWORK_OPERATION_CLOSE")
            .cloned()
    })?;
    let sent: u64 = close["network"]["bytesSent"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    ensure!(
        sent >= SENT as u64,
        "the close says {sent} bytes sent: {close}"
    );
    let events = sensor.events()?;
    let connect = of_kind(&events, "network")
        .filter(to_port)
        .any(|e| e["network"]["operation"] == "NETWORK_OPERATION_CONNECT");
    ensure!(connect, "no connect event to port {port}");
    let path = unique("unix.sock");
    let _listener = UnixListener::bind(&path)?;
    UnixStream::connect(&path)?;
    sensor.wait_for("the Unix connect", |events| {
        of_kind(events, "network")
            .find(|e| e["network"]["unixPath"] == path.as_str())
            .cloned()
    })?;
    Ok(format!(
        "connect, close with {sent} bytes sent, Unix connect"
    ))
}

/// A file attached to a loop device and detached again: media inserted and removed.
fn loop_device(sensor: &Sensor) -> Result<String> {
    let image = unique("loop.img");
    fs::File::create(&image)?.set_len(4 << 20)?;
    run("losetup", &["/dev/loop0", &image])?;
    let attached = block_event(sensor, "DEVICE_ACTION_MEDIA_INSERTED", |d| {
        d["name"] == "loop0"
    });
    let detached = run("losetup", &["-d", "/dev/loop0"]);
    let attached = attached?;
    detached?;
    ensure!(
        attached["blockDevice"]["device"]["backingFile"] == image.as_str(),
        "backing file: {attached}"
    );
    block_event(sensor, "DEVICE_ACTION_MEDIA_REMOVED", |d| {
        d["name"] == "loop0"
    })?;
    Ok(format!("loop0 <- {image}"))
}

/// The host plugs in a USB drive: the attach carries QEMU's ids and the serial, the deny rule
/// puts it on the kernel's deny list, its mount and the open of its node fail with EPERM and
/// are reported, and unplugging it is reported.
fn usb_attach_deny_detach(sensor: &Sensor) -> Result<String> {
    ask_host("usb-attach");
    let is_stick = |d: &Value| d["serial"] == USB_SERIAL;
    let added = block_event(sensor, "DEVICE_ACTION_ADDED", is_stick)?;
    let device = &added["blockDevice"]["device"];
    ensure!(device["bus"] == "usb", "bus: {device}");
    ensure!(
        device["usbVendorId"] == QEMU_USB_VENDOR,
        "vendor id: {device}"
    );
    ensure!(
        device["usbProductId"] == QEMU_USB_PRODUCT,
        "product id: {device}"
    );
    let name = device["name"].as_str().unwrap_or_default().to_owned();
    let decision = control_event(sensor, &name, "")?;
    ensure!(decision["method"] == "bpf-lsm", "{decision}");
    ensure!(decision["enforced"] == true, "{decision}");
    ensure!(
        decision["action"] == "DEVICE_CONTROL_ACTION_DENY",
        "{decision}"
    );

    let node = format!("/dev/{name}");
    fs::create_dir_all("/mnt/stick")?;
    let mount = Command::new("mount")
        .args(["-t", "ext4", &node, "/mnt/stick"])
        .output()?;
    ensure!(!mount.status.success(), "the denied drive mounted");
    let refused_mount = control_event(sensor, &name, "mount")?;
    ensure!(
        refused_mount["rule"]
            .as_str()
            .is_some_and(|r| r.contains("no-test-stick")),
        "{refused_mount}"
    );
    let open = fs::File::open(&node);
    ensure!(
        open.as_ref().err().and_then(|e| e.raw_os_error()) == Some(libc::EPERM),
        "opening {node}: {open:?}"
    );
    control_event(sensor, &name, "open")?;

    ask_host("usb-detach");
    block_event(sensor, "DEVICE_ACTION_REMOVED", |d| {
        d["name"] == name.as_str()
    })?;
    Ok(format!(
        "{name}: {} {} serial {USB_SERIAL}; mount refused ({})",
        device["vendor"],
        device["model"],
        String::from_utf8_lossy(&mount.stderr).trim()
    ))
}

fn ask_host(request: &str) {
    println!("VMTEST host {request}");
    let _ = std::io::stdout().flush();
}

fn block_event(sensor: &Sensor, action: &str, device: impl Fn(&Value) -> bool) -> Result<Value> {
    sensor.wait_for(action, |events| {
        of_kind(events, "blockDevice")
            .find(|e| e["blockDevice"]["action"] == action && device(&e["blockDevice"]["device"]))
            .cloned()
    })
}

/// The device-control event for `name`: the decision (`blocked` empty) or a refusal.
fn control_event(sensor: &Sensor, name: &str, blocked: &str) -> Result<Value> {
    let event = sensor.wait_for(
        &format!("device control on {name} ({blocked:?})"),
        |events| {
            of_kind(events, "deviceControl")
                .map(|e| &e["deviceControl"])
                .find(|c| {
                    c["device"]["name"] == name
                        && c["blockedOperation"].as_str().unwrap_or_default() == blocked
                })
                .cloned()
        },
    )?;
    Ok(event)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
