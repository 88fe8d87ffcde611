//! `cargo xtask bench network`: the cost of a TCP connection (connect, 1 KiB each way, close)
//! with nothing attached and with Custos on its default configuration, side by side in one
//! run. The server runs in a network namespace behind a veth pair, so the peer is not a
//! loopback address and the default configuration reports both ends: the client's connect and
//! close, the server's accept and close.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use custos_proto::v1::{event::Body, NetworkOperation};

use crate::{
    bench::{interleaved, process_cpu, spread, BenchDaemon},
    report::Report,
    shell::{run as sh, target_dir},
};

/// Port of the daemon's metrics endpoint during the benchmark (for its BPF run time).
const METRICS: &str = "127.0.0.1:19465";
const NAMESPACE: &str = "custos-bench-net";
const HOST_END: &str = "cbench0";
const SERVER: &str = "10.78.0.2:7070";
/// Payload each way per connection.
const PAYLOAD: usize = 1024;

pub struct Options {
    pub seconds: u64,
    pub rounds: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Baseline,
    Custos,
}

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Setup::Baseline => "nothing attached",
            Setup::Custos => "custos, default config, protobuf file",
        }
    }
}

#[derive(Clone, Default)]
struct Round {
    connections: u64,
    elapsed: Duration,
    /// CPU of the client and of the server (each pays the hooks in its own context).
    client_cpu: Duration,
    server_cpu: Duration,
    daemon_cpu: Duration,
    /// Run time of each eBPF program over the round.
    bpf: Vec<(String, f64)>,
    /// Client connection ends missing from the output.
    lost: Option<u64>,
}

impl Round {
    fn micros_per_connection(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.connections.max(1) as f64
    }
}

pub fn network(options: &Options, report: &mut Report) -> Result<()> {
    let custos = target_dir().join("release/custos");
    let work = tempfile::tempdir()?;
    let _namespace = Namespace::create()?;
    let setups = [Setup::Baseline, Setup::Custos];
    let results = interleaved("network", &setups, options.rounds, Setup::label, |setup| {
        let server = Server::start()?;
        match setup {
            Setup::Baseline => connect_round(&server, options.seconds),
            Setup::Custos => with_custos(&custos, work.path(), &server, options.seconds),
        }
    })?;
    table(report, options, &results);
    Ok(())
}

fn table(report: &mut Report, options: &Options, results: &[(Setup, Vec<Round>)]) {
    report.line(String::new());
    report.line(format!(
        "network: TCP connections to a server in a network namespace (connect, {PAYLOAD} B each \
         way, close), one at a time for {} s; median of {} rounds; µs per connection",
        options.seconds, options.rounds
    ));
    report.line(format!(
        "(cargo xtask bench network --seconds {} --rounds {})",
        options.seconds, options.rounds
    ));
    report.line(format!(
        "{:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "setup", "conn/s", "wall µs", "client µs", "server µs", "daemon µs", "lost"
    ));
    let median =
        |rounds: &[Round], f: &dyn Fn(&Round) -> f64| spread(rounds.iter().map(f).collect()).1;
    let baseline_wall = results.first().map_or(0.0, |(_, r)| {
        median(r, &|r| r.micros_per_connection(r.elapsed))
    });
    for (setup, rounds) in results {
        let wall = median(rounds, &|r| r.micros_per_connection(r.elapsed));
        let rate = median(rounds, &|r| r.connections as f64 / r.elapsed.as_secs_f64());
        let lost = rounds.iter().filter_map(|r| r.lost).max();
        report.line(format!(
            "{:<40} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>10} {:>8}",
            setup.label(),
            rate,
            wall,
            median(rounds, &|r| r.micros_per_connection(r.client_cpu)),
            median(rounds, &|r| r.micros_per_connection(r.server_cpu)),
            if *setup == Setup::Baseline {
                "-".to_owned()
            } else {
                format!(
                    "{:.1}",
                    median(rounds, &|r| r.micros_per_connection(r.daemon_cpu))
                )
            },
            lost.map_or("-".to_owned(), |l| l.to_string())
        ));
        if *setup == Setup::Custos {
            report.line(format!(
                "  wall time per connection vs nothing attached: {:.2}x",
                wall / baseline_wall.max(1e-9)
            ));
            bpf_lines(report, rounds);
        }
    }
}

/// Each eBPF program's run time per connection (median over rounds), busiest first.
fn bpf_lines(report: &mut Report, rounds: &[Round]) {
    let mut programs: Vec<(String, f64)> = Vec::new();
    for (name, _) in rounds.first().map_or(&[][..], |r| &r.bpf[..]) {
        let per: Vec<f64> = rounds
            .iter()
            .map(|r| {
                let secs = r
                    .bpf
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, s)| *s);
                secs * 1e6 / r.connections.max(1) as f64
            })
            .collect();
        programs.push((name.clone(), spread(per).1));
    }
    programs.retain(|(_, us)| *us >= 0.005);
    programs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = programs.iter().map(|(_, us)| us).sum();
    report.line(format!("  BPF per connection, both ends: {total:.2} µs"));
    for (name, us) in programs {
        report.line(format!("    {name:<32} {us:>8.2} µs"));
    }
}

fn with_custos(custos: &Path, work: &Path, server: &Server, seconds: u64) -> Result<Round> {
    let daemon = BenchDaemon::start(
        custos,
        work,
        &format!("[metrics]\nlisten = \"{METRICS}\"\n"),
    )?;
    let cpu_before = process_cpu(daemon.pid())?;
    let bpf_before = crate::bench::bpf_by_program(METRICS)?;
    let mut round = connect_round(server, seconds)?;
    std::thread::sleep(crate::bench::DRAINED_AFTER);
    round.daemon_cpu = process_cpu(daemon.pid())?.saturating_sub(cpu_before);
    round.bpf = crate::bench::bpf_since(METRICS, &bpf_before)?;
    let (output, format) = (daemon.output.clone(), daemon.format);
    daemon.stop()?;
    let events = BenchDaemon::events(&output, format)?;
    let server_port = SERVER
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u32>().ok());
    let ends = events
        .iter()
        .filter(|e| match &e.body {
            Some(Body::Network(n)) => {
                n.operation() == NetworkOperation::Close
                    && Some(n.remote_port) == server_port
                    && n.syscall == "connect"
            }
            _ => false,
        })
        .count() as u64;
    round.lost = Some(round.connections.saturating_sub(ends));
    Ok(round)
}

/// Runs the connect loop helper against the server and returns what it measured.
fn connect_round(server: &Server, seconds: u64) -> Result<Round> {
    let server_before = process_cpu(server.pid())?;
    let out = Command::new(std::env::current_exe()?)
        .args(["connect-loop", "--seconds", &seconds.to_string(), SERVER])
        .stderr(Stdio::inherit())
        .output()
        .context("running the connect loop")?;
    ensure!(out.status.success(), "the connect loop failed");
    let fields: Vec<u64> = crate::bench::numbers(&String::from_utf8_lossy(&out.stdout));
    let [connections, elapsed_ns, cpu_ns] = fields[..] else {
        bail!("the connect loop printed {:?}", out.stdout);
    };
    Ok(Round {
        connections,
        elapsed: Duration::from_nanos(elapsed_ns),
        client_cpu: Duration::from_nanos(cpu_ns),
        server_cpu: process_cpu(server.pid())?.saturating_sub(server_before),
        ..Round::default()
    })
}

/// The veth pair and namespace the server runs in; removed at drop.
struct Namespace;

impl Namespace {
    fn create() -> Result<Self> {
        Self::remove();
        let ip = |args: &[&str]| sh(Command::new("ip").args(args));
        ip(&["netns", "add", NAMESPACE])?;
        let this = Self;
        ip(&[
            "link", "add", HOST_END, "type", "veth", "peer", "name", "inner", "netns", NAMESPACE,
        ])?;
        ip(&["addr", "add", "10.78.0.1/24", "dev", HOST_END])?;
        ip(&["link", "set", HOST_END, "up"])?;
        ip(&[
            "-n",
            NAMESPACE,
            "addr",
            "add",
            "10.78.0.2/24",
            "dev",
            "inner",
        ])?;
        ip(&["-n", NAMESPACE, "link", "set", "inner", "up"])?;
        Ok(this)
    }

    fn remove() {
        for args in [&["link", "del", HOST_END][..], &["netns", "del", NAMESPACE]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        Self::remove();
    }
}

/// The accept loop, in the namespace; stopped at drop.
struct Server(Child);

impl Server {
    fn start() -> Result<Self> {
        let child = Command::new("ip")
            .args(["netns", "exec", NAMESPACE])
            .arg(std::env::current_exe()?)
            .args(["accept-loop", SERVER])
            .spawn()
            .context("starting the accept loop")?;
        let server = Self(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(SERVER).is_err() {
            ensure!(Instant::now() < deadline, "the accept loop did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `ip netns exec` replaces itself with the loop: the child is the server.
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `xtask accept-loop ADDRESS`: accepts one connection at a time, reads the payload, answers
/// with as much and closes first (so TIME_WAIT stays on this side and the client's ports are
/// free again at once).
pub fn accept_loop(address: &str) -> Result<()> {
    let listener = TcpListener::bind(address).with_context(|| format!("binding {address}"))?;
    let answer = vec![b'a'; PAYLOAD];
    let mut request = vec![0u8; PAYLOAD];
    for connection in listener.incoming() {
        let Ok(mut connection) = connection else {
            continue;
        };
        if connection.read_exact(&mut request).is_ok() {
            let _ = connection.write_all(&answer);
        }
    }
    Ok(())
}

/// `xtask connect-loop --seconds N ADDRESS`: connections one after another for N seconds;
/// prints how many, the wall time and its own CPU time, in nanoseconds.
pub fn connect_loop(address: &str, seconds: u64) -> Result<()> {
    let payload = vec![b'c'; PAYLOAD];
    let mut answer = Vec::with_capacity(PAYLOAD);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut connections = 0u64;
    while Instant::now() < until {
        let mut stream = TcpStream::connect(address)?;
        stream.write_all(&payload)?;
        answer.clear();
        stream.read_to_end(&mut answer)?;
        connections += 1;
    }
    let elapsed = started.elapsed();
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    println!("{connections} {} {}", elapsed.as_nanos(), cpu.as_nanos());
    Ok(())
}
