//! JSON lines for events (protobuf's canonical JSON mapping, as pbjson writes it), reusing the
//! JSON of a recent event's process, identity and exec parent.
//!
//! The event's own fields are written by pbjson; its identity, process and, for an exec, the
//! parent process are spliced in from caches, since they are most of an event's bytes and
//! repeat from event to event. The object has the same fields and values as pbjson's; only the
//! spliced fields come last.
use anyhow::{Context as _, Result};
use custos_proto::v1::{event::Body, Event, Identity, Process, ProcessExec};

use super::{
    parts::{identity_slot, PartCache, PartIds},
    rfc3339,
};

/// The fields taken out of an event to be written by the encoder itself.
struct Parts<'a> {
    ids: PartIds,
    time: Option<pbjson_types::Timestamp>,
    identity: &'a Option<Identity>,
    process: &'a Option<Process>,
    /// For an exec, its parent (if known).
    exec: &'a Option<Option<Process>>,
}

#[derive(Default)]
pub struct JsonEncoder {
    processes: PartCache<Process>,
    parents: PartCache<Process>,
    identities: PartCache<Identity>,
}

/// pbjson's JSON of `part`: infallible for these messages (no maps with non-string keys).
fn to_json<M: serde::Serialize>(part: &M, out: &mut Vec<u8>) {
    if let Err(err) = serde_json::to_writer(&mut *out, part) {
        tracing::error!("encoding part of an event as JSON: {err}");
        out.extend_from_slice(b"null");
    }
}

/// Appends the JSON of `part` (id `id`), from `cache` where it holds it.
fn splice<M: serde::Serialize + PartialEq + Clone>(
    cache: &mut PartCache<M>,
    slot: usize,
    id: u64,
    part: &M,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(cache.encoded(slot, id, part, to_json));
}

impl JsonEncoder {
    /// Appends `event` as one JSON line to `out`; `ids` are its parts' (see [`PartIds`]). The
    /// event is lent back unchanged.
    pub fn encode(&mut self, event: &mut Event, ids: PartIds, out: &mut Vec<u8>) -> Result<()> {
        let identity = event.identity.take();
        let process = event.process.take();
        // Written here where the short path can (every real event time).
        let time = event.time.take_if(|time| rfc3339::writable(time));
        // An exec's body is written here, around its spliced parent.
        let exec = match &mut event.body {
            Some(Body::Exec(exec)) => Some(exec.parent.take()),
            _ => None,
        };
        let body = exec.is_some().then(|| event.body.take()).flatten();
        let parts = Parts {
            ids,
            time,
            identity: &identity,
            process: &process,
            exec: &exec,
        };
        let written = self.write(event, &parts, out);
        event.time = event.time.or(time);
        event.identity = identity;
        event.process = process;
        if let Some(mut body) = body {
            if let Body::Exec(ProcessExec { parent }) = &mut body {
                *parent = exec.flatten();
            }
            event.body = Some(body);
        }
        written
    }

    /// The event's remaining fields by pbjson, then the spliced ones, then the line's end.
    fn write(&mut self, head: &Event, parts: &Parts, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        serde_json::to_writer(&mut *out, head).context("encoding an event as JSON")?;
        // pbjson writes an object: reopen it.
        out.pop();
        let field = |out: &mut Vec<u8>, name: &str| {
            if out.len() > start + 1 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        if let Some(time) = &parts.time {
            field(out, "time");
            rfc3339::write_quoted(time, out);
        }
        if let Some(identity) = parts.identity {
            field(out, "identity");
            let slot = identity_slot(identity);
            splice(
                &mut self.identities,
                slot,
                parts.ids.identity,
                identity,
                out,
            );
        }
        if let Some(process) = parts.process {
            field(out, "process");
            let slot = process.tid as usize;
            splice(&mut self.processes, slot, parts.ids.process, process, out);
        }
        if let Some(parent) = parts.exec {
            field(out, "exec");
            out.push(b'{');
            if let Some(parent) = parent {
                out.extend_from_slice(b"\"parent\":");
                let slot = parent.pid as usize;
                splice(&mut self.parents, slot, parts.ids.parent, parent, out);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{
        encode::tests::{event, identity, process, sample_events},
        parts::PartTagger,
    };

    #[test]
    fn writes_the_fields_and_values_pbjson_writes_on_hits_and_misses() {
        let mut encoder = JsonEncoder::default();
        let exec = |seq, parent: Option<Process>| Event {
            body: Some(Body::Exec(ProcessExec { parent })),
            ..event(seq, Some(identity(0)), Some(process(100, "/bin/sh")))
        };
        let mut events = sample_events();
        events.extend([
            exec(8, Some(process(1, "/sbin/init"))),
            exec(9, Some(process(1, "/sbin/init"))),
            exec(10, None),
        ]);
        // Parts known by content, then by the ids the reader side gives them.
        let mut tagged = JsonEncoder::default();
        let mut tagger = PartTagger::default();
        // Twice, so that every part is met again.
        let mut twice = events.clone();
        twice.extend(events);
        for event in &mut twice {
            let before = event.clone();
            let mut ours = Vec::new();
            encoder
                .encode(event, PartIds::default(), &mut ours)
                .unwrap();
            assert_eq!(*event, before, "the event is handed back unchanged");
            assert_eq!(ours.last(), Some(&b'\n'), "one line");
            let mut by_id = Vec::new();
            tagged
                .encode(event, tagger.tag(event, PartIds::default()), &mut by_id)
                .unwrap();
            assert_eq!(by_id, ours, "event {} by id", event.seq);
            let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            let pbjson = serde_json::to_value(&*event).unwrap();
            assert_eq!(ours, pbjson, "event {}", event.seq);
            let decoded: Event = serde_json::from_value(ours).unwrap();
            assert_eq!(decoded, *event, "event {} reads back", event.seq);
        }
    }
}
