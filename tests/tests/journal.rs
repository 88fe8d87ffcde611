//! The packaged service's events in the journal: the default configuration writes them to
//! standard output, which systemd hands to journald, and journald must keep every line.
use std::{
    ops::ControlFlow,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    custos_bin, http_get,
    journal::{JournalUnit, Journald, LogRateLimit},
    metric_sample, of_kind, patience,
    poll::poll,
    require_root, seq, signal,
};
use serde_json::Value;

/// journald's own limit for the test: far below the events a run writes, whatever the disk's
/// free space multiplies the burst by (at most 12 times).
const JOURNAL_LIMIT: &str = "RateLimitIntervalSec=30s\nRateLimitBurst=1000\n";
/// Failed opens of distinct files per run, one event each.
const OPENS: usize = 30_000;

/// The embedded default's metrics endpoint.
const METRICS: &str = "127.0.0.1:9464";

/// What the journal kept of one run of the daemon on its embedded default (the configuration
/// the package installs) through [`OPENS`] failed opens.
struct JournalRun {
    /// File-open events the daemon wrote, and loss events (by its metrics, before it stopped).
    written: f64,
    losses: f64,
    /// The opens' events in the journal.
    kept: usize,
    /// Events missing between the first and the last the journal holds.
    seq_gaps: u64,
}

/// The daemon's count of `kind` events.
fn events_written(exposition: &str, kind: &str) -> f64 {
    metric_sample(
        exposition,
        &format!("custos_events_total{{kind=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

fn open_missing_files(dir: &Path) -> Result<()> {
    let status = Command::new("python3")
        .args([
            "-c",
            "import os, sys\n\
             for i in range(int(sys.argv[2])):\n    \
                 try: os.open(f'{sys.argv[1]}/missing-{i}', os.O_RDONLY)\n    \
                 except OSError: pass\n",
        ])
        .arg(dir)
        .arg(OPENS.to_string())
        .status()?;
    ensure!(status.success(), "the opener failed");
    Ok(())
}

/// The unit's lines once the journal has all the daemon wrote: journald reads the stream in
/// order, so the daemon's last log line ends it. Where journald dropped that line too, once
/// the journal stopped taking more for two seconds.
fn settled_lines(unit: &JournalUnit) -> Result<Vec<String>> {
    let (mut last_count, mut unchanged) = (None, 0);
    poll(patience(), Duration::from_secs(1), || {
        let lines = unit.lines()?;
        unchanged = match last_count == Some(lines.len()) {
            true => unchanged + 1,
            false => 0,
        };
        last_count = Some(lines.len());
        if lines.iter().any(|l| l.contains("sensor stopped")) || unchanged == 2 {
            return Ok(ControlFlow::Break(lines));
        }
        Ok(ControlFlow::Continue(format!(
            "the journal kept taking lines ({} so far)",
            lines.len()
        )))
    })
}

/// The daemon's metrics once it has emitted the events of all [`OPENS`] opens.
fn metrics_after_the_opens() -> Result<String> {
    let deadline = Instant::now() + patience();
    loop {
        let exposition = http_get(METRICS, "/metrics")?;
        if events_written(&exposition, "file_open") >= OPENS as f64 || Instant::now() > deadline {
            return Ok(exposition);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads the journal every 200 ms (each read runs journalctl) until the daemon's ready line is
/// in it; the daemon must not end meanwhile.
fn wait_until_ready(unit: &JournalUnit, daemon: &mut Child) -> Result<()> {
    poll(patience(), Duration::from_millis(200), || {
        if unit.lines()?.iter().any(|l| l.contains("sensor ready")) {
            return Ok(ControlFlow::Break(()));
        }
        ensure!(
            daemon.try_wait()?.is_none(),
            "the daemon ended before it was ready"
        );
        Ok(ControlFlow::Continue(
            "the daemon never logged that it is ready".into(),
        ))
    })
}

/// The events in `lines`, and how many are missing between the first and the last.
fn events_and_gaps(lines: &[String]) -> Result<(Vec<Value>, u64)> {
    let events: Vec<Value> = lines
        .iter()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).context("an event line"))
        .collect::<Result<_>>()?;
    let mut seqs: Vec<u64> = events.iter().map(seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let span = seqs.last().zip(seqs.first()).map_or(0, |(l, f)| l - f + 1);
    Ok((events, span - seqs.len() as u64))
}

fn run_into_the_journal(unit: &JournalUnit) -> Result<JournalRun> {
    let dir = tempfile::tempdir()?;
    let mut daemon = unit.spawn(&custos_bin(), &["run".as_ref()])?;
    wait_until_ready(unit, &mut daemon)?;
    open_missing_files(dir.path())?;
    let exposition = metrics_after_the_opens()?;
    signal(daemon.id(), "TERM")?;
    daemon.wait()?;
    let (events, seq_gaps) = events_and_gaps(&settled_lines(unit)?)?;
    let prefix = dir.path().to_string_lossy().into_owned();
    let in_dir = |e: &&Value| {
        e["fileOpen"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(&prefix))
    };
    Ok(JournalRun {
        written: events_written(&exposition, "file_open"),
        losses: events_written(&exposition, "loss"),
        kept: of_kind(&events, "fileOpen").filter(in_dir).count(),
        seq_gaps,
    })
}

#[test]
fn the_packaged_unit_keeps_journald_from_dropping_events() -> Result<()> {
    require_root();
    let Some(_journald) = Journald::start(JOURNAL_LIMIT)? else {
        eprintln!("skipped: a journald already runs, with this host's settings");
        return Ok(());
    };
    let unit_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/custos.service");
    let packaged = LogRateLimit::of_unit_file(&std::fs::read_to_string(unit_file)?)?;
    let run_id = std::process::id();

    // A unit that sets no limit of its own: journald drops what is over its limit, and the
    // daemon cannot tell.
    let default = JournalUnit::new(&format!("custos-journal-default-{run_id}.service"), None)?;
    let dropped = run_into_the_journal(&default)?;
    ensure!(
        dropped.written >= OPENS as f64 && dropped.losses == 0.0 && dropped.kept < OPENS,
        "journald should drop lines over its limit: the daemon wrote {} file opens' events \
         ({} loss events), the journal kept {} of the {OPENS} opens'",
        dropped.written,
        dropped.losses,
        dropped.kept
    );

    // The packaged unit's limit, exported as PID 1 exports it.
    let unit = JournalUnit::new(
        &format!("custos-journal-packaged-{run_id}.service"),
        Some(packaged),
    )?;
    let kept = run_into_the_journal(&unit)?;
    ensure!(
        kept.kept == OPENS && kept.seq_gaps == 0 && unit.suppressed()? == 0,
        "with the packaged unit ({packaged:?}) the journal kept {} of the {OPENS} opens' \
         events, {} events missing between its first and last",
        kept.kept,
        kept.seq_gaps
    );
    Ok(())
}
