//! Where events go: standard output, files, and network collectors.
//!
//! The sinks run on their own thread behind a bounded channel, so a slow disk, a blocked
//! terminal or a dead collector never stalls the ring-buffer reader (see `pipeline`). Each
//! event is encoded once per format, straight into the output's buffer when one output takes
//! that format (see `local`), else into a reused buffer the outputs copy. Network sinks are fed
//! through a disk spool (see `spool`) drained by a sender thread of their own.
mod deliver;
mod encode;
mod json;
mod json_fields;
mod local;
pub mod nats;
mod nats_acks;
mod nats_batch;
mod nats_replies;
pub mod ocsf;
mod parts;
pub mod rfc3339;
mod rotate;
pub mod spool;
pub mod syslog;
pub mod tcp;
pub mod tls;

use std::{
    io,
    sync::{atomic::AtomicBool, Arc},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result};
use custos_proto::v1::{Event, LossReason};
use tokio::sync::mpsc::{Receiver, UnboundedSender};

use prometheus_client::metrics::counter::Counter;

use crate::{
    config::{Format, PrivacyConfig, SinkConfig, SpoolConfig},
    metrics::{Metrics, SinkErrorLog, SinkLabels},
    privacy::Privacy,
};
use encode::ProtobufEncoder;
use json::JsonEncoder;
use local::LocalOutput;
pub use parts::{new_part_id, AccessPart, EventSource, PartIds, PartTagger, SharedParts};
use spool::{Dropped, Spool};

/// Events written between two flushes at most.
const FLUSH_BATCH: usize = 1024;

/// Events a spool had to drop to stay within its bound.
#[derive(Debug)]
pub struct SpoolLoss {
    pub sink: String,
    pub dropped: Dropped,
    /// Spool full (the oldest were dropped) or its filesystem refused the write.
    pub reason: LossReason,
}

enum Output {
    /// Written in place.
    Local { format: Format, output: LocalOutput },
    /// Appended to the sink's spool, which its sender drains.
    Spooled {
        written: Counter,
        name: String,
        spool: Arc<Spool>,
        pending: Vec<u8>,
    },
}

/// Events handed to the sink thread at once, with their parts' ids.
#[derive(Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub ids: Vec<PartIds>,
    /// Each event's parts held apart from it (see [`SharedParts`]).
    pub shared: Vec<SharedParts>,
}

impl Batch {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            events: Vec::with_capacity(capacity),
            ids: Vec::with_capacity(capacity),
            shared: Vec::with_capacity(capacity),
        }
    }

    pub fn push(&mut self, event: Event, ids: PartIds, shared: SharedParts) {
        self.events.push(event);
        self.ids.push(ids);
        self.shared.push(shared);
    }

    /// The last event pushed, its part ids and its parts held apart, to finish in place: an
    /// event is 400 bytes, and each move on the way into the batch was a copy.
    pub fn last_mut(&mut self) -> Option<(&mut Event, &mut PartIds, &SharedParts)> {
        Some((
            self.events.last_mut()?,
            self.ids.last_mut()?,
            self.shared.last()?,
        ))
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.ids.clear();
        self.shared.clear();
    }
}

pub struct Sinks {
    outputs: Vec<Output>,
    /// Per output, the view it gets on top of what every sink gets (None: nothing more
    /// taken away).
    views: Vec<Option<Privacy>>,
    senders: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    encoders: Encoders,
    /// An event's encoding in one format, for the outputs that take a copy of it.
    scratch: Vec<u8>,
}

/// The encoders of the three formats, apart from the outputs they write into.
#[derive(Default)]
struct Encoders {
    json: JsonEncoder,
    protobuf: ProtobufEncoder,
}

impl Encoders {
    /// Appends `event` in `format` to `out`; `ids` and `shared` as for [`JsonEncoder::encode`].
    fn encode(
        &mut self,
        format: Format,
        event: &mut Event,
        ids: PartIds,
        shared: &SharedParts,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        match format {
            Format::Json => self.json.encode(event, ids, shared, out),
            Format::Protobuf => {
                self.protobuf.encode(event, ids, shared, out);
                Ok(())
            }
            Format::Ocsf => ocsf::encode_line(event, out),
        }
    }
}

impl Output {
    /// Whether this output takes events in `format` (the spools take protobuf).
    fn takes(&self, format: Format) -> bool {
        match self {
            Output::Local { format: f, .. } => *f == format,
            Output::Spooled { .. } => format == Format::Protobuf,
        }
    }

    /// Takes an event's encoding, which `encode` appends to this output's own buffer; an
    /// encoding that fails leaves nothing behind.
    fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        match self {
            Output::Local { output, .. } => output.append(encode),
            Output::Spooled {
                pending, written, ..
            } => {
                local::append_whole(pending, encode)?;
                written.inc();
                Ok(())
            }
        }
    }
}

impl Sinks {
    /// Opens every sink up front, so a bad path or certificate fails at start-up, not at the
    /// first event. Network senders start at once and deliver what an earlier run spooled.
    pub fn open(
        configs: &[SinkConfig],
        spool: &SpoolConfig,
        privacy: &PrivacyConfig,
        metrics: &Metrics,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut outputs = Vec::new();
        let mut senders = Vec::new();
        let mut views = Vec::new();
        for config in configs {
            outputs.push(open_one(config, spool, &stop, &mut senders, metrics)?);
            let view = privacy.sink_views.iter().find(|v| v.sink == config.name());
            views.push(
                view.map(|v| Privacy::for_view(v.argv, v.names, privacy))
                    .transpose()?,
            );
        }
        Ok(Self {
            outputs,
            views,
            senders,
            stop,
            encoders: Encoders::default(),
            scratch: Vec::with_capacity(4096),
        })
    }

    /// Writes `event`, whose parts have the ids `ids` (see [`PartIds`]; default when unknown).
    /// `shared` holds the parts the event goes without (see [`SharedParts`]).
    pub fn write(&mut self, event: &mut Event, ids: PartIds, shared: &SharedParts) -> Result<()> {
        let views = self.views.iter().any(Option::is_some);
        // Views and OCSF work on the whole event: its parts are put back for them.
        let mut restored;
        let shared = if views || self.writes(Format::Ocsf, &|_| true) {
            restored = shared.clone();
            restored.restore(event);
            &restored
        } else {
            shared
        };
        if !views {
            return self.write_to(event, ids, shared, |_| true);
        }
        // Outputs with a view of their own get their own copy and encoding.
        for index in 0..self.views.len() {
            let Some(view) = self.views[index].take() else {
                continue;
            };
            let mut copy = event.clone();
            view.apply(&mut copy);
            // The copy's parts differ from those the ids name.
            let result = self.write_to(&mut copy, PartIds::default(), shared, |i| i == index);
            self.views[index] = Some(view);
            result?;
        }
        let plain: Vec<bool> = self.views.iter().map(Option::is_none).collect();
        self.write_to(event, ids, shared, |i| plain[i])
    }

    /// Whether an output that `selected` picks takes `format` (the spools take protobuf).
    fn writes(&self, format: Format, selected: &impl Fn(usize) -> bool) -> bool {
        self.outputs
            .iter()
            .enumerate()
            .any(|(i, o)| selected(i) && o.takes(format))
    }

    /// Encodes `event` once per format and writes it to the outputs `selected` picks. The one
    /// output of a format gets the encoding straight into its buffer; outputs that share a
    /// format take copies of one encoding.
    fn write_to(
        &mut self,
        event: &mut Event,
        ids: PartIds,
        shared: &SharedParts,
        selected: impl Fn(usize) -> bool,
    ) -> Result<()> {
        for format in [Format::Json, Format::Protobuf, Format::Ocsf] {
            let mut takers =
                (0..self.outputs.len()).filter(|&i| selected(i) && self.outputs[i].takes(format));
            let Some(first) = takers.next() else {
                continue;
            };
            let alone = takers.next().is_none();
            let Self {
                outputs,
                encoders,
                scratch,
                ..
            } = self;
            if alone {
                outputs[first].append(|out| encoders.encode(format, event, ids, shared, out))?;
                continue;
            }
            scratch.clear();
            encoders.encode(format, event, ids, shared, scratch)?;
            for (index, output) in outputs.iter_mut().enumerate() {
                if selected(index) && output.takes(format) {
                    output.append(|out| {
                        out.extend_from_slice(scratch);
                        Ok(())
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Pushes buffered output to files and spools; returns what spools had to drop.
    pub fn flush(&mut self) -> Result<Vec<SpoolLoss>> {
        let mut losses = Vec::new();
        for output in &mut self.outputs {
            match output {
                Output::Local { output, .. } => output.flush()?,
                Output::Spooled {
                    name,
                    spool,
                    pending,
                    ..
                } => {
                    let appended = spool
                        .append(pending)
                        .with_context(|| format!("spooling for sink {name}"))?;
                    pending.clear();
                    let mut refused = appended.refused;
                    // Loss events the spool refused were about losses already counted; a loss
                    // for them would be refused in turn, one more each flush.
                    refused.remove(&custos_proto::v1::EventKind::Loss);
                    for (dropped, reason) in [
                        (appended.dropped, LossReason::SpoolFull),
                        (refused, LossReason::SpoolWriteFailed),
                    ] {
                        if !dropped.is_empty() {
                            losses.push(SpoolLoss {
                                sink: name.clone(),
                                dropped,
                                reason,
                            });
                        }
                    }
                }
            }
        }
        Ok(losses)
    }

    /// Writes events until the channel closes, flushing whenever it runs dry or a batch is full,
    /// so output is prompt under light load, batched under heavy load, and never held back in
    /// memory for long. Spool losses go to `losses`; each batch, once written, goes to `spent`.
    pub fn run(
        mut self,
        mut events: Receiver<Batch>,
        losses: UnboundedSender<SpoolLoss>,
        mut spent: impl FnMut(Batch),
    ) -> Result<()> {
        let result = (|| {
            while let Some(mut batch) = events.blocking_recv() {
                let mut written = self.write_batch(&mut batch)?;
                spent(batch);
                while written < FLUSH_BATCH {
                    let Ok(mut batch) = events.try_recv() else {
                        break;
                    };
                    written += self.write_batch(&mut batch)?;
                    spent(batch);
                }
                for loss in self.flush()? {
                    if loss.reason == LossReason::SpoolFull {
                        tracing::warn!(sink = %loss.sink, dropped = ?loss.dropped, "spool full: oldest events dropped");
                    }
                    let _ = losses.send(loss);
                }
            }
            self.flush().map(|_| ())
        })();
        self.finish();
        result
    }

    /// Writes every event of `batch`; how many.
    fn write_batch(&mut self, batch: &mut Batch) -> Result<usize> {
        let parts = batch.ids.iter().zip(&batch.shared);
        for (event, (ids, shared)) in batch.events.iter_mut().zip(parts) {
            self.write(event, *ids, shared)?;
        }
        Ok(batch.events.len())
    }

    /// The network sinks' spools, by sink name (for their size gauges).
    pub fn spools(&self) -> Vec<(String, Arc<Spool>)> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Spooled { name, spool, .. } => Some((name.clone(), spool.clone())),
                Output::Local { .. } => None,
            })
            .collect()
    }

    /// Bytes the network sinks still have to deliver.
    pub fn backlog_bytes(&self) -> u64 {
        self.outputs
            .iter()
            .map(|o| match o {
                Output::Spooled { spool, .. } => spool.backlog_bytes(),
                Output::Local { .. } => 0,
            })
            .sum()
    }

    /// Stops the network senders (each delivers what it can within its grace period).
    pub fn finish(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for sender in self.senders.drain(..) {
            let _ = sender.join();
        }
    }
}

/// Bytes a file or standard output holds before writing them. Writes of 256 KiB into a file
/// cost the kernel about a quarter less per byte than writes of 64 KiB (ext4, 6.18): fewer
/// calls, and fewer partly written pages at their ends.
const BUFFERED: usize = 256 * 1024;

/// Standard output as a file of its own: written with one call per buffer, not through the
/// standard library's line buffer, which would look for line ends again and take its lock.
fn standard_output() -> Result<std::fs::File> {
    use std::os::fd::AsFd as _;
    let duplicate = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating standard output for the stdout sink")?;
    Ok(duplicate.into())
}

fn open_one(
    config: &SinkConfig,
    spool: &SpoolConfig,
    stop: &Arc<AtomicBool>,
    senders: &mut Vec<JoinHandle<()>>,
    metrics: &Metrics,
) -> Result<Output> {
    let name = config.name();
    let labels = SinkLabels { sink: name.clone() };
    let written = metrics.sink_events.get_or_create(&labels).clone();
    let errors = metrics.sink_errors.get_or_create(&labels).clone();
    let last_error = metrics.sink_last_error.clone();
    let (site, counters) = (
        (spool, stop, senders),
        (written.clone(), errors, last_error),
    );
    Ok(match config {
        SinkConfig::Stdout { format } => Output::Local {
            format: *format,
            output: LocalOutput::new(name, written, Box::new(standard_output()?), BUFFERED, None),
        },
        SinkConfig::File {
            path,
            format,
            max_bytes,
            max_files,
        } => {
            let file = rotate::open_append(path)?;
            let rotation = max_bytes
                .map(|max| rotate::Rotation::new(path, max, *max_files, &file))
                .transpose()?;
            Output::Local {
                format: *format,
                output: LocalOutput::new(name, written, Box::new(file), BUFFERED, rotation),
            }
        }
        SinkConfig::Tcp { address, tls, .. } | SinkConfig::Syslog { address, tls, .. } => {
            let tls = tls
                .as_ref()
                .map(|t| tls::client(t, address))
                .transpose()
                .with_context(|| format!("TLS for sink {name}"))?;
            let framing = match config {
                SinkConfig::Syslog {
                    facility, format, ..
                } => tcp::Framing::Syslog(syslog::SyslogFormat::new(
                    facility.number(),
                    &host_name(),
                    "custos",
                    std::process::id(),
                    *format,
                )),
                _ => tcp::Framing::Delimited,
            };
            let transport = tcp::TcpTransport::new(name.clone(), address.clone(), tls, framing);
            spooled(name, address.clone(), site, counters, transport)?
        }
        SinkConfig::Nats(nats) => {
            let transport =
                nats::NatsTransport::new(nats.clone(), nats::subject_token(&host_name()));
            spooled(name, nats.url.clone(), site, counters, transport)?
        }
    })
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where network sinks' delivery threads live: the spool settings, the stop flag they watch
/// and the list of their threads.
type DeliverySite<'a> = (
    &'a SpoolConfig,
    &'a Arc<AtomicBool>,
    &'a mut Vec<JoinHandle<()>>,
);

/// A network sink: its spool, and a delivery thread draining it into `transport`.
/// `counters` are the sink's (events written, delivery errors).
fn spooled(
    name: String,
    target: String,
    (spool, stop, senders): DeliverySite<'_>,
    (written, errors, last_error): (Counter, Counter, SinkErrorLog),
    transport: impl deliver::Transport,
) -> Result<Output> {
    let spool = Arc::new(Spool::open(&spool.dir.join(&name), spool.max_bytes)?);
    let delivery = deliver::Delivery {
        name: name.clone(),
        target,
        spool: spool.clone(),
        stop: stop.clone(),
        drain_grace: Duration::from_secs(3),
        errors,
        last_error,
    };
    senders.push(delivery.spawn(transport)?);
    Ok(Output::Spooled {
        name,
        spool,
        pending: Vec::new(),
        written,
    })
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{event::Body, EventLoss};

    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            host: "h".into(),
            body: Some(Body::Loss(EventLoss {
                kind: 1,
                count: 2,
                reason: 1,
                sink: String::new(),
            })),
            ..Event::default()
        }
    }

    #[test]
    fn file_sinks_write_json_lines_and_delimited_protobuf() {
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("sub/events.json");
        let pb_path = dir.path().join("events.pb");
        let mut sinks = Sinks::open(
            &[
                SinkConfig::File {
                    path: json_path.clone(),
                    format: Format::Json,
                    max_bytes: None,
                    max_files: 5,
                },
                SinkConfig::File {
                    path: pb_path.clone(),
                    format: Format::Protobuf,
                    max_bytes: None,
                    max_files: 5,
                },
            ],
            &SpoolConfig::default(),
            &PrivacyConfig::default(),
            &Metrics::new("test"),
        )
        .unwrap();
        sinks
            .write(&mut event(1), PartIds::default(), &SharedParts::default())
            .unwrap();
        sinks
            .write(&mut event(2), PartIds::default(), &SharedParts::default())
            .unwrap();
        sinks.flush().unwrap();

        let json = std::fs::read_to_string(&json_path).unwrap();
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["seq"], "2", "uint64 is a string in proto3 JSON");
        assert_eq!(lines[0]["loss"]["reason"], "LOSS_REASON_KERNEL_BUFFER_FULL");
        // Events come without their kind's name (the reader spares it): written from the body.
        assert_eq!(lines[0]["kind"], "loss");

        let pb = std::fs::read(&pb_path).unwrap();
        let decoded: Vec<Event> = custos_proto::delimited::read_all(&pb[..]).unwrap();
        let named = |seq| Event {
            kind: "loss".into(),
            ..event(seq)
        };
        assert_eq!(decoded, vec![named(1), named(2)]);
    }

    #[test]
    fn file_sinks_rotate_between_records_and_keep_a_bounded_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        let mut sinks = Sinks::open(
            &[SinkConfig::File {
                path: path.clone(),
                format: Format::Json,
                max_bytes: Some(1000),
                max_files: 2,
            }],
            &SpoolConfig::default(),
            &PrivacyConfig::default(),
            &Metrics::new("test"),
        )
        .unwrap();
        for seq in 1..=100 {
            sinks
                .write(&mut event(seq), PartIds::default(), &SharedParts::default())
                .unwrap();
        }
        sinks.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["events.json", "events.json.1", "events.json.2"]);
        for name in &names {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 1000 + 400, "{name} is {} bytes", text.len());
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).expect("whole records only");
            }
        }
        // The newest events are in the current file.
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.lines().last().unwrap().contains("\"seq\":\"100\""));
    }

    #[test]
    fn a_spooled_output_keeps_whole_encodings_only() {
        let dir = tempfile::tempdir().unwrap();
        let written = Counter::default();
        let mut output = Output::Spooled {
            written: written.clone(),
            name: "test".into(),
            spool: Arc::new(Spool::open(dir.path(), 1 << 20).unwrap()),
            pending: b"earlier".to_vec(),
        };
        let failed = output.append(|out| {
            out.extend_from_slice(b"half a reco");
            Err(anyhow::anyhow!("cannot encode"))
        });
        assert!(failed.is_err());
        output
            .append(|out| {
                out.extend_from_slice(b"+next");
                Ok(())
            })
            .unwrap();
        let Output::Spooled { pending, .. } = &output else {
            unreachable!()
        };
        assert_eq!(pending, b"earlier+next");
        assert_eq!(
            written.get(),
            1,
            "only the encoding taken counts as written"
        );
    }

    #[test]
    fn an_unwritable_path_fails_at_open_with_the_path_named() {
        let err = Sinks::open(
            &[SinkConfig::File {
                path: "/proc/custos-cannot-exist/x".into(),
                format: Format::Json,
                max_bytes: None,
                max_files: 5,
            }],
            &SpoolConfig::default(),
            &PrivacyConfig::default(),
            &Metrics::new("test"),
        )
        .err()
        .unwrap();
        assert!(format!("{err:#}").contains("/proc/custos-cannot-exist/x"));
    }
}
