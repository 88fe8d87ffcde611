//! `cargo xtask bench throughput`: the event rate the daemon sustains to a protobuf file with
//! nothing lost, found by raising the offered load (open loops plus an exec storm, every open
//! reported) step by step, with the daemon's CPU and peak memory at each step.
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    bench::{account, process_cpu, spawn_loops, spread, status_kib, BenchDaemon, Loops},
    report::Report,
    shell::target_dir,
};

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
    /// Largest resident set sampled while the load ran, and the lifetime peak (VmHWM, which
    /// includes start-up).
    load_rss_mib: f64,
    peak_rss_mib: f64,
    /// Largest private (anonymous) resident set while the load ran: the resident set less the
    /// binary's pages and the ring buffer's mapping (kernel memory, mapped twice).
    load_private_mib: f64,
}

impl Step {
    /// Daemon CPU per event written, in µs.
    fn us_per_event(&self) -> f64 {
        self.daemon_cpu * 1e6 / self.events_per_second.max(1.0)
    }
}

pub fn throughput(options: &Options, report: &mut Report) -> Result<()> {
    let custos = target_dir().join("release/custos");
    let work = tempfile::tempdir()?;
    let file = work.path().join("bench-file");
    std::fs::write(&file, b"custos throughput benchmark")?;
    let marker = work
        .path()
        .join(format!("custos-bench-true-{}", std::process::id()));
    std::fs::copy("/bin/true", &marker)?;
    report.line("");
    report.line(format!(
        "throughput: every open reported (no deduplication) to a protobuf file, N open loops plus \
         {} execs/s, {} s per step; median of {} rounds (min..max)",
        options.exec_rate, options.seconds, options.rounds
    ));
    report.line(format!(
        "(cargo xtask bench throughput --seconds {} --rounds {})",
        options.seconds, options.rounds
    ));
    report.line(format!(
        "{:<10} {:>26} {:>8} {:>14} {:>14} {:>18} {:>18} {:>18}",
        "open loops",
        "events/s written",
        "lost",
        "daemon CPU %",
        "µs/event",
        "RSS (load) MiB",
        "peak RSS MiB",
        "private (load) MiB"
    ));
    let mut best_lossless = 0.0f64;
    for loops in 1..=3 {
        let mut steps = Vec::new();
        for round in 0..options.rounds {
            eprintln!(
                "xtask: bench throughput: {loops} open loops, round {}",
                round + 1
            );
            steps.push(step(&custos, work.path(), &file, &marker, loops, options)?);
        }
        let rate = spread(steps.iter().map(|s| s.events_per_second).collect());
        let lost = steps.iter().map(|s| s.lost).max().unwrap_or(0);
        let cpu = spread(steps.iter().map(|s| s.daemon_cpu * 100.0).collect());
        let load_rss = spread(steps.iter().map(|s| s.load_rss_mib).collect());
        let rss = spread(steps.iter().map(|s| s.peak_rss_mib).collect());
        let per_event = spread(steps.iter().map(Step::us_per_event).collect());
        let private = spread(steps.iter().map(|s| s.load_private_mib).collect());
        if lost == 0 {
            best_lossless = best_lossless.max(rate.1);
        }
        let range = |(min, median, max): (f64, f64, f64), digits: usize| {
            format!("{median:.digits$} ({min:.digits$}..{max:.digits$})")
        };
        report.line(format!(
            "{:<10} {:>26} {:>8} {:>14} {:>14} {:>18} {:>18} {:>18}",
            loops,
            range(rate, 0),
            lost,
            range(cpu, 0),
            range(per_event, 2),
            range(load_rss, 1),
            range(rss, 1),
            range(private, 1),
        ));
    }
    report.line(format!(
        "highest rate with nothing lost: {best_lossless:.0} events/s (this machine has {} cores \
         shared by the load generators and the daemon)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    Ok(())
}

fn step(
    custos: &Path,
    work: &Path,
    file: &Path,
    marker: &Path,
    loops: usize,
    options: &Options,
) -> Result<Step> {
    let daemon = BenchDaemon::start(
        custos,
        work,
        "[file]\ndedup_window_ms = 0\n[metrics]\nlisten = \"\"\n",
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
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, pid) = (sampling.clone(), daemon.pid());
        std::thread::spawn(move || {
            let (mut rss, mut private) = (0, 0);
            while sampling.load(Ordering::Relaxed) {
                rss = rss.max(status_kib(pid, "VmRSS:"));
                private = private.max(status_kib(pid, "RssAnon:"));
                std::thread::sleep(Duration::from_millis(50));
            }
            (rss, private)
        })
    };
    let runs = spawn_loops(file, &Loops::flat_out(options.seconds, loops))?;
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
    std::thread::sleep(Duration::from_millis(300));
    let daemon_cpu = process_cpu(daemon.pid())?.saturating_sub(cpu_before);
    sampling.store(false, Ordering::Relaxed);
    let (load_rss, load_private) = sampler.join().unwrap_or((0, 0));
    let peak_rss_mib = status_kib(daemon.pid(), "VmHWM:") as f64 / 1024.0;
    let output = daemon.output.clone();
    daemon.stop()?;
    let (accounted, reported_lost, written) = account(&output, file, &pids)?;
    Ok(Step {
        events_per_second: written as f64 / elapsed.as_secs_f64(),
        lost: opens.saturating_sub(accounted).max(reported_lost),
        daemon_cpu: daemon_cpu.as_secs_f64() / elapsed.as_secs_f64(),
        load_rss_mib: load_rss as f64 / 1024.0,
        peak_rss_mib,
        load_private_mib: load_private as f64 / 1024.0,
    })
}
