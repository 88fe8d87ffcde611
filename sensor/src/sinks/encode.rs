//! Length-delimited protobuf for events, reusing the encoding of a recent event's process and
//! identity.
//!
//! Most events come from a handful of busy processes, and their `Process` and `Identity` are
//! most of an event's bytes; prost would measure each nested message again at every level and
//! then copy it. Here each is encoded once and its bytes spliced into every event that carries
//! an equal one. The output is byte for byte what `Event::encode_length_delimited` writes.
use custos_proto::v1::{event::Body, AccessBasis, Event, Identity, Process, ProcessExec};
use prost::{
    encoding::{
        bytes, encode_key, encode_varint, encoded_len_varint, key_len, message, string, uint64,
        WireType,
    },
    Message,
};

use super::parts::{identity_slot, EventSource, PartCache, PartIds, SharedParts};

/// Field numbers of `Event`'s seq, run_id, boot_id, host, identity, process and kind
/// (custos.v1 schema).
const SEQ_FIELD: u32 = 1;
const RUN_ID_FIELD: u32 = 2;
const BOOT_ID_FIELD: u32 = 3;
const HOST_FIELD: u32 = 4;
const IDENTITY_FIELD: u32 = 6;
const PROCESS_FIELD: u32 = 7;
const KIND_FIELD: u32 = 8;
/// Field numbers of `Event.exec` and of `ProcessExec.parent`.
const EXEC_FIELD: u32 = 10;
const EXEC_PARENT_FIELD: u32 = 1;

#[derive(Default)]
pub struct ProtobufEncoder {
    processes: PartCache<Process>,
    identities: PartCache<Identity>,
}

fn encode_raw<M: Message>(part: &M, out: &mut Vec<u8>) {
    part.encode_raw(out);
}

impl ProtobufEncoder {
    /// Appends `event`, length-delimited, to `out`; `ids` are its parts' (see [`PartIds`]).
    /// `shared` holds the parts the event goes without (see [`SharedParts`]). The event is lent
    /// back unchanged.
    pub fn encode(
        &mut self,
        event: &mut Event,
        ids: PartIds,
        shared: &SharedParts,
        out: &mut Vec<u8>,
    ) {
        let identity = event.identity.take();
        let owned = event.process.take();
        let process = owned.as_deref().or(shared.process.as_deref());
        let identity_in_use = identity.as_deref().or(shared.identity.as_deref());
        // Written after the process, in its number's place.
        let kind = std::mem::take(&mut event.kind);
        let mut body = event.body.take();
        let lent = lend_basis(&mut body, shared.basis.as_deref());

        let identity_bytes = identity_in_use.map(|identity| {
            self.identities
                .encoded(identity_slot(identity), ids.identity, identity, encode_raw)
        });
        let process_bytes = process.map(|process| {
            self.processes
                .encoded(process.tid as usize, ids.process, process, encode_raw)
        });
        // Event's fields in their numbers' order: the scalar head, identity, process, kind,
        // body.
        let source = shared.source.as_deref();
        let head_len = event.encoded_len() + source.map_or(0, source_len);
        let parent = shared.parent.as_deref();
        let body_len = body.as_ref().map_or(0, |body| body_len(body, parent));
        let kind_len = if kind.is_empty() {
            0
        } else {
            string::encoded_len(KIND_FIELD, &kind)
        };
        // An embedded message has the wire form of a bytes field holding its encoding.
        let len = head_len
            + identity_bytes.map_or(0, |b| bytes::encoded_len(IDENTITY_FIELD, b))
            + process_bytes.map_or(0, |b| bytes::encoded_len(PROCESS_FIELD, b))
            + kind_len
            + body_len;
        out.reserve(encoded_len_varint(len as u64) + len);
        encode_varint(len as u64, out);
        encode_head(event, source, out);
        if let Some(encoded) = identity_bytes {
            bytes::encode(IDENTITY_FIELD, encoded, out);
        }
        if let Some(encoded) = process_bytes {
            bytes::encode(PROCESS_FIELD, encoded, out);
        }
        if !kind.is_empty() {
            string::encode(KIND_FIELD, &kind, out);
        }
        if let Some(body) = &body {
            encode_body(body, parent, out);
        }

        if lent {
            if let Some(Body::FileOpen(open)) = &mut body {
                open.basis = None;
            }
        }
        event.identity = identity;
        event.process = owned;
        event.kind = kind;
        event.body = body;
    }
}

/// Puts a copy of the basis held apart (`shared`) into a file open without one, to be encoded
/// in its place; whether it did.
fn lend_basis(body: &mut Option<Body>, shared: Option<&AccessBasis>) -> bool {
    match (body, shared) {
        (Some(Body::FileOpen(open)), Some(basis)) if open.basis.is_none() => {
            open.basis = Some(Box::new(basis.clone()));
            true
        }
        _ => false,
    }
}

/// `source`'s fields as prost writes them (an empty string not at all).
fn source_fields(source: &EventSource) -> [(u32, &String); 3] {
    [
        (RUN_ID_FIELD, &source.run_id),
        (BOOT_ID_FIELD, &source.boot_id),
        (HOST_FIELD, &source.host),
    ]
}

fn source_len(source: &EventSource) -> usize {
    source_fields(source)
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(field, value)| string::encoded_len(field, value))
        .sum()
}

/// Appends the event's scalar fields, with `source` (when held apart) in place of its empty
/// `run_id`, `boot_id` and `host`: in their numbers' order, between `seq` and `time`.
fn encode_head(head: &mut Event, source: Option<&EventSource>, out: &mut Vec<u8>) {
    let Some(source) = source else {
        head.encode_raw(out);
        return;
    };
    let seq = std::mem::take(&mut head.seq);
    if seq != 0 {
        uint64::encode(SEQ_FIELD, &seq, out);
    }
    for (field, value) in source_fields(source) {
        if !value.is_empty() {
            string::encode(field, value, out);
        }
    }
    head.encode_raw(out);
    head.seq = seq;
}

/// An exec without its parent, whose parent is held apart (`shared`).
fn exec_apart<'a>(body: &Body, shared: Option<&'a Process>) -> Option<&'a Process> {
    match body {
        // Every field named: a field added to ProcessExec must be written here too.
        Body::Exec(ProcessExec { parent: None }) => shared,
        _ => None,
    }
}

/// The encoded length of `body` (the oneof field), its parent `shared` where held apart.
fn body_len(body: &Body, shared: Option<&Process>) -> usize {
    match exec_apart(body, shared) {
        Some(parent) => {
            let exec = message::encoded_len(EXEC_PARENT_FIELD, parent);
            key_len(EXEC_FIELD) + encoded_len_varint(exec as u64) + exec
        }
        None => body.encoded_len(),
    }
}

/// Appends `body`, as prost would with the parent held apart (`shared`) in its place.
fn encode_body(body: &Body, shared: Option<&Process>, out: &mut Vec<u8>) {
    match exec_apart(body, shared) {
        Some(parent) => {
            encode_key(EXEC_FIELD, WireType::LengthDelimited, out);
            encode_varint(message::encoded_len(EXEC_PARENT_FIELD, parent) as u64, out);
            message::encode(EXEC_PARENT_FIELD, parent, out);
        }
        None => body.encode(out),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use custos_proto::v1::{Cgroup, FileOpen, Group, ProcessExit};

    use super::*;
    use crate::sinks::parts::{PartTagger, SLOTS};

    pub(crate) fn process(tid: u32, binary: &str) -> Process {
        Process {
            pid: tid,
            tid,
            ppid: 1,
            exec_id: format!("b:{tid}:1"),
            binary: binary.into(),
            args: vec![binary.into(), "-x".into()],
            cwd: "/root".into(),
            comm: "cat".into(),
            start_time: Some(pbjson_types::Timestamp {
                seconds: 5,
                nanos: 6,
            }),
            cgroup: Some(Cgroup {
                id: 9,
                path: "/system.slice/x.service".into(),
                ..Cgroup::default()
            }),
            ..Process::default()
        }
    }

    pub(crate) fn identity(uid: u32) -> Identity {
        Identity {
            uid,
            user: format!("user{uid}"),
            euid: uid,
            groups: vec![Group {
                gid: 4,
                name: "adm".into(),
            }],
            session_id: Some(3),
            login_uid: Some(uid),
            ..Identity::default()
        }
    }

    pub(crate) fn event(seq: u64, identity: Option<Identity>, process: Option<Process>) -> Event {
        Event {
            seq,
            run_id: "r".into(),
            boot_id: "b".into(),
            host: "h".into(),
            time: Some(pbjson_types::Timestamp {
                seconds: 1,
                nanos: 2,
            }),
            identity: identity.map(Box::new),
            process: process.map(Box::new),
            kind: "file_open".into(),
            body: Some(Body::FileOpen(FileOpen {
                path: format!("/etc/file{seq}"),
                ..FileOpen::default()
            })),
        }
    }

    /// Events whose parts hit and miss the caches: repeats, same slots with other contents,
    /// parts missing.
    pub(crate) fn sample_events() -> Vec<Event> {
        vec![
            event(1, Some(identity(0)), Some(process(100, "/bin/cat"))),
            // The same process and identity again: spliced from the caches.
            event(2, Some(identity(0)), Some(process(100, "/bin/cat"))),
            // Same slots, different contents: the caches must not answer with stale bytes.
            event(3, Some(identity(0)), Some(process(100, "/bin/dog"))),
            event(
                4,
                Some(identity(1)),
                Some(process(100 + SLOTS as u32, "/bin/cat")),
            ),
            event(5, None, None),
            Event {
                body: Some(Body::Exit(ProcessExit::default())),
                ..event(6, None, Some(process(7, "/bin/true")))
            },
            Event {
                body: None,
                ..event(7, Some(identity(2)), None)
            },
            Event::default(),
            // Access bases: one met again, one in its place.
            with_basis(event(8, Some(identity(0)), None), basis("r")),
            with_basis(event(9, Some(identity(0)), None), basis("r")),
            with_basis(event(10, Some(identity(0)), None), basis("rw")),
        ]
    }

    fn basis(requested: &str) -> AccessBasis {
        AccessBasis {
            grant: custos_proto::v1::AccessGrant::Group as i32,
            group: Some(Group {
                gid: 4,
                name: "adm".into(),
            }),
            requested: requested.into(),
            permission_class: "group".into(),
            object: "file".into(),
            ..AccessBasis::default()
        }
    }

    fn with_basis(mut event: Event, basis: AccessBasis) -> Event {
        if let Some(Body::FileOpen(open)) = &mut event.body {
            open.basis = Some(Box::new(basis));
        }
        event
    }

    /// The ids the enricher gives the parts it holds apart: here a basis's, one per distinct
    /// basis, as the memo of bases gives them.
    pub(crate) fn builder_ids(shared: &SharedParts) -> PartIds {
        thread_local! {
            static GIVEN: std::cell::RefCell<Vec<(AccessBasis, u64)>> = Default::default();
        }
        let basis = shared.basis.as_deref().map_or(0, |basis| {
            GIVEN.with_borrow_mut(|given| match given.iter().find(|(b, _)| b == basis) {
                Some((_, id)) => *id,
                None => {
                    let id = crate::sinks::new_part_id();
                    given.push((basis.clone(), id));
                    id
                }
            })
        });
        PartIds {
            basis,
            ..PartIds::default()
        }
    }

    /// [`sample_events`] and three execs: two with the same parent, one without.
    pub(crate) fn sample_events_with_execs() -> Vec<Event> {
        let exec = |seq, parent: Option<Process>| Event {
            body: Some(Body::Exec(ProcessExec {
                parent: parent.map(Box::new),
            })),
            ..event(seq, Some(identity(0)), Some(process(100, "/bin/sh")))
        };
        let mut events = sample_events();
        events.extend([
            exec(8, Some(process(1, "/sbin/init"))),
            exec(9, Some(process(1, "/sbin/init"))),
            exec(10, None),
        ]);
        events
    }

    /// Takes `event`'s process, identity, source, an exec's parent and a file open's basis
    /// out, as the enricher holds them apart.
    pub(crate) fn apart(event: &mut Event) -> SharedParts {
        let parent = match &mut event.body {
            Some(Body::Exec(exec)) => exec.parent.take(),
            _ => None,
        };
        let basis = match &mut event.body {
            Some(Body::FileOpen(open)) => open.basis.take(),
            _ => None,
        };
        SharedParts {
            process: event.process.take().map(|p| std::sync::Arc::new(*p)),
            identity: event.identity.take().map(|i| std::sync::Arc::new(*i)),
            parent: parent.map(|p| std::sync::Arc::new(*p)),
            basis: basis.map(|b| std::sync::Arc::new(*b)),
            source: Some(std::sync::Arc::new(EventSource {
                run_id: std::mem::take(&mut event.run_id),
                boot_id: std::mem::take(&mut event.boot_id),
                host: std::mem::take(&mut event.host),
            })),
        }
    }

    #[test]
    fn writes_what_prost_writes_on_hits_and_misses() {
        let mut encoder = ProtobufEncoder::default();
        let events = sample_events_with_execs();
        // Parts known by content, then by the ids the reader side gives them.
        let mut tagged = ProtobufEncoder::default();
        let mut tagger = PartTagger::default();
        // Twice, so that every part is met again.
        let mut twice = events.clone();
        twice.extend(events);
        for event in &mut twice {
            let before = event.clone();
            let expected = event.encode_length_delimited_to_vec();
            let mut ours = Vec::new();
            encoder.encode(
                event,
                PartIds::default(),
                &SharedParts::default(),
                &mut ours,
            );
            assert_eq!(*event, before, "the event is handed back unchanged");
            assert_eq!(ours, expected, "event {}", event.seq);
            let mut by_id = Vec::new();
            let none = SharedParts::default();
            let ids = tagger.tag(event, &none, PartIds::default());
            tagged.encode(event, ids, &none, &mut by_id);
            assert_eq!(by_id, expected, "event {} by id", event.seq);
            // The same event with its parts held apart, as the table shares them.
            let mut shared = apart(event);
            let mut held = Vec::new();
            let ids = tagger.tag(event, &shared, builder_ids(&shared));
            tagged.encode(event, ids, &shared, &mut held);
            assert_eq!(held, expected, "event {} with its parts apart", event.seq);
            shared.restore(event);
            assert_eq!(*event, before, "the parts go back where they were");
        }
    }
}
