//! `cargo xtask bench soak`: the daemon under sustained load at half the rate it keeps up
//! with, for minutes or hours, sampling its memory and CPU so that a leak shows as a slope.
//! The daemon writes a rotating protobuf file and a TCP sink through its spool, and the load
//! mixes file opens with process churn, so the process table, the spool and the rotation all
//! run the whole time.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{
    bench::{
        counting_collector, metric_sum, metrics_text, process_cpu, spawn_loops, start_daemon,
        status_kib, BenchFiles, Loops, METRICS,
    },
    report::Report,
    shell::run as sh,
};

pub struct Options {
    pub minutes: u64,
    /// Offered file opens per second; by default half the rate measured first.
    pub rate: Option<u64>,
    /// Seconds between samples; by default a thirtieth of the run, at least ten.
    pub sample_seconds: Option<u64>,
}

/// Execs per second beside the opens: process churn for the process table.
const EXEC_RATE: u64 = 100;
const CALIBRATION: Duration = Duration::from_secs(5);

struct Sample {
    minutes: f64,
    rss_mib: f64,
    private_mib: f64,
    cpu_percent: f64,
    events_per_second: f64,
    kernel_drops: f64,
    spool_mib: f64,
}

pub fn soak(options: &Options, report: &mut Report) -> Result<()> {
    let BenchFiles {
        custos,
        work,
        file,
        marker,
    } = BenchFiles::new("soak")?;
    let (collector, delivered) = counting_collector()?;
    let config = write_config(work.path(), &collector)?;

    let rate = match options.rate {
        Some(rate) => rate,
        None => {
            let kept = calibrate(&custos, &config, &file)?;
            eprintln!("xtask: bench soak: the daemon kept up with {kept:.0} events/s flat out");
            (kept / 2.0) as u64
        }
    };
    let seconds = options.minutes * 60;
    let every = options
        .sample_seconds
        .unwrap_or((seconds / 30).max(10))
        .max(1);
    report.line("");
    report.line(format!(
        "soak: {} min at {rate} file opens/s (unless --rate: half the rate the daemon kept up \
         with, less kernel drops, under one open loop flat out) plus {EXEC_RATE} execs/s; every open reported; sinks: a protobuf file \
         rotating at 64 MiB and TCP through the spool; a sample every {every} s",
        options.minutes
    ));
    report.line(format!(
        "(cargo xtask bench soak --minutes {} --rate {rate} --sample-seconds {every})",
        options.minutes
    ));
    let setup = Setup {
        custos: &custos,
        config: &config,
        file: &file,
        marker: &marker,
        rate,
        seconds,
        every,
    };
    let samples = run(&setup, report)?;
    summarize(&samples, delivered.load(Ordering::Relaxed), report);
    Ok(())
}

/// The daemon's configuration: every open reported, a rotating file and a spooled TCP sink.
fn write_config(work: &Path, collector: &str) -> Result<PathBuf> {
    let config = work.join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "[file]\ndedup_window_ms = 0\n[spool]\ndir = \"{spool}\"\n\
             [[sinks]]\ntype = \"file\"\npath = \"{events}\"\nformat = \"protobuf\"\n\
             max_bytes = {max}\nmax_files = 2\n\
             [[sinks]]\ntype = \"tcp\"\nname = \"soak\"\naddress = \"{collector}\"\n",
            spool = work.join("spool").display(),
            events = work.join("events.pb").display(),
            max = 64 << 20,
        ),
    )?;
    Ok(config)
}

/// Events per second the daemon wrote, less what the kernel dropped, with one open loop
/// running flat out.
fn calibrate(custos: &Path, config: &Path, file: &Path) -> Result<f64> {
    let daemon = start_daemon(custos, Some(config), Stdio::null())?;
    let before = metrics_text(METRICS)?;
    let start = Instant::now();
    for (_, child) in spawn_loops(file, &Loops::flat_out(CALIBRATION.as_secs(), 1))? {
        child.wait_with_output()?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = metrics_text(METRICS)?;
    stop(daemon)?;
    let delta = |name| metric_sum(&after, name) - metric_sum(&before, name);
    let kept = delta("custos_events_total") - delta("custos_kernel_drops_total");
    Ok(kept.max(0.0) / elapsed)
}

/// One soak run: the daemon, its load and how often it is sampled.
struct Setup<'a> {
    custos: &'a Path,
    config: &'a Path,
    file: &'a Path,
    marker: &'a Path,
    rate: u64,
    seconds: u64,
    every: u64,
}

/// Runs the load for the whole run, sampling the daemon at each interval.
fn run(setup: &Setup, report: &mut Report) -> Result<Vec<Sample>> {
    let Setup { seconds, every, .. } = *setup;
    let daemon = start_daemon(setup.custos, Some(setup.config), Stdio::null())?;
    let pid = daemon.id();
    let loads = Loads::start(setup.file, setup.marker, setup.rate, seconds)?;
    report.line(format!(
        "{:>8} {:>10} {:>14} {:>8} {:>10} {:>14} {:>10}",
        "minute", "RSS MiB", "private MiB", "CPU %", "events/s", "kernel drops", "spool MiB"
    ));
    let start = Instant::now();
    let mut samples = Vec::new();
    let (mut cpu_before, mut events_before) = (process_cpu(pid)?, 0.0);
    let mut last = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(every).min(
            Duration::from_secs(seconds).saturating_sub(start.elapsed()) + Duration::from_millis(1),
        ));
        let metrics = metrics_text(METRICS)?;
        let cpu = process_cpu(pid)?;
        let interval = last.elapsed().as_secs_f64();
        last = Instant::now();
        let events = metric_sum(&metrics, "custos_events_total");
        let sample = Sample {
            minutes: start.elapsed().as_secs_f64() / 60.0,
            rss_mib: status_kib(pid, "VmRSS:") as f64 / 1024.0,
            private_mib: status_kib(pid, "RssAnon:") as f64 / 1024.0,
            cpu_percent: (cpu - cpu_before).as_secs_f64() * 100.0 / interval,
            events_per_second: (events - events_before) / interval,
            kernel_drops: metric_sum(&metrics, "custos_kernel_drops_total"),
            spool_mib: metric_sum(&metrics, "custos_spool_bytes") / (1 << 20) as f64,
        };
        (cpu_before, events_before) = (cpu, events);
        report.line(format!(
            "{:>8.1} {:>10.1} {:>14.1} {:>8.1} {:>10.0} {:>14.0} {:>10.2}",
            sample.minutes,
            sample.rss_mib,
            sample.private_mib,
            sample.cpu_percent,
            sample.events_per_second,
            sample.kernel_drops,
            sample.spool_mib
        ));
        samples.push(sample);
    }
    loads.finish()?;
    stop(daemon)?;
    Ok(samples)
}

/// The slopes after the first fifth (start-up and warm-up), and the totals.
fn summarize(samples: &[Sample], delivered_bytes: u64, report: &mut Report) {
    let settled = &samples[samples.len() / 5..];
    let slope = |value: fn(&Sample) -> f64| {
        per_hour_slope(
            &settled
                .iter()
                .map(|s| (s.minutes, value(s)))
                .collect::<Vec<_>>(),
        )
    };
    report.line(format!(
        "after the first fifth: RSS {:+.2} MiB/h, private {:+.2} MiB/h, CPU {:+.2} points/h; \
         kernel drops in all {:.0}; {:.1} MiB delivered over TCP",
        slope(|s| s.rss_mib),
        slope(|s| s.private_mib),
        slope(|s| s.cpu_percent),
        samples.last().map_or(0.0, |s| s.kernel_drops),
        delivered_bytes as f64 / (1 << 20) as f64
    ));
}

/// The least-squares slope of `(minute, value)` points, per hour.
fn per_hour_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance == 0.0 {
        return 0.0;
    }
    covariance / variance * 60.0
}

/// The open loop at a fixed rate and the exec loop, for the whole run.
struct Loads {
    opens: Vec<(u32, Child)>,
    execs: Child,
}

impl Loads {
    fn start(file: &Path, marker: &Path, rate: u64, seconds: u64) -> Result<Self> {
        let opens = spawn_loops(
            file,
            &Loops {
                seconds,
                count: 1,
                rate: Some(rate),
            },
        )?;
        let execs = Command::new(std::env::current_exe()?)
            .args(["exec-loop", "--rate", &EXEC_RATE.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .arg(marker)
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::null())
            .spawn()
            .context("starting the exec loop")?;
        Ok(Self { opens, execs })
    }

    fn finish(mut self) -> Result<()> {
        for (_, child) in self.opens {
            child.wait_with_output()?;
        }
        self.execs.wait()?;
        Ok(())
    }
}

fn stop(mut daemon: Child) -> Result<()> {
    sh(Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string()))?;
    daemon.wait()?;
    Ok(())
}
