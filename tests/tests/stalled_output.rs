//! An output that stops taking events: the daemon's memory stays bounded however long it is
//! stuck, it keeps following what happens, and what it did not make is reported as lost once
//! the output moves again. A stop it holds up still answers `custos status`.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    load::ExecLoad,
    require_root,
    stall::{paused_output, resume_and_wait_for_events, unmade, PausableReader},
    Entry, Marker, Sensor, TestConfig,
};

/// The daemon's resident set, in KiB.
fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in the daemon's status")
}

/// The largest resident set seen while `sensor` runs for `period`.
fn peak_resident_kib(sensor: &Sensor, period: Duration) -> Result<u64> {
    let until = Instant::now() + period;
    let mut peak = 0;
    while Instant::now() < until {
        peak = peak.max(resident_kib(sensor.pid())?);
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(peak)
}

/// Execs run flat out while standard output, a pipe, goes unread for 12 s (tens of thousands
/// of events, tens of MiB if they were all held), with room for 1,024 waiting events: the daemon's resident set grows by less than 16 MiB, and it says, in its log and
/// its metrics, that the sinks are stuck. A shell started while they are stuck has no exec
/// event, but the daemon read its record: once the pipe is read, the shell's child names it as
/// its parent. The events not made come as losses, and every event the daemon numbered is
/// written, in order, with no gap.
#[test]
fn a_stuck_output_holds_the_daemons_memory_and_what_it_did_not_make_is_reported() -> Result<()> {
    require_root();
    let metrics = format!("127.0.0.1:{}", custos_tests::free_port()?);
    let config = TestConfig::new()
        .file_sensor(false)
        .metrics_listen(&metrics)
        .set(&["output"], "queue_events", 1024)
        .sink(Entry::new().set("type", "stdout").set("format", "json"));
    let (mut sensor, stdout) = Sensor::start_with_stdout_pipe(&config)?;
    let reader = PausableReader::start(stdout);
    let marker = Marker::new("/bin/true")?;
    // The load runs for the grace period first, so that the process table (exited processes
    // stay 10 s) has grown to its steady size before the output stops.
    let load = ExecLoad::start(&marker)?;
    std::thread::sleep(Duration::from_secs(11));
    reader.pause();
    let before = resident_kib(sensor.pid())?;
    let peak = peak_resident_kib(&sensor, Duration::from_secs(12))?;
    drop(load);
    eprintln!("resident set before the stall {before} KiB, at most {peak} KiB during it");
    ensure!(
        peak.saturating_sub(before) < 16 << 10,
        "the daemon grew from {before} KiB to {peak} KiB while its output was stuck"
    );
    sensor.wait_for_log("the sinks have taken no events")?;
    let exposition = custos_tests::http_get(&metrics, "/metrics")?;
    let queued = custos_tests::metric_sample(&exposition, "custos_sink_queue_events");
    // Up to 1,024 in the queue, one batch of 256 held back and one being filled.
    ensure!(
        queued.is_some_and(|queued| queued > 0.0 && queued <= 1536.0),
        "the metrics show {queued:?} events waiting for the stuck sinks"
    );
    let shell = Marker::new("/bin/sh")?;
    let go = shell.dir.path().join("go");
    let mut started_in_the_stall = Command::new(&shell.path)
        .args([
            "-c",
            "while [ ! -e \"$1\" ]; do sleep 0.1; done; \"$0\" after-the-stall",
        ])
        .arg(&marker.path)
        .arg(&go)
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));

    resume_and_wait_for_events(&mut sensor, &reader)?;
    std::fs::write(&go, "")?;
    ensure!(started_in_the_stall.wait()?.success(), "the shell failed");
    let shell_path = shell.path_str();
    let parent = sensor.wait_for("the exec of the shell's child", |events| {
        events
            .iter()
            .find(|e| e["kind"] == "exec" && e["process"]["args"][1] == "after-the-stall")
            .map(|e| e["exec"]["parent"]["binary"].clone())
    })?;
    ensure!(parent == shell_path, "the child's parent ran {parent}");
    let events = sensor.events()?;
    ensure!(
        !events
            .iter()
            .any(|e| e["kind"] == "exec" && e["process"]["binary"] == shell_path),
        "the shell's exec was made while the sinks were stuck"
    );
    ensure!(
        unmade(&events, "EVENT_KIND_PROCESS_EXEC"),
        "no loss of exec events"
    );
    sensor.stop()?;
    ensure_gap_free(&sensor)
}

/// A stop that waits for a stuck output (here the sink thread blocked in a write, the queue
/// not full) still answers `custos status`, with its gauges; once the output moves the stop
/// ends cleanly and nothing accepted is missing.
#[test]
fn a_stop_held_up_by_a_stuck_output_still_answers_status() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("status.sock");
    let config = TestConfig::new().file_sensor(false).status_socket(&socket);
    let (mut sensor, output) = paused_output(config)?;
    // Far more than the pipe holds: the sink thread blocks in its write.
    let marker = Marker::new("/bin/true")?;
    let load = ExecLoad::start(&marker)?;
    std::thread::sleep(Duration::from_secs(2));
    drop(load);
    custos_tests::signal(sensor.pid(), "TERM")?;
    std::thread::sleep(Duration::from_secs(1));
    let status = status_within(&socket, Duration::from_secs(10))?;
    ensure!(
        status.contains("custos_process_rss_bytes"),
        "no gauges in the status: {status}"
    );
    output.resume();
    sensor.stop()?;
    ensure_gap_free(&sensor)
}

/// `custos status --prometheus` from `socket`, which must answer within `limit` (timeout(1)
/// stops it otherwise).
fn status_within(socket: &std::path::Path, limit: Duration) -> Result<String> {
    let out = Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .arg(custos_tests::custos_bin())
        .args(["status", "--prometheus", "--socket"])
        .arg(socket)
        .output()?;
    ensure!(
        out.status.code() != Some(124),
        "custos status got no answer within {limit:?}"
    );
    ensure!(out.status.success(), "custos status failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every event the daemon numbered was written, in order, with no gap.
fn ensure_gap_free(sensor: &Sensor) -> Result<()> {
    let seqs: Vec<u64> = sensor.events()?.iter().map(custos_tests::seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    ensure!(
        seqs == expected,
        "events missing or out of order: {} events",
        seqs.len()
    );
    Ok(())
}
