//! The delivery loop every network sink shares: batches from its spool to a transport, the
//! spool cursor moved only once the transport took a batch, retries with backoff, and a last
//! attempt at what is spooled when the daemon stops.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;

use super::spool::Spool;
use crate::metrics::SinkErrorLog;

const BATCH: usize = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a sink puts a batch of spooled records on the wire.
pub trait Transport: Send + 'static {
    /// Sends the batch; `Ok` means the receiver took all of it (written and flushed to the
    /// connection, or acknowledged, depending on the protocol).
    fn send(&mut self, records: &[Vec<u8>]) -> Result<()>;
    /// Forgets the connection after a failure, so the next send starts afresh.
    fn reset(&mut self);
}

pub struct Delivery {
    pub name: String,
    /// Where the transport delivers, for logs.
    pub target: String,
    pub spool: Arc<Spool>,
    pub stop: Arc<AtomicBool>,
    /// After stop, how long to keep delivering what is spooled before leaving it for the next
    /// start.
    pub drain_grace: Duration,
    /// Counts failed delivery attempts.
    pub errors: Counter,
    /// Keeps the last error for `custos status`.
    pub last_error: SinkErrorLog,
}

impl Delivery {
    pub fn spawn(self, transport: impl Transport) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("custos-{}", self.name))
            .spawn(move || {
                let mut transport = transport;
                self.run(&mut transport);
            })
            .context("starting a sink sender thread")
    }

    fn run(&self, transport: &mut impl Transport) {
        let mut backoff = Duration::from_millis(100);
        let mut stopping_since: Option<Instant> = None;
        let mut failures = 0u64;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if self.spool.backlog_bytes() == 0 || since.elapsed() > self.drain_grace {
                    break;
                }
            }
            let (records, position) = match self.spool.peek(BATCH, Duration::from_millis(100)) {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(sink = %self.name, "reading the spool: {err:#}");
                    std::thread::sleep(MAX_BACKOFF);
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            match transport.send(&records) {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(sink = %self.name, "delivering again after {failures} failed attempts");
                    }
                    failures = 0;
                    backoff = Duration::from_millis(100);
                    if let Err(err) = self.spool.commit(position) {
                        tracing::error!(sink = %self.name, "committing the spool cursor: {err:#}");
                    }
                }
                Err(err) => {
                    transport.reset();
                    failures += 1;
                    self.errors.inc();
                    self.last_error.note(&self.name, &format!("{err:#}"));
                    // One line per outage, not one per retry.
                    if failures == 1 {
                        tracing::warn!(
                            sink = %self.name,
                            target = %self.target,
                            "cannot deliver, events stay in the spool and are retried: {err:#}"
                        );
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
