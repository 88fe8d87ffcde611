//! The real systemd-journald reading the service's standard output, for what the packaged unit
//! tells it.
//!
//! PID 1 is not systemd on the test machines, so a test does the two things PID 1 does for a
//! unit that matter to the journal: it starts the daemon in the unit's cgroup, which is how
//! journald names the unit a stream belongs to, and it exports the unit's log rate limit under
//! `/run/systemd/units/` as PID 1 does: a symlink whose target is the value, written only for
//! a value other than 0 (PID 1 takes 0 for "not set").
use std::{
    ffi::OsStr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, ensure, Context as _, Result};

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";
const UNIT_EXPORTS: &str = "/run/systemd/units";

/// Where the test's journald takes its settings from (read after journald.conf).
const DROP_IN: &str = "/etc/systemd/journald.conf.d/custos-test.conf";

/// journald started for the test with `settings` in a drop-in; both go with the guard.
pub struct Journald(Child);

impl Journald {
    /// None when a journald already runs (a host booted with systemd): the test's own could
    /// not take its socket, and that one's settings are the host's.
    pub fn start(settings: &str) -> Result<Option<Self>> {
        if UnixStream::connect(STDOUT_SOCKET).is_ok() {
            return Ok(None);
        }
        std::fs::create_dir_all("/run/systemd/journal")?;
        std::fs::create_dir_all(Path::new(DROP_IN).parent().unwrap_or(Path::new("/")))?;
        std::fs::write(DROP_IN, format!("[Journal]\n{settings}"))?;
        let child = Command::new(JOURNALD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {JOURNALD} (Debian's systemd package)"))?;
        let journald = Self(child);
        crate::poll::wait_until(
            &format!("journald listens on {STDOUT_SOCKET}"),
            Duration::from_secs(10),
            || Ok(UnixStream::connect(STDOUT_SOCKET).is_ok()),
        )?;
        Ok(Some(journald))
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(DROP_IN);
    }
}

/// A unit's log rate limit as its unit file sets it (0: not set).
#[derive(Debug, Clone, Copy)]
pub struct LogRateLimit {
    pub interval_usec: u64,
    pub burst: u64,
}

impl LogRateLimit {
    /// `LogRateLimitIntervalSec=` and `LogRateLimitBurst=` of a unit file's text.
    pub fn of_unit_file(text: &str) -> Result<Self> {
        let value = |key: &str| {
            text.lines()
                .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
                .next_back()
                .map(str::trim)
        };
        Ok(Self {
            interval_usec: value("LogRateLimitIntervalSec")
                .map(time_span_usec)
                .transpose()?
                .unwrap_or(0),
            burst: value("LogRateLimitBurst")
                .map(|burst| burst.parse().context("LogRateLimitBurst"))
                .transpose()?
                .unwrap_or(0),
        })
    }
}

/// A systemd time span in microseconds: a number with one of the units a unit file's rate
/// limit takes (seconds when it has none).
fn time_span_usec(span: &str) -> Result<u64> {
    let digits = span
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(span.len());
    let (number, unit) = span.split_at(digits);
    let number: u64 = number
        .parse()
        .with_context(|| format!("time span {span:?}"))?;
    let usec_per = match unit.trim() {
        "us" => 1,
        "ms" => 1_000,
        "" | "s" | "sec" => 1_000_000,
        "min" | "m" => 60_000_000,
        "h" => 3_600_000_000,
        other => bail!("time span {span:?}: unit {other:?} not handled here"),
    };
    Ok(number * usec_per)
}

/// A unit as the journal sees it: its cgroup in each hierarchy journald may read, and its
/// exported rate limit. Both go with the guard.
pub struct JournalUnit {
    pub name: String,
    cgroups: Vec<PathBuf>,
    /// The `system.slice` cgroups the unit's made, which go with it.
    slices: Vec<PathBuf>,
    exports: Vec<PathBuf>,
}

impl JournalUnit {
    pub fn new(name: &str, limit: Option<LogRateLimit>) -> Result<Self> {
        let mut unit = Self {
            name: name.to_owned(),
            cgroups: Vec::new(),
            slices: Vec::new(),
            exports: Vec::new(),
        };
        for root in cgroup_roots() {
            let slice = root.join("system.slice");
            if !slice.exists() {
                unit.slices.push(slice.clone());
            }
            let cgroup = slice.join(name);
            std::fs::create_dir_all(&cgroup)
                .with_context(|| format!("making the cgroup {}", cgroup.display()))?;
            unit.cgroups.push(cgroup);
        }
        ensure!(
            !unit.cgroups.is_empty(),
            "no cgroup hierarchy to place a unit in"
        );
        if let Some(limit) = limit {
            unit.export("log-rate-limit-interval", limit.interval_usec)?;
            unit.export("log-rate-limit-burst", limit.burst)?;
        }
        Ok(unit)
    }

    fn export(&mut self, what: &str, value: u64) -> Result<()> {
        if value == 0 {
            return Ok(());
        }
        std::fs::create_dir_all(UNIT_EXPORTS)?;
        let link = Path::new(UNIT_EXPORTS).join(format!("{what}:{}", self.name));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(value.to_string(), &link)?;
        self.exports.push(link);
        Ok(())
    }

    /// Starts `program` with `args` in the unit, its standard output and error connected to
    /// the journal as a service's are (`systemd-cat` execs it, so the child is the program).
    pub fn spawn(&self, program: &Path, args: &[&OsStr]) -> Result<Child> {
        let procs: Vec<PathBuf> = self
            .cgroups
            .iter()
            .map(|c| c.join("cgroup.procs"))
            .collect();
        Command::new("sh")
            .arg("-c")
            .arg("for procs in $CGROUP_PROCS; do echo $$ > \"$procs\"; done; exec systemd-cat \"$@\"")
            .arg("sh")
            .arg(program)
            .args(args)
            .env("CGROUP_PROCS", join_paths(&procs))
            .stdin(Stdio::null())
            .spawn()
            .context("starting the program under systemd-cat")
    }

    /// The lines the journal holds from the unit, as written.
    pub fn lines(&self) -> Result<Vec<String>> {
        journal_messages(&format!("_SYSTEMD_UNIT={}", self.name))
    }

    /// How many of the unit's lines journald says it dropped.
    pub fn suppressed(&self) -> Result<u64> {
        let from = format!(" messages from {}", self.name);
        Ok(journal_messages("SYSLOG_IDENTIFIER=systemd-journald")?
            .iter()
            .filter_map(|line| line.strip_prefix("Suppressed ")?.strip_suffix(&from))
            .filter_map(|count| count.parse::<u64>().ok())
            .sum())
    }
}

impl Drop for JournalUnit {
    fn drop(&mut self) {
        for link in &self.exports {
            let _ = std::fs::remove_file(link);
        }
        // A cgroup goes once its processes have; the unit's do by the time it is dropped.
        for cgroup in self.cgroups.iter().chain(&self.slices) {
            let _ = std::fs::remove_dir(cgroup);
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    let names: Vec<_> = paths.iter().map(|p| p.to_string_lossy()).collect();
    names.join(" ")
}

/// The hierarchies journald may take a process's unit from: the unified one (alone, or
/// beside the legacy ones) and systemd's named legacy one.
fn cgroup_roots() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.procs").exists() {
        return vec![root.to_owned()];
    }
    ["unified", "systemd"]
        .iter()
        .map(|name| root.join(name))
        .filter(|hierarchy| hierarchy.join("cgroup.procs").exists())
        .collect()
}

fn journal_messages(matching: &str) -> Result<Vec<String>> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "--output=cat", matching])
        .output()
        .context("running journalctl")?;
    ensure!(
        out.status.success() || out.stdout.is_empty(),
        "journalctl failed"
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_rate_limit_a_unit_file_sets() {
        let limit = LogRateLimit::of_unit_file(
            "[Service]\nLogRateLimitIntervalSec=2s\nLogRateLimitBurst=500\n",
        )
        .unwrap();
        assert_eq!((limit.interval_usec, limit.burst), (2_000_000, 500));
        let unset = LogRateLimit::of_unit_file("[Service]\nType=notify\n").unwrap();
        assert_eq!((unset.interval_usec, unset.burst), (0, 0));
        assert_eq!(time_span_usec("250ms").unwrap(), 250_000);
        assert_eq!(time_span_usec("3").unwrap(), 3_000_000);
    }
}
