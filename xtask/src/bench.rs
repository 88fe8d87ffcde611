//! `cargo xtask bench open`: the cost of an open(2) with nothing attached, with Custos and with
//! auditd, measured side by side in one run, and whether any event was lost.
//!
//! Each setup runs a tight open+close loop on one cached file for a fixed time; rounds of the
//! setups are interleaved so machine noise hits them alike, and the median round is reported
//! with its ratio to the baseline measured in the same run.
use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use custos_proto::v1::{event::Body, Event};

use crate::{
    report::Report,
    shell::{have, run as sh, target_dir},
};

pub struct Options {
    pub seconds: u64,
    pub rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Baseline,
    CustosEveryOpen,
    CustosDefault,
    Auditd,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Baseline => "nothing attached",
            Setup::CustosEveryOpen => "custos, every open, protobuf file",
            Setup::CustosDefault => "custos, default config",
            Setup::Auditd => "auditd, open/openat/openat2/creat rule",
        }
    }
}

/// One timed round.
#[derive(Clone, Debug, Default)]
pub(crate) struct Round {
    pub(crate) opens: u64,
    pub(crate) elapsed: Duration,
    /// Opens of the benchmark file the sensor accounted for (events + counted repeats).
    pub(crate) accounted: Option<u64>,
    /// Events the sensor itself reported lost.
    pub(crate) reported_lost: Option<u64>,
    /// CPU time the daemon used from ready to exit, and the events it wrote.
    pub(crate) daemon_cpu: Option<Duration>,
    pub(crate) daemon_events: u64,
    /// Run time of all eBPF programs during the loops (from the kernel's statistics).
    pub(crate) bpf: Option<Duration>,
    /// CPU time of the open loops themselves (the syscalls, with the eBPF programs they run).
    pub(crate) loop_cpu: Duration,
}

impl Round {
    fn ns_per_open(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.opens.max(1) as f64
    }
}

/// Runs the open benchmark and prints the table.
pub fn open(options: &Options, report: &mut Report) -> Result<()> {
    let custos = target_dir().join("release/custos");
    let workdir = tempfile::tempdir()?;
    let file = workdir.path().join("bench-file");
    std::fs::write(&file, b"custos open benchmark")?;
    let auditd = ensure_auditd();
    if let Err(err) = &auditd {
        eprintln!("xtask: auditd is left out of this run: {err:#}");
    }
    let setups: Vec<Setup> = [
        Setup::Baseline,
        Setup::CustosEveryOpen,
        Setup::CustosDefault,
        Setup::Auditd,
    ]
    .into_iter()
    .filter(|s| *s != Setup::Auditd || auditd.is_ok())
    .collect();

    let one_loop = Loops::flat_out(options.seconds, 1);
    let results = interleaved("open", &setups, options.rounds, Setup::label, |setup| {
        let (dir, loops) = (workdir.path(), &one_loop);
        Ok(match setup {
            Setup::Baseline => loop_only(&file, loops)?,
            Setup::CustosEveryOpen => with_custos(&custos, dir, &file, loops, EVERY_OPEN)?,
            Setup::CustosDefault => with_custos(&custos, dir, &file, loops, "")?,
            Setup::Auditd => with_auditd(&file, loops)?,
        })
    })?;
    print_table(report, &results);
    report.line(format!(
        "(cargo xtask bench open --seconds {} --rounds {})",
        options.seconds, options.rounds
    ));
    crate::bench_basis::run(&custos, workdir.path(), &file, options, report)?;

    eprintln!("xtask: bench open: throughput, two open loops at once, every open captured");
    let mut throughput = Vec::new();
    let two_loops = Loops::flat_out(options.seconds, 2);
    for _ in 0..options.rounds {
        throughput.push(with_custos(
            &custos,
            workdir.path(),
            &file,
            &two_loops,
            EVERY_OPEN,
        )?);
    }
    print_throughput(report, &throughput);
    Ok(())
}

/// Configuration that reports every open: no deduplication.
pub const EVERY_OPEN: &str = "[file]\ndedup_window_ms = 0\n";

pub(crate) fn median_by(rounds: &[Round], key: impl Fn(&Round) -> f64) -> (f64, f64, f64) {
    spread(rounds.iter().map(key).collect())
}

/// (min, median, max) of some measurements.
pub fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    (
        values.first().copied().unwrap_or(0.0),
        median,
        values.last().copied().unwrap_or(0.0),
    )
}

/// A [`spread`] as the report writes it: `median (min..max)`, with `digits` decimals.
pub fn range_text((min, median, max): (f64, f64, f64), digits: usize) -> String {
    format!("{median:.digits$} ({min:.digits$}..{max:.digits$})")
}

fn print_table(report: &mut Report, results: &[(Setup, Vec<Round>)]) {
    let baseline = results
        .iter()
        .find(|(s, _)| *s == Setup::Baseline)
        .map(|(_, r)| median_by(r, Round::ns_per_open).1)
        .unwrap_or(1.0);
    report.line("");
    report.line(format!(
        "open+close of one cached file, one thread; median of {} rounds (min..max)",
        results[0].1.len()
    ));
    report.line(format!(
        "{:<42} {:>12} {:>20} {:>8} {:>14}",
        "setup", "opens/s", "ns/open (min..max)", "ratio", "lost"
    ));
    for (setup, rounds) in results {
        let ns_per_open = median_by(rounds, Round::ns_per_open);
        let median = ns_per_open.1;
        let lost = lost_summary(rounds);
        report.line(format!(
            "{:<42} {:>12.0} {:>20} {:>7.2}x {:>14}",
            setup.label(),
            1e9 / median,
            range_text(ns_per_open, 0),
            median / baseline,
            lost
        ));
    }
}

fn print_throughput(report: &mut Report, rounds: &[Round]) {
    let (min, median, max) = median_by(rounds, |r| {
        r.accounted.unwrap_or(0) as f64 / r.elapsed.as_secs_f64()
    });
    let (_, cpu_per_event, _) = median_by(rounds, |r| {
        r.daemon_cpu.unwrap_or_default().as_nanos() as f64 / r.daemon_events.max(1) as f64
    });
    report.line("");
    report.line(format!(
        "throughput to a protobuf file, two open loops: {median:.0} events/s (min {min:.0}, max {max:.0}); lost: {}",
        lost_summary(rounds)
    ));
    report.line(format!(
        "daemon CPU per event written: {cpu_per_event:.0} ns, so one core sustains about {:.0} events/s",
        1e9 / cpu_per_event.max(1.0)
    ));
}

/// "0" when every round accounted for every open; otherwise the worst round's shortfall.
pub(crate) fn lost_summary(rounds: &[Round]) -> String {
    let mut worst: Option<u64> = None;
    for round in rounds {
        let Some(accounted) = round.accounted else {
            return "n/a".into();
        };
        let missing = round.opens.saturating_sub(accounted);
        worst = Some(worst.unwrap_or(0).max(missing));
    }
    let reported: u64 = rounds.iter().filter_map(|r| r.reported_lost).sum();
    match worst {
        Some(0) => "0".into(),
        Some(n) => format!("{n} ({reported} reported)"),
        None => "n/a".into(),
    }
}

/// How the open loops run: how many processes, for how long, and at most how fast each.
#[derive(Clone, Copy, Debug)]
pub struct Loops {
    pub seconds: u64,
    pub count: usize,
    /// Opens per second per process; `None` as fast as it can.
    pub rate: Option<u64>,
}

impl Loops {
    pub fn flat_out(seconds: u64, count: usize) -> Self {
        Self {
            seconds,
            count,
            rate: None,
        }
    }
}

/// The open loop itself: `loops` processes, each opening `file`.
fn loop_only(file: &Path, loops: &Loops) -> Result<Round> {
    let mut round = Round::default();
    collect_loops(spawn_loops(file, loops)?, &mut round)?;
    Ok(round)
}

/// Adds the loops' opens, longest run and CPU time to `round` once they exit.
fn collect_loops(runs: Vec<(u32, Child)>, round: &mut Round) -> Result<()> {
    for (_, child) in runs {
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        let opens = fields
            .next()
            .flatten()
            .ok_or_else(|| anyhow!("open loop printed {text:?}"))?;
        let ns = fields.next().flatten().unwrap_or(0);
        let cpu_ns = fields.next().flatten().unwrap_or(0);
        round.opens += opens;
        round.elapsed = round.elapsed.max(Duration::from_nanos(ns));
        round.loop_cpu += Duration::from_nanos(cpu_ns);
    }
    Ok(())
}

pub fn spawn_loops(file: &Path, loops: &Loops) -> Result<Vec<(u32, Child)>> {
    let exe = std::env::current_exe()?;
    (0..loops.count)
        .map(|_| {
            let mut command = Command::new(&exe);
            command.args(["open-loop", "--seconds", &loops.seconds.to_string()]);
            if let Some(rate) = loops.rate {
                command.args(["--rate", &rate.to_string()]);
            }
            let child = command
                .arg(file)
                .env_remove("LD_LIBRARY_PATH")
                .stdout(Stdio::piped())
                .spawn()
                .context("starting the open loop")?;
            Ok((child.id(), child))
        })
        .collect()
}

/// Entry point of the `open-loop` helper process: opens and closes `file` for `seconds`, at
/// most `rate` times a second; prints the opens, the nanoseconds it ran and its CPU time.
pub fn open_loop(file: &Path, seconds: u64, rate: Option<u64>) -> Result<()> {
    let path = CString::new(file.as_os_str().as_encoded_bytes())?;
    let limit = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut opens: u64 = 0;
    while start.elapsed() < limit {
        for _ in 0..1000 {
            // SAFETY: a valid C string; the descriptor is closed at once.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                bail!(
                    "open {} failed: {}",
                    file.display(),
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: the descriptor just opened.
            unsafe { libc::close(fd) };
        }
        opens += 1000;
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(opens as f64 / rate.max(1) as f64);
            std::thread::sleep(due.saturating_sub(start.elapsed()));
        }
    }
    println!(
        "{opens} {} {}",
        start.elapsed().as_nanos(),
        own_cpu().as_nanos()
    );
    Ok(())
}

/// This process's user and system CPU time.
fn own_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

pub(crate) fn with_custos(
    custos: &Path,
    workdir: &Path,
    file: &Path,
    loops: &Loops,
    extra: &str,
) -> Result<Round> {
    let daemon = BenchDaemon::start(custos, workdir, extra)?;
    let cpu_at_ready = process_cpu(daemon.pid())?;
    let bpf_before = bpf_by_program(METRICS)?;
    let runs = spawn_loops(file, loops)?;
    let pids: Vec<u32> = runs.iter().map(|(pid, _)| *pid).collect();
    let mut round = Round::default();
    collect_loops(runs, &mut round)?;
    let bpf: f64 = bpf_since(METRICS, &bpf_before)?
        .iter()
        .map(|(_, seconds)| seconds)
        .sum();
    round.bpf = Some(Duration::from_secs_f64(bpf));
    let (output, format) = (daemon.output.clone(), daemon.format);
    let cpu_total = daemon.stop()?;
    let (accounted, lost, written) = account(&output, format, file, &pids)?;
    round.accounted = Some(accounted);
    round.reported_lost = Some(lost);
    round.daemon_cpu = Some(cpu_total.saturating_sub(cpu_at_ready));
    round.daemon_events = written;
    Ok(round)
}

/// The files a load benchmark's steps share: the release `custos`, a temporary directory, the
/// file the open loops open, and the exec storm's program.
pub struct BenchFiles {
    pub custos: PathBuf,
    pub work: tempfile::TempDir,
    /// `<what>-file` in `work`.
    pub file: PathBuf,
    /// A copy of /bin/true under a unique name, so its execs are told apart from everything
    /// else.
    pub marker: PathBuf,
}

impl BenchFiles {
    pub fn new(what: &str) -> Result<Self> {
        let work = tempfile::tempdir()?;
        let file = work.path().join(format!("{what}-file"));
        std::fs::write(&file, format!("custos {what} benchmark"))?;
        let marker = work
            .path()
            .join(format!("custos-{what}-true-{}", std::process::id()));
        std::fs::copy("/bin/true", &marker)?;
        Ok(Self {
            custos: target_dir().join("release/custos"),
            work,
            file,
            marker,
        })
    }
}

/// A `custos` daemon for one benchmark round, writing its events to `output`.
pub struct BenchDaemon {
    child: Child,
    pub output: PathBuf,
    /// What `output` holds.
    pub format: OutputFormat,
}

/// How a benchmark daemon's events are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// JSON lines (the embedded default's standard output).
    Json,
    /// Length-delimited protobuf.
    Protobuf,
}

impl OutputFormat {
    /// The name a sink's `format` setting gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Json => "jsonl",
            Self::Protobuf => "pb",
        }
    }
}

/// How long after a storm a daemon has read and handed to its sinks what the storm queued: the
/// embedded default reads the ring at least every 250 ms (`[kernel] max_latency_ms`).
pub const DRAINED_AFTER: Duration = Duration::from_millis(600);

/// The daemons' metrics endpoint (the default), where each eBPF program's run time is read.
pub const METRICS: &str = "127.0.0.1:9464";

/// The configuration a new user gets: `custos run` without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../packaging/custos.toml");

impl BenchDaemon {
    /// Starts `custos` with the configuration `extra` plus a protobuf file sink in `work`, and
    /// waits until its hooks are attached.
    pub fn start(custos: &Path, work: &Path, extra: &str) -> Result<Self> {
        Self::with_file_sink(custos, work, extra, OutputFormat::Protobuf)
    }

    /// Starts `custos` with the configuration `extra` plus a file sink writing `format` in
    /// `work`, and waits until its hooks are attached.
    pub fn with_file_sink(
        custos: &Path,
        work: &Path,
        extra: &str,
        format: OutputFormat,
    ) -> Result<Self> {
        let output = work.join(format!("events.{}", format.extension()));
        let _ = std::fs::remove_file(&output);
        let config = work.join("bench.toml");
        std::fs::write(
            &config,
            format!(
                "{extra}\n[[sinks]]\ntype = \"file\"\npath = \"{}\"\nformat = \"{}\"\n",
                output.display(),
                format.name()
            ),
        )?;
        Ok(Self {
            child: start_daemon(custos, Some(&config), Stdio::null())?,
            output,
            format,
        })
    }

    /// Starts `custos run` on the embedded default, its standard output (JSON lines) going to
    /// a file in `work`, as a new user runs it.
    pub fn embedded_default(custos: &Path, work: &Path) -> Result<Self> {
        let output = work.join("events.jsonl");
        let stdout = std::fs::File::create(&output)?;
        Ok(Self {
            child: start_daemon(custos, None, stdout.into())?,
            output,
            format: OutputFormat::Json,
        })
    }

    /// Starts `custos` on the embedded default with its standard-output sink replaced by a
    /// protobuf file in `work`: every other setting is the default's.
    pub fn default_with_protobuf_file(custos: &Path, work: &Path) -> Result<Self> {
        let (settings, sinks) = EMBEDDED_DEFAULT
            .rsplit_once("[[sinks]]")
            .context("the embedded default has no sink")?;
        if !sinks.contains("type = \"stdout\"") {
            bail!("the embedded default's last sink is not stdout: update the benchmark");
        }
        Self::start(custos, work, settings)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event it wrote, decoded (call after [`Self::stop`]).
    pub fn events(output: &Path, format: OutputFormat) -> Result<Vec<Event>> {
        let reader = BufReader::new(std::fs::File::open(output)?);
        match format {
            OutputFormat::Protobuf => Ok(custos_proto::delimited::read_all(reader)?),
            OutputFormat::Json => reader
                .lines()
                .map(|line| Ok(serde_json::from_str(&line?)?))
                .collect(),
        }
    }

    /// Stops it with SIGTERM (it then writes out what it holds); the CPU time it used in all.
    pub fn stop(self) -> Result<Duration> {
        terminate(self.child)
    }
}

/// Stops a `custos run` with SIGTERM and waits for it; the CPU time it used in all. An exit
/// status other than 0 is an error.
pub(crate) fn terminate(daemon: Child) -> Result<Duration> {
    sh(Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string()))?;
    let (status, cpu) = wait_with_cpu(daemon)?;
    if status != 0 {
        bail!("custos exited with status {status}");
    }
    Ok(cpu)
}

/// Starts `custos run` (with `--config CONFIG`, or on the embedded default) and waits until
/// its hooks are attached.
pub(crate) fn start_daemon(custos: &Path, config: Option<&Path>, stdout: Stdio) -> Result<Child> {
    let mut command = Command::new(custos);
    command.arg("run");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    spawn_until_ready(&mut command, stdout, Duration::from_secs(60))
}

/// Spawns `command`, a `custos run` (or one wrapped in another program), and waits up to
/// `patience` until its hooks are attached.
pub(crate) fn spawn_until_ready(
    command: &mut Command,
    stdout: Stdio,
    patience: Duration,
) -> Result<Child> {
    spawn_logging_until_ready(command, stdout, patience).map(|(daemon, _)| daemon)
}

/// [`spawn_until_ready`], with the lines the daemon logged before it said it was ready.
pub(crate) fn spawn_logging_until_ready(
    command: &mut Command,
    stdout: Stdio,
    patience: Duration,
) -> Result<(Child, Vec<String>)> {
    let mut daemon = command
        .env("NO_COLOR", "1")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stderr = daemon.stderr.take().context("no stderr")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut before_ready = Some(Vec::new());
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ERROR") || line.contains("error:") {
                eprintln!("custos: {line}");
            }
            if line.contains("sensor ready") {
                let _ = ready_tx.send(before_ready.take().unwrap_or_default());
            } else if let Some(lines) = &mut before_ready {
                lines.push(line);
            }
        }
    });
    match ready_rx.recv_timeout(patience) {
        Ok(logged) => Ok((daemon, logged)),
        Err(_) => {
            let _ = daemon.kill();
            let _ = daemon.wait();
            bail!("custos did not become ready");
        }
    }
}

/// The `custos_bpf_run_seconds` gauges of the daemon whose metrics endpoint is at `address`,
/// by program.
pub fn bpf_by_program(address: &str) -> Result<Vec<(String, f64)>> {
    Ok(metrics_text(address)?
        .lines()
        .filter_map(|l| l.strip_prefix("custos_bpf_run_seconds{program=\""))
        .filter_map(|l| {
            let (name, rest) = l.split_once('"')?;
            Some((name.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect())
}

/// The metrics exposition of the daemon whose metrics endpoint is at `address`.
pub fn metrics_text(address: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("connecting to the metrics endpoint {address}"))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// The sum of every sample of the metric `name` (all its label sets) in `text`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

/// Each program's run time since `before` (an earlier [`bpf_by_program`] of the same daemon).
pub fn bpf_since(address: &str, before: &[(String, f64)]) -> Result<Vec<(String, f64)>> {
    Ok(bpf_by_program(address)?
        .into_iter()
        .map(|(name, after)| {
            let earlier = before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, t)| *t);
            (name, (after - earlier).max(0.0))
        })
        .collect())
}

/// user + system CPU of a live process (every thread it ran, including those that ended), to
/// the nanosecond from its CPU-time clock. `/proc/PID/stat` counts in clock ticks (10 ms): a
/// daemon using 1.6% of a core for 10 s is 16 ticks there, a step of 6% in every figure.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    process_clock(pid).or_else(|_| process_ticks(pid))
}

fn process_clock(pid: u32) -> Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the out-pointer is a local; the call only computes the clock's id.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    if rc != 0 {
        bail!(
            "clock_getcpuclockid({pid}): {}",
            std::io::Error::from_raw_os_error(rc)
        );
    }
    clock_now(clock).map_err(|err| anyhow::anyhow!("clock_gettime of {pid}: {err}"))
}

/// The time on `clock` now.
pub(crate) fn clock_now(clock: libc::clockid_t) -> std::io::Result<Duration> {
    // SAFETY: timespec is plain data that clock_gettime fills in.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: an out-pointer to a local; a clock id the kernel does not know is an error.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// [`process_cpu`] from /proc, in clock ticks, where a process's clock cannot be read.
fn process_ticks(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Waits for `child` and returns its exit status with the CPU time it used in all.
fn wait_with_cpu(child: Child) -> Result<(i32, Duration)> {
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    // SAFETY: waiting for our own child with valid out-pointers.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, time(usage.ru_utime) + time(usage.ru_stime)))
}

/// Opens of `file` by `pids` that the output accounts for (events plus summarised repeats),
/// the events the sensor reported lost, and the events written in all.
pub fn account(
    output: &Path,
    format: OutputFormat,
    file: &Path,
    pids: &[u32],
) -> Result<(u64, u64, u64)> {
    let events = BenchDaemon::events(output, format)?;
    let written = events.len() as u64;
    let path = file.to_string_lossy();
    let mut accounted = 0;
    let mut lost = 0;
    for event in events {
        match &event.body {
            Some(Body::FileOpen(open)) => {
                let pid = event.process.as_ref().map_or(0, |p| p.pid);
                if open.path == path && pids.contains(&pid) {
                    accounted += if open.repeat_summary { open.repeats } else { 1 };
                }
            }
            Some(Body::Loss(loss)) => lost += loss.count,
            _ => {}
        }
    }
    Ok((accounted, lost, written))
}

/// Installs and starts auditd if needed, with no rules; see [`Auditd`].
pub fn ensure_auditd() -> Result<Auditd> {
    if !have("auditctl") {
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "auditd"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let started = !crate::shell::succeeds(Command::new("pidof").arg("auditd"));
    if started {
        sh(&mut Command::new("auditd"))?;
        std::thread::sleep(Duration::from_millis(500));
    }
    let auditd = Auditd { started };
    sh(Command::new("auditctl").arg("-D"))?;
    Ok(auditd)
}

/// auditd for a benchmark: when the benchmark started it, it is stopped at the end, so that it
/// does not audit what runs after (the tests' logins among them).
pub struct Auditd {
    started: bool,
}

impl Drop for Auditd {
    fn drop(&mut self) {
        let _ = sh(Command::new("auditctl").arg("-D"));
        if self.started {
            if let Err(err) = sh(Command::new("pkill").args(["-TERM", "-x", "auditd"])) {
                eprintln!("xtask: stopping the auditd this benchmark started: {err:#}");
            }
        }
    }
}

/// Has auditd record every call of `syscalls` (comma-separated), under `key`.
pub(crate) fn audit_syscalls(syscalls: &str, key: &str) -> Result<()> {
    let rule = [
        "-a",
        "always,exit",
        "-F",
        "arch=b64",
        "-S",
        syscalls,
        "-k",
        key,
    ];
    sh(Command::new("auditctl").args(rule))
}

fn with_auditd(file: &Path, loops: &Loops) -> Result<Round> {
    audit_syscalls("open,openat,openat2,creat", "custos-bench")?;
    let measured = loop_only(file, loops);
    sh(Command::new("auditctl").arg("-D"))?;
    measured
}

/// A TCP collector on loopback that reads and discards, counting the bytes: its address and
/// the count.
pub(crate) fn counting_collector() -> Result<(String, Arc<AtomicU64>)> {
    let collector = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = collector.local_addr()?.to_string();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for mut stream in collector.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((address, received))
}

/// The numbers in a helper's one-line output (the sinks benchmark, `exec-loop`), in order.
pub fn numbers<T: std::str::FromStr>(text: &str) -> Vec<T> {
    text.split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect()
}

/// Runs `rounds` rounds of every setup, interleaved so that drift on the machine hits all of
/// them alike; `what` names the benchmark in the progress lines.
pub(crate) fn interleaved<S: Copy, R>(
    what: &str,
    setups: &[S],
    rounds: usize,
    label: impl Fn(S) -> &'static str,
    mut measure: impl FnMut(S) -> Result<R>,
) -> Result<Vec<(S, Vec<R>)>> {
    let mut results: Vec<(S, Vec<R>)> = setups.iter().map(|s| (*s, Vec::new())).collect();
    for round in 0..rounds {
        for (setup, measured) in &mut results {
            eprintln!(
                "xtask: bench {what}: round {} of {rounds}: {}",
                round + 1,
                label(*setup)
            );
            measured.push(measure(*setup)?);
        }
    }
    Ok(results)
}

/// A KiB figure of /proc/PID/status (`VmRSS:`, `VmHWM:`, `RssAnon:`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_written_median_first_with_its_decimals() {
        let measured = spread(vec![3.254, 1.0, 2.5]);
        assert_eq!(range_text(measured, 2), "2.50 (1.00..3.25)");
        assert_eq!(range_text(measured, 0), "2 (1..3)");
    }

    #[test]
    fn a_process_clock_counts_what_proc_counts_to_the_nanosecond() {
        let pid = std::process::id();
        let (clock_before, ticks_before) =
            (process_clock(pid).unwrap(), process_ticks(pid).unwrap());
        // Spin until /proc has counted ten ticks, however busy the machine is.
        let mut x = 0u64;
        while process_ticks(pid).unwrap() - ticks_before < Duration::from_millis(100) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let clock = process_clock(pid).unwrap() - clock_before;
        let ticks = process_ticks(pid).unwrap() - ticks_before;
        // Ticks are 10 ms apart and each reading may round down by one.
        let gap = clock.abs_diff(ticks);
        assert!(
            gap <= Duration::from_millis(30),
            "clock {clock:?}, ticks {ticks:?}"
        );
        assert_ne!(
            clock.subsec_nanos() % 1_000_000,
            0,
            "{clock:?} looks like whole ticks"
        );
    }
}
