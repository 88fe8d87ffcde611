//! A local output that stops taking events, as a paused terminal does.
use std::{
    io::Read,
    process::ChildStdout,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Result;
use serde_json::Value;

use crate::{load::ExecLoad, Entry, Marker, Sensor, TestConfig};

/// Whether `events` report events of `kind` (`EVENT_KIND_...`) not made because the sinks'
/// queue was full.
pub fn unmade(events: &[Value], kind: &str) -> bool {
    events.iter().any(|e| {
        e["loss"]["kind"] == kind
            && e["loss"]["reason"] == "LOSS_REASON_SINK_QUEUE_FULL"
            && crate::uint64(&e["loss"]["count"]) > 0
    })
}

/// Starts the daemon with `config` plus a JSON `stdout` sink into a pipe nobody reads, and a
/// queue of 1,024 events, then execs until the daemon says its sinks are stuck. The daemon
/// makes no event from then on until the reader resumes.
pub fn stuck_sensor(config: TestConfig) -> Result<(Sensor, PausableReader)> {
    let (mut sensor, output) = paused_output(config.set(&["output"], "queue_events", 1024))?;
    let marker = Marker::new("/bin/true")?;
    let load = ExecLoad::start(&marker)?;
    sensor.wait_for_log("the sinks have taken no events")?;
    drop(load);
    Ok((sensor, output))
}

/// Reads `output` again and waits until the daemon makes events again: a marker's exec, run
/// after the daemon says its sinks take events, is written. That log line comes once the
/// sinks have room for one batch; they may be full again while they write the backlog, and
/// an event that comes before they catch up is not made.
pub fn resume_and_wait_for_events(sensor: &mut Sensor, output: &PausableReader) -> Result<()> {
    output.resume();
    sensor.wait_for_log("the sinks are taking events again")?;
    let marker = Marker::new("/bin/true")?;
    sensor.wait_for("an exec made after the stall", |events| {
        // Run again until one is made: one run while the sinks are still behind is not.
        let _ = std::process::Command::new(&marker.path).status();
        crate::exec_of(events, marker.path_str()).map(drop)
    })
}

/// Starts the daemon with `config` plus a JSON `stdout` sink into a pipe whose reader is
/// paused: the daemon's writes block once the pipe is full.
pub fn paused_output(config: TestConfig) -> Result<(Sensor, PausableReader)> {
    let config = config.sink(Entry::new().set("type", "stdout").set("format", "json"));
    let (sensor, stdout) = Sensor::start_with_stdout_pipe(&config)?;
    let output = PausableReader::start(stdout);
    output.pause();
    Ok((sensor, output))
}

/// Reads the daemon's standard output, and stops reading while paused: the pipe fills and the
/// daemon's writes to it block, as on a paused terminal.
pub struct PausableReader {
    reading: Arc<AtomicBool>,
}

impl PausableReader {
    pub fn start(mut stdout: ChildStdout) -> Self {
        let reading = Arc::new(AtomicBool::new(true));
        let flag = reading.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0; 1 << 16];
            loop {
                if !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if matches!(stdout.read(&mut buffer), Ok(0) | Err(_)) {
                    break;
                }
            }
        });
        Self { reading }
    }

    pub fn pause(&self) {
        self.reading.store(false, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.reading.store(true, Ordering::SeqCst);
    }
}
