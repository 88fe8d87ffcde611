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
