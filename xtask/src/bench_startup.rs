//! Start-up and stop of the daemon on its embedded default (`cargo xtask bench startup`): how
//! long until it says it is ready, the CPU it used by then, its peak resident memory, each
//! hook's load time and the instructions the kernel's verifier explored for it, and how long a
//! SIGTERM takes to end it. A restart on every host of a fleet pays these, and most of the time
//! is the kernel's loading and verifying of the programs.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    bench::{process_cpu, range_text, spawn_logging_until_ready, spread, status_kib, terminate},
    report::Report,
    shell::target_dir,
};

pub struct Options {
    pub rounds: usize,
}

/// How long a start may take before the benchmark gives up on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// One hook as the daemon's "hook attached" line gives it.
#[derive(Debug, PartialEq)]
struct HookLoad {
    hook: String,
    /// How it was attached (`tp_btf`, `syscall_tracepoints`, ... or `unavailable`).
    path: String,
    load_ms: u64,
    /// Instructions the verifier explored (none for a hook not attached).
    verified: Option<u64>,
}

/// One start and stop.
struct Start {
    to_ready: Duration,
    cpu_to_ready: Duration,
    peak_rss_kib: u64,
    hooks: Vec<HookLoad>,
    to_stop: Duration,
}

pub fn startup(options: &Options, report: &mut Report) -> Result<()> {
    let custos = target_dir().join("release/custos");
    let mut starts = Vec::new();
    for round in 1..=options.rounds {
        eprintln!("xtask: start-up, round {round}/{}", options.rounds);
        starts.push(start_and_stop(&custos)?);
    }
    report.line(String::new());
    report.line(format!(
        "start-up: `custos run` on the embedded default, started {} times, its standard output \
         to /dev/null; time from the spawn to its \"sensor ready\" line, the CPU it used by \
         then, its peak resident memory, and the time from SIGTERM to its exit; median \
         (min..max)",
        options.rounds
    ));
    report.line(format!(
        "(cargo xtask bench startup --rounds {})",
        options.rounds
    ));
    let figure = |f: &dyn Fn(&Start) -> f64| spread(starts.iter().map(f).collect());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let rows = [
        ("to ready, ms", figure(&|s| ms(s.to_ready)), 0),
        ("CPU to ready, ms", figure(&|s| ms(s.cpu_to_ready)), 0),
        (
            "peak RSS, MiB",
            figure(&|s| s.peak_rss_kib as f64 / 1024.0),
            1,
        ),
        ("stop, ms", figure(&|s| ms(s.to_stop)), 0),
    ];
    for (what, values, digits) in rows {
        report.line(format!("{what:<24} {}", range_text(values, digits)));
    }
    hooks_table(report, &starts);
    Ok(())
}

/// Each hook's load time (median of the starts) and what it was attached by.
fn hooks_table(report: &mut Report, starts: &[Start]) {
    let Some(first) = starts.first() else {
        return;
    };
    report.line(format!(
        "{:<24} {:<22} {:>22} {:>18}",
        "hook", "attached as", "load ms", "verified insns"
    ));
    for hook in &first.hooks {
        let same = |s: &Start| -> Option<f64> {
            let load = s.hooks.iter().find(|h| h.hook == hook.hook)?;
            Some(load.load_ms as f64)
        };
        let loads = spread(starts.iter().filter_map(same).collect());
        let verified = hook.verified.map_or("-".to_owned(), |v| v.to_string());
        report.line(format!(
            "{:<24} {:<22} {:>22} {:>18}",
            hook.hook,
            hook.path,
            range_text(loads, 0),
            verified
        ));
    }
}

/// Starts the daemon, waits for its ready line, takes its figures, then stops it.
fn start_and_stop(custos: &Path) -> Result<Start> {
    let spawned = Instant::now();
    let mut command = Command::new(custos);
    command.arg("run");
    let (daemon, logged) = spawn_logging_until_ready(&mut command, Stdio::null(), PATIENCE)?;
    let to_ready = spawned.elapsed();
    let pid = daemon.id();
    let cpu_to_ready = process_cpu(pid)?;
    let peak_rss_kib = status_kib(pid, "VmHWM:");
    let asked_to_stop = Instant::now();
    terminate(daemon)?;
    Ok(Start {
        to_ready,
        cpu_to_ready,
        peak_rss_kib,
        hooks: logged.iter().filter_map(|line| hook_load(line)).collect(),
        to_stop: asked_to_stop.elapsed(),
    })
}

/// The hook in a line such as `... hook attached hook=sys_exit path=syscall_tracepoints
/// load_ms=304 verified=62764`.
fn hook_load(line: &str) -> Option<HookLoad> {
    let (_, fields) = line.split_once("hook attached ")?;
    let field = |name: &str| {
        fields
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    };
    Some(HookLoad {
        hook: field("hook")?.to_owned(),
        path: field("path")?.to_owned(),
        load_ms: field("load_ms")?.parse().ok()?,
        verified: field("verified").and_then(|v| v.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_line_gives_its_hook_path_load_time_and_verified_instructions() {
        let line = "2026-12-07T14:19:13.419530Z  INFO custos::kernel::loader: hook attached \
                    hook=sched_process_exec path=tp_btf load_ms=87 verified=49427";
        assert_eq!(
            hook_load(line),
            Some(HookLoad {
                hook: "sched_process_exec".into(),
                path: "tp_btf".into(),
                load_ms: 87,
                verified: Some(49427),
            })
        );
        let unavailable = "... INFO custos::kernel::loader: hook attached hook=disk_removed \
                           path=unavailable load_ms=2";
        assert_eq!(
            hook_load(unavailable).map(|h| (h.path, h.verified)),
            Some(("unavailable".into(), None))
        );
        assert_eq!(
            hook_load("... INFO custos::pipeline: sensor ready hooks=a=b"),
            None
        );
        assert_eq!(
            hook_load("hook attached hook=x path=y load_ms=many"),
            None,
            "a load time that is not a number"
        );
    }
}
