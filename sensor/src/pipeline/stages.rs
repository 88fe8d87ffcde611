//! The stages between the ring buffer and the sink thread: decode, enrich, select, sequence,
//! alerts, the live stream and privacy, then hand-over in batches.
use std::{sync::Arc, time::Instant};

use anyhow::{anyhow, Result};
use aya::maps::{MapData, RingBuf};
use custos_proto::v1::{event::Body, Event, EventKind, LossReason, Process};
use prometheus_client::metrics::counter::Counter;
use sensor_common::{file_flags, network_record_flags};
use tokio::sync::{
    broadcast,
    mpsc::{error::TrySendError, Sender, UnboundedReceiver},
};

use super::batch_timer::BatchTimer;
use crate::{
    access::usage::UsageTracker,
    alert::AlertEngine,
    config::FileEvents,
    dedup::{self, KernelDedup, WindowStart},
    families::{self, Enricher, Record},
    identity::Nss,
    kernel::drops::{DropCause, DropCounters},
    metrics::{KindLabels, Metrics},
    privacy::Privacy,
    sinks::{Batch, PartIds, PartTagger, SharedParts, SpoolLoss},
};

/// Events handed to the sink thread at once at most (a large drain goes over in pieces, so the
/// sinks start writing early and memory stays flat).
pub(super) const SINK_BATCH: usize = 256;

/// Records one drain handles at most. When the kernel writes records faster than the daemon
/// reads them, a drain that went on until the ring was empty would never end, and nothing else
/// would run: no loss report, no stall warning, no status or scrape. The loop comes back to
/// the rest after its other work.
pub(super) const DRAIN_BUDGET: usize = 1024;

/// Events emitted, by kind: one counter handle per kind, fetched once.
pub(super) struct EventCounters {
    by_kind: Vec<(EventKind, Counter)>,
}

impl EventCounters {
    pub(super) fn new(metrics: &Metrics) -> Self {
        let by_kind = EventKind::of_bodies()
            .map(|kind| {
                let labels = KindLabels {
                    kind: kind.short_name().to_owned(),
                };
                (kind, metrics.events.get_or_create(&labels).clone())
            })
            .collect();
        Self { by_kind }
    }

    fn count(&self, event: &Event) {
        let kind = event.kind();
        if let Some((_, counter)) = self.by_kind.iter().find(|(k, _)| *k == kind) {
            counter.inc();
        }
    }
}

/// Resolves once the sink thread has room for a batch.
pub(super) async fn sink_room(out: &Sender<Batch>) -> Result<()> {
    match out.reserve().await {
        Ok(_room) => Ok(()),
        Err(_) => Err(sink_thread_stopped()),
    }
}

/// The error when the sink thread is gone: it logged why.
fn sink_thread_stopped() -> anyhow::Error {
    anyhow!("the sink thread stopped; see the error above")
}

/// Counts one more of `kind` in `counts`.
fn count_kind<K: PartialEq>(counts: &mut Vec<(K, u64)>, kind: K) {
    match counts.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, n)) => *n += 1,
        None => counts.push((kind, 1)),
    }
}

/// Stages between the ring buffer and the sink channel.
pub(super) struct Stages {
    pub(super) enricher: Enricher<Nss>,
    pub(super) dedup: KernelDedup,
    /// Whether exec/exit events are wanted (the table is kept either way).
    pub(super) process_events: bool,
    pub(super) next_seq: u64,
    /// Events for the sink thread, handed over a batch at a time: one wakeup of the sink
    /// thread per drain instead of one per event.
    pub(super) out: Sender<Batch>,
    pub(super) batch: Batch,
    /// A batch the sink thread had no room for: the sinks are behind (see
    /// [`Self::backed_up`]).
    pub(super) held: Option<Batch>,
    /// Events not made while the sinks were behind, by kind, to report as lost.
    pub(super) unmade: Vec<(EventKind, u64)>,
    /// Events sent to the sink thread, and those it gave back written: their difference is
    /// what its queue holds.
    pub(super) events_sent: u64,
    pub(super) events_written: u64,
    /// When `batch` goes to the sink thread while records keep coming.
    pub(super) batch_timer: BatchTimer,
    /// Names the parts of each event for the sinks' encoding caches.
    pub(super) tagger: PartTagger,
    /// Batches the sink thread has written, coming back: their events are freed here, on the
    /// thread that allocated them, so their memory goes straight back to this thread's free
    /// lists (a smaller resident set than freeing across threads), and one buffer is kept for
    /// the next batch.
    pub(super) spent: std::sync::mpsc::Receiver<Batch>,
    pub(super) spare: Option<Batch>,
    /// Undecodable records per kind since the last housekeeping tick.
    pub(super) undecodable: Vec<(u32, u64)>,
    /// What the sinks' spools dropped, to report in-band.
    pub(super) spool_losses: UnboundedReceiver<SpoolLoss>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) counters: EventCounters,
    pub(super) alerts: AlertEngine,
    /// Entitlement usage per person (`[access] usage`).
    pub(super) access: Option<UsageTracker>,
    pub(super) privacy: Privacy,
    pub(super) file_events: FileEvents,
    /// The daemon's process id: its children are its helpers.
    pub(super) own_pid: u32,
    /// The live stream's clients (`custos tail`); they get events before the sinks' privacy
    /// view and apply their own.
    pub(super) tail: broadcast::Sender<Arc<Event>>,
}

impl Stages {
    pub(super) fn emit(&mut self, event: Event) -> Result<()> {
        self.emit_identified(event, PartIds::default(), SharedParts::default())
    }

    /// [`Self::emit`] for an event whose builder gave some of its parts ids (`known`) and may
    /// hold parts apart (`shared`, see [`SharedParts`]).
    fn emit_identified(
        &mut self,
        mut event: Event,
        known: PartIds,
        mut shared: SharedParts,
    ) -> Result<()> {
        if self.wants_whole_events() {
            shared.restore(&mut event);
        }
        if !self.collected(&event, shared.process(&event)) {
            return Ok(());
        }
        // While the sinks are behind, an event is neither numbered nor queued, but alert rules
        // and entitlement usage still count it: access used while an output was stuck was
        // used all the same. Its alerts are not made either; they are reported lost with it.
        let made = !self.backed_up();
        if made {
            self.counters.count(&event);
            event.seq = self.next_seq;
            self.next_seq += 1;
        }
        // Rules see the real identity; sinks only ever see what privacy lets through.
        let alerts = self.alerts.evaluate(&event);
        if let Some(access) = &mut self.access {
            access.observe(&event, &shared);
        }
        if made {
            self.queue(event, known, shared)?;
        } else {
            count_kind(&mut self.unmade, event.kind());
        }
        for alert in alerts {
            self.emit(alert)?;
        }
        Ok(())
    }

    /// Puts a numbered event in the batch for the sinks (and shows it to `custos tail`),
    /// handing the batch over once it is full.
    fn queue(&mut self, event: Event, known: PartIds, shared: SharedParts) -> Result<()> {
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(Arc::new(event.clone()));
        }
        let alert = matches!(event.body, Some(Body::Alert(_)));
        // Moved into the batch first and finished there: each move was a copy of the event.
        self.batch.push(event, known, shared);
        if let Some((event, ids, shared)) = self.batch.last_mut() {
            self.privacy.apply(event);
            *ids = self.tagger.tag(event, shared, known);
        }
        self.batch_timer.pushed(alert);
        if self.batch.len() >= SINK_BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Whether a stage before the sinks reads whole events: the live stream, alert rules, or a
    /// privacy setting that rewrites processes or identities. Otherwise a process or identity
    /// the table shares travels beside its event to the encoders, which need no copy of it.
    fn wants_whole_events(&self) -> bool {
        self.tail.receiver_count() > 0
            || self.alerts.has_rules()
            || self.privacy.rewrites_shared_parts()
    }

    /// Hands the batch to the sink thread once it has waited long enough or holds an alert.
    pub(super) fn hand_over_when_due(&mut self) -> Result<()> {
        if self.batch_timer.due(Instant::now()) {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the events emitted so far to the sink thread, the held batch first. A batch it
    /// has no room for is held, and the sinks are behind until it goes.
    pub(super) fn hand_over(&mut self) -> Result<()> {
        self.free_spent();
        if let Some(held) = self.held.take() {
            self.send(held)?;
        }
        if self.batch.is_empty() || self.backed_up() {
            return Ok(());
        }
        self.batch_timer.handed_over();
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| Batch::with_capacity(SINK_BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        self.send(batch)
    }

    /// Sends `batch` to the sink thread, or holds it when the thread has no room.
    fn send(&mut self, batch: Batch) -> Result<()> {
        let events = batch.len() as u64;
        match self.out.try_send(batch) {
            Ok(()) => self.events_sent += events,
            Err(TrySendError::Full(batch)) => self.held = Some(batch),
            Err(TrySendError::Closed(_)) => return Err(sink_thread_stopped()),
        }
        Ok(())
    }

    /// Events made that the sinks have not written yet.
    pub(super) fn queued_events(&self) -> u64 {
        let held = self.held.as_ref().map_or(0, Batch::len);
        self.events_sent - self.events_written + (held + self.batch.len()) as u64
    }

    /// Whether the sinks are behind: their queue (`[output] queue_events`) is full and a batch
    /// waits for room. New events are then counted as lost instead of made, so this process's
    /// memory does not grow for as long as an output is stuck, while every kernel record is
    /// still read: the process table, sessions and device control stay current (and alert
    /// rules and entitlement usage still see the events not made).
    pub(super) fn backed_up(&self) -> bool {
        self.held.is_some()
    }

    /// Waits until the sink thread has room, then sends the held batch.
    pub(super) async fn wait_for_sinks(&mut self) -> Result<()> {
        if self.backed_up() {
            sink_room(&self.out).await?;
        }
        self.hand_over()
    }

    /// Hands every event emitted so far to the sink thread, waiting for room as long as it
    /// takes (at shutdown).
    pub(super) async fn hand_over_all(&mut self) -> Result<()> {
        loop {
            self.hand_over()?;
            if self.batch.is_empty() && !self.backed_up() {
                return Ok(());
            }
            self.wait_for_sinks().await?;
        }
    }

    /// Frees the events of the batches the sink thread has written.
    fn free_spent(&mut self) {
        while let Ok(mut spent) = self.spent.try_recv() {
            self.events_written += spent.len() as u64;
            spent.clear();
            if self.spare.is_none() {
                self.spare = Some(spent);
            }
        }
    }

    /// The privacy setting's file events: what the kernel could not leave out is left out here,
    /// before the event takes a seq. So is the activity of the daemon's own helpers (`sudo -l`
    /// for entitlement usage): like the daemon's own, it is the sensor's, and its arguments
    /// name people whatever the privacy settings say.
    fn collected(&self, event: &Event, process: Option<&Process>) -> bool {
        if process.is_some_and(|p| p.ppid == self.own_pid) {
            return false;
        }
        let Some(Body::FileOpen(open)) = &event.body else {
            return true;
        };
        let keep = || {
            open.device.as_ref().is_some_and(|d| d.watched)
                || self.alerts.in_sensitive_set(&open.path)
        };
        match self.file_events {
            FileEvents::All => true,
            FileEvents::NoHome => !open.path.starts_with("/home/") || keep(),
            FileEvents::SensitiveAndRemovable => keep(),
        }
    }

    fn handle(&mut self, bytes: &[u8]) -> Result<()> {
        match families::decode(bytes) {
            Ok(mut record) => {
                let dedup_first = match &record {
                    Record::FileOpen(open) if open.fixed.flags & file_flags::DEDUP_FIRST != 0 => {
                        Some(WindowStart::File(
                            dedup::file_key(&open.fixed),
                            open.fixed.suppressed_total,
                        ))
                    }
                    Record::Network(connection)
                        if connection.flags & network_record_flags::DEDUP_FIRST != 0 =>
                    {
                        Some(WindowStart::Network(
                            dedup::network_key(connection),
                            connection.suppressed_total,
                        ))
                    }
                    Record::Exec(_) | Record::Exit(_) if !self.process_events => {
                        // The table follows them; their events are not wanted.
                        self.enricher.enrich(&mut record);
                        return Ok(());
                    }
                    _ => None,
                };
                let mut produced = self.enricher.enrich(&mut record);
                for before in produced.before {
                    self.emit(before)?;
                }
                if let Some(mut event) = produced.event {
                    if let Some(start) = dedup_first {
                        // The window keeps the whole first event, for its summary.
                        produced.shared.restore(&mut event);
                        if let Some(summary) = self.dedup.on_first(start, &event) {
                            self.emit(summary)?;
                        }
                    }
                    self.emit_identified(event, produced.ids, produced.shared)?;
                }
                for after in produced.after {
                    self.emit(after)?;
                }
            }
            Err(err) => {
                tracing::warn!("undecodable kernel record: {err}");
                count_kind(&mut self.undecodable, err.kind());
            }
        }
        Ok(())
    }

    /// Handles the records waiting in the ring buffer, [`DRAIN_BUDGET`] at most; how many it
    /// handled.
    pub(super) fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<usize> {
        self.drain_while(ring, DRAIN_BUDGET, |_| true)
    }

    /// Handles the records waiting in the ring buffer while `go_on`, `most` at most; how many
    /// it handled.
    pub(super) fn drain_while(
        &mut self,
        ring: &mut RingBuf<MapData>,
        most: usize,
        go_on: impl Fn(&Self) -> bool,
    ) -> Result<usize> {
        // Freed now, the written events' memory is what this drain's events are made in while
        // it is still in this CPU's cache; freed at the last hand-over, it had gone cold by now.
        self.free_spent();
        let mut records = 0;
        while records < most && go_on(self) {
            let Some(item) = ring.next() else {
                break;
            };
            self.handle(&item)?;
            records += 1;
        }
        Ok(records)
    }

    /// Turns kernel drops and undecodable records into in-band loss events.
    pub(super) fn report_losses(&mut self, drops: &mut DropCounters) -> Result<()> {
        for (record_kind, cause, count) in drops.new_drops() {
            let kind = EventKind::of_record(record_kind);
            let reason = match cause {
                DropCause::RingBufferFull => {
                    tracing::warn!(
                        kind = record_kind,
                        count,
                        "kernel ring buffer full: records dropped"
                    );
                    LossReason::KernelBufferFull
                }
                DropCause::TrackingTableFull => {
                    tracing::warn!(
                        kind = record_kind,
                        count,
                        "kernel connection table full: these connections' ends will not be \
                         reported"
                    );
                    LossReason::TrackingTableFull
                }
            };
            self.metrics
                .kernel_drops
                .get_or_create(&KindLabels {
                    kind: kind.short_name().to_owned(),
                })
                .inc_by(count);
            let event = self.enricher.loss(kind, count, reason, "");
            self.emit(event)?;
        }
        for (kind, count) in std::mem::take(&mut self.unmade) {
            tracing::warn!(
                kind = kind.short_name(),
                count,
                "the sinks were behind: events not made"
            );
            let event = self
                .enricher
                .loss(kind, count, LossReason::SinkQueueFull, "");
            self.emit(event)?;
        }
        for (kind, count) in std::mem::take(&mut self.undecodable) {
            let event = self.enricher.loss(
                EventKind::of_record(kind),
                count,
                LossReason::Undecodable,
                "",
            );
            self.emit(event)?;
        }
        while let Ok(loss) = self.spool_losses.try_recv() {
            for (kind, count) in loss.dropped {
                let event = self.enricher.loss(kind, count, loss.reason, &loss.sink);
                self.emit(event)?;
            }
        }
        Ok(())
    }

    /// Per-identity, per-device write summaries since `since`.
    pub(super) fn report_device_writes(&mut self, since: std::time::SystemTime) -> Result<()> {
        for summary in self.enricher.device_write_summaries(since) {
            self.emit(summary)?;
        }
        Ok(())
    }

    /// The grant lookups' results taken in, and each person's access usage when due.
    pub(super) fn report_access_usage(&mut self) -> Result<()> {
        let Some(access) = &mut self.access else {
            return Ok(());
        };
        for (person, usage) in access.housekeep() {
            let summary = self.enricher.access_usage(&person, &usage);
            self.emit(summary)?;
        }
        Ok(())
    }

    /// Summaries of closed deduplication windows (all of them when `all`).
    pub(super) fn report_repeats(&mut self, all: bool) -> Result<()> {
        for summary in self.dedup.sweep(all) {
            self.emit(summary)?;
        }
        Ok(())
    }
}
