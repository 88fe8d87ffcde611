//! Running as a service: configuration checks and systemd's readiness protocol.
use std::{ops::ControlFlow, os::unix::net::UnixDatagram, process::Command, time::Duration};

use anyhow::{ensure, Result};
use custos_tests::{
    custos, custos_bin, exec_of, http_get, load::SteadyForks, metric_sample as sample, of_kind,
    poll::poll, require_root, Entry, Marker, Sensor, TestConfig, PATIENCE,
};

/// `config` with a standard-output sink, as text.
fn with_stdout(config: TestConfig) -> String {
    config.sink(Entry::new().set("type", "stdout")).to_toml()
}

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

    let (ok, _, stderr) = check_config(&with_stdout(TestConfig::new().process_sensor(true).set(
        &["sensors"],
        "fiel",
        true,
    )))?;
    assert!(!ok);
    assert!(
        stderr.contains("line 2, column 1") && stderr.contains("unknown field `fiel`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let (ok, _, stderr) = check_config(&with_stdout(TestConfig::new().set(
        &["file"],
        "dedup_window_ms",
        "soon",
    )))?;
    assert!(!ok);
    assert!(
        stderr.contains("line 2") && stderr.contains("dedup_window_ms")
            || stderr.contains("invalid type"),
        "{stderr}"
    );

    let (ok, _, stderr) = check_config(&with_stdout(TestConfig::new().ring_buffer_bytes(3000)))?;
    assert!(!ok);
    assert!(stderr.contains("power of two"), "{stderr}");

    let (ok, _, stderr) = check_config(&with_stdout(TestConfig::new().set(
        &["output"],
        "batch_ms",
        5000,
    )))?;
    assert!(!ok);
    assert!(
        stderr.contains("output.batch_ms = 5000") && stderr.contains("at most 1000"),
        "{stderr}"
    );
    Ok(())
}

/// While records keep coming, events wait in the daemon for a batch of up to a second; stopping
/// the daemon writes what it holds. The marker runs and the daemon is stopped at once, within
/// its batch's second, so its events are held when the stop comes.
#[test]
fn events_held_for_a_batch_are_written_when_the_daemon_stops() -> Result<()> {
    require_root();
    let marker = Marker::new("/bin/true")?;
    let config = TestConfig::new()
        .set(&["output"], "batch_ms", 1000)
        .file_sensor(false)
        .set(&["sensors"], "network", false)
        .set(&["sensors"], "devices", false);
    let mut sensor = Sensor::start(&config)?;
    // The children's exit events (125 a second) fill no batch within its second.
    let busy = SteadyForks::start()?;
    let status = Command::new(marker.path_str()).status();
    let stopped = sensor.stop();
    drop(busy);
    assert!(status?.success());
    stopped?;
    let events = sensor.events()?;
    let exec = exec_of(&events, marker.path_str());
    assert!(exec.is_some(), "the marker's exec was not written at stop");
    let exec_id = exec.as_ref().map(|e| e["process"]["execId"].clone());
    let exited = of_kind(&events, "exit").any(|e| Some(e["process"]["execId"].clone()) == exec_id);
    assert!(exited, "the marker's exit was not written at stop");
    Ok(())
}

/// The messages on the notify socket up to one with the line `wanted`. The socket's read
/// timeout paces the checks.
fn receive(socket: &UnixDatagram, wanted: &str) -> Result<Vec<String>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    poll(PATIENCE, Duration::ZERO, || {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.lines().any(|l| l == wanted);
            seen.push(message);
            if done {
                return Ok(ControlFlow::Break(std::mem::take(&mut seen)));
            }
        }
        Ok(ControlFlow::Continue(format!(
            "no {wanted} on NOTIFY_SOCKET; got {seen:?}"
        )))
    })
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
        &TestConfig::new(),
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
    sensor.wait_for("the exec after READY", |events| exec_of(events, &path))?;
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
    let sink = Entry::file_sink(&output, "json");
    std::fs::write(&config, TestConfig::new().sink(sink).to_toml())?;
    let mut daemon = Command::new("setpriv")
        .arg("--bounding-set=-all,+bpf,+perfmon,+sys_ptrace")
        .arg(custos_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let marker = Marker::new("/bin/true")?;
    let exec = poll(PATIENCE, Duration::from_millis(200), || {
        Command::new(marker.path_str()).arg("few-caps").status()?;
        let events = custos_tests::read_json_lines(&output)?;
        let exec = of_kind(&events, "exec").find(|e| e["process"]["binary"] == marker.path_str());
        Ok(match exec {
            Some(exec) => ControlFlow::Break(exec.clone()),
            None => ControlFlow::Continue("no exec event with the reduced capability set".into()),
        })
    })
    .inspect_err(|_| {
        let _ = daemon.kill();
    })?;
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

/// One GET over HTTP/1.1, returning the body.
/// The metrics once the exec counter and the file sink agree and are both still (other
/// activity may interleave), with the eBPF statistics caught up.
fn settled_exposition(sensor: &Sensor, address: &str) -> Result<String> {
    poll(PATIENCE, Duration::from_millis(300), || {
        let before = http_get(address, "/metrics")?;
        let written = of_kind(&sensor.events()?, "exec").count() as f64;
        let after = http_get(address, "/metrics")?;
        let counted = sample(&before, "custos_events_total{kind=\"exec\"}");
        let runs = sample(
            &after,
            "custos_bpf_run_count{program=\"sched_process_exec_btf\"}",
        );
        if counted == Some(written)
            && counted == sample(&after, "custos_events_total{kind=\"exec\"}")
            && runs.unwrap_or(0.0) >= 5.0
        {
            return Ok(ControlFlow::Break(after));
        }
        Ok(ControlFlow::Continue(format!(
            "exec counter {counted:?} never matched the {written} exec events written"
        )))
    })
}

/// The gauges are read when scraped, not on a timer: execs just before a scrape are in its
/// eBPF statistics.
fn check_gauges_read_when_scraped(address: &str, marker: &Marker) -> Result<()> {
    let exec_runs = |exposition: &str| {
        sample(
            exposition,
            "custos_bpf_run_count{program=\"sched_process_exec_btf\"}",
        )
        .unwrap_or(0.0)
    };
    let before = exec_runs(&http_get(address, "/metrics")?);
    for _ in 0..3 {
        Command::new(marker.path_str()).status()?;
    }
    let after = exec_runs(&http_get(address, "/metrics")?);
    ensure!(
        after >= before + 3.0,
        "exec program runs {before} then {after} after three execs"
    );
    Ok(())
}

#[test]
fn the_metrics_endpoint_counts_what_was_emitted_and_status_shows_the_hooks() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let port = custos_tests::free_port()?;
    let address = format!("127.0.0.1:{port}");
    let socket = dir.path().join("status.sock");
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .file_sensor(false)
            .metrics_listen(&address)
            .status_socket(&socket),
    )?;
    let marker = Marker::new("/bin/true")?;
    for _ in 0..5 {
        Command::new(marker.path_str()).status()?;
    }
    let path = marker.path_str().to_owned();
    sensor.wait_for("five marker execs", |events| {
        (of_kind(events, "exec")
            .filter(|e| e["process"]["binary"] == path.as_str())
            .count()
            == 5)
            .then_some(())
    })?;
    let exposition = settled_exposition(&sensor, &address)?;
    assert!(sample(&exposition, "custos_events_total{kind=\"exec\"}").unwrap_or(0.0) >= 5.0);
    assert_eq!(
        sample(
            &exposition,
            "custos_hook{hook=\"sched_process_exec\",path=\"tp_btf\"}"
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &exposition,
            "custos_bpf_run_count{program=\"sched_process_exec_btf\"}"
        )
        .unwrap_or(0.0)
            >= 5.0
    );
    assert!(sample(&exposition, "custos_process_rss_bytes").unwrap_or(0.0) > 0.0);
    check_gauges_read_when_scraped(&address, &marker)?;
    let json_sink = format!(
        "custos_sink_events_total{{sink=\"file {}\"}}",
        sensor.json_path.display()
    );
    assert!(
        sample(&exposition, &json_sink).unwrap_or(0.0) >= 5.0,
        "{exposition}"
    );

    let status = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec!["status".as_ref(), "--socket".as_ref()];
        args.push(socket.as_ref());
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        custos(&args)
    };
    let prometheus = status(&["--prometheus"])?;
    assert!(
        prometheus.contains("custos_hook{hook=\"sched_process_exec\",path=\"tp_btf\"} 1"),
        "{prometheus}"
    );
    let summary = status(&[])?;
    assert!(summary.starts_with("custos "), "{summary}");
    assert!(
        summary
            .lines()
            .any(|l| l.contains("sched_process_exec") && l.ends_with("tp_btf")),
        "{summary}"
    );
    sensor.stop()?;
    Ok(())
}

/// With every sensor on, each hook that attaches says how many instructions the kernel's
/// verifier explored to accept its program (Linux 5.16 and later say), each count is under
/// half the verifier's budget of 1,000,000 (a kernel whose verifier explores more still takes
/// the program), and the daemon warns of none.
#[test]
fn every_program_is_accepted_well_within_the_verifiers_budget() -> Result<()> {
    require_root();
    let config = ["process", "file", "devices", "network"]
        .into_iter()
        .fold(TestConfig::new(), |config, sensor| {
            config.set(&["sensors"], sensor, true)
        });
    let mut sensor = Sensor::start(&config)?;
    sensor.stop()?;
    let attached: Vec<&String> = sensor
        .log
        .iter()
        .filter(|line| line.contains("hook attached") && !line.contains("path=unavailable"))
        .collect();
    ensure!(attached.len() >= 8, "hooks attached: {attached:#?}");
    for line in attached {
        let verified = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("verified="))
            .and_then(|count| count.parse::<u32>().ok());
        ensure!(
            verified.is_some_and(|count| count <= 500_000),
            "explored instructions not said or past half the budget: {line}"
        );
    }
    ensure!(
        !sensor
            .log
            .iter()
            .any(|line| line.contains("verifier explored")),
        "a warning about the verifier's budget: {:#?}",
        sensor.log
    );
    Ok(())
}
