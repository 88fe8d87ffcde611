//! Whether rsyslogd or the syslog sink sets the pace in `bench sink`: rsyslogd's own counters
//! (impstats) for the messages the sink delivered, and a plain sender with no encoding at all
//! pushing the same number of frames of the same size into the same rsyslogd.
use std::{
    io::Write as _,
    net::{Shutdown, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{bench::process_cpu, report::Report};

/// The impstats line rsyslogd's configuration gets: its counters every second, as JSON, into
/// `stats`.
pub fn impstats_module(stats: &Path) -> String {
    format!(
        "module(load=\"impstats\" interval=\"1\" format=\"json\" log.syslog=\"off\" \
         log.file=\"{}\")\n",
        stats.display()
    )
}

/// The rsyslogd `bench sink` delivers to.
pub struct Rsyslog {
    /// Its TCP input, host:port.
    pub address: String,
    pub pid: u32,
    /// Where impstats writes its counters (see [`impstats_module`]).
    pub stats: PathBuf,
    /// The file its action writes every message to.
    pub log: PathBuf,
}

/// rsyslogd's counters as of its last report.
#[derive(Default, Debug)]
struct Counters {
    /// Messages its TCP input took.
    submitted: u64,
    /// Messages its file action wrote.
    processed: u64,
    /// The most messages its main queue held at once.
    queue_peak: u64,
    /// Times its main queue was full (the input then waits).
    queue_full: u64,
    /// Its user and system CPU time.
    cpu: Duration,
}

impl Counters {
    fn read(stats: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(stats)
            .with_context(|| format!("reading rsyslogd's counters in {}", stats.display()))?;
        let mut counters = Counters::default();
        for record in text.lines().filter_map(stats_record) {
            let number = |field: &str| record.get(field).and_then(Value::as_u64).unwrap_or(0);
            match record.get("origin").and_then(Value::as_str) {
                Some("imtcp") => counters.submitted = number("submitted"),
                Some("core.action") => counters.processed = number("processed"),
                Some("core.queue") => {
                    counters.queue_peak = number("maxqsize");
                    counters.queue_full = number("full");
                }
                Some("impstats") => {
                    counters.cpu = Duration::from_micros(number("utime") + number("stime"))
                }
                _ => {}
            }
        }
        Ok(counters)
    }
}

/// The JSON object of one impstats line (`<date>: { ... }`).
fn stats_record(line: &str) -> Option<Value> {
    serde_json::from_str(&line[line.find('{')?..]).ok()
}

/// Reports rsyslogd's own counters for what the sink sent so far, then how fast it takes the
/// same load from a plain sender. `log` is the file its action writes.
pub fn evidence(rsyslog: &Rsyslog, events: u64, report: &mut Report) -> Result<()> {
    let Rsyslog {
        address,
        pid,
        stats,
        log,
    } = rsyslog;
    // impstats reports once a second: wait for a report that has everything.
    std::thread::sleep(Duration::from_millis(2200));
    let sink = Counters::read(stats)?;
    let per_cpu_second = sink.processed as f64 / sink.cpu.as_secs_f64().max(1e-9);
    report.line(format!(
        "rsyslogd's own counters (impstats) after the syslog sink's rounds: its TCP input took \
         {}, its file action wrote {}, main queue peak {} (full {} times); rsyslogd used {:.2} s \
         of CPU, {per_cpu_second:.0} messages per CPU second",
        sink.submitted,
        sink.processed,
        sink.queue_peak,
        sink.queue_full,
        sink.cpu.as_secs_f64()
    ));
    if sink.processed == 0 {
        bail!(
            "rsyslogd wrote nothing from the syslog sink to {}",
            log.display()
        );
    }
    let frame = plain_frame((file_size(log)? / sink.processed) as usize);
    // Every plain frame is stored as the same line: its length tells when all are in.
    let stored_line = file_size(log)?;
    send_frames(address, &frame, 1)?;
    let line_length = wait_for_growth(log, stored_line, 1)? - stored_line;
    let before = file_size(log)?;
    let cpu_before = process_cpu(*pid)?;
    let start = Instant::now();
    let written = send_frames(address, &frame, events)?;
    let busy = process_cpu(*pid)?.saturating_sub(cpu_before);
    wait_for_growth(log, before, events * line_length)?;
    let stored = start.elapsed();
    report.line(format!(
        "the same rsyslogd from a plain sender ({events} prebuilt frames of {} bytes, no \
         encoding): {:.0}/s written to its socket, {:.0}/s in its file; rsyslogd at {:.0}% of a \
         core while it took them",
        frame.len(),
        events as f64 / written.as_secs_f64(),
        events as f64 / stored.as_secs_f64(),
        busy.as_secs_f64() * 100.0 / written.as_secs_f64()
    ));
    Ok(())
}

/// An octet-counted RFC 5424 frame whose stored line is about `line_length` bytes long.
fn plain_frame(line_length: usize) -> Vec<u8> {
    let header = "<134>1 2026-01-01T00:00:00.000000Z bench custos - - - ";
    let padding = "x".repeat(line_length.saturating_sub(40).max(1));
    let message = format!("{header}{{\"padding\":\"{padding}\"}}");
    format!("{} {message}", message.len()).into_bytes()
}

/// Writes `events` copies of `frame` to rsyslogd as fast as it takes them; the time it took.
fn send_frames(address: &str, frame: &[u8], events: u64) -> Result<Duration> {
    let mut stream = TcpStream::connect(address).context("connecting to rsyslogd")?;
    let burst: Vec<u8> = frame.repeat(256);
    let start = Instant::now();
    let mut sent = 0;
    while sent < events {
        let count = (events - sent).min(256);
        stream.write_all(&burst[..frame.len() * count as usize])?;
        sent += count;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(start.elapsed())
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// Waits until `log` has grown from `from` by at least `bytes`; its size then.
fn wait_for_growth(log: &Path, from: u64, bytes: u64) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let size = file_size(log)?;
        if size >= from + bytes {
            return Ok(size);
        }
        if Instant::now() > deadline {
            bail!(
                "rsyslogd stored {} of {bytes} bytes in {} in 5 minutes",
                size.saturating_sub(from),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
