//! A daemon's CPU split by thread: where a benchmark's "daemon µs per exec" goes (the reader's
//! decoding and enrichment, or the sinks' encoding and the kernel's write path behind them).
//!
//! Only the time on a CPU, to the nanosecond. The user and kernel ticks of `stat` are no guide
//! here: with tick-based accounting, a thread that wakes on a timer runs just after a tick and
//! is often done before the next one.
use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context as _, Result};

/// Every thread of a process, by thread id: its name and its time on a CPU.
#[derive(Clone, Default)]
pub struct Threads(BTreeMap<u32, (String, Duration)>);

/// The CPU of a process's threads over an interval, by thread name.
#[derive(Clone, Default)]
pub struct ThreadCpu(BTreeMap<String, Duration>);

impl Threads {
    /// The threads of `pid` now; a thread that ends while it is read is left out.
    pub fn of(pid: u32) -> Result<Threads> {
        let dir = format!("/proc/{pid}/task");
        let mut threads = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let path = entry?.path();
            let Some(tid) = path.file_name().and_then(|n| n.to_str()?.parse().ok()) else {
                continue;
            };
            if let Ok(thread) = thread_cpu(&path) {
                threads.insert(tid, thread);
            }
        }
        Ok(Threads(threads))
    }

    /// What each thread name used since `before` (a thread started meanwhile, from zero).
    pub fn since(&self, before: &Threads) -> ThreadCpu {
        let mut by_name: BTreeMap<String, Duration> = BTreeMap::new();
        for (tid, (name, now)) in &self.0 {
            let then = before.0.get(tid).map_or(Duration::ZERO, |(_, t)| *t);
            *by_name.entry(name.clone()).or_default() += now.saturating_sub(then);
        }
        ThreadCpu(by_name)
    }
}

impl ThreadCpu {
    /// Thread names, busiest first.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<(&String, Duration)> = self.0.iter().map(|(n, t)| (n, *t)).collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.1));
        names.into_iter().map(|(n, _)| n.clone()).collect()
    }

    /// The time the threads called `name` were on a CPU.
    pub fn on_cpu(&self, name: &str) -> Duration {
        self.0.get(name).copied().unwrap_or_default()
    }
}

/// A thread's name and time on a CPU, from its `/proc/PID/task/TID` directory.
fn thread_cpu(dir: &Path) -> Result<(String, Duration)> {
    let schedstat = std::fs::read_to_string(dir.join("schedstat"))?;
    let on_cpu_ns: u64 = schedstat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("schedstat without a run time")?;
    let name = std::fs::read_to_string(dir.join("comm"))?;
    Ok((
        name.trim_end_matches('\n').to_owned(),
        Duration::from_nanos(on_cpu_ns),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_started_during_the_interval_counts_from_zero() {
        let ns = Duration::from_nanos;
        let before = Threads(BTreeMap::from([(1, ("custos".to_owned(), ns(100)))]));
        let after = Threads(BTreeMap::from([
            (1, ("custos".to_owned(), ns(400))),
            (2, ("custos-sinks".to_owned(), ns(50))),
            (3, ("custos-sinks".to_owned(), ns(20))),
        ]));
        let cpu = after.since(&before);
        assert_eq!(cpu.on_cpu("custos"), ns(300));
        assert_eq!(cpu.on_cpu("custos-sinks"), ns(70));
        assert_eq!(cpu.on_cpu("absent"), Duration::ZERO);
        assert_eq!(cpu.names(), vec!["custos", "custos-sinks"]);
    }

    #[test]
    fn the_running_process_is_read_by_thread() {
        let threads = Threads::of(std::process::id()).unwrap();
        assert!(!threads.0.is_empty());
        let cpu = threads.since(&Threads::default());
        assert!(cpu.names().iter().any(|name| !name.is_empty()));
    }
}
