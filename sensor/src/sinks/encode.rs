//! Length-delimited protobuf for events, reusing the encoding of a recent event's process and
//! identity.
//!
//! Most events come from a handful of busy processes, and their `Process` and `Identity` are
//! most of an event's bytes; prost would measure each nested message again at every level and
//! then copy it. Here each is encoded once and its bytes spliced into every event that carries
//! an equal one. The output is byte for byte what `Event::encode_length_delimited` writes.
use custos_proto::v1::{Event, Identity, Process};
use prost::{
    encoding::{bytes, encode_varint, encoded_len_varint, string},
    Message,
};

use super::parts::{identity_slot, PartCache, PartIds};

/// Field numbers of `Event`'s identity, process and kind (custos.v1 schema).
const IDENTITY_FIELD: u32 = 6;
const PROCESS_FIELD: u32 = 7;
const KIND_FIELD: u32 = 8;

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
    /// `shared` is its process when the event goes without it (see `Produced::process`). The
    /// event is lent back unchanged.
    pub fn encode(
        &mut self,
        event: &mut Event,
        ids: PartIds,
        shared: Option<&Process>,
        out: &mut Vec<u8>,
    ) {
        let identity = event.identity.take();
        let owned = event.process.take();
        let process = owned.as_ref().or(shared);
        // Written after the process, in its number's place.
        let kind = std::mem::take(&mut event.kind);
        let body = event.body.take();

        let identity_bytes = identity.as_ref().map(|identity| {
            self.identities
                .encoded(identity_slot(identity), ids.identity, identity, encode_raw)
        });
        let process_bytes = process.map(|process| {
            self.processes
                .encoded(process.tid as usize, ids.process, process, encode_raw)
        });
        // Event's fields in their numbers' order: the scalar head, identity, process, kind,
        // body.
        let head_len = event.encoded_len();
        let body_len = body.as_ref().map_or(0, |body| body.encoded_len());
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
        event.encode_raw(out);
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
            body.encode(out);
        }

        event.identity = identity;
        event.process = owned;
        event.kind = kind;
        event.body = body;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use custos_proto::v1::{event::Body, Cgroup, FileOpen, Group, ProcessExit};

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
            identity,
            process,
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
        ]
    }

    #[test]
    fn writes_what_prost_writes_on_hits_and_misses() {
        let mut encoder = ProtobufEncoder::default();
        let events = sample_events();
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
            encoder.encode(event, PartIds::default(), None, &mut ours);
            assert_eq!(*event, before, "the event is handed back unchanged");
            assert_eq!(ours, expected, "event {}", event.seq);
            let mut by_id = Vec::new();
            let ids = tagger.tag(event, None, PartIds::default());
            tagged.encode(event, ids, None, &mut by_id);
            assert_eq!(by_id, expected, "event {} by id", event.seq);
            // The same event with its process held apart, as the table shares it.
            let shared = event.process.take();
            let mut apart = Vec::new();
            let ids = tagger.tag(event, shared.as_ref(), PartIds::default());
            tagged.encode(event, ids, shared.as_ref(), &mut apart);
            assert_eq!(
                apart, expected,
                "event {} with its process apart",
                event.seq
            );
            event.process = shared;
        }
    }
}
