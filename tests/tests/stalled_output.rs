//! An output that stops taking events: the daemon's memory stays flat however long it is
//! stuck, what the kernel could not hold is reported as lost once the output moves again, and
//! nothing the daemon had read is dropped.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{load::ExecLoad, require_root, Entry, Marker, Sensor, TestConfig};

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

/// Standard output is a pipe nobody reads while execs run flat out for 12 s (tens of
/// thousands of events, tens of MiB if they were all held), with room for 1,024 waiting
/// events: the daemon's resident set grows by less than 16 MiB, and it says, in its log and
/// its metrics, that the sinks are stuck. Once the pipe is read, the
/// exec events the kernel dropped meanwhile come as losses, events flow again, and every event
/// the daemon numbered is written, in order, with no gap.
#[test]
fn a_stuck_output_holds_the_daemons_memory_and_the_kernels_drops_are_reported() -> Result<()> {
    require_root();
    let metrics = format!("127.0.0.1:{}", custos_tests::free_port()?);
    let config = TestConfig::new()
        .file_sensor(false)
        .metrics_listen(&metrics)
        .set(&["output"], "queue_events", 1024)
        .sink(Entry::new().set("type", "stdout").set("format", "json"));
    let (mut sensor, mut stdout) = Sensor::start_with_stdout_pipe(&config)?;
    let marker = Marker::new("/bin/true")?;
    std::thread::sleep(Duration::from_secs(1));
    let before = resident_kib(sensor.pid())?;
    let load = ExecLoad::start(&marker)?;
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
    ensure!(
        queued.is_some_and(|queued| queued >= 1024.0),
        "the metrics show {queued:?} events waiting for the stuck sinks"
    );

    let reader = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    sensor.wait_for_log("the sinks are taking events again")?;
    let lost = sensor.wait_for("the kernel's drops of exec records", |events| {
        events
            .iter()
            .find(|e| {
                e["loss"]["kind"] == "EVENT_KIND_PROCESS_EXEC"
                    && e["loss"]["reason"] == "LOSS_REASON_KERNEL_BUFFER_FULL"
            })
            .map(|e| custos_tests::uint64(&e["loss"]["count"]))
    })?;
    ensure!(lost > 0, "a loss of no exec");
    custos_tests::run(marker.path_str(), &["after-the-stall"])?;
    sensor.wait_for("an exec after the stall", |events| {
        events
            .iter()
            .any(|e| e["kind"] == "exec" && e["process"]["args"][1] == "after-the-stall")
            .then_some(())
    })?;
    sensor.stop()?;
    reader.join().ok();
    let seqs: Vec<u64> = sensor.events()?.iter().map(custos_tests::seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    ensure!(
        seqs == expected,
        "events missing or out of order: {} events",
        seqs.len()
    );
    Ok(())
}
