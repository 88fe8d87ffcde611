//! `cargo xtask bench exec --against OTHER`: this build's daemon and another build's, both
//! attached through the same exec storms, so that a change of a few percent in the daemon's CPU
//! per exec shows. Run one after the other, the two would meet different hours of the host (its
//! speed drifts by more than that between runs); attached together, every exec reaches both,
//! and only the order in which they start alternates between rounds.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    bench::{process_cpu, spread, BenchDaemon},
    bench_exec::{execs_of, marker_in, storm_execs, Setup},
    report::Report,
    shell::target_dir,
};

pub struct Options {
    pub against: PathBuf,
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub rounds: usize,
    pub warmup: u64,
}

/// One storm through both daemons.
struct PairedRound {
    spawned: u64,
    /// Daemon CPU over the measured storm: this build's, then the other's.
    cpu: [Duration; 2],
    /// Execs of the marker each did not report, over both storms.
    lost: [u64; 2],
}

impl PairedRound {
    fn per_exec_us(&self, which: usize) -> f64 {
        self.cpu[which].as_secs_f64() * 1e6 / self.spawned.max(1) as f64
    }

    /// This build's CPU per exec over the other's.
    fn ratio(&self) -> f64 {
        self.per_exec_us(0) / self.per_exec_us(1).max(1e-9)
    }
}

pub fn exec_pair(options: &Options, report: &mut Report) -> Result<()> {
    let this = target_dir().join("release/custos");
    let against = usable_binary(&options.against)?;
    let work = tempfile::tempdir()?;
    let marker = marker_in(work.path(), "pair")?;
    report.line(format!(
        "exec storm through two daemons at once: this build ({}) and {}, each on the same \
         settings, both attached for every storm; {} s of storm before each measured {} s; the \
         daemon that starts first alternates between rounds; daemon CPU per exec from each \
         process's CPU clock (the eBPF programs' run time is not split between the two here: \
         see the exec benchmark without --against; the daemon that starts second cannot bind the \
         embedded default's metrics port and says so)",
        this.display(),
        against.display(),
        options.warmup,
        options.seconds
    ));
    let rates: Vec<String> = options.rates.iter().map(u64::to_string).collect();
    report.line(format!(
        "(cargo xtask bench exec --against {} --rates {} --seconds {} --rounds {} --warmup {})",
        against.display(),
        rates.join(","),
        options.seconds,
        options.rounds,
        options.warmup
    ));
    for &rate in &options.rates {
        for setup in [Setup::EmbeddedDefault, Setup::DefaultProtobufFile] {
            let mut rounds = Vec::new();
            for round in 0..options.rounds {
                eprintln!(
                    "xtask: paired exec {rate}/s, {}, round {}/{}",
                    setup.label(),
                    round + 1,
                    options.rounds
                );
                let storms = PairedStorms {
                    marker: &marker,
                    rate,
                    warmup: options.warmup,
                    seconds: options.seconds,
                    this_first: round % 2 == 0,
                };
                rounds.push(paired_round(
                    setup,
                    [&this, &against],
                    work.path(),
                    &storms,
                )?);
            }
            pair_table(report, rate, setup, &rounds);
        }
    }
    Ok(())
}

/// `path` if it is a file that can be run: the other build is given by hand.
fn usable_binary(path: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path).with_context(|| {
        format!(
            "--against {}: no such binary (give the path of another custos build, e.g. a copy \
             of target/release/custos from an earlier commit)",
            path.display()
        )
    })?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o111 == 0 {
        bail!(
            "--against {}: not an executable file (give the path of another custos build)",
            path.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("resolving {}", path.display()))
}

/// A paired round's storms, and which daemon starts first.
struct PairedStorms<'a> {
    marker: &'a Path,
    rate: u64,
    warmup: u64,
    seconds: u64,
    this_first: bool,
}

/// Starts both daemons (in `work`, each in a directory of its own), runs the warm-up and the
/// measured storm through both, stops them and counts what each reported.
fn paired_round(
    setup: Setup,
    binaries: [&Path; 2],
    work: &Path,
    storms: &PairedStorms,
) -> Result<PairedRound> {
    let dirs = [work.join("this"), work.join("against")];
    let order = if storms.this_first { [0, 1] } else { [1, 0] };
    let mut started: [Option<BenchDaemon>; 2] = [None, None];
    for which in order {
        std::fs::create_dir_all(&dirs[which])?;
        match setup.start_custos(binaries[which], &dirs[which]) {
            Ok(daemon) => started[which] = Some(daemon),
            Err(err) => {
                started.into_iter().flatten().for_each(|d| drop(d.stop()));
                return Err(err.context(format!("starting {}", binaries[which].display())));
            }
        }
    }
    let [Some(this), Some(other)] = started else {
        bail!("a daemon of the pair did not start");
    };
    let pids = [this.pid(), other.pid()];
    let measured = measure(storms, pids);
    // Both are stopped before any error is passed on, so that none outlives the round.
    let outputs = [this, other].map(|daemon| {
        let (output, format) = (daemon.output.clone(), daemon.format);
        daemon.stop().map(|_| (output, format))
    });
    let (warmed, spawned, cpu) = measured?;
    let mut seen = [0; 2];
    for (which, stopped) in outputs.into_iter().enumerate() {
        let (output, format) = stopped?;
        seen[which] = execs_of(&BenchDaemon::events(&output, format)?, storms.marker);
    }
    let lost = seen.map(|seen| (warmed + spawned).saturating_sub(seen));
    Ok(PairedRound { spawned, cpu, lost })
}

/// Runs the warm-up and the measured storm; the execs of each and the CPU the daemons `pids`
/// used over the measured one.
fn measure(storms: &PairedStorms, pids: [u32; 2]) -> Result<(u64, u64, [Duration; 2])> {
    let warmed = match storms.warmup {
        0 => 0,
        warmup => storm_execs(storms.marker, storms.rate, warmup)?,
    };
    let before = [process_cpu(pids[0])?, process_cpu(pids[1])?];
    let spawned = storm_execs(storms.marker, storms.rate, storms.seconds)?;
    std::thread::sleep(crate::bench::DRAINED_AFTER);
    let cpu = [
        process_cpu(pids[0])?.saturating_sub(before[0]),
        process_cpu(pids[1])?.saturating_sub(before[1]),
    ];
    Ok((warmed, spawned, cpu))
}

/// Each round's daemon CPU per exec for both builds and their ratio, then the ratios' median.
fn pair_table(report: &mut Report, rate: u64, setup: Setup, rounds: &[PairedRound]) {
    report.line(String::new());
    report.line(format!("target rate {rate} execs/s, {}", setup.label()));
    report.line(format!(
        "{:<8} {:>9} {:>22} {:>22} {:>12} {:>12}",
        "round", "execs", "this build µs/exec", "other build µs/exec", "this/other", "lost"
    ));
    for (k, round) in rounds.iter().enumerate() {
        report.line(format!(
            "{:<8} {:>9} {:>22.2} {:>22.2} {:>12.3} {:>12}",
            k + 1,
            round.spawned,
            round.per_exec_us(0),
            round.per_exec_us(1),
            round.ratio(),
            format!("{} / {}", round.lost[0], round.lost[1])
        ));
    }
    let (min, median, max) = spread(rounds.iter().map(PairedRound::ratio).collect());
    let medians = [0, 1].map(|w| spread(rounds.iter().map(|r| r.per_exec_us(w)).collect()).1);
    report.line(format!(
        "this build's daemon CPU per exec over the other's: {median:.3} ({min:.3}..{max:.3}), \
         median of the rounds' ratios ({:.2} against {:.2} µs per exec, medians)",
        medians[0], medians[1]
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_other_build_must_be_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = usable_binary(&dir.path().join("custos-old")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("no such binary"),
            "{missing:#}"
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        let refused = usable_binary(&plain).unwrap_err();
        assert!(
            format!("{refused:#}").contains("not an executable"),
            "{refused:#}"
        );
        assert!(
            usable_binary(dir.path()).is_err(),
            "a directory is no binary"
        );
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            usable_binary(&plain).unwrap(),
            plain.canonicalize().unwrap()
        );
    }

    #[test]
    fn a_round_compares_this_build_with_the_other_per_exec() {
        let round = PairedRound {
            spawned: 16_000,
            cpu: [Duration::from_millis(96), Duration::from_millis(120)],
            lost: [0, 0],
        };
        assert!((round.per_exec_us(0) - 6.0).abs() < 1e-9);
        assert!((round.per_exec_us(1) - 7.5).abs() < 1e-9);
        assert!((round.ratio() - 0.8).abs() < 1e-9);
    }
}
