//! `cargo xtask profile exec`: the daemon's instructions per exec, counted by callgrind.
//!
//! The exec benchmark times the daemon's CPU, which on a shared VM moves by a fifth from one
//! hour to the next and hides any change smaller than that. Instructions executed do not
//! move with the host: this runs the daemon on its embedded default under callgrind through
//! the same exec storm (slower, since callgrind runs it about fifty times slower), counts only
//! the measured storm, and prints instructions per exec for the daemon and for each stage,
//! so two builds can be compared to a fraction of a percent. Cache misses and the kernel's
//! share are not in it; the benchmark remains the measure of cost.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    bench::{spawn_until_ready, BenchDaemon, OutputFormat},
    shell::{output, run as sh, target_dir},
};

pub struct Options {
    /// The binary profiled: the release build when `None`.
    pub custos: Option<PathBuf>,
    pub rate: u64,
    pub seconds: u64,
    pub warmup: u64,
    /// Bytes of the class path each exec of the storm gets (`-cp` before it); 0: none.
    pub argv_bytes: usize,
}

impl Options {
    /// The daemon to run: the one given, or the release build.
    pub fn binary(&self) -> PathBuf {
        self.custos
            .clone()
            .unwrap_or_else(|| target_dir().join("release/custos"))
    }
}

/// `target/profile/`, made if missing: where the profiles keep what they recorded.
pub fn output_dir() -> Result<PathBuf> {
    let dir = target_dir().join("profile");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `custos` on its embedded default, its events into a file in `work` as in the exec
/// benchmark, calls `measure` with its pid, and stops it before returning what `measure` gave.
pub fn with_daemon<T>(
    custos: &Path,
    work: &Path,
    measure: impl FnOnce(u32) -> Result<T>,
) -> Result<T> {
    let events = std::fs::File::create(work.join("events.jsonl"))?;
    let mut daemon = spawn_until_ready(
        Command::new(custos).arg("run"),
        events.into(),
        Duration::from_secs(120),
    )?;
    let measured = measure(daemon.id());
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    daemon.wait()?;
    measured
}

/// Runs the measured storm of `options` while `perf record` samples with `perf_args` into
/// `samples_file`; the execs spawned.
pub fn storm_under_perf(
    options: &Options,
    marker: &Path,
    perf_args: &[&str],
    samples_file: &Path,
) -> Result<u64> {
    let mut perf = Command::new("perf")
        .arg("record")
        .args(perf_args)
        .arg("-o")
        .arg(samples_file)
        .args(["--", "sleep", &options.seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    let spawned =
        crate::bench_exec::storm_execs(marker, options.argv_bytes, options.rate, options.seconds)?;
    if !perf.wait()?.success() {
        bail!("perf record failed (is perf_event_paranoid above -1 for a non-root user?)");
    }
    Ok(spawned)
}

/// `perf script -F fields` of the samples in `samples_file`.
pub fn perf_script(samples_file: &Path, fields: &str) -> Result<String> {
    output(
        Command::new("perf")
            .args(["script", "-F", fields, "-i"])
            .arg(samples_file)
            .stderr(Stdio::null()),
    )
    .context("perf script failed")
}

/// The stages reported, by the function that runs each (inclusive counts).
const STAGES: &[(&str, &str)] = &[
    (
        "records to events (reader)",
        "custos::pipeline::stages::Stages::handle ",
    ),
    ("  enrichment", "Enricher<S>>::event "),
    (
        "  emitting (rules, usage, batch)",
        "custos::pipeline::stages::Stages::emit_identified ",
    ),
    (
        "housekeeping (reader)",
        "custos::pipeline::Daemon::housekeep ",
    ),
    ("sinks (sink thread)", "custos::sinks::Sinks::run "),
    (
        "  JSON encoding",
        "custos::sinks::json::JsonEncoder::encode ",
    ),
    ("memcpy, everywhere", ":__memcpy_avx_unaligned_erms "),
];

pub fn exec(options: &Options) -> Result<()> {
    crate::setup::profile_tools()?;
    let work = tempfile::tempdir()?;
    let marker = crate::bench_exec::marker_in(work.path(), "profile")?;
    let counts = output_dir()?.join("exec.callgrind");
    remove_dumps(&counts)?;
    let events = work.path().join("events.jsonl");
    let custos = options.binary();
    let mut daemon = start_under_callgrind(&custos, &counts, &events)?;
    let pid = daemon.id().to_string();
    let measured = (|| -> Result<(u64, u64)> {
        let warm = crate::bench_exec::storm_execs(
            &marker,
            options.argv_bytes,
            options.rate,
            options.warmup,
        )?;
        sh(Command::new("callgrind_control").args(["--instr=on", &pid]))?;
        let spawned = crate::bench_exec::storm_execs(
            &marker,
            options.argv_bytes,
            options.rate,
            options.seconds,
        )?;
        // The drain timer's next turn, slowed down like everything under callgrind.
        std::thread::sleep(Duration::from_secs(2));
        sh(Command::new("callgrind_control").args(["--instr=off", &pid]))?;
        sh(Command::new("callgrind_control").args(["--dump", &pid]))?;
        Ok((warm, spawned))
    })();
    sh(Command::new("kill").args(["-TERM", &pid]))?;
    daemon.wait()?;
    let (warm, spawned) = measured?;
    let seen =
        crate::bench_exec::execs_of(&BenchDaemon::events(&events, OutputFormat::Json)?, &marker);
    let dump = first_dump(&counts)?;
    print_counts(&dump, &custos, spawned, options)?;
    if seen < warm + spawned {
        println!(
            "{} of the storms' {} execs were not reported: the daemon fell behind under \
             callgrind and the counts cover less than the storm (lower --rate)",
            warm + spawned - seen,
            warm + spawned
        );
    }
    println!(
        "the counts: {} (callgrind_annotate --inclusive=yes FILE)",
        dump.display()
    );
    Ok(())
}

/// Starts `custos run` on its embedded default under callgrind, counting nothing until told.
fn start_under_callgrind(
    custos: &Path,
    counts: &Path,
    events: &Path,
) -> Result<std::process::Child> {
    let stdout = std::fs::File::create(events)?;
    let mut command = Command::new("valgrind");
    command
        .args(["--tool=callgrind", "--instr-atstart=no"])
        .arg(format!("--callgrind-out-file={}", counts.display()))
        .arg(custos)
        .arg("run");
    // Under callgrind the start-up (BTF, loading the programs, the /proc scan) takes minutes.
    spawn_until_ready(&mut command, stdout.into(), Duration::from_secs(600))
}

/// The dumps callgrind made of `counts` (`FILE.1`, `FILE.2`, ... besides `FILE`).
fn dumps(counts: &Path) -> Result<Vec<PathBuf>> {
    let dir = counts.parent().context("the counts' directory")?;
    let name = counts
        .file_name()
        .context("the counts' name")?
        .to_string_lossy();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        if file.is_some_and(|f| f.starts_with(&*name)) {
            found.push(path);
        }
    }
    Ok(found)
}

fn remove_dumps(counts: &Path) -> Result<()> {
    for dump in dumps(counts)? {
        std::fs::remove_file(dump)?;
    }
    Ok(())
}

/// The dump `callgrind_control --dump` made: the one numbered `.1`, the first.
fn first_dump(counts: &Path) -> Result<PathBuf> {
    let first = PathBuf::from(format!("{}.1", counts.display()));
    if !first.exists() {
        bail!("callgrind wrote no dump at {}", first.display());
    }
    Ok(first)
}

/// Prints the dump's total and each stage's count per exec, and the functions that executed
/// the most instructions themselves.
fn print_counts(dump: &Path, custos: &Path, spawned: u64, options: &Options) -> Result<()> {
    let annotate = |inclusive: &str| {
        output(
            Command::new("callgrind_annotate")
                .arg(format!("--inclusive={inclusive}"))
                .arg(dump)
                .stderr(Stdio::null()),
        )
        .context("callgrind_annotate failed")
    };
    let inclusive = counted_lines(&annotate("yes")?);
    let total = inclusive
        .iter()
        .find(|(_, name)| name.contains("PROGRAM TOTALS"))
        .map_or(0, |(count, _)| *count);
    let per_exec = |count: u64| count as f64 / spawned.max(1) as f64;
    println!(
        "exec storm under callgrind: a copy of /bin/true{} at {}/s for {} s ({spawned} execs), \
         after {} s of the same; the daemon ({}) on its embedded default, JSON into a file",
        crate::bench_exec::with_argument(options.argv_bytes),
        options.rate,
        options.seconds,
        options.warmup,
        custos.display()
    );
    println!(
        "{:>10.0} instructions per exec, the daemon",
        per_exec(total)
    );
    for (label, needle) in STAGES {
        let count = inclusive
            .iter()
            .find(|(_, name)| name.contains(needle))
            .map_or(0, |(count, _)| *count);
        println!("{:>10.0}   {label}", per_exec(count));
    }
    println!("the functions that executed the most themselves, per exec:");
    for (count, name) in counted_lines(&annotate("no")?)
        .into_iter()
        .filter(|(_, name)| !name.contains("PROGRAM TOTALS"))
        .take(15)
    {
        println!("{:>10.0}   {}", per_exec(count), short_name(&name));
    }
    Ok(())
}

/// `callgrind_annotate`'s lines of a count and a name.
fn counted_lines(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (count, rest) = line.split_once(' ')?;
            let count: u64 = count.replace(',', "").parse().ok()?;
            let name = rest.split_once(")  ").map_or(rest, |(_, name)| name);
            Some((count, name.trim().to_string()))
        })
        .collect()
}

/// A function's name without callgrind's source file and object.
fn short_name(name: &str) -> &str {
    let name = name.split_once(':').map_or(name, |(_, function)| function);
    name.rsplit_once(" [")
        .map_or(name, |(function, _)| function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counts_and_names_from_callgrind_annotate() {
        let text = "--------\n74,944,487 (100.0%)  PROGRAM TOTALS\n\
                    13,097,425 (17.48%)  ./string/memmove.S:__memcpy_avx_unaligned_erms [/lib/libc.so.6]\n\
                    4,234,854 ( 5.65%)  ???:custos::families::decode [/tmp/custos]\n";
        let lines = counted_lines(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], (74_944_487, "PROGRAM TOTALS".to_string()));
        assert_eq!(lines[2].0, 4_234_854);
        assert_eq!(short_name(&lines[2].1), "custos::families::decode");
        assert_eq!(short_name(&lines[1].1), "__memcpy_avx_unaligned_erms");
    }
}
