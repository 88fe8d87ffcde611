//! The delivery loop every network sink shares: batches from its spool to a transport, the
//! spool cursor moved only once the receiver confirmed a batch (batches are written ahead of
//! the confirmations, so a slow acknowledgement does not stall the stream), retries with
//! backoff, and a last attempt at what is spooled when the daemon stops.
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;

use super::spool::{Position, Spool};
use crate::metrics::SinkErrorLog;

/// Records a send takes at most, unless its transport asks for more.
pub const BATCH: usize = 512;
const IDLE_WAIT: Duration = Duration::from_millis(100);
const CONFIRMATION_WAIT: Duration = Duration::from_millis(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a sink puts a batch of spooled records on the wire.
pub trait Transport: Send + 'static {
    /// Writes the batch. Returns a mark, in the transport's own unit and growing on one
    /// connection: how much was written once this batch was.
    fn send(&mut self, records: &[Vec<u8>]) -> Result<u64>;
    /// The mark up to which the receiver confirmed having what was written (acknowledged by
    /// the protocol, or by the peer's TCP); an error when the connection failed meanwhile.
    fn confirmed(&mut self) -> Result<u64>;
    /// Forgets the connection after a failure, so the next send starts afresh.
    fn reset(&mut self);
    /// Records one send takes at most.
    fn batch_records(&self) -> usize {
        BATCH
    }
}

/// Batches written and not yet confirmed: each one's mark and the spool position after it.
type InFlight = VecDeque<(u64, Position)>;

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
        let mut retry = Retry::default();
        let mut stopping_since: Option<Instant> = None;
        let mut in_flight = InFlight::new();
        while !self.done(&mut stopping_since) {
            let after = in_flight.back().map_or(Position::default(), |(_, at)| *at);
            // While a confirmation is due, look for it often: the cursor (and the space of a
            // sent segment) follows it.
            let wait = if in_flight.is_empty() {
                IDLE_WAIT
            } else {
                CONFIRMATION_WAIT
            };
            let limit = transport.batch_records();
            let (records, position) = match self.spool.peek_after(after, limit, wait) {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(sink = %self.name, "reading the spool: {err:#}");
                    std::thread::sleep(MAX_BACKOFF);
                    continue;
                }
            };
            let sent = if records.is_empty() {
                Ok(())
            } else {
                transport
                    .send(&records)
                    .map(|mark| in_flight.push_back((mark, position)))
            };
            match sent.and_then(|()| self.commit_confirmed(transport, &mut in_flight)) {
                Ok(()) if !records.is_empty() => retry.succeeded(&self.name),
                Ok(()) => {}
                Err(err) => {
                    // What was not confirmed is sent again on the next connection.
                    in_flight.clear();
                    transport.reset();
                    self.errors.inc();
                    self.last_error.note(&self.name, &format!("{err:#}"));
                    retry.failed(&self.name, &self.target, &err);
                }
            }
        }
    }

    /// Stopping, and either everything was delivered or the grace time is over.
    fn done(&self, stopping_since: &mut Option<Instant>) -> bool {
        if !self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let since = *stopping_since.get_or_insert_with(Instant::now);
        self.spool.backlog_bytes() == 0 || since.elapsed() > self.drain_grace
    }

    /// Moves the spool cursor past every batch the receiver confirmed.
    fn commit_confirmed(
        &self,
        transport: &mut impl Transport,
        in_flight: &mut InFlight,
    ) -> Result<()> {
        if in_flight.is_empty() {
            return Ok(());
        }
        let confirmed = transport.confirmed()?;
        let mut position = None;
        while let Some(&(mark, at)) = in_flight.front() {
            if mark > confirmed {
                break;
            }
            position = Some(at);
            in_flight.pop_front();
        }
        if let Some(position) = position {
            if let Err(err) = self.spool.commit(position) {
                tracing::error!(sink = %self.name, "committing the spool cursor: {err:#}");
            }
        }
        Ok(())
    }
}

/// Backoff between failed attempts, and one log line per outage rather than per retry.
struct Retry {
    backoff: Duration,
    failures: u64,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            backoff: FIRST_BACKOFF,
            failures: 0,
        }
    }
}

impl Retry {
    fn succeeded(&mut self, sink: &str) {
        if self.failures > 0 {
            tracing::info!(%sink, "delivering again after {} failed attempts", self.failures);
        }
        *self = Self::default();
    }

    fn failed(&mut self, sink: &str, target: &str, err: &anyhow::Error) {
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(
                %sink,
                %target,
                "cannot deliver, events stay in the spool and are retried: {err:#}"
            );
        }
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::AtomicU64, Mutex};

    use super::*;

    /// Counts records as its mark and confirms what the test allows; fails once when told.
    #[derive(Clone, Default)]
    struct Receiver {
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
        confirm_up_to: Arc<AtomicU64>,
        fail: Arc<AtomicBool>,
        written: u64,
    }

    impl Transport for Receiver {
        fn send(&mut self, records: &[Vec<u8>]) -> Result<u64> {
            self.sent.lock().unwrap().extend_from_slice(records);
            self.written += records.len() as u64;
            Ok(self.written)
        }

        fn confirmed(&mut self) -> Result<u64> {
            if self.fail.swap(false, Ordering::Relaxed) {
                anyhow::bail!("the connection failed");
            }
            Ok(self.confirm_up_to.load(Ordering::Relaxed))
        }

        fn reset(&mut self) {
            self.written = 0;
        }
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_cursor_moves_only_past_confirmed_batches_and_the_rest_is_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
        let record = |n: u8| vec![1, n];
        spool
            .append(&[record(1), record(2), record(3)].concat())
            .unwrap();
        let receiver = Receiver::default();
        let stop = Arc::new(AtomicBool::new(false));
        let delivery = Delivery {
            name: "test".into(),
            target: "nowhere".into(),
            spool: spool.clone(),
            stop: stop.clone(),
            drain_grace: Duration::ZERO,
            errors: Counter::default(),
            last_error: SinkErrorLog::default(),
        };
        let sender = delivery.spawn(receiver.clone()).unwrap();
        let sent = receiver.sent.clone();
        wait_until("three records sent", || sent.lock().unwrap().len() == 3);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            spool.backlog_bytes(),
            6,
            "nothing confirmed, nothing committed"
        );

        // The connection fails before any confirmation: all three are sent again.
        receiver.fail.store(true, Ordering::Relaxed);
        wait_until("three records sent again", || {
            sent.lock().unwrap().len() == 6
        });
        assert_eq!(sent.lock().unwrap()[3..], [record(1), record(2), record(3)]);
        // A batch is committed whole.
        receiver.confirm_up_to.store(2, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(spool.backlog_bytes(), 6);
        receiver.confirm_up_to.store(3, Ordering::Relaxed);
        wait_until("all confirmed", || spool.backlog_bytes() == 0);
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        assert_eq!(sent.lock().unwrap().len(), 6);
    }
}
