//! `cargo xtask bench exec`: the exec-storm method (Sysmon for Linux's perftest). A spawner
//! runs a copy of /bin/true at a fixed rate for a fixed time with nothing attached, with Custos
//! on its embedded default (JSON lines on standard output, into a file), with Custos on the
//! same settings writing protobuf to a file, and with auditd (an execve rule, records written
//! to its log file). For each it reports the sensor's own CPU, the kernel-side BPF time per
//! program, the spawner's CPU (which includes every in-kernel hook cost), the extra CPU over
//! the baseline all in, and what was lost; then the same per exec, in microseconds, with the
//! daemon's CPU by thread and its memory while the storm ran.
use std::{
    io::Read as _,
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use custos_proto::v1::{event::Body, Event};

use crate::{
    bench::{
        audit_syscalls, ensure_auditd, interleaved, process_cpu, range_text, spread, BenchDaemon,
        METRICS,
    },
    bench_memory::{LoadMemory, MemorySampler},
    bench_threads::{ThreadCpu, Threads},
    report::Report,
    shell::{run as sh, target_dir},
};

pub struct Options {
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub rounds: usize,
    /// Seconds of storm each Custos round runs before it measures (see [`STEADY_AFTER`]).
    pub warmup: u64,
    /// Bytes of the class path each exec gets (see [`long_arguments`]); 0: none.
    pub argv_bytes: usize,
}

/// How long the daemon keeps an exited process (its table's grace period), plus a margin: a
/// storm longer than this has the daemon sweeping as many exited processes as it adds, which
/// is how it runs on a busy host. A round that measured from the daemon's start would leave
/// those sweeps out and count the table's growth instead.
pub const STEADY_AFTER: u64 = 12;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    Baseline,
    /// `custos run` without a configuration: JSON lines on standard output.
    EmbeddedDefault,
    /// The same settings with a protobuf file sink instead.
    DefaultProtobufFile,
    Auditd,
}

impl Setup {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Setup::Baseline => "nothing attached",
            Setup::EmbeddedDefault => "custos, embedded default (JSON stdout)",
            Setup::DefaultProtobufFile => "custos, default, protobuf file",
            Setup::Auditd => "auditd, execve rule, log file",
        }
    }

    fn is_custos(self) -> bool {
        matches!(self, Setup::EmbeddedDefault | Setup::DefaultProtobufFile)
    }

    /// Starts `custos` in `work` as this setup has it (a Custos setup).
    pub(crate) fn start_custos(self, custos: &Path, work: &Path) -> Result<BenchDaemon> {
        match self {
            Setup::EmbeddedDefault => BenchDaemon::embedded_default(custos, work),
            Setup::DefaultProtobufFile => BenchDaemon::default_with_protobuf_file(custos, work),
            Setup::Baseline | Setup::Auditd => bail!("{} starts no Custos", self.label()),
        }
    }
}

/// One storm.
#[derive(Clone, Default)]
struct Round {
    spawned: u64,
    elapsed: Duration,
    /// CPU of the spawner and its children (fork, exec, the programs, every hook in between).
    spawner_cpu: Duration,
    /// CPU of the sensor's processes (custos; auditd and kauditd).
    sensor_cpu: Duration,
    /// Time each of the sensor's eBPF programs ran (custos only).
    bpf: Option<Vec<(String, Duration)>>,
    /// Execs the sensor did not record.
    lost: Option<u64>,
    /// The daemon's largest memory figures while the measured storm ran (custos only).
    memory: Option<LoadMemory>,
    /// The daemon's CPU by thread (custos only).
    threads: Option<ThreadCpu>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.spawned as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn per_second(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Microseconds per exec spawned.
    fn per_exec_us(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.spawned.max(1) as f64
    }

    /// All programs' run time together.
    fn bpf_total(&self) -> Option<Duration> {
        self.bpf.as_ref().map(|p| p.iter().map(|(_, d)| *d).sum())
    }
}

pub fn exec(options: &Options, report: &mut Report) -> Result<()> {
    let custos = target_dir().join("release/custos");
    let work = tempfile::tempdir()?;
    let marker = marker_in(work.path(), "bench")?;
    let auditd = ensure_auditd();
    if let Err(err) = &auditd {
        eprintln!("xtask: auditd is left out of this run: {err:#}");
    }
    if !crate::bench::EMBEDDED_DEFAULT.contains(&format!("listen = \"{METRICS}\"")) {
        bail!("the embedded default's metrics endpoint is not {METRICS}: update the benchmark");
    }
    let setups: Vec<Setup> = [
        Setup::Baseline,
        Setup::EmbeddedDefault,
        Setup::DefaultProtobufFile,
        Setup::Auditd,
    ]
    .into_iter()
    .filter(|s| *s != Setup::Auditd || auditd.is_ok())
    .collect();
    report.line(format!(
        "exec storm: a copy of /bin/true spawned at a fixed rate for {} s (its stdin and stdout \
         one /dev/null the spawner opened once), after {} s of the same storm for Custos (the \
         daemon in steady state: sweeping exited processes as fast as it adds them); median of \
         {} rounds (min..max); CPU in % of one core, to the nanosecond from each process's CPU \
         clock; all in: the sensor's CPU plus the spawner's above the baseline storm of the \
         same round (at least the programs' run time); lost: over both storms",
        options.seconds, options.warmup, options.rounds
    ));
    if options.argv_bytes > 0 {
        report.line(format!(
            "each exec with the arguments `-cp` and a class path of {} bytes (two: /bin/true \
             given one alone checks it for --help and loads the locale first)",
            options.argv_bytes
        ));
    }
    let rates: Vec<String> = options.rates.iter().map(u64::to_string).collect();
    report.line(format!(
        "(cargo xtask bench exec --rates {} --seconds {} --rounds {} --warmup {}{})",
        rates.join(","),
        options.seconds,
        options.rounds,
        options.warmup,
        argv_bytes_option(options.argv_bytes)
    ));
    for &rate in &options.rates {
        let what = format!("exec: {rate}/s,");
        let storms = Storms {
            marker: &marker,
            argv_bytes: options.argv_bytes,
            rate,
            warmup: options.warmup,
            seconds: options.seconds,
        };
        let results = interleaved(&what, &setups, options.rounds, Setup::label, |setup| {
            Ok(match setup {
                Setup::Baseline => storms.measured()?,
                Setup::EmbeddedDefault | Setup::DefaultProtobufFile => {
                    with_custos(setup, &custos, work.path(), &storms)?
                }
                Setup::Auditd => with_auditd(&storms)?,
            })
        })?;
        table(report, rate, &results);
        per_exec_table(report, &results);
    }
    Ok(())
}

/// Each Custos setup's cost per exec: the daemon's CPU and each program's run time, medians.
fn per_exec_table(report: &mut Report, results: &[(Setup, Vec<Round>)]) {
    report.line("per exec (exec and exit events together), µs, median of the rounds");
    for (setup, rounds) in results.iter().filter(|(s, _)| s.is_custos()) {
        let median = |f: &dyn Fn(&Round) -> f64| spread(rounds.iter().map(f).collect()).1;
        let daemon = median(&|r| r.per_exec_us(r.sensor_cpu));
        let bpf = median(&|r| r.per_exec_us(r.bpf_total().unwrap_or_default()));
        report.line(format!(
            "  {:<38} daemon {daemon:>6.2}   BPF {bpf:>6.2}   together {:>6.2}",
            setup.label(),
            daemon + bpf
        ));
        let programs: Vec<String> = rounds
            .first()
            .and_then(|r| r.bpf.as_ref())
            .map(|p| p.iter().map(|(name, _)| name.clone()).collect())
            .unwrap_or_default();
        for program in programs {
            let time = median(&|r| {
                let spent = r
                    .bpf
                    .as_ref()
                    .and_then(|p| p.iter().find(|(n, _)| *n == program));
                r.per_exec_us(spent.map(|(_, d)| *d).unwrap_or_default())
            });
            if time >= 0.005 {
                report.line(format!("      {program:<34} {time:>6.2}"));
            }
        }
        threads_line(report, rounds);
        memory_line(report, rounds);
    }
}

/// The daemon's CPU per exec by thread, medians of the rounds (threads that used none left out).
fn threads_line(report: &mut Report, rounds: &[Round]) {
    let Some(first) = rounds.iter().find_map(|r| r.threads.as_ref()) else {
        return;
    };
    let parts: Vec<String> = first
        .names()
        .into_iter()
        .filter_map(|name| {
            let each = rounds
                .iter()
                .filter_map(|r| Some(r.per_exec_us(r.threads.as_ref()?.on_cpu(&name))));
            let per_exec = spread(each.collect()).1;
            (per_exec >= 0.005).then(|| format!("{name} {per_exec:.2}"))
        })
        .collect();
    report.line(format!(
        "      daemon by thread, µs per exec: {}",
        parts.join(", ")
    ));
}

/// The daemon's memory while the measured storms ran, largest sample of each round, medians.
fn memory_line(report: &mut Report, rounds: &[Round]) {
    let mib = |figure: &dyn Fn(&LoadMemory) -> u64| {
        let each = rounds.iter().filter_map(|r| r.memory.as_ref());
        range_text(spread(each.map(|m| figure(m) as f64 / 1024.0).collect()), 1)
    };
    report.line(format!(
        "      memory during the storm, MiB: resident {}, ring counted once {}, private {}",
        mib(&|m| m.rss),
        mib(&|m| m.rss_ring_once),
        mib(&|m| m.private)
    ));
}

fn table(report: &mut Report, rate: u64, results: &[(Setup, Vec<Round>)]) {
    let baseline = |f: &dyn Fn(&Round) -> f64| {
        results
            .iter()
            .find(|(s, _)| *s == Setup::Baseline)
            .map_or(0.0, |(_, r)| spread(r.iter().map(f).collect()).1)
    };
    let baseline_rounds = results
        .iter()
        .find(|(s, _)| *s == Setup::Baseline)
        .map_or(&[][..], |(_, r)| r.as_slice());
    let baseline_spawner = baseline(&|r| r.per_second(r.spawner_cpu));
    // All in: the sensor's processes plus what the spawner paid beyond the baseline. Each
    // round's spawner is compared with the baseline storm of the same round, run a minute or
    // less before it: the host's own drift (several points of a core over a few minutes) then
    // cancels instead of landing on whichever setup ran when the host was busier. The spawner
    // runs the eBPF programs, so it paid at least their run time: when its difference comes out
    // lower, that is noise, and the programs' measured time counts instead.
    let all_in = |round: usize, r: &Round| {
        let baseline = baseline_rounds
            .get(round)
            .map_or(baseline_spawner, |b| b.per_second(b.spawner_cpu));
        let spawner_extra = (r.per_second(r.spawner_cpu) - baseline).max(0.0);
        let bpf = r.bpf_total().map_or(0.0, |b| r.per_second(b));
        r.per_second(r.sensor_cpu) + spawner_extra.max(bpf)
    };
    let auditd_all_in = results
        .iter()
        .find(|(s, _)| *s == Setup::Auditd)
        .map(|(_, r)| spread(each_round(r, &all_in)).1);
    report.line(String::new());
    report.line(format!("target rate {rate} execs/s"));
    let reached = baseline(&Round::rate);
    if reached < rate as f64 * 0.9 {
        report.line(format!(
            "(this machine spawns at most about {reached:.0}/s: every setup is CPU-bound, so the \
             spawner's CPU no longer shows the hooks' cost and \"all in\" is the sensor's \
             processes and its eBPF programs' run time only)"
        ));
    }
    report.line(format!(
        "{:<38} {:>9} {:>20} {:>9} {:>20} {:>20} {:>9} {:>8}",
        "setup",
        "execs/s",
        "sensor CPU %",
        "BPF %",
        "spawner CPU %",
        "all in %",
        "vs auditd",
        "lost"
    ));
    for (setup, rounds) in results {
        report.line(table_row(*setup, rounds, &all_in, auditd_all_in));
    }
}

/// One setup's row: medians with their ranges, and the ratio of all-in CPU to auditd's.
fn table_row(
    setup: Setup,
    rounds: &[Round],
    all_in: &dyn Fn(usize, &Round) -> f64,
    auditd_all_in: Option<f64>,
) -> String {
    let pct = |(min, median, max): (f64, f64, f64)| {
        range_text((min * 100.0, median * 100.0, max * 100.0), 2)
    };
    let not_baseline = |text: String| {
        if setup == Setup::Baseline {
            "-".to_owned()
        } else {
            text
        }
    };
    let achieved = spread(rounds.iter().map(Round::rate).collect()).1;
    let sensor = spread(rounds.iter().map(|r| r.per_second(r.sensor_cpu)).collect());
    let bpf = rounds
        .iter()
        .map(|r| r.bpf_total().map(|b| r.per_second(b)))
        .collect::<Option<Vec<_>>>()
        .map_or("-".to_owned(), |v| format!("{:.2}", spread(v).1 * 100.0));
    let spawner = spread(rounds.iter().map(|r| r.per_second(r.spawner_cpu)).collect());
    let total = spread(each_round(rounds, all_in));
    let versus = match (setup, auditd_all_in) {
        (Setup::Baseline, _) | (_, None) => "-".to_owned(),
        (_, Some(auditd)) => format!("{:.2}x", total.1 / auditd.max(1e-9)),
    };
    let lost = rounds
        .iter()
        .map(|r| r.lost)
        .collect::<Option<Vec<_>>>()
        .map_or("-".to_owned(), |v| {
            v.iter().max().copied().unwrap_or(0).to_string()
        });
    format!(
        "{:<38} {:>9.0} {:>20} {:>9} {:>20} {:>20} {:>9} {:>8}",
        setup.label(),
        achieved,
        not_baseline(pct(sensor)),
        bpf,
        pct(spawner),
        not_baseline(pct(total)),
        versus,
        lost
    )
}

/// `figure` of each round, with the round's number.
fn each_round(rounds: &[Round], figure: &dyn Fn(usize, &Round) -> f64) -> Vec<f64> {
    rounds
        .iter()
        .enumerate()
        .map(|(k, r)| figure(k, r))
        .collect()
}

/// Runs the exec loop helper and returns what it measured.
fn storm(marker: &Path, argv_bytes: usize, rate: u64, seconds: u64) -> Result<Round> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "exec-loop",
            "--rate",
            &rate.to_string(),
            "--seconds",
            &seconds.to_string(),
            "--argv-bytes",
            &argv_bytes.to_string(),
        ])
        .arg(marker)
        // `cargo xtask` sets LD_LIBRARY_PATH for its own build; a real storm does not probe
        // those directories on every exec.
        .env_remove("LD_LIBRARY_PATH")
        .stderr(Stdio::inherit())
        .output()
        .context("running the exec loop")?;
    if !out.status.success() {
        bail!("the exec loop failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<u64> = crate::bench::numbers(&text);
    let [spawned, elapsed_ns, cpu_ns] = fields[..] else {
        bail!("the exec loop printed {text:?}");
    };
    Ok(Round {
        spawned,
        elapsed: Duration::from_nanos(elapsed_ns),
        spawner_cpu: Duration::from_nanos(cpu_ns),
        ..Round::default()
    })
}

/// How many of `events` report an exec of `marker`.
pub(crate) fn execs_of(events: &[Event], marker: &Path) -> u64 {
    let path = marker.to_string_lossy();
    events
        .iter()
        .filter(|e| {
            matches!(e.body, Some(Body::Exec(_)))
                && e.process.as_ref().is_some_and(|p| p.binary == path)
        })
        .count() as u64
}

/// A copy of /bin/true in `dir` under a name unique to this run, so that its execs are told
/// apart from everything else; `what` names the run.
pub(crate) fn marker_in(dir: &Path, what: &str) -> Result<std::path::PathBuf> {
    let marker = dir.join(format!("custos-{what}-true-{}", std::process::id()));
    std::fs::copy("/bin/true", &marker)?;
    Ok(marker)
}

/// Runs a storm of `marker` at `rate` for `seconds`, each exec with a class path of
/// `argv_bytes` (0: none, see [`long_arguments`]); how many execs it spawned.
pub(crate) fn storm_execs(
    marker: &Path,
    argv_bytes: usize,
    rate: u64,
    seconds: u64,
) -> Result<u64> {
    Ok(storm(marker, argv_bytes, rate, seconds)?.spawned)
}

/// The command-line option that gives `argv_bytes`, for a benchmark's command line.
pub(crate) fn argv_bytes_option(argv_bytes: usize) -> String {
    match argv_bytes {
        0 => String::new(),
        bytes => format!(" --argv-bytes {bytes}"),
    }
}

/// How a storm's header names the argument each exec gets: nothing when none.
pub(crate) fn with_argument(argv_bytes: usize) -> String {
    match argv_bytes {
        0 => String::new(),
        bytes => format!(" with -cp and a class path of {bytes} bytes"),
    }
}

/// The long command line of the full benchmark: near the 4 KiB of argv the kernel hook copies.
pub const LONG_ARGV_BYTES: usize = 4000;

/// `-cp` and a class path of `bytes` bytes, as a Java service is started: the long command
/// lines of real hosts, which the daemon reads and checks for secrets whole. Two arguments,
/// because /bin/true given exactly one compares it with --help and --version, and loads the
/// locale (about thirty opens) before it does.
pub fn long_arguments(bytes: usize) -> [String; 2] {
    let mut class_path = String::new();
    let mut jar = 0;
    while class_path.len() < bytes {
        class_path.push_str(&format!("/opt/service/lib/library-{jar}.jar:"));
        jar += 1;
    }
    class_path.truncate(bytes);
    ["-cp".to_owned(), class_path]
}

/// A Custos round's storms: `warmup` seconds, then `seconds` measured, of `marker` at `rate`,
/// each exec with a class path of `argv_bytes` (0: none).
pub(crate) struct Storms<'a> {
    pub marker: &'a Path,
    pub argv_bytes: usize,
    pub rate: u64,
    pub warmup: u64,
    pub seconds: u64,
}

impl Storms<'_> {
    /// Runs the warm-up storm, if any; how many execs it spawned.
    pub(crate) fn warm_up(&self) -> Result<u64> {
        match self.warmup {
            0 => Ok(0),
            warmup => storm_execs(self.marker, self.argv_bytes, self.rate, warmup),
        }
    }

    /// Runs the measured storm alone (the warm-up is [`Self::warm_up`]).
    fn measured(&self) -> Result<Round> {
        storm(self.marker, self.argv_bytes, self.rate, self.seconds)
    }

    /// Runs the measured storm; how many execs it spawned.
    pub(crate) fn measured_execs(&self) -> Result<u64> {
        storm_execs(self.marker, self.argv_bytes, self.rate, self.seconds)
    }
}

fn with_custos(setup: Setup, custos: &Path, work: &Path, storms: &Storms) -> Result<Round> {
    let daemon = setup.start_custos(custos, work)?;
    let warmed = storms.warm_up()?;
    let cpu_before = process_cpu(daemon.pid())?;
    let threads_before = Threads::of(daemon.pid())?;
    let bpf_before = crate::bench::bpf_by_program(METRICS)?;
    // Four samples a second: enough to see the table's steady size, little CPU taken from the
    // storm.
    let sampler = MemorySampler::start(daemon.pid(), Duration::from_millis(250));
    let mut round = storms.measured()?;
    std::thread::sleep(crate::bench::DRAINED_AFTER);
    round.sensor_cpu = process_cpu(daemon.pid())?.saturating_sub(cpu_before);
    round.threads = Some(Threads::of(daemon.pid())?.since(&threads_before));
    round.memory = Some(sampler.finish());
    round.bpf = Some(
        crate::bench::bpf_since(METRICS, &bpf_before)?
            .into_iter()
            .map(|(program, seconds)| (program, Duration::from_secs_f64(seconds)))
            .collect(),
    );
    let (output, format) = (daemon.output.clone(), daemon.format);
    daemon.stop()?;
    let seen = execs_of(&BenchDaemon::events(&output, format)?, storms.marker);
    round.lost = Some((warmed + round.spawned).saturating_sub(seen));
    Ok(round)
}

fn with_auditd(storms: &Storms) -> Result<Round> {
    const KEY: &str = "custos-bench-exec";
    let log = Path::new("/var/log/audit/audit.log");
    let (log_start, log_inode) = std::fs::metadata(log).map_or((0, 0), |m| (m.len(), m.ino()));
    let pids = audit_pids()?;
    let cpu = |pids: &[u32]| -> Duration { pids.iter().filter_map(|p| process_cpu(*p).ok()).sum() };
    audit_syscalls("execve", KEY)?;
    let before = cpu(&pids);
    let mut round = storms.measured()?;
    // auditd writes asynchronously: wait until its log stops growing.
    let mut size = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = std::fs::metadata(log).map_or(0, |m| m.len());
        if now == size {
            break;
        }
        size = now;
    }
    round.sensor_cpu = cpu(&pids).saturating_sub(before);
    sh(Command::new("auditctl").arg("-D"))?;
    // Every exec of the marker gives one SYSCALL record naming it. auditd may have rotated its
    // log (8 MiB files) several times meanwhile: read from where the storm began, in whichever
    // file that now is, through every newer one.
    let mut files: Vec<std::path::PathBuf> = (1..=20)
        .rev()
        .map(|n| log.with_extension(format!("log.{n}")))
        .filter(|f| f.exists())
        .collect();
    files.push(log.to_path_buf());
    let first = files
        .iter()
        .position(|f| std::fs::metadata(f).is_ok_and(|m| m.ino() == log_inode))
        .unwrap_or(files.len() - 1);
    let mut text = read_from(&files[first], log_start)?;
    for file in &files[first + 1..] {
        text += &read_from(file, 0)?;
    }
    let needle = format!("exe=\"{}\"", storms.marker.display());
    let seen = text
        .lines()
        .filter(|l| l.starts_with("type=SYSCALL") && l.contains(&needle))
        .count() as u64;
    round.lost = Some(round.spawned.saturating_sub(seen));
    Ok(round)
}

/// A log file's text from byte `offset` on.
fn read_from(path: &Path, offset: u64) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// auditd and the kernel's kauditd thread.
fn audit_pids() -> Result<Vec<u32>> {
    let pids: Vec<u32> = procfs::process::all_processes()?
        .flatten()
        .filter(|process| {
            process
                .stat()
                .is_ok_and(|stat| matches!(stat.comm.as_str(), "auditd" | "kauditd"))
        })
        .map(|process| process.pid as u32)
        .collect();
    if pids.is_empty() {
        bail!("auditd is not running");
    }
    Ok(pids)
}

/// Entry point of the `exec-loop` helper: spawns `program` `rate` times a second for `seconds`
/// (with [`long_arguments`] of `argv_bytes` unless 0), reaping as it goes, then prints
/// "spawned elapsed_ns cpu_ns" (its own CPU and its children's).
pub fn exec_loop(program: &Path, argv_bytes: usize, rate: u64, seconds: u64) -> Result<()> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = Instant::now();
    let limit = Duration::from_secs(seconds);
    let mut spawned: u64 = 0;
    let mut running = Vec::new();
    // The children's stdin and stdout are one /dev/null opened here, handed over as duplicate
    // descriptors: `Stdio::null()` would open it twice per spawn, and the sensor would be
    // measured on the spawner's opens as well as on the execs.
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let arguments = match argv_bytes {
        0 => Vec::new(),
        bytes => long_arguments(bytes).to_vec(),
    };
    while start.elapsed() < limit {
        let due = interval * spawned as u32;
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        running.push(
            Command::new(program)
                .args(&arguments)
                .stdin(null.try_clone()?)
                .stdout(null.try_clone()?)
                .spawn()
                .with_context(|| format!("spawning {}", program.display()))?,
        );
        spawned += 1;
        if running.len() >= 64 {
            for mut child in running.drain(..) {
                child.wait()?;
            }
        }
    }
    for mut child in running {
        child.wait()?;
    }
    let elapsed = start.elapsed();
    let usage = |who| {
        // SAFETY: rusage is plain data that getrusage fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut usage) };
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        time(usage.ru_utime) + time(usage.ru_stime)
    };
    let cpu = usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN);
    println!("{spawned} {} {}", elapsed.as_nanos(), cpu.as_nanos());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arguments_are_a_class_path_of_exactly_the_bytes_asked() {
        for bytes in [1, 18, 100, LONG_ARGV_BYTES] {
            let [flag, class_path] = long_arguments(bytes);
            assert_eq!(flag, "-cp");
            assert_eq!(class_path.len(), bytes);
            assert!("/opt/service/lib/library-0.jar:".starts_with(&class_path[..bytes.min(31)]));
        }
        let [_, class_path] = long_arguments(LONG_ARGV_BYTES);
        assert!(class_path.contains(":/opt/service/lib/library-42.jar:"));
    }
}
