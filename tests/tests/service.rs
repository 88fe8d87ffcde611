//! Running as a service: configuration checks and systemd's readiness protocol.
use std::{
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use custos_tests::{custos_bin, of_kind, require_root, Marker, Sensor, PATIENCE};

fn check_config(text: &str) -> Result<(bool, String, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("custos.toml");
    std::fs::write(&path, text)?;
    let out = Command::new(custos_bin())
        .arg("check-config")
        .arg(&path)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

#[test]
fn check_config_accepts_the_default_and_names_bad_keys_and_values() -> Result<()> {
    let default = Command::new(custos_bin()).arg("default-config").output()?;
    let (ok, stdout, _) = check_config(&String::from_utf8(default.stdout)?)?;
    assert!(ok && stdout.ends_with(": ok\n"), "{stdout}");

    let (ok, _, stderr) =
        check_config("[sensors]\nprocess = true\nfiel = true\n[[sinks]]\ntype = \"stdout\"\n")?;
    assert!(!ok);
    assert!(
        stderr.contains("line 3, column 1") && stderr.contains("unknown field `fiel`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let (ok, _, stderr) =
        check_config("[file]\ndedup_window_ms = \"soon\"\n[[sinks]]\ntype = \"stdout\"\n")?;
    assert!(!ok);
    assert!(
        stderr.contains("line 2") && stderr.contains("dedup_window_ms")
            || stderr.contains("invalid type"),
        "{stderr}"
    );

    let (ok, _, stderr) =
        check_config("[kernel]\nring_buffer_bytes = 3000\n[[sinks]]\ntype = \"stdout\"\n")?;
    assert!(!ok);
    assert!(stderr.contains("power of two"), "{stderr}");
    Ok(())
}

fn receive(socket: &UnixDatagram, wanted: &str) -> Result<Vec<String>> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.lines().any(|l| l == wanted);
            seen.push(message);
            if done {
                return Ok(seen);
            }
        }
    }
    bail!("no {wanted} on NOTIFY_SOCKET; got {seen:?}")
}

#[test]
fn readiness_is_notified_once_the_hooks_are_attached() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("400000")),
        ],
    )?;
    receive(&socket, "READY=1")?;
    // Anything started after READY=1 is seen.
    Command::new(marker.path_str())
        .arg("after-ready")
        .status()?;
    let path = marker.path_str().to_owned();
    sensor.wait_for("the exec after READY", |events| {
        of_kind(events, "exec")
            .find(|e| e["process"]["binary"] == path.as_str())
            .cloned()
    })?;
    // WATCHDOG_USEC=400000: pinged every 200 ms while running.
    receive(&socket, "WATCHDOG=1")?;
    custos_tests::signal(sensor.pid(), "TERM")?;
    receive(&socket, "STOPPING=1")?;
    sensor.stop().ok();
    Ok(())
}

/// The unit's capability set is enough: with only CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE in
/// the bounding set the sensor attaches every hook and knows processes started before it (the
/// /proc scan reads their executables, which needs CAP_SYS_PTRACE).
#[test]
fn the_sensor_runs_with_the_units_minimal_capabilities() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let output = dir.path().join("events.json");
    let config = dir.path().join("custos.toml");
    std::fs::write(
        &config,
        format!(
            "[[sinks]]\ntype = \"file\"\npath = \"{}\"\n",
            output.display()
        ),
    )?;
    let mut daemon = Command::new("setpriv")
        .arg("--bounding-set=-all,+bpf,+perfmon,+sys_ptrace")
        .arg(custos_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let marker = Marker::new("/bin/true")?;
    let deadline = Instant::now() + PATIENCE;
    let exec = loop {
        Command::new(marker.path_str()).arg("few-caps").status()?;
        let events = custos_tests::read_json_lines(&output)?;
        if let Some(exec) = of_kind(&events, "exec")
            .find(|e| e["process"]["binary"] == marker.path_str())
            .cloned()
        {
            break exec;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            bail!("no exec event with the reduced capability set");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    custos_tests::signal(daemon.id(), "TERM")?;
    let out = daemon.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The parent (this test, started before the sensor) was found by the /proc scan.
    assert!(
        exec["exec"]["parent"]["binary"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{exec}"
    );
    Ok(())
}
