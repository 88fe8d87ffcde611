//! The NATS JetStream sink: each event published to `<prefix>.<host>.<kind>` on a configured
//! stream, with acknowledgements.
//!
//! With `events_per_message` above 1, a message carries up to that many events of one kind
//! (see [`super::nats_batch`]).
//!
//! A batch leaves the spool only once JetStream acknowledged every message in it, so delivery
//! is at least once; the acknowledgements are awaited in the background while the next batches
//! are published (see [`super::nats_acks`]), counted from one subscription to the connection's
//! replies (see [`super::nats_replies`]). Each message carries `Nats-Msg-Id: <run_id>:<seq>`
//! (a message of gathered events `<run_id>:<first seq>-<last seq>`), so a resend inside the
//! stream's duplicate window is stored once.
use std::{borrow::Cow, collections::HashMap, future::Future, time::Duration};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::{jetstream, Client, ConnectOptions, HeaderMap, Subject};
use custos_proto::v1::{Event, EventKind};
use prost::{
    encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType},
    Message as _,
};
use tokio::runtime::Runtime;

use super::{
    deliver::{Transport, BATCH},
    json::JsonEncoder,
    nats_acks::Acks,
    nats_batch::Gatherer,
    nats_replies::{Replies, ACK_TIMEOUT},
    ocsf,
    parts::{PartIds, SharedParts},
};
use crate::config::{Format, NatsSink};

pub use super::nats_batch::EVENTS_HEADER;

/// Room left in a message of several events for its headers, under the server's
/// `max_payload` (which counts them too).
const HEADER_ROOM: usize = 4096;

/// Full messages one send publishes when events are gathered (see `batch_records`).
const MESSAGES_PER_SEND: usize = 16;

/// A message to publish: its subject, headers and payload.
type Message = (Subject, HeaderMap, bytes::Bytes);

/// A connection to NATS and the subscription to its replies.
struct Connection {
    client: Client,
    replies: Replies,
}

/// A JetStream connection, driven from the delivery thread through its own small runtime.
pub struct NatsTransport {
    config: NatsSink,
    /// This host's name as a subject token.
    host_token: String,
    runtime: Option<tokio::runtime::Runtime>,
    connection: Option<Connection>,
    subjects: HashMap<EventKind, Subject>,
    json: JsonEncoder,
    /// Records published (or skipped as undecodable) so far: the mark of the last send.
    published: u64,
    /// The acknowledgements of the sends still due.
    acks: Acks,
}

/// A host name as one subject token: NATS separates tokens with '.', and '*', '>' and
/// whitespace are not allowed in them.
pub fn subject_token(host: &str) -> String {
    let token: String = host
        .chars()
        .map(|c| match c {
            '.' => '_',
            c if c.is_whitespace() || c == '*' || c == '>' => '_',
            c => c,
        })
        .collect();
    if token.is_empty() {
        "unknown".into()
    } else {
        token
    }
}

impl Transport for NatsTransport {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<u64> {
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("custos-nats-io")
                .enable_all()
                .build()
                .context("an async runtime for NATS")?,
        };
        let result = self.send_on(&runtime, records);
        self.runtime = Some(runtime);
        result
    }

    fn confirmed(&mut self) -> Result<u64> {
        match &self.runtime {
            Some(runtime) => self.acks.confirmed(runtime),
            None => Ok(0),
        }
    }

    fn reset(&mut self) {
        self.connection = None;
        self.acks.abandon();
    }

    /// Gathering events into messages, a send of the usual size would fill only a few
    /// messages, each send with its own task awaiting them: it takes enough records for
    /// sixteen.
    fn batch_records(&self) -> usize {
        BATCH.max(self.config.events_per_message * MESSAGES_PER_SEND)
    }
}

impl NatsTransport {
    pub fn new(config: NatsSink, host_token: String) -> Self {
        Self {
            config,
            host_token,
            runtime: None,
            connection: None,
            subjects: HashMap::new(),
            json: JsonEncoder::default(),
            published: 0,
            acks: Acks::default(),
        }
    }

    async fn connect(&self) -> Result<Connection> {
        let c = &self.config;
        let mut options = ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("custos");
        if let Some(path) = &c.credentials_file {
            crate::files::check_trusted(path, "NATS credentials file")?;
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials {}", path.display()))?;
        }
        if let (Some(user), Some(password)) = (&c.user, &c.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &c.token {
            options = options.token(token.clone());
        }
        if let Some(tls) = &c.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let client = options
            .connect(c.urls().as_slice())
            .await
            .with_context(|| format!("connecting to {}", c.url))?;
        let js = jetstream::new(client.clone());
        match js.get_stream(&c.stream).await {
            Ok(_) => {}
            Err(_) if c.create_stream => {
                js.create_stream(jetstream::stream::Config {
                    name: c.stream.clone(),
                    subjects: vec![format!("{}.>", c.subject_prefix)],
                    num_replicas: c.replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating JetStream stream {}", c.stream))?;
                tracing::info!(stream = %c.stream, "created the JetStream stream");
            }
            Err(err) => bail!(
                "JetStream stream {} is not available ({err}); create it for subjects {}.> or set create_stream = true",
                c.stream,
                c.subject_prefix
            ),
        }
        let replies = Replies::listen(&client).await?;
        Ok(Connection { client, replies })
    }

    /// Publishes `records` on the connection (made first if there is none) and leaves their
    /// acknowledgements to be awaited in the background; returns the mark this send reached.
    fn send_on(&mut self, runtime: &Runtime, records: &[Vec<u8>]) -> Result<u64> {
        self.acks.make_room(runtime)?;
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => runtime.block_on(self.connect())?,
        };
        let published = runtime.block_on(self.publish(&mut connection, records));
        self.connection = Some(connection);
        let acknowledged = published?;
        self.published += records.len() as u64;
        self.acks.expect(runtime, self.published, acknowledged);
        Ok(self.published)
    }

    /// Publishes the messages that carry `records`; returns what resolves once JetStream
    /// acknowledged every one of them.
    async fn publish(
        &mut self,
        connection: &mut Connection,
        records: &[Vec<u8>],
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let client = &connection.client;
        let max_bytes = client.max_payload().saturating_sub(HEADER_ROOM);
        let messages = self.messages(records, max_bytes);
        let (reply, stored) = connection.replies.expect(messages.len());
        // While the server is away the client holds what is published until its queue is
        // full, and then takes no more: a send that waits that long has failed.
        let published = async {
            for (subject, headers, payload) in messages {
                client
                    .publish_with_reply_and_headers(subject, reply.clone(), headers, payload)
                    .await
                    .map_err(|e| anyhow!("publishing: {e}"))?;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::time::timeout(ACK_TIMEOUT, published)
            .await
            .map_err(|_| anyhow!("the NATS client took no message for {ACK_TIMEOUT:?}"))??;
        Ok(stored)
    }

    /// The messages that carry `records`: one per event, or up to `events_per_message` events
    /// of a kind in each, of at most `max_bytes` (see [`super::nats_batch`]).
    fn messages(&mut self, records: &[Vec<u8>], max_bytes: usize) -> Vec<Message> {
        if self.config.events_per_message == 1 {
            return records
                .iter()
                .filter_map(|record| {
                    let message = self.message(record);
                    self.usable(message)
                })
                .collect();
        }
        let mut gatherer = Gatherer::new(self.config.events_per_message, max_bytes);
        for record in records {
            let framed = self.framed(record);
            if let Some((envelope, framed)) = self.usable(framed) {
                gatherer.add(envelope.run_id, envelope.seq, envelope.kind, &framed);
            }
        }
        gatherer
            .finish()
            .into_iter()
            .map(|gathered| {
                (
                    self.subject(gathered.kind),
                    headers(&gathered.msg_id, Some(gathered.events)),
                    gathered.payload.into(),
                )
            })
            .collect()
    }

    /// `result`, or nothing when the spooled record could not be read: retrying would block
    /// the sink forever behind one bad record.
    fn usable<T>(&self, result: Result<T>) -> Option<T> {
        result
            .inspect_err(|err| {
                tracing::error!(
                    stream = %self.config.stream,
                    "skipping an undecodable spooled record: {err:#}"
                )
            })
            .ok()
    }

    /// A spooled record's subject, headers (its message id, `<run_id>:<seq>`, which lets
    /// JetStream drop a resend) and body.
    fn message(&mut self, record: &[u8]) -> Result<Message> {
        let message = Envelope::of(record).context("reading a spooled record")?;
        let mut id = String::with_capacity(message.run_id.len() + 21);
        id.push_str(message.run_id);
        id.push(':');
        id.push_str(itoa::Buffer::new().format(message.seq));
        let headers = headers(&id, None);
        let payload = self.payload(message.payload)?;
        Ok((self.subject(message.kind), headers, payload))
    }

    /// A spooled record as one event among others in a message: protobuf with its varint
    /// length before it (the spooled record is that already), JSON or OCSF as a line.
    fn framed<'a>(&mut self, record: &'a [u8]) -> Result<(Envelope<'a>, Cow<'a, [u8]>)> {
        let envelope = Envelope::of(record).context("reading a spooled record")?;
        let framed = match self.config.format {
            Format::Protobuf => Cow::Borrowed(envelope.delimited),
            _ => Cow::Owned(self.line(envelope.payload)?),
        };
        Ok((envelope, framed))
    }

    /// The message body of one event in the configured format, from its protobuf encoding.
    fn payload(&mut self, encoded: &[u8]) -> Result<bytes::Bytes> {
        if self.config.format == Format::Protobuf {
            return Ok(bytes::Bytes::copy_from_slice(encoded));
        }
        let mut line = self.line(encoded)?;
        line.pop(); // the line's end: a message is delimited already
        Ok(line.into())
    }

    /// One event as a JSON or OCSF line, from its protobuf encoding.
    fn line(&mut self, encoded: &[u8]) -> Result<Vec<u8>> {
        let mut event = Event::decode(encoded).context("decoding a spooled event")?;
        let mut out = Vec::with_capacity(encoded.len() * 2);
        if self.config.format == Format::Ocsf {
            ocsf::encode_line(&event, &mut out)?;
        } else {
            self.json.encode(
                &mut event,
                PartIds::default(),
                &SharedParts::default(),
                &mut out,
            )?;
        }
        Ok(out)
    }

    /// `<prefix>.<host>.<kind>`, built once per kind.
    fn subject(&mut self, kind: EventKind) -> Subject {
        let (prefix, host) = (&self.config.subject_prefix, &self.host_token);
        self.subjects
            .entry(kind)
            .or_insert_with(|| Subject::from(format!("{prefix}.{host}.{}", kind.short_name())))
            .clone()
    }
}

/// A message's headers: its id, which lets JetStream drop a resend, and for gathered events
/// their count.
fn headers(msg_id: &str, events: Option<usize>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    if let Some(events) = events {
        headers.insert(EVENTS_HEADER, itoa::Buffer::new().format(events));
    }
    headers
}

/// What publishing needs from a spooled record, read without decoding the whole event: the
/// event's own encoding (the record less its length prefix), its `seq`, `run_id` and kind.
#[derive(Debug, PartialEq)]
struct Envelope<'a> {
    /// The record's length prefix and the event: the event delimited as the file sink writes it.
    delimited: &'a [u8],
    payload: &'a [u8],
    seq: u64,
    run_id: &'a str,
    kind: EventKind,
}

/// `Event.seq` and `Event.run_id`; the body's fields are numbered from here on.
const SEQ_FIELD: u32 = 1;
const RUN_ID_FIELD: u32 = 2;
const FIRST_BODY_FIELD: u32 = 10;

impl<'a> Envelope<'a> {
    fn of(record: &'a [u8]) -> Result<Self> {
        let mut rest = record;
        let len = usize::try_from(decode_varint(&mut rest)?)?;
        let payload = rest
            .get(..len)
            .context("a record shorter than its length")?;
        let mut envelope = Envelope {
            delimited: &record[..record.len() - rest.len() + len],
            payload,
            seq: 0,
            run_id: "",
            kind: EventKind::Unspecified,
        };
        let mut fields = payload;
        while !fields.is_empty() {
            let (tag, wire_type) = decode_key(&mut fields)?;
            match (tag, wire_type) {
                (SEQ_FIELD, WireType::Varint) => envelope.seq = decode_varint(&mut fields)?,
                (RUN_ID_FIELD, WireType::LengthDelimited) => {
                    let len = usize::try_from(decode_varint(&mut fields)?)?;
                    let bytes = fields.get(..len).context("a truncated run id")?;
                    envelope.run_id = std::str::from_utf8(bytes)?;
                    fields = &fields[len..];
                }
                _ => {
                    skip_field(wire_type, tag, &mut fields, DecodeContext::default())?;
                    if tag >= FIRST_BODY_FIELD {
                        // The body's field number names the kind: it is not decoded.
                        envelope.kind = Event::kind_of_body_field(tag);
                    }
                }
            }
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{event::Body, FileOpen, ProcessExit};

    use super::*;

    #[test]
    fn host_names_become_single_subject_tokens() {
        assert_eq!(subject_token("web-1.example.com"), "web-1_example_com");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "unknown");
    }

    #[test]
    fn the_envelope_is_read_from_the_encoding_as_a_full_decode_would() {
        let events = [
            Event {
                seq: 300,
                run_id: "run-a".into(),
                host: "h".into(),
                body: Some(Body::FileOpen(FileOpen {
                    path: "/etc/shadow".into(),
                    ..FileOpen::default()
                })),
                ..Event::default()
            },
            Event {
                seq: u64::MAX,
                run_id: "run-b".into(),
                body: Some(Body::Exit(ProcessExit::default())),
                ..Event::default()
            },
            Event::default(),
        ];
        for event in events {
            let record = event.encode_length_delimited_to_vec();
            let envelope = Envelope::of(&record).unwrap();
            assert_eq!(envelope.payload, event.encode_to_vec());
            assert_eq!(envelope.delimited, record);
            assert_eq!(envelope.seq, event.seq);
            assert_eq!(envelope.run_id, event.run_id);
            assert_eq!(envelope.kind, event.kind());
        }
        let truncated = &events_record()[..5];
        assert!(Envelope::of(truncated).is_err(), "a torn record is refused");
    }

    /// A transport for host "h" with `settings` after its type, url and stream.
    fn transport(settings: &str) -> NatsTransport {
        let text = format!(
            "[[sinks]]\ntype = \"nats\"\nurl = \"nats://h:1\"\nstream = \"S\"\n{settings}\n"
        );
        match crate::config::Config::parse(&text, "t")
            .unwrap()
            .sinks
            .remove(0)
        {
            crate::config::SinkConfig::Nats(config) => NatsTransport::new(config, "h".into()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_carry_the_configured_format() {
        let transport = |format: &str| transport(&format!("format = \"{format}\""));
        let event = Event {
            seq: 7,
            run_id: "r".into(),
            body: Some(Body::Exit(ProcessExit::default())),
            ..Event::default()
        };
        let encoded = event.encode_to_vec();
        let protobuf = transport("protobuf").payload(&encoded).unwrap();
        assert_eq!(protobuf.as_ref(), encoded.as_slice());
        let json = transport("json").payload(&encoded).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["seq"], "7");
        let ocsf = transport("ocsf").payload(&encoded).unwrap();
        let ocsf: serde_json::Value = serde_json::from_slice(&ocsf).unwrap();
        assert_eq!(ocsf["class_uid"], 1007);
        assert_eq!(ocsf["metadata"]["uid"], "r:7");
    }

    #[test]
    fn several_events_of_a_kind_share_a_message_framed_as_the_file_sink_writes_them() {
        let config =
            |format: &str| transport(&format!("format = \"{format}\"\nevents_per_message = 2"));
        let event = |seq: u64, body: Body| Event {
            seq,
            run_id: "r".into(),
            body: Some(body),
            ..Event::default()
        };
        let exit = || Body::Exit(ProcessExit::default());
        let open = || Body::FileOpen(FileOpen::default());
        let events = [
            event(1, exit()),
            event(2, open()),
            event(3, exit()),
            event(4, exit()),
        ];
        let records: Vec<Vec<u8>> = events
            .iter()
            .map(|e| e.encode_length_delimited_to_vec())
            .collect();

        let messages = config("protobuf").messages(&records, 1 << 20);
        let ids: Vec<(&str, &str, &str)> = messages
            .iter()
            .map(|(subject, headers, _)| {
                let header = |name: &str| headers.get(name).map_or("", |v| v.as_str());
                (
                    subject.as_str(),
                    header("Nats-Msg-Id"),
                    header(EVENTS_HEADER),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("custos.h.exit", "r:1-3", "2"),
                ("custos.h.file_open", "r:2-2", "1"),
                ("custos.h.exit", "r:4-4", "1"),
            ]
        );
        let mut payload = messages[0].2.clone();
        let decoded: Vec<u64> = std::iter::from_fn(|| {
            (!payload.is_empty()).then(|| Event::decode_length_delimited(&mut payload).unwrap().seq)
        })
        .collect();
        assert_eq!(
            decoded,
            [1, 3],
            "delimited protobuf, as the file sink writes it"
        );

        let messages = config("json").messages(&records, 1 << 20);
        let lines: Vec<serde_json::Value> = messages[0]
            .2
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "one JSON line per event");
        assert_eq!(
            (&lines[0]["seq"], &lines[1]["seq"]),
            (&"1".into(), &"3".into())
        );
    }

    #[test]
    fn a_send_takes_enough_records_for_many_gathered_messages() {
        assert_eq!(transport("").batch_records(), BATCH);
        assert_eq!(transport("events_per_message = 2").batch_records(), BATCH);
        assert_eq!(
            transport("events_per_message = 100").batch_records(),
            100 * MESSAGES_PER_SEND
        );
    }

    fn events_record() -> Vec<u8> {
        Event {
            run_id: "a-long-enough-run-id".into(),
            ..Event::default()
        }
        .encode_length_delimited_to_vec()
    }
}
