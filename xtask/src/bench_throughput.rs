//! `cargo xtask bench throughput`: the event rate the daemon sustains to a JSON-lines file and
//! to a protobuf file with nothing lost, found by raising the offered load (paced open loops
//! plus an exec storm, every open reported) step by step, with the daemon's CPU and peak memory
//! at each step. The loops are paced: on a machine whose open(2) is fast, even one loop at full
//! speed offers more than the daemon's share of two cores takes, and the limit goes unseen.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    bench::{
        account, process_cpu, range_text, spawn_loops, spread, status_kib, BenchDaemon, BenchFiles,
        Loops, OutputFormat,
    },
    bench_memory::{LoadMemory, MemorySampler},
    report::Report,
};

/// The offered file opens per second of each step, all loops together.
const OFFERED_OPENS: [u64; 3] = [100_000, 200_000, 300_000];

/// Open loops sharing each step's load: more than one, as on a busy host.
const OPEN_LOOPS: usize = 2;

pub struct Options {
    pub seconds: u64,
    pub rounds: usize,
    /// Exec-storm rate added to every step.
    pub exec_rate: u64,
}

struct Step {
    events_per_second: f64,
    lost: u64,
    daemon_cpu: f64,
    /// What the daemon held while the load ran, sampled.
    load: LoadMemory,
    /// The lifetime peak of the resident set (VmHWM, which includes start-up).
    peak_rss_mib: f64,
}

impl Step {
    /// Daemon CPU per event written, in µs.
    fn us_per_event(&self) -> f64 {
        self.daemon_cpu * 1e6 / self.events_per_second.max(1.0)
    }
}

pub fn throughput(options: &Options, report: &mut Report) -> Result<()> {
    let fixture = BenchFiles::new("throughput")?;
    report.line("");
    report.line(format!(
        "throughput: every open reported (no deduplication) to a JSON-lines file (the embedded \
         default's format) and to a protobuf file, N opens/s offered by {OPEN_LOOPS} paced open \
         loops plus {} execs/s, {} s per step; median of {} rounds (min..max), the two sinks' \
         rounds interleaved",
        options.exec_rate, options.seconds, options.rounds
    ));
    report.line(format!(
        "(cargo xtask bench throughput --seconds {} --rounds {})",
        options.seconds, options.rounds
    ));
    report.line(
        "RSS counts the 8 MiB ring buffer twice (the kernel maps its pages twice in a row and \
         fills both mappings at mmap); \"ring once\" counts it once",
    );
    report.line(format!(
        "{:<9} {:<15} {:>26} {:>8} {:>14} {:>14} {:>18} {:>18} {:>18} {:>18}",
        "sink",
        "opens/s offered",
        "events/s written",
        "lost",
        "daemon CPU %",
        "µs/event",
        "RSS (load) MiB",
        "ring once (load)",
        "peak RSS MiB",
        "private (load) MiB"
    ));
    let formats = [OutputFormat::Json, OutputFormat::Protobuf];
    let mut best_lossless = [0.0f64; 2];
    for offered in OFFERED_OPENS {
        let mut steps: [Vec<Step>; 2] = Default::default();
        for round in 0..options.rounds {
            for (format, steps) in formats.iter().zip(&mut steps) {
                eprintln!(
                    "xtask: bench throughput: {offered} opens/s, round {}: {} sink",
                    round + 1,
                    format.name(),
                );
                steps.push(step(&fixture, *format, offered, options)?);
            }
        }
        for ((format, steps), best) in formats.iter().zip(&steps).zip(&mut best_lossless) {
            if let Some(lossless_rate) = print_row(report, *format, offered, steps) {
                *best = best.max(lossless_rate);
            }
        }
    }
    for (format, best) in formats.iter().zip(best_lossless) {
        report.line(format!(
            "{}: highest rate with nothing lost: {best:.0} events/s (this machine has {} cores \
             shared by the load generators and the daemon)",
            format.name(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
    }
    Ok(())
}

/// One row of the table: the medians and ranges of one sink's rounds at one load; the median
/// rate when no round lost anything.
fn print_row(
    report: &mut Report,
    format: OutputFormat,
    offered: u64,
    steps: &[Step],
) -> Option<f64> {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rate = spread(steps.iter().map(|s| s.events_per_second).collect());
    let lost = steps.iter().map(|s| s.lost).max().unwrap_or(0);
    let cpu = spread(steps.iter().map(|s| s.daemon_cpu * 100.0).collect());
    let load_rss = spread(steps.iter().map(|s| mib(s.load.rss)).collect());
    let ring_once = spread(steps.iter().map(|s| mib(s.load.rss_ring_once)).collect());
    let rss = spread(steps.iter().map(|s| s.peak_rss_mib).collect());
    let per_event = spread(steps.iter().map(Step::us_per_event).collect());
    let private = spread(steps.iter().map(|s| mib(s.load.private)).collect());
    report.line(format!(
        "{:<9} {:<15} {:>26} {:>8} {:>14} {:>14} {:>18} {:>18} {:>18} {:>18}",
        format.name(),
        offered,
        range_text(rate, 0),
        lost,
        range_text(cpu, 0),
        range_text(per_event, 2),
        range_text(load_rss, 1),
        range_text(ring_once, 1),
        range_text(rss, 1),
        range_text(private, 1),
    ));
    (lost == 0).then_some(rate.1)
}

fn step(
    fixture: &BenchFiles,
    format: OutputFormat,
    offered: u64,
    options: &Options,
) -> Result<Step> {
    let BenchFiles {
        custos,
        work,
        file,
        marker,
    } = fixture;
    let daemon = BenchDaemon::with_file_sink(
        custos,
        work.path(),
        "[file]\ndedup_window_ms = 0\n[metrics]\nlisten = \"\"\n",
        format,
    )?;
    let cpu_before = process_cpu(daemon.pid())?;
    let start = Instant::now();
    let exec_storm = Command::new(std::env::current_exe()?)
        .args([
            "exec-loop",
            "--rate",
            &options.exec_rate.to_string(),
            "--seconds",
            &options.seconds.to_string(),
        ])
        .arg(marker)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .spawn()?;
    let sampler = MemorySampler::start(daemon.pid(), Duration::from_millis(50));
    let loops = Loops {
        seconds: options.seconds,
        count: OPEN_LOOPS,
        rate: Some(offered / OPEN_LOOPS as u64),
    };
    let runs = spawn_loops(file, &loops)?;
    let pids: Vec<u32> = runs.iter().map(|(pid, _)| *pid).collect();
    let mut opens = 0;
    for (_, child) in runs {
        let out = child.wait_with_output()?;
        opens += String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let mut exec_storm = exec_storm;
    exec_storm.wait()?;
    let elapsed = start.elapsed();
    std::thread::sleep(crate::bench::DRAINED_AFTER);
    let daemon_cpu = process_cpu(daemon.pid())?.saturating_sub(cpu_before);
    let load = sampler.finish();
    let peak_rss_mib = status_kib(daemon.pid(), "VmHWM:") as f64 / 1024.0;
    let output = daemon.output.clone();
    daemon.stop()?;
    let (accounted, reported_lost, written) = account(&output, format, file, &pids)?;
    Ok(Step {
        events_per_second: written as f64 / elapsed.as_secs_f64(),
        lost: opens.saturating_sub(accounted).max(reported_lost),
        daemon_cpu: daemon_cpu.as_secs_f64() / elapsed.as_secs_f64(),
        load,
        peak_rss_mib,
    })
}
