//! The daemon's own counters: a Prometheus endpoint (loopback by default) and the report
//! `custos status` prints, from one registry.
use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Instant,
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UnixListener},
    sync::{mpsc, oneshot},
};

/// A request to bring the gauges up to date, answered once they are.
pub type GaugeRequest = oneshot::Sender<()>;

/// Asks the daemon, which owns what the gauges are read from (the programs, the spools), to
/// read them now. They are read when someone asks rather than on a timer: reading the eBPF
/// statistics and /proc costs the daemon a few hundred microseconds each time, and most
/// seconds nobody looks.
#[derive(Clone)]
pub struct GaugeRefresh(mpsc::Sender<GaugeRequest>);

impl GaugeRefresh {
    pub fn channel() -> (Self, mpsc::Receiver<GaugeRequest>) {
        let (requests, received) = mpsc::channel(16);
        (Self(requests), received)
    }

    /// Returns once the daemon has read the gauges, or at once when it no longer reads them
    /// (stopping): the last values stand.
    pub async fn refreshed(&self) {
        let (done, answered) = oneshot::channel();
        if self.0.send(done).await.is_ok() {
            let _ = answered.await;
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub run_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkErrorLabels {
    pub sink: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub hook: String,
    pub path: String,
}

/// Each network sink's last delivery error (the gauge's value: when, in Unix seconds).
#[derive(Clone, Debug, Default)]
pub struct SinkErrorLog {
    family: Family<SinkErrorLabels, Gauge>,
    current: Arc<Mutex<HashMap<String, SinkErrorLabels>>>,
}

impl SinkErrorLog {
    /// Records `sink`'s latest delivery error, replacing the one before.
    pub fn note(&self, sink: &str, error: &str) {
        let labels = SinkErrorLabels {
            sink: sink.into(),
            error: error.into(),
        };
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = current.insert(sink.into(), labels.clone()) {
            self.family.remove(&previous);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.family
            .get_or_create(&labels)
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Each sink's latest delivery error, as `<sink>: <error>`.
    pub fn latest(&self) -> Vec<String> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .values()
            .map(|labels| format!("{}: {}", labels.sink, labels.error))
            .collect()
    }
}

/// Every counter and gauge, shared by the pipeline, the sinks and the servers.
pub struct Metrics {
    registry: Registry,
    pub events: Family<KindLabels, Counter>,
    pub kernel_drops: Family<KindLabels, Counter>,
    pub sink_events: Family<SinkLabels, Counter>,
    pub sink_errors: Family<SinkLabels, Counter>,
    pub spool_bytes: Family<SinkLabels, Gauge>,
    pub spool_age: Family<SinkLabels, Gauge<f64, AtomicU64>>,
    pub bpf_run_seconds: Family<ProgramLabels, Gauge<f64, AtomicU64>>,
    pub bpf_run_count: Family<ProgramLabels, Gauge>,
    pub hooks: Family<HookLabels, Gauge>,
    pub sink_queue_events: Gauge,
    pub rss_bytes: Gauge,
    pub cpu_seconds: Gauge<f64, AtomicU64>,
    pub uptime_seconds: Gauge,
    build: Family<BuildLabels, Gauge>,
    pub sink_last_error: SinkErrorLog,
    pub run_id: String,
    pub started: Instant,
}

impl Metrics {
    pub fn new(run_id: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix("custos");
        let metrics = Self {
            events: Family::default(),
            kernel_drops: Family::default(),
            sink_events: Family::default(),
            sink_errors: Family::default(),
            spool_bytes: Family::default(),
            spool_age: Family::default(),
            bpf_run_seconds: Family::default(),
            bpf_run_count: Family::default(),
            hooks: Family::default(),
            sink_queue_events: Gauge::default(),
            rss_bytes: Gauge::default(),
            cpu_seconds: Gauge::default(),
            uptime_seconds: Gauge::default(),
            build: Family::default(),
            sink_last_error: SinkErrorLog::default(),
            registry: Registry::default(),
            run_id: run_id.to_owned(),
            started: Instant::now(),
        };
        // Each metric under its name (prefixed "custos_") with its help text.
        macro_rules! register {
            ($($metric:ident as $name:literal: $help:literal;)*) => {
                $(registry.register($name, $help, metrics.$metric.clone());)*
            };
        }
        registry.register(
            "sink_last_error",
            "A network sink's last delivery error, with when it happened (Unix seconds)",
            metrics.sink_last_error.family.clone(),
        );
        register! {
            events as "events":
                "Events emitted, by kind";
            kernel_drops as "kernel_drops":
                "Records the kernel could not queue (ring buffer full), by kind";
            sink_events as "sink_events":
                "Events written to a sink or its spool";
            sink_errors as "sink_errors":
                "Failed delivery attempts of a network sink";
            spool_bytes as "spool_bytes":
                "Bytes waiting in a network sink's spool";
            spool_age as "spool_oldest_age_seconds":
                "Age of the oldest event waiting in a network sink's spool (0 when empty)";
            bpf_run_seconds as "bpf_run_seconds":
                "Kernel time spent in each eBPF program (BPF stats)";
            bpf_run_count as "bpf_run_count":
                "Runs of each eBPF program (BPF stats)";
            hooks as "hook":
                "Attached kernel hooks, with the program type each uses (always 1)";
            sink_queue_events as "sink_queue_events":
                "Events made and not yet written by the sinks (at most about [output] \
                 queue_events; beyond it new events are counted as lost)";
            rss_bytes as "process_rss_bytes":
                "Resident memory of the daemon";
            cpu_seconds as "process_cpu_seconds":
                "User and system CPU time of the daemon";
            uptime_seconds as "uptime_seconds":
                "Seconds since the daemon started";
            build as "build":
                "This daemon's version and run id (always 1)";
        }
        metrics
            .build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                run_id: run_id.into(),
            })
            .set(1);
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    /// The Prometheus text exposition.
    pub fn exposition(&self) -> String {
        let mut text = String::new();
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// Refreshes the process gauges from /proc/self.
    pub fn refresh_process(&self) {
        self.uptime_seconds
            .set(i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX));
        if let Some(bytes) = resident_bytes() {
            self.rss_bytes.set(bytes);
        }
        // SAFETY: getrusage fills a plain struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            self.cpu_seconds
                .set(secs(usage.ru_utime) + secs(usage.ru_stime));
        }
    }
}

/// The daemon's resident memory, from `/proc/self/statm`: its second field, in pages. The
/// kernel writes that file from a few counters, where `status` formats fifty lines.
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = Some(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).filter(|&p| p > 0)?;
    Some(pages * page_size)
}

/// Serves `GET /metrics` on `listener` until the runtime stops.
pub async fn serve_http(listener: TcpListener, metrics: Arc<Metrics>, gauges: GaugeRefresh) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let gauges = gauges.clone();
        tokio::spawn(async move {
            let Some(head) = read_request_head(&mut stream).await else {
                return;
            };
            let response = if head.starts_with("GET /metrics ") || head.starts_with("GET /metrics?")
            {
                gauges.refreshed().await;
                let body = metrics.exposition();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The request line and headers (up to the blank line), bounded in size and time.
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Some(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()??;
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Serves the status report to each client of the Unix socket at `path`.
pub async fn serve_status(listener: UnixListener, metrics: Arc<Metrics>, gauges: GaugeRefresh) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let gauges = gauges.clone();
        tokio::spawn(async move {
            gauges.refreshed().await;
            let report = metrics.exposition();
            let _ = stream.write_all(report.as_bytes()).await;
        });
    }
}

/// Binds the status socket, root only: the counters say what the host is doing.
pub fn bind_status(path: &std::path::Path) -> Result<UnixListener> {
    bind_local_socket(path, 0o600, "the status socket")
}

/// Binds a Unix socket at `path` with permissions `mode`, creating its directory and replacing
/// a stale socket from an earlier run.
pub fn bind_local_socket(path: &std::path::Path, mode: u32, what: &str) -> Result<UnixListener> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            crate::files::private_dir(dir)?;
        }
        let private = std::fs::metadata(dir)?.mode() & 0o077 == 0;
        if mode & 0o077 != 0 && private {
            // Others may reach the socket by name (the daemon checks who connects); they
            // still cannot list or change the directory.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        }
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {what} {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// `custos status`: the running daemon's summary, or its metrics as Prometheus text.
pub fn print_status(path: &std::path::Path, prometheus: bool) -> Result<()> {
    use std::io::Read;
    let mut stream = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "connecting to {} (is custos running, and are you root?)",
            path.display()
        )
    })?;
    let mut report = String::new();
    stream.read_to_string(&mut report)?;
    if prometheus {
        print!("{report}");
    } else {
        print!(
            "{}",
            crate::views::status::render(&crate::views::status::parse(&report))
        );
    }
    Ok(())
}
