//! `cargo xtask bench sink`: events per second through each sink type, to real receivers on
//! loopback (a TCP collector in this process, rsyslogd, nats-server with JetStream), in rounds
//! interleaved across the sinks. A round takes a fraction of a second to a file, so one round
//! alone is at the mercy of the machine's moment: the report gives the median with the range.
//! Before each run, dirty pages are written out and the page cache is dropped (see
//! [`fresh_page_cache`]), so that every run starts from the same memory.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    bench::{counting_collector, interleaved, numbers, process_cpu, range_text, spread},
    bench_rsyslog::{self, Rsyslog},
    report::Report,
};

/// Events per round unless told: at 100,000, a round to a file or to NATS took a tenth of a
/// second, and its rate moved by half from round to round.
pub const EVENTS_PER_ROUND: u64 = 300_000;

/// One run of one sink.
struct SinkRun {
    accepted_per_second: f64,
    delivered_per_second: f64,
    /// The receiver's CPU while the sink delivered, in % of a core per second of delivery.
    receiver_busy: Option<f64>,
    /// Cores the receiver would need at 250,000 events/s, at its CPU per event.
    receiver_cores: Option<f64>,
}

/// `events` synthetic events through each sink, `rounds` times.
pub fn sink(events: u64, rounds: usize, report: &mut Report) -> Result<()> {
    let work = tempfile::tempdir()?;
    let (tcp_address, _) = counting_collector()?;
    let mut receivers = Receivers::start(work.path())?;
    let cases = sink_cases(work.path(), &tcp_address, &receivers);
    report.line("");
    report.line(format!(
        "{events} synthetic file-open events per sink, release build; median of {rounds} rounds \
         (min..max), interleaved across the sinks, the page cache dropped before each \
         (cargo xtask bench sink --events {events} --rounds {rounds})"
    ));
    report.line(format!(
        "{:<30} {:>28} {:>28} {:>13} {:>15}",
        "sink", "accepted/s", "delivered/s", "receiver CPU", "receiver cores"
    ));
    report.line(format!(
        "{:<30} {:>28} {:>28} {:>13} {:>15}",
        "", "", "", "% (core)", "at 250k/s"
    ));
    let indices: Vec<usize> = (0..cases.len()).collect();
    let mut runs_done = 0;
    let results = interleaved(
        "sink",
        &indices,
        rounds,
        |i| cases[i].0,
        |i| {
            runs_done += 1;
            run_case(work.path(), &cases[i], runs_done, events)
        },
    )?;
    for (i, runs) in results {
        report.line(sink_row(cases[i].0, &runs));
    }
    let evidence = bench_rsyslog::evidence(&receivers.rsyslog, events, report);
    receivers.stop();
    evidence
}

/// Runs one case (its label, `[[sinks]]` body and receiver's pid) with a spool of its own.
fn run_case(
    work: &Path,
    (label, sink, receiver): &(&'static str, String, Option<u32>),
    run: usize,
    events: u64,
) -> Result<SinkRun> {
    let spool = work.join(format!("spool-{run}"));
    let config = work.join("bench-sink.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\ndir = \"{}\"\nmax_bytes = 4294967296\n[[sinks]]\n{sink}\n",
            spool.display()
        ),
    )?;
    fresh_page_cache()?;
    let receiver_cpu = |pid: Option<u32>| pid.and_then(|pid| process_cpu(pid).ok());
    let before = receiver_cpu(*receiver);
    let [n, accepted, delivered] = run_sinks_bench(label, events, &config)?;
    let used = match (before, receiver_cpu(*receiver)) {
        (Some(before), Some(after)) => Some((after - before).as_secs_f64()),
        _ => None,
    };
    Ok(SinkRun {
        accepted_per_second: n / (accepted / 1e9),
        delivered_per_second: n / (delivered / 1e9),
        receiver_busy: used.map(|cpu| cpu * 1e11 / delivered.max(1.0)),
        receiver_cores: used.map(|cpu| cpu / n * 250_000.0),
    })
}

/// Writes out what earlier runs left dirty, so that this one is not throttled for it, and
/// drops the page cache, so that every run writes into memory just freed. On a VM that hands
/// free memory back to its host (virtio-balloon free page reporting), pages never used since
/// fault in the host first: a protobuf file run went from 1.8M to 0.5M events/s with 700 MB of
/// other files cached, and back once they were removed.
fn fresh_page_cache() -> Result<()> {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache (/proc/sys/vm/drop_caches; run as root)")
}

/// A sink's line: rates as median (min..max), the receiver's figures as medians.
fn sink_row(label: &str, runs: &[SinkRun]) -> String {
    let rate = |f: fn(&SinkRun) -> f64| range_text(spread(runs.iter().map(f).collect()), 0);
    let receiver = |f: fn(&SinkRun) -> Option<f64>, precision: usize| {
        let values: Option<Vec<f64>> = runs.iter().map(f).collect();
        values.map_or("-".to_owned(), |values| {
            format!("{:.precision$}", spread(values).1)
        })
    };
    format!(
        "{label:<30} {:>28} {:>28} {:>13} {:>15}",
        rate(|r| r.accepted_per_second),
        rate(|r| r.delivered_per_second),
        receiver(|r| r.receiver_busy, 0),
        receiver(|r| r.receiver_cores, 1),
    )
}

/// Each sink measured: its label, its `[[sinks]]` body and the receiving server's pid.
fn sink_cases(
    work: &Path,
    tcp_address: &str,
    receivers: &Receivers,
) -> Vec<(&'static str, String, Option<u32>)> {
    vec![
        (
            "file, JSON lines",
            format!(
                "type = \"file\"\npath = \"{}/events.json\"\nformat = \"json\"",
                work.display()
            ),
            None,
        ),
        (
            "file, delimited protobuf",
            format!(
                "type = \"file\"\npath = \"{}/events.pb\"\nformat = \"protobuf\"",
                work.display()
            ),
            None,
        ),
        (
            "tcp, delimited protobuf",
            format!("type = \"tcp\"\naddress = \"{tcp_address}\""),
            None,
        ),
        (
            "syslog to rsyslogd",
            format!(
                "type = \"syslog\"\naddress = \"{}\"",
                receivers.rsyslog.address
            ),
            Some(receivers.rsyslog.pid),
        ),
        (
            "nats JetStream, acknowledged",
            format!(
                "type = \"nats\"\nurl = \"{}\"\nstream = \"BENCH\"\ncreate_stream = true",
                receivers.nats_url
            ),
            Some(receivers.nats_pid),
        ),
        (
            "nats, 100 events per message",
            format!(
                "type = \"nats\"\nurl = \"{}\"\nstream = \"BENCH\"\ncreate_stream = true\n\
                 events_per_message = 100",
                receivers.nats_url
            ),
            Some(receivers.nats_pid),
        ),
    ]
}

/// `cargo bench --bench sinks` on `config`: events, ns until accepted, ns until delivered.
fn run_sinks_bench(label: &str, events: u64, config: &Path) -> Result<[f64; 3]> {
    let out = crate::shell::cargo()
        .args(["bench", "-q", "-p", "custos", "--bench", "sinks", "--"])
        .args(["--events", &events.to_string(), "--config"])
        .arg(config)
        .env("CUSTOS_LOG", "warn")
        .output()
        .context("running the sinks benchmark (cargo bench -p custos --bench sinks)")?;
    if !out.status.success() {
        bail!(
            "the sinks benchmark for {label} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = numbers(&text);
    let [n, accepted, delivered] = fields[..] else {
        bail!("the sinks benchmark printed {text:?}");
    };
    Ok([n, accepted, delivered])
}

/// The servers the network sinks deliver to.
struct Receivers {
    rsyslog: Rsyslog,
    nats_url: String,
    nats_pid: u32,
    children: Vec<Child>,
}

impl Receivers {
    fn start(dir: &Path) -> Result<Self> {
        crate::setup::test_tools()?;
        let free_port = || -> Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let syslog_port = free_port()?;
        let config = dir.join("rsyslog.conf");
        let (stats, log) = (dir.join("rsyslog-stats.json"), dir.join("syslog.log"));
        std::fs::write(
            &config,
            format!(
                "global(workDirectory=\"{dir}\" maxMessageSize=\"64k\")\n{impstats}\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{syslog_port}\" ruleset=\"bench\")\n\
                 ruleset(name=\"bench\") {{ action(type=\"omfile\" file=\"{log}\") }}\n",
                dir = dir.display(),
                impstats = bench_rsyslog::impstats_module(&stats),
                log = log.display(),
            ),
        )?;
        let rsyslog = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .spawn()
            .context("starting rsyslogd")?;
        let nats_port = free_port()?;
        let nats = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &nats_port.to_string(),
                "-sd",
            ])
            .arg(dir.join("jetstream"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        for port in [syslog_port, nats_port] {
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    bail!("a receiver never listened on port {port}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(Self {
            rsyslog: Rsyslog {
                address: format!("127.0.0.1:{syslog_port}"),
                pid: rsyslog.id(),
                stats,
                log,
            },
            nats_url: format!("nats://127.0.0.1:{nats_port}"),
            nats_pid: nats.id(),
            children: vec![rsyslog, nats],
        })
    }

    fn stop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
