//! JSON lines for events (protobuf's canonical JSON mapping, as pbjson writes it), reusing the
//! JSON of a recent event's process, identity, exec parent and access part.
//!
//! The event's own fields are written by pbjson; its identity, process and, for an exec, the
//! parent process are spliced in from caches, since they are most of an event's bytes and
//! repeat from event to event. The object has the same fields and values as pbjson's; only the
//! spliced fields come last, except a file open's access part, spliced in its own place.
use std::sync::Arc;

use anyhow::Result;
use custos_proto::v1::{event::Body, Event, Identity, Process, ProcessExec};

use super::{
    json_fields::{
        access_fields, key, serialized, source_fields, write_event_fields, write_process, Object,
        WrittenApart,
    },
    parts::{identity_slot, named_kind, AccessPart, EventSource, PartCache, PartIds, SharedParts},
    rfc3339,
};

/// The fields taken out of an event to be written by the encoder itself.
struct Parts<'a> {
    ids: PartIds,
    time: Option<pbjson_types::Timestamp>,
    identity: Option<&'a Identity>,
    process: Option<&'a Process>,
    /// For an exec, its parent (if known).
    exec: Option<Option<&'a Process>>,
    /// For a file open, its access part held apart.
    access: Option<&'a AccessPart>,
    /// The event's kind ([`named_kind`]), named before its body is taken out.
    kind: &'a str,
}

#[derive(Default)]
pub struct JsonEncoder {
    processes: PartCache<Process>,
    parents: PartCache<Process>,
    identities: PartCache<Identity>,
    accesses: PartCache<AccessPart>,
    /// The run's event source and its fields as written (see [`source_fields`]).
    source: Option<(Arc<EventSource>, Vec<u8>)>,
}

/// The fields of `source` as written, from `kept` when it holds them for the same source.
fn written_source<'a>(
    kept: &'a mut Option<(Arc<EventSource>, Vec<u8>)>,
    source: &Arc<EventSource>,
) -> &'a [u8] {
    let same =
        |(held, _): &(Arc<EventSource>, Vec<u8>)| Arc::ptr_eq(held, source) || held == source;
    if !kept.as_ref().is_some_and(same) {
        *kept = Some((source.clone(), source_fields(source)));
    }
    kept.as_ref().map_or(&[], |(_, written)| written)
}

/// Appends the JSON `write` writes for `part` (id `id`), from `cache` where it holds it.
fn splice<M: PartialEq + Clone>(
    cache: &mut PartCache<M>,
    slot: usize,
    id: u64,
    part: &M,
    write: impl Fn(&M, &mut Vec<u8>),
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(cache.encoded(slot, id, part, write));
}

impl JsonEncoder {
    /// Appends `event` as one JSON line to `out`; `ids` are its parts' (see [`PartIds`]).
    /// `shared` holds the parts the event goes without (see [`SharedParts`]). The event is lent
    /// back unchanged.
    pub fn encode(
        &mut self,
        event: &mut Event,
        ids: PartIds,
        shared: &SharedParts,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let identity = event.identity.take();
        let owned = event.process.take();
        let kind = std::mem::take(&mut event.kind);
        let name = named_kind(&kind, event);
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
            identity: identity.as_deref().or(shared.identity.as_deref()),
            process: owned.as_deref().or(shared.process.as_deref()),
            exec: exec
                .as_ref()
                .map(|parent| parent.as_deref().or(shared.parent.as_deref())),
            access: shared.access_apart(event.body.as_ref()),
            kind: name,
        };
        let written = self.write(event, &parts, shared.source.as_ref(), out);
        event.time = event.time.or(time);
        event.identity = identity;
        event.process = owned;
        event.kind = kind;
        if let Some(mut body) = body {
            if let Body::Exec(ProcessExec { parent }) = &mut body {
                *parent = exec.flatten();
            }
            event.body = Some(body);
        }
        written
    }

    /// The event's remaining fields, then the spliced ones, then the line's end.
    fn write(
        &mut self,
        head: &Event,
        parts: &Parts,
        source: Option<&Arc<EventSource>>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut object = Object::open(out);
        let source = source.map(|source| written_source(&mut self.source, source));
        let access = parts.access.map(|access| {
            self.accesses
                .encoded(0, parts.ids.access, access, access_fields)
                .as_slice()
        });
        let apart = WrittenApart {
            source,
            access,
            kind: Some(parts.kind),
        };
        write_event_fields(head, apart, &mut object);
        if let Some(time) = &parts.time {
            object.timestamp(key!("time"), time);
        }
        if let Some(identity) = parts.identity {
            let slot = identity_slot(identity);
            let id = parts.ids.identity;
            let out = object.key(key!("identity"));
            splice(&mut self.identities, slot, id, identity, serialized, out);
        }
        if let Some(process) = parts.process {
            let (slot, id) = (process.tid as usize, parts.ids.process);
            let out = object.key(key!("process"));
            splice(&mut self.processes, slot, id, process, write_process, out);
        }
        if let Some(parent) = parts.exec {
            let mut exec = Object::open(object.key(key!("exec")));
            if let Some(parent) = parent {
                let (slot, id) = (parent.pid as usize, parts.ids.parent);
                let out = exec.key(key!("parent"));
                splice(&mut self.parents, slot, id, parent, write_process, out);
            }
            exec.close();
        }
        object.close();
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{
        encode::tests::{apart, builder_ids, named, sample_events_with_execs},
        parts::PartTagger,
    };

    #[test]
    fn writes_the_fields_and_values_pbjson_writes_on_hits_and_misses() {
        let mut encoder = JsonEncoder::default();
        let events = sample_events_with_execs();
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
                .encode(
                    event,
                    PartIds::default(),
                    &SharedParts::default(),
                    &mut ours,
                )
                .unwrap();
            assert_eq!(*event, before, "the event is handed back unchanged");
            assert_eq!(ours.last(), Some(&b'\n'), "one line");
            let mut by_id = Vec::new();
            let none = SharedParts::default();
            let ids = tagger.tag(event, &none, PartIds::default());
            tagged.encode(event, ids, &none, &mut by_id).unwrap();
            assert_eq!(by_id, ours, "event {} by id", event.seq);
            // The same event with its parts held apart, as the table shares them.
            let mut shared = apart(event);
            let mut held = Vec::new();
            let ids = tagger.tag(event, &shared, builder_ids(&shared));
            tagged.encode(event, ids, &shared, &mut held).unwrap();
            assert_eq!(held, ours, "event {} with its parts apart", event.seq);
            shared.restore(event);
            let whole = named(&before);
            assert_eq!(
                *event, whole,
                "the parts and the kind go back where they were"
            );
            let ours: serde_json::Value = serde_json::from_slice(&ours).unwrap();
            let pbjson = serde_json::to_value(&*event).unwrap();
            assert_eq!(ours, pbjson, "event {}", event.seq);
            let decoded: Event = serde_json::from_value(ours).unwrap();
            assert_eq!(decoded, *event, "event {} reads back", event.seq);
        }
    }

    #[test]
    fn a_source_held_apart_is_written_as_pbjson_writes_it_and_follows_its_changes() {
        let mut encoder = JsonEncoder::default();
        let mut tagger = PartTagger::default();
        let hosts = ["web-1", "web-1", "db \"2\"\n", "web-1", ""];
        for (seq, host) in hosts.into_iter().enumerate() {
            let mut event = Event {
                seq: seq as u64,
                run_id: format!("run-{}", seq % 2),
                boot_id: "boot".into(),
                host: host.into(),
                kind: "EVENT_KIND_EXIT".into(),
                ..Event::default()
            };
            let pbjson = serde_json::to_value(&event).unwrap();
            let shared = apart(&mut event);
            let ids = tagger.tag(&event, &shared, PartIds::default());
            let mut line = Vec::new();
            encoder.encode(&mut event, ids, &shared, &mut line).unwrap();
            let ours: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(ours, pbjson, "event {seq}");
        }
    }
}
