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
    bench_exec::{argv_bytes_option, execs_of, marker_in, Setup, Storms},
    bench_memory::{LoadMemory, MemorySampler},
    bpf_jit::{program_run_time, programs_held_by},
    report::Report,
    shell::target_dir,
};

pub struct Options {
    pub against: PathBuf,
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub rounds: usize,
    pub warmup: u64,
    /// Bytes of the class path each exec gets (see `bench_exec::long_arguments`); 0: none.
    pub argv_bytes: usize,
}

/// One storm through both daemons.
struct PairedRound {
    spawned: u64,
    /// Daemon CPU over the measured storm: this build's, then the other's.
    cpu: [Duration; 2],
    /// Run time of each daemon's eBPF programs over the measured storm, in the same order.
    bpf: [Duration; 2],
    /// This build's daemon started (and attached its programs) first.
    this_first: bool,
    /// Execs of the marker each did not report, over both storms.
    lost: [u64; 2],
    /// Each daemon's private memory, in the same order.
    memory: [PrivateMemory; 2],
}

/// A daemon's private memory (KiB) once started, and the most it held in the measured storm.
#[derive(Clone, Copy, Default)]
struct PrivateMemory {
    started: u64,
    storm_peak: u64,
}

impl PairedRound {
    /// `spent` over the measured storm, in µs per exec.
    fn us_per_exec(&self, spent: Duration) -> f64 {
        spent.as_secs_f64() * 1e6 / self.spawned.max(1) as f64
    }

    fn per_exec_us(&self, which: usize) -> f64 {
        self.us_per_exec(self.cpu[which])
    }

    /// This build's CPU per exec over the other's.
    fn ratio(&self) -> f64 {
        self.per_exec_us(0) / self.per_exec_us(1).max(1e-9)
    }

    fn bpf_per_exec_us(&self, which: usize) -> f64 {
        self.us_per_exec(self.bpf[which])
    }

    /// This build's eBPF run time per exec over the other's.
    fn bpf_ratio(&self) -> f64 {
        self.bpf_per_exec_us(0) / self.bpf_per_exec_us(1).max(1e-9)
    }
}

/// A ratio of the rounds (`ratio`) with the order of start-up taken out. On each hook the
/// programs attached first run first and meet the kernel's data (task, credentials, files) out
/// of the cache, which the second set then finds in it. The daemon started first can cost more
/// too (up to a tenth in some runs of two builds of the same source, nothing in others). The
/// geometric mean of the median ratio with this build first and the one with it second cancels
/// that when both orders ran, and is the median's equal when the order does not matter.
fn order_balanced(rounds: &[PairedRound], ratio: fn(&PairedRound) -> f64) -> Option<f64> {
    let median_when = |first: bool| {
        let ratios: Vec<f64> = rounds
            .iter()
            .filter(|r| r.this_first == first)
            .map(ratio)
            .collect();
        (!ratios.is_empty()).then(|| spread(ratios).1)
    };
    Some((median_when(true)? * median_when(false)?).sqrt())
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
         process's CPU clock; eBPF run time per exec from the kernel's statistics of the \
         programs each daemon holds; the daemon started first can cost more, and its programs, \
         which run first on each hook, pay for bringing the kernel's data into the cache, so \
         both ratios are given with the order taken out: run an even number of rounds; the \
         daemon that starts second cannot bind the embedded default's metrics port and says so)",
        this.display(),
        against.display(),
        options.warmup,
        options.seconds
    ));
    let rates: Vec<String> = options.rates.iter().map(u64::to_string).collect();
    report.line(format!(
        "(cargo xtask bench exec --against {} --rates {} --seconds {} --rounds {} --warmup {}{})",
        against.display(),
        rates.join(","),
        options.seconds,
        options.rounds,
        options.warmup,
        argv_bytes_option(options.argv_bytes)
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
                    storms: Storms {
                        marker: &marker,
                        argv_bytes: options.argv_bytes,
                        rate,
                        warmup: options.warmup,
                        seconds: options.seconds,
                    },
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
    storms: Storms<'a>,
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
    let measured = measure(&storms.storms, pids);
    // Both are stopped before any error is passed on, so that none outlives the round.
    let outputs = [this, other].map(|daemon| {
        let (output, format) = (daemon.output.clone(), daemon.format);
        daemon.stop().map(|_| (output, format))
    });
    let Measured {
        warmed,
        spawned,
        cpu,
        bpf,
        memory,
    } = measured?;
    let mut seen = [0; 2];
    for (which, stopped) in outputs.into_iter().enumerate() {
        let (output, format) = stopped?;
        seen[which] = execs_of(&BenchDaemon::events(&output, format)?, storms.storms.marker);
    }
    let lost = seen.map(|seen| (warmed + spawned).saturating_sub(seen));
    Ok(PairedRound {
        spawned,
        cpu,
        bpf,
        this_first: storms.this_first,
        lost,
        memory,
    })
}

/// What the storms of a round did: the execs of the warm-up and of the measured storm, and
/// each daemon's CPU, eBPF run time and memory over the measured one.
struct Measured {
    warmed: u64,
    spawned: u64,
    cpu: [Duration; 2],
    bpf: [Duration; 2],
    memory: [PrivateMemory; 2],
}

/// Each daemon's eBPF programs and how long they have run so far.
struct ProgramClock {
    programs: [Vec<u32>; 2],
}

impl ProgramClock {
    fn of(pids: [u32; 2]) -> Result<Self> {
        let held = |pid| {
            let ids = programs_held_by(pid)?;
            if ids.is_empty() {
                bail!("daemon {pid} holds no eBPF program");
            }
            Ok(ids)
        };
        Ok(Self {
            programs: [held(pids[0])?, held(pids[1])?],
        })
    }

    /// Each daemon's programs' run time so far; a program unloaded meanwhile counts nothing.
    fn read(&self) -> Result<[Duration; 2]> {
        let total = |ids: &[u32]| -> Result<Duration> {
            let mut sum = Duration::ZERO;
            for &id in ids {
                sum += program_run_time(id)?.unwrap_or_default();
            }
            Ok(sum)
        };
        Ok([total(&self.programs[0])?, total(&self.programs[1])?])
    }
}

/// Runs the warm-up and the measured storm; the execs of each, the CPU the daemons `pids` and
/// their eBPF programs used over the measured one, and the daemons' memory.
fn measure(storms: &Storms, pids: [u32; 2]) -> Result<Measured> {
    let started = pids.map(|pid| LoadMemory::sample(pid).private);
    let warmed = storms.warm_up()?;
    let programs = ProgramClock::of(pids)?;
    let bpf_before = programs.read()?;
    let before = [process_cpu(pids[0])?, process_cpu(pids[1])?];
    let samplers = pids.map(|pid| MemorySampler::start(pid, Duration::from_millis(100)));
    let spawned = storms.measured_execs();
    let storm_peak = samplers.map(|sampler| sampler.finish().private);
    let spawned = spawned?;
    let bpf_after = programs.read()?;
    std::thread::sleep(crate::bench::DRAINED_AFTER);
    let cpu = [
        process_cpu(pids[0])?.saturating_sub(before[0]),
        process_cpu(pids[1])?.saturating_sub(before[1]),
    ];
    Ok(Measured {
        warmed,
        spawned,
        cpu,
        bpf: [0, 1].map(|w| bpf_after[w].saturating_sub(bpf_before[w])),
        memory: [0, 1].map(|w| PrivateMemory {
            started: started[w],
            storm_peak: storm_peak[w],
        }),
    })
}

/// Each round's daemon CPU and eBPF run time per exec for both builds and their ratios, then
/// the ratios with the order of start-up taken out.
fn pair_table(report: &mut Report, rate: u64, setup: Setup, rounds: &[PairedRound]) {
    report.line(String::new());
    report.line(format!("target rate {rate} execs/s, {}", setup.label()));
    report.line(format!(
        "{:<8} {:>7} {:>9} {:>13} {:>13} {:>10} {:>13} {:>13} {:>10} {:>9}",
        "round",
        "first",
        "execs",
        "this daemon",
        "other daemon",
        "ratio",
        "this BPF",
        "other BPF",
        "ratio",
        "lost"
    ));
    for (k, round) in rounds.iter().enumerate() {
        report.line(format!(
            "{:<8} {:>7} {:>9} {:>13.2} {:>13.2} {:>10.3} {:>13.2} {:>13.2} {:>10.3} {:>9}",
            k + 1,
            if round.this_first { "this" } else { "other" },
            round.spawned,
            round.per_exec_us(0),
            round.per_exec_us(1),
            round.ratio(),
            round.bpf_per_exec_us(0),
            round.bpf_per_exec_us(1),
            round.bpf_ratio(),
            format!("{} / {}", round.lost[0], round.lost[1])
        ));
    }
    let (min, _, max) = spread(rounds.iter().map(PairedRound::ratio).collect());
    let medians = [0, 1].map(|w| spread(rounds.iter().map(|r| r.per_exec_us(w)).collect()).1);
    report.line(match order_balanced(rounds, PairedRound::ratio) {
        Some(ratio) => format!(
            "this build's daemon CPU per exec over the other's: {ratio:.3}, order taken out \
             (rounds {min:.3}..{max:.3}; {:.2} against {:.2} µs per exec, medians)",
            medians[0], medians[1]
        ),
        None => needs_both_orders("daemon CPU"),
    });
    report.line(match order_balanced(rounds, PairedRound::bpf_ratio) {
        Some(ratio) => format!(
            "this build's eBPF run time per exec over the other's: {ratio:.3}, order taken out"
        ),
        None => needs_both_orders("eBPF run time"),
    });
    report.line(
        "(order taken out: the geometric mean of the median ratio with each build started first)",
    );
    report.line(memory_line(rounds));
}

/// Each build's private memory once started and at the measured storm's peak, medians.
fn memory_line(rounds: &[PairedRound]) -> String {
    let mib = |which: usize, figure: fn(&PrivateMemory) -> u64| {
        spread(
            rounds
                .iter()
                .map(|round| figure(&round.memory[which]) as f64 / 1024.0)
                .collect(),
        )
        .1
    };
    let of = |which| (mib(which, |m| m.started), mib(which, |m| m.storm_peak));
    let (this, other) = (of(0), of(1));
    format!(
        "private memory, MiB, medians: this build {:.1} once started, {:.1} at the storm's peak; \
         the other {:.1} and {:.1}",
        this.0, this.1, other.0, other.1
    )
}

/// What the comparison of `what` says when one order of start-up alone ran.
fn needs_both_orders(what: &str) -> String {
    format!(
        "this build's {what} per exec over the other's: needs rounds with each build started \
         first (--rounds 2 or more)"
    )
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
            bpf: [Duration::from_millis(80), Duration::from_millis(64)],
            this_first: true,
            lost: [0, 0],
            memory: Default::default(),
        };
        assert!((round.per_exec_us(0) - 6.0).abs() < 1e-9);
        assert!((round.per_exec_us(1) - 7.5).abs() < 1e-9);
        assert!((round.ratio() - 0.8).abs() < 1e-9);
        assert!((round.bpf_per_exec_us(0) - 5.0).abs() < 1e-9);
        assert!((round.bpf_ratio() - 1.25).abs() < 1e-9);
    }

    #[test]
    fn the_memory_line_gives_each_builds_medians_in_mib() {
        let memory = |started: u64, storm_peak: u64| PrivateMemory {
            started,
            storm_peak,
        };
        let rounds: Vec<PairedRound> = [(8_192, 96_256), (9_216, 97_280), (8_704, 99_328)]
            .into_iter()
            .map(|(started, peak)| PairedRound {
                memory: [memory(started, peak), memory(started * 2, peak + 1_024)],
                ..round_with_bpf(5, 5, true)
            })
            .collect();
        assert_eq!(
            memory_line(&rounds),
            "private memory, MiB, medians: this build 8.5 once started, 95.0 at the storm's \
             peak; the other 17.0 and 96.0"
        );
    }

    fn round_with_bpf(this_ms: u64, other_ms: u64, this_first: bool) -> PairedRound {
        PairedRound {
            spawned: 1_000,
            cpu: [Duration::from_millis(5); 2],
            bpf: [
                Duration::from_millis(this_ms),
                Duration::from_millis(other_ms),
            ],
            this_first,
            lost: [0, 0],
            memory: Default::default(),
        }
    }

    #[test]
    fn the_order_of_start_up_is_taken_out_of_the_daemon_ratio() {
        let round = |this_ms, other_ms, this_first| PairedRound {
            cpu: [
                Duration::from_millis(this_ms),
                Duration::from_millis(other_ms),
            ],
            ..round_with_bpf(5, 5, this_first)
        };
        // Equal daemons: whichever starts first costs a tenth more.
        let equal = [round(11, 10, true), round(10, 11, false)];
        let ratio = order_balanced(&equal, PairedRound::ratio).unwrap();
        assert!((ratio - 1.0).abs() < 1e-9, "{ratio}");
        // The median of the rounds' ratios alone would favour the order of the middle rounds.
        let uneven = [
            round(11, 10, true),
            round(10, 11, false),
            round(11, 10, true),
        ];
        let ratio = order_balanced(&uneven, PairedRound::ratio).unwrap();
        assert!((ratio - 1.0).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn the_order_of_attachment_is_taken_out_of_the_bpf_ratio() {
        // Equal programs: whichever set is attached first costs a third more.
        let equal = [
            round_with_bpf(8, 6, true),
            round_with_bpf(6, 8, false),
            round_with_bpf(8, 6, true),
            round_with_bpf(6, 8, false),
        ];
        let ratio = order_balanced(&equal, PairedRound::bpf_ratio).unwrap();
        assert!((ratio - 1.0).abs() < 1e-9, "{ratio}");
        // This build's programs half as costly, with the same order effect on top.
        let halved = [round_with_bpf(4, 6, true), round_with_bpf(3, 8, false)];
        let ratio = order_balanced(&halved, PairedRound::bpf_ratio).unwrap();
        assert!((ratio - 0.5).abs() < 1e-9, "{ratio}");
        assert!(
            order_balanced(&equal[..1], PairedRound::bpf_ratio).is_none(),
            "one order alone cannot be balanced"
        );
    }
}
