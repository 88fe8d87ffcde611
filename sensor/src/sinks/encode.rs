//! Length-delimited protobuf for events, reusing the encoding of a recent event's process,
//! identity and access part.
//!
//! Most events come from a handful of busy processes, and their `Process` and `Identity` are
//! most of an event's bytes; prost would measure each nested message again at every level and
//! then copy it. Here each is encoded once and its bytes spliced into every event that carries
//! an equal one. The output is byte for byte what `Event::encode_length_delimited` writes.
use custos_proto::v1::{event::Body, Event, Identity, Process, ProcessExec};
use prost::{
    encoding::{
        bytes, encode_key, encode_varint, encoded_len_varint, key_len, message, string, uint32,
        uint64, WireType,
    },
    Message,
};

use super::parts::{
    identity_slot, named_kind, AccessPart, EventSource, PartCache, PartIds, SharedParts,
};

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
/// Field numbers of `Event.file_open`, of `FileOpen.basis` and of the owner fields after it.
const FILE_OPEN_FIELD: u32 = 13;
const BASIS_FIELD: u32 = 17;
const OWNER_UID_FIELD: u32 = 18;
const OWNER_FIELD: u32 = 19;
const OWNER_GID_FIELD: u32 = 20;
const OWNER_GROUP_FIELD: u32 = 21;
const MODE_FIELD: u32 = 22;

#[derive(Default)]
pub struct ProtobufEncoder {
    processes: PartCache<Process>,
    identities: PartCache<Identity>,
    accesses: PartCache<AccessPart>,
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
        let name = named_kind(&kind, event);
        let body = event.body.take();

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
        let apart = BodyApart {
            parent: shared.parent.as_deref(),
            access: shared
                .access_apart(body.as_ref())
                .map(|access| self.accesses.encoded(0, ids.access, access, encode_access)),
        };
        let body_len = body
            .as_ref()
            .map_or(BodyLen::default(), |body| body_len(body, &apart));
        let kind_len = str_len(KIND_FIELD, name);
        // An embedded message has the wire form of a bytes field holding its encoding.
        let len = head_len
            + identity_bytes.map_or(0, |b| bytes::encoded_len(IDENTITY_FIELD, b))
            + process_bytes.map_or(0, |b| bytes::encoded_len(PROCESS_FIELD, b))
            + kind_len
            + body_len.field;
        out.reserve(encoded_len_varint(len as u64) + len);
        encode_varint(len as u64, out);
        encode_head(event, source, out);
        if let Some(encoded) = identity_bytes {
            bytes::encode(IDENTITY_FIELD, encoded, out);
        }
        if let Some(encoded) = process_bytes {
            bytes::encode(PROCESS_FIELD, encoded, out);
        }
        encode_str(KIND_FIELD, name, out);
        if let Some(body) = &body {
            encode_body(body, &apart, body_len.spliced, out);
        }

        event.identity = identity;
        event.process = owned;
        event.kind = kind;
        event.body = body;
    }
}

/// The parts of a body held apart from it: an exec's parent, a file open's access part
/// (encoded).
struct BodyApart<'a> {
    parent: Option<&'a Process>,
    access: Option<&'a Vec<u8>>,
}

/// Appends a file open's access part as prost writes those fields of a `FileOpen`: an optional
/// when present, a string when not empty. They are its last fields, so these bytes follow the
/// rest of the open's.
fn encode_access(part: &AccessPart, out: &mut Vec<u8>) {
    let AccessPart {
        basis,
        owner_uid,
        owner,
        owner_gid,
        owner_group,
        mode,
    } = part;
    if let Some(basis) = basis {
        message::encode(BASIS_FIELD, basis, out);
    }
    if let Some(uid) = owner_uid {
        uint32::encode(OWNER_UID_FIELD, uid, out);
    }
    if !owner.is_empty() {
        string::encode(OWNER_FIELD, owner, out);
    }
    if let Some(gid) = owner_gid {
        uint32::encode(OWNER_GID_FIELD, gid, out);
    }
    if !owner_group.is_empty() {
        string::encode(OWNER_GROUP_FIELD, owner_group, out);
    }
    if let Some(mode) = mode {
        uint32::encode(MODE_FIELD, mode, out);
    }
}

/// A string field's encoded length, as `prost::encoding::string::encoded_len` gives it for a
/// `String`, for a name that is not one (always written: a kind is never empty).
fn str_len(field: u32, value: &str) -> usize {
    key_len(field) + encoded_len_varint(value.len() as u64) + value.len()
}

/// A string field, as `prost::encoding::string::encode` writes it.
fn encode_str(field: u32, value: &str, out: &mut Vec<u8>) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value.as_bytes());
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

/// A body's encoded length, measured once: the event's length is made of it, and a body with a
/// part spliced in writes it as its own length.
#[derive(Default)]
struct BodyLen {
    /// The whole oneof field: key, length and message.
    field: usize,
    /// The message inside the field when a part held apart is spliced into it (0 otherwise),
    /// which is written as the field's length.
    spliced: usize,
}

/// The encoded length of `body` (the oneof field), with the parts held `apart` in their places.
fn body_len(body: &Body, apart: &BodyApart) -> BodyLen {
    let spliced = |field: u32, len: usize| BodyLen {
        field: key_len(field) + encoded_len_varint(len as u64) + len,
        spliced: len,
    };
    if let Some(parent) = exec_apart(body, apart.parent) {
        return spliced(EXEC_FIELD, message::encoded_len(EXEC_PARENT_FIELD, parent));
    }
    match (body, apart.access) {
        (Body::FileOpen(open), Some(access)) => {
            spliced(FILE_OPEN_FIELD, open.encoded_len() + access.len())
        }
        _ => BodyLen {
            field: body.encoded_len(),
            spliced: 0,
        },
    }
}

/// Appends `body`, as prost would with the parts held `apart` in their places; `spliced_len`
/// is [`BodyLen::spliced`].
fn encode_body(body: &Body, apart: &BodyApart, spliced_len: usize, out: &mut Vec<u8>) {
    if let Some(parent) = exec_apart(body, apart.parent) {
        encode_key(EXEC_FIELD, WireType::LengthDelimited, out);
        encode_varint(spliced_len as u64, out);
        message::encode(EXEC_PARENT_FIELD, parent, out);
        return;
    }
    match (body, apart.access) {
        (Body::FileOpen(open), Some(access)) => {
            encode_key(FILE_OPEN_FIELD, WireType::LengthDelimited, out);
            encode_varint(spliced_len as u64, out);
            open.encode_raw(out);
            out.extend_from_slice(access);
        }
        (body, _) => body.encode(out),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use custos_proto::v1::{AccessBasis, Cgroup, FileOpen, Group, ProcessExit};

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

    /// `event` as a stage that wants it whole gets it: its kind named (see `kind_name`).
    pub(crate) fn named(event: &Event) -> Event {
        let mut whole = event.clone();
        SharedParts::default().restore(&mut whole);
        whole
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

    /// `event` with `basis` and the owner fields numbered after it (the uid present though
    /// zero, which prost writes).
    fn with_basis(mut event: Event, basis: AccessBasis) -> Event {
        if let Some(Body::FileOpen(open)) = &mut event.body {
            open.basis = Some(Box::new(basis));
            open.owner_uid = Some(0);
            open.owner = "root".into();
            open.owner_gid = event.seq.is_multiple_of(2).then_some(4);
            open.owner_group = "adm".into();
            open.mode = Some(0o100640);
        }
        event
    }

    /// The ids the enricher gives the parts it holds apart: here an access part's, one per
    /// distinct part, as the memo of bases gives them.
    pub(crate) fn builder_ids(shared: &SharedParts) -> PartIds {
        thread_local! {
            static GIVEN: std::cell::RefCell<Vec<(AccessPart, u64)>> = Default::default();
        }
        let access = shared.access.as_deref().map_or(0, |access| {
            GIVEN.with_borrow_mut(|given| match given.iter().find(|(a, _)| a == access) {
                Some((_, id)) => *id,
                None => {
                    let id = crate::sinks::new_part_id();
                    given.push((access.clone(), id));
                    id
                }
            })
        });
        PartIds {
            access,
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

    /// Takes `event`'s process, identity, source, an exec's parent and a file open's access
    /// part out, as the enricher holds them apart.
    pub(crate) fn apart(event: &mut Event) -> SharedParts {
        let parent = match &mut event.body {
            Some(Body::Exec(exec)) => exec.parent.take(),
            _ => None,
        };
        let access = match &mut event.body {
            Some(Body::FileOpen(open)) => Some(AccessPart::take(open)),
            _ => None,
        };
        SharedParts {
            process: event.process.take().map(|p| std::sync::Arc::new(*p)),
            identity: event.identity.take().map(|i| std::sync::Arc::new(*i)),
            parent: parent.map(|p| std::sync::Arc::new(*p)),
            access: access.map(std::sync::Arc::new),
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
            let whole = named(event);
            let expected = whole.encode_length_delimited_to_vec();
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
            assert_eq!(
                *event, whole,
                "the parts and the kind go back where they were"
            );
        }
    }

    /// The field numbers written by hand are the schema's, and the fields `encode_access`
    /// writes after the basis are all of `FileOpen`'s after it: a field added after them would
    /// be written before the access part, no longer in prost's order.
    #[test]
    fn field_numbers_are_the_schemas() {
        let schema =
            prost_types::FileDescriptorSet::decode(custos_proto::FILE_DESCRIPTOR_SET).unwrap();
        let fields = |message: &str| -> Vec<(String, u32)> {
            let message = schema
                .file
                .iter()
                .flat_map(|file| &file.message_type)
                .find(|found| found.name() == message)
                .unwrap_or_else(|| panic!("no {message} in the schema"));
            let numbered = |field: &prost_types::FieldDescriptorProto| {
                (field.name().to_string(), field.number() as u32)
            };
            message.field.iter().map(numbered).collect()
        };
        let number = |message: &str, field: &str| {
            let found = fields(message).into_iter().find(|(name, _)| name == field);
            found.unwrap_or_else(|| panic!("no {message}.{field}")).1
        };
        let written = [
            (("Event", "seq"), SEQ_FIELD),
            (("Event", "run_id"), RUN_ID_FIELD),
            (("Event", "boot_id"), BOOT_ID_FIELD),
            (("Event", "host"), HOST_FIELD),
            (("Event", "identity"), IDENTITY_FIELD),
            (("Event", "process"), PROCESS_FIELD),
            (("Event", "kind"), KIND_FIELD),
            (("Event", "exec"), EXEC_FIELD),
            (("Event", "file_open"), FILE_OPEN_FIELD),
            (("ProcessExec", "parent"), EXEC_PARENT_FIELD),
            (("FileOpen", "basis"), BASIS_FIELD),
        ];
        for ((message, field), ours) in written {
            assert_eq!(number(message, field), ours, "{message}.{field}");
        }
        let mut after_basis: Vec<(String, u32)> = fields("FileOpen")
            .into_iter()
            .filter(|(_, number)| *number > BASIS_FIELD)
            .collect();
        after_basis.sort_by_key(|(_, number)| *number);
        let written_after = [
            ("owner_uid", OWNER_UID_FIELD),
            ("owner", OWNER_FIELD),
            ("owner_gid", OWNER_GID_FIELD),
            ("owner_group", OWNER_GROUP_FIELD),
            ("mode", MODE_FIELD),
        ]
        .map(|(name, number)| (name.to_string(), number));
        assert_eq!(after_basis, written_after);
    }
}
