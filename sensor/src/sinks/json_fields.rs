//! The JSON of an event's envelope and of a process written field by field, as pbjson writes
//! them (protobuf's canonical JSON: camelCase names, 64-bit integers as strings, bytes in
//! base64, every scalar field even when it holds its default).
//!
//! These are the parts written for every event (the envelope) or for every new process; going
//! through serde's map serializer cost more than the bytes themselves. Every field is named
//! when a message is taken apart (no `..`), so a field added to the schema fails to compile
//! here until it is written. Bodies and the rarer messages still go through pbjson.
use base64::Engine as _;
use custos_proto::v1::{
    event::Body, AccessBasis, AccessGrant, Cgroup, Event, FileAccess, FileOpen, Group, Process,
    ProcessExit,
};
use pbjson_types::Timestamp;

use super::{
    parts::{kind_name, AccessPart, EventSource},
    rfc3339,
};

/// A field's name as it is written, `,"name":`, made at compile time by [`key!`]: a field then
/// starts with one append (the comma left out before an object's first field).
#[derive(Clone, Copy)]
pub struct Key(&'static str);

impl Key {
    /// For [`key!`]: `written` is `,"name":`; [`Object::key`] drops its first byte before an
    /// object's first field, so a key without its comma does not compile.
    pub const fn written(written: &'static str) -> Self {
        assert!(written.as_bytes()[0] == b',', "a key starts with its comma");
        Self(written)
    }
}

/// The [`Key`] of the field named `$name`.
macro_rules! key {
    ($name:literal) => {
        const { $crate::sinks::json_fields::Key::written(concat!(",\"", $name, "\":")) }
    };
}
pub(crate) use key;

/// A JSON object being written: its fields, separated.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    /// Opens an object at the end of `out`.
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Fields to splice into another object later (see [`Self::fields`]): written as an
    /// object's, without its braces.
    pub fn bare(out: &'a mut Vec<u8>) -> Self {
        Self { out, empty: true }
    }

    /// Starts field `name`; its value is written next into the returned buffer.
    pub fn key(&mut self, name: Key) -> &mut Vec<u8> {
        let written = name.0.as_bytes();
        let written = if self.empty { &written[1..] } else { written };
        self.empty = false;
        self.out.extend_from_slice(written);
        self.out
    }

    pub fn string(&mut self, name: Key, value: &str) {
        string(value, self.key(name));
    }

    pub fn number(&mut self, name: Key, value: u32) {
        let mut digits = itoa::Buffer::new();
        self.key(name)
            .extend_from_slice(digits.format(value).as_bytes());
    }

    pub fn signed(&mut self, name: Key, value: i32) {
        let mut digits = itoa::Buffer::new();
        self.key(name)
            .extend_from_slice(digits.format(value).as_bytes());
    }

    /// A 64-bit integer, which protobuf's JSON writes as a string.
    pub fn long(&mut self, name: Key, value: u64) {
        let mut digits = itoa::Buffer::new();
        let out = self.key(name);
        out.push(b'"');
        out.extend_from_slice(digits.format(value).as_bytes());
        out.push(b'"');
    }

    pub fn boolean(&mut self, name: Key, value: bool) {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.key(name).extend_from_slice(text);
    }

    pub fn bytes(&mut self, name: Key, value: &[u8]) {
        base64_string(value, self.key(name));
    }

    pub fn timestamp(&mut self, name: Key, value: &Timestamp) {
        let out = self.key(name);
        if !rfc3339::write_quoted(value, out) {
            serialized(value, out);
        }
    }

    /// Appends fields written before (`"name":value`, comma-separated), such as
    /// [`source_fields`].
    pub fn fields(&mut self, written: &[u8]) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.extend_from_slice(written);
    }

    /// Closes the object.
    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping, as almost nothing does.
pub fn string(value: &str, out: &mut Vec<u8>) {
    if !needs_escaping(value.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serialized(value, out);
    }
}

/// Whether any byte of `text` must be escaped in a JSON string (a control character, a quote
/// or a backslash). Checked sixteen bytes at a time without stopping early inside a block, so
/// the compiler checks each block in a few vector instructions: the byte-at-a-time check was
/// the JSON encoder's largest own cost. The tail is checked as the last sixteen bytes (again
/// some of them), and a string of eight to fifteen bytes as two overlapping words, so only
/// strings shorter than a word go byte by byte.
fn needs_escaping(text: &[u8]) -> bool {
    if text.len() < 8 {
        return text.iter().any(|&b| is_special(b));
    }
    if text.len() < 16 {
        let word = |at: usize| u64::from_le_bytes(text[at..at + 8].try_into().unwrap_or([0; 8]));
        return word_has_special(word(0)) || word_has_special(word(text.len() - 8));
    }
    let block_has_special = |block: &[u8]| block.iter().fold(false, |any, &b| any | is_special(b));
    text.chunks_exact(16).any(block_has_special) || block_has_special(&text[text.len() - 16..])
}

fn is_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// [`is_special`] for any of a word's eight bytes, with the classic bit tricks: a byte below
/// 0x20, or one equal to a quote or a backslash (zero once xored with it).
fn word_has_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let control = below(word, 0x20);
    let quote = below(word ^ (ONES * u64::from(b'"')), 1);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    control | quote | backslash != 0
}

fn base64_string(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    if !value.is_empty() {
        let mut text = String::new();
        base64::engine::general_purpose::STANDARD.encode_string(value, &mut text);
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'"');
}

/// pbjson's JSON of `value`, or `null` where pbjson refuses it (an enum value the schema does
/// not name): what it had written by then is taken back, so the line stays valid JSON.
pub fn serialized<M: serde::Serialize + ?Sized>(value: &M, out: &mut Vec<u8>) {
    let start = out.len();
    if let Err(err) = serde_json::to_writer(&mut *out, value) {
        tracing::error!("encoding part of an event as JSON: {err}");
        out.truncate(start);
        out.extend_from_slice(b"null");
    }
}

/// The fields `source` gives an event (`runId`, `bootId`, `host`), the same on every event of a
/// run: written once, then spliced into each event by [`write_event_fields`].
pub fn source_fields(source: &EventSource) -> Vec<u8> {
    let mut written = Vec::new();
    let mut object = Object::bare(&mut written);
    object.string(key!("runId"), &source.run_id);
    object.string(key!("bootId"), &source.boot_id);
    object.string(key!("host"), &source.host);
    written
}

/// Parts held apart from an event, written before: spliced in their places.
#[derive(Clone, Copy, Default)]
pub struct WrittenApart<'a> {
    /// The [`source_fields`] of the event's source, in place of its `run_id`, `boot_id` and
    /// `host`.
    pub source: Option<&'a [u8]>,
    /// A file open's access part ([`access_fields`]), in place of the fields it holds.
    pub access: Option<&'a [u8]>,
    /// The event's [`kind_name`], taken before its body was taken apart.
    pub kind: Option<&'a str>,
}

/// Writes `event`'s fields in pbjson's order into `object`, leaving it open for the caller's;
/// the parts written `apart` in their places.
pub fn write_event_fields(event: &Event, apart: WrittenApart, object: &mut Object) {
    let Event {
        seq,
        run_id,
        boot_id,
        host,
        time,
        identity,
        process,
        kind: _, // by its name, below
        body,
    } = event;
    object.long(key!("seq"), *seq);
    match apart.source {
        Some(written) => object.fields(written),
        None => {
            object.string(key!("runId"), run_id);
            object.string(key!("bootId"), boot_id);
            object.string(key!("host"), host);
        }
    }
    if let Some(time) = time {
        object.timestamp(key!("time"), time);
    }
    if let Some(identity) = identity {
        serialized(identity, object.key(key!("identity")));
    }
    if let Some(process) = process {
        write_process(process, object.key(key!("process")));
    }
    object.string(key!("kind"), apart.kind.unwrap_or_else(|| kind_name(event)));
    if let Some(body) = body {
        write_body(body, apart.access, object);
    }
}

/// Writes the body's field: its name in the oneof and its message; a file open's access part
/// written apart in its place.
fn write_body(body: &Body, access: Option<&[u8]>, object: &mut Object) {
    match body {
        Body::Exec(v) => serialized(v, object.key(key!("exec"))),
        Body::Exit(v) => write_process_exit(v, object.key(key!("exit"))),
        Body::Loss(v) => serialized(v, object.key(key!("loss"))),
        Body::FileOpen(v) => write_file_open(v, access, object.key(key!("fileOpen"))),
        Body::PrivilegeChange(v) => serialized(v, object.key(key!("privilegeChange"))),
        Body::SessionStart(v) => serialized(v, object.key(key!("sessionStart"))),
        Body::SessionEnd(v) => serialized(v, object.key(key!("sessionEnd"))),
        Body::BlockDevice(v) => serialized(v, object.key(key!("blockDevice"))),
        Body::Mount(v) => serialized(v, object.key(key!("mount"))),
        Body::DeviceControl(v) => serialized(v, object.key(key!("deviceControl"))),
        Body::DeviceWriteSummary(v) => serialized(v, object.key(key!("deviceWriteSummary"))),
        Body::Alert(v) => serialized(v, object.key(key!("alert"))),
        Body::Network(v) => serialized(v, object.key(key!("network"))),
        Body::AccessUsage(v) => serialized(v, object.key(key!("accessUsage"))),
    }
}

/// Appends the JSON of `process`.
pub fn write_process(process: &Process, out: &mut Vec<u8>) {
    let Process {
        pid,
        tid,
        ppid,
        exec_id,
        parent_exec_id,
        binary,
        binary_raw,
        args,
        args_raw,
        args_truncated,
        cwd,
        cwd_raw,
        comm,
        start_time,
        cgroup,
        path_truncated,
        invoked_path,
        invoked_path_raw,
    } = process;
    let mut object = Object::open(out);
    object.number(key!("pid"), *pid);
    object.number(key!("tid"), *tid);
    object.number(key!("ppid"), *ppid);
    object.string(key!("execId"), exec_id);
    object.string(key!("parentExecId"), parent_exec_id);
    object.string(key!("binary"), binary);
    object.bytes(key!("binaryRaw"), binary_raw);
    list(object.key(key!("args")), args, |arg, out| string(arg, out));
    list(object.key(key!("argsRaw")), args_raw, |arg, out| {
        base64_string(arg, out)
    });
    object.boolean(key!("argsTruncated"), *args_truncated);
    object.string(key!("cwd"), cwd);
    object.bytes(key!("cwdRaw"), cwd_raw);
    object.string(key!("comm"), comm);
    if let Some(start_time) = start_time {
        object.timestamp(key!("startTime"), start_time);
    }
    if let Some(cgroup) = cgroup {
        write_cgroup(cgroup, object.key(key!("cgroup")));
    }
    object.boolean(key!("pathTruncated"), *path_truncated);
    object.string(key!("invokedPath"), invoked_path);
    object.bytes(key!("invokedPathRaw"), invoked_path_raw);
    object.close();
}

fn write_cgroup(cgroup: &Cgroup, out: &mut Vec<u8>) {
    let Cgroup {
        id,
        path,
        unit,
        container_id,
    } = cgroup;
    let mut object = Object::open(out);
    object.long(key!("id"), *id);
    object.string(key!("path"), path);
    object.string(key!("unit"), unit);
    object.string(key!("containerId"), container_id);
    object.close();
}

/// Appends the JSON of a file open, the most frequent body, with `held` (its access part,
/// written apart by [`access_fields`]) in place of the fields the part holds.
fn write_file_open(open: &FileOpen, held: Option<&[u8]>, out: &mut Vec<u8>) {
    let FileOpen {
        path,
        path_raw,
        path_truncated,
        access,
        flags,
        syscall,
        fd,
        errno,
        error,
        denied,
        device_major,
        device_minor,
        inode,
        repeats,
        repeat_summary,
        device,
        basis,
        owner_uid,
        owner,
        owner_gid,
        owner_group,
        mode,
    } = open;
    let mut object = Object::open(out);
    object.string(key!("path"), path);
    object.bytes(key!("pathRaw"), path_raw);
    object.boolean(key!("pathTruncated"), *path_truncated);
    if let Some(access) = access {
        write_file_access(access, object.key(key!("access")));
    }
    object.number(key!("flags"), *flags);
    object.string(key!("syscall"), syscall);
    if let Some(fd) = fd {
        object.signed(key!("fd"), *fd);
    }
    optional_number(&mut object, key!("errno"), *errno);
    object.string(key!("error"), error);
    object.boolean(key!("denied"), *denied);
    optional_number(&mut object, key!("deviceMajor"), *device_major);
    optional_number(&mut object, key!("deviceMinor"), *device_minor);
    if let Some(inode) = inode {
        object.long(key!("inode"), *inode);
    }
    object.long(key!("repeats"), *repeats);
    object.boolean(key!("repeatSummary"), *repeat_summary);
    if let Some(device) = device {
        serialized(device, object.key(key!("device")));
    }
    match held {
        Some(written) => object.fields(written),
        None => write_access_part(
            &mut object,
            basis.as_deref(),
            *owner_uid,
            owner,
            *owner_gid,
            owner_group,
            *mode,
        ),
    }
    object.close();
}

/// Writes a file open's last fields, its basis and owner, into `object`.
fn write_access_part(
    object: &mut Object,
    basis: Option<&AccessBasis>,
    owner_uid: Option<u32>,
    owner: &str,
    owner_gid: Option<u32>,
    owner_group: &str,
    mode: Option<u32>,
) {
    if let Some(basis) = basis {
        write_access_basis(basis, object.key(key!("basis")));
    }
    optional_number(object, key!("ownerUid"), owner_uid);
    object.string(key!("owner"), owner);
    optional_number(object, key!("ownerGid"), owner_gid);
    object.string(key!("ownerGroup"), owner_group);
    optional_number(object, key!("mode"), mode);
}

/// The fields of `part` as a file open holds them, to splice into one (see
/// [`Object::fields`]).
pub fn access_fields(part: &AccessPart, out: &mut Vec<u8>) {
    let AccessPart {
        basis,
        owner_uid,
        owner,
        owner_gid,
        owner_group,
        mode,
    } = part;
    write_access_part(
        &mut Object::bare(out),
        basis.as_ref(),
        *owner_uid,
        owner,
        *owner_gid,
        owner_group,
        *mode,
    );
}

/// Appends the JSON of an exit: one per process, so written here rather than through serde.
fn write_process_exit(exit: &ProcessExit, out: &mut Vec<u8>) {
    let ProcessExit {
        code,
        signal,
        core_dumped,
    } = exit;
    let mut object = Object::open(out);
    if let Some(code) = code {
        object.signed(key!("code"), *code);
    }
    optional_number(&mut object, key!("signal"), *signal);
    object.boolean(key!("coreDumped"), *core_dumped);
    object.close();
}

/// A proto3 `optional uint32`: written only when present.
fn optional_number(object: &mut Object, name: Key, value: Option<u32>) {
    if let Some(value) = value {
        object.number(name, value);
    }
}

fn write_file_access(access: &FileAccess, out: &mut Vec<u8>) {
    let FileAccess {
        read,
        write,
        create,
        truncate,
        append,
    } = access;
    let mut object = Object::open(out);
    object.boolean(key!("read"), *read);
    object.boolean(key!("write"), *write);
    object.boolean(key!("create"), *create);
    object.boolean(key!("truncate"), *truncate);
    object.boolean(key!("append"), *append);
    object.close();
}

/// Appends the JSON of an access basis.
fn write_access_basis(basis: &AccessBasis, out: &mut Vec<u8>) {
    let AccessBasis {
        grant,
        group,
        supplementary,
        acl_entry,
        capability,
        requested,
        missing,
        permission_class,
        object: checked,
        object_path,
        after_the_fact,
        note,
    } = basis;
    // A grant outside the enum is pbjson's error, written as pbjson's writer reports it.
    let Ok(grant) = AccessGrant::try_from(*grant) else {
        serialized(basis, out);
        return;
    };
    let mut object = Object::open(out);
    object.string(key!("grant"), grant.as_str_name());
    if let Some(group) = group {
        write_group(group, object.key(key!("group")));
    }
    object.boolean(key!("supplementary"), *supplementary);
    if let Some(entry) = acl_entry {
        serialized(entry, object.key(key!("aclEntry")));
    }
    object.string(key!("capability"), capability);
    object.string(key!("requested"), requested);
    object.string(key!("missing"), missing);
    object.string(key!("permissionClass"), permission_class);
    object.string(key!("object"), checked);
    object.string(key!("objectPath"), object_path);
    object.boolean(key!("afterTheFact"), *after_the_fact);
    object.string(key!("note"), note);
    object.close();
}

fn write_group(group: &Group, out: &mut Vec<u8>) {
    let Group { gid, name } = group;
    let mut object = Object::open(out);
    object.number(key!("gid"), *gid);
    object.string(key!("name"), name);
    object.close();
}

fn list<T>(out: &mut Vec<u8>, items: &[T], write: impl Fn(&T, &mut Vec<u8>)) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{
        AccessUsage, AclEntry, Alert, BlockDevice, EventLoss, Mount, NetworkConnection,
        ProcessExec, SessionEnd,
    };

    use super::*;
    use crate::sinks::encode::tests::{event, identity, named, process};

    fn ours<M>(part: &M, write: impl Fn(&M, &mut Vec<u8>)) -> serde_json::Value {
        let mut out = Vec::new();
        write(part, &mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them_wherever_the_special_byte_falls() {
        // Every ASCII character and a two-byte one, at every place of strings short and long
        // (byte by byte, two words, blocks and a tail), among plain, non-ASCII and DEL bytes.
        let candidates: Vec<char> = (0u8..0x80).map(char::from).chain(['é']).collect();
        for background in ['a', 'é', '\u{7f}'] {
            for len in 0..=40 {
                for at in 0..len {
                    for &special in &candidates {
                        let mut chars = vec![background; len];
                        chars[at] = special;
                        let text: String = chars.into_iter().collect();
                        let mut out = Vec::new();
                        string(&text, &mut out);
                        assert_eq!(
                            out,
                            serde_json::to_vec(&text).unwrap(),
                            "{special:?} at {at} of {len} among {background:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_process_is_written_with_pbjsons_fields_and_values_whatever_its_text() {
        let plain = process(7, "/bin/true");
        let odd = Process {
            binary: "/tmp/\"quoted\" \\ back\tslash\u{1}\u{7f}é".into(),
            binary_raw: b"/tmp/\xff\xfe".to_vec(),
            args: vec![String::new(), "a\nb".into(), "ünï".into()],
            args_raw: vec![Vec::new(), b"\x00\x01\xff".to_vec()],
            cwd_raw: vec![0xc3],
            comm: "x\"y".into(),
            // Outside what the short timestamp path writes: pbjson's path.
            start_time: Some(Timestamp {
                seconds: 300_000_000_000,
                nanos: 1,
            }),
            cgroup: None,
            invoked_path_raw: b"\x80".to_vec(),
            path_truncated: true,
            args_truncated: true,
            ..process(u32::MAX, "")
        };
        let bare = Process::default();
        for process in [plain, odd, bare] {
            let pbjson = serde_json::to_value(&process).unwrap();
            assert_eq!(ours(&process, write_process), pbjson, "{process:?}");
        }
    }

    /// A file open with every field set, strings that need escaping among them.
    fn full_file_open() -> FileOpen {
        FileOpen {
            path: "/home/a\"b\\c\u{2}é".into(),
            path_raw: b"/home/\xff".to_vec(),
            path_truncated: true,
            access: Some(FileAccess {
                read: true,
                write: true,
                create: false,
                truncate: true,
                append: false,
            }),
            flags: u32::MAX,
            syscall: "openat".into(),
            fd: Some(-1),
            errno: Some(13),
            error: "EACCES".into(),
            denied: true,
            device_major: Some(8),
            device_minor: Some(0),
            inode: Some(u64::MAX),
            repeats: 41,
            repeat_summary: true,
            device: Some(Box::new(BlockDevice {
                name: "sdb".into(),
                removable: true,
                size_bytes: 1 << 40,
                ..BlockDevice::default()
            })),
            basis: Some(Box::new(AccessBasis {
                grant: AccessGrant::Acl as i32,
                group: Some(Group {
                    gid: 27,
                    name: "sudo".into(),
                }),
                supplementary: true,
                acl_entry: Some(AclEntry {
                    tag: "user".into(),
                    id: 1000,
                    name: "alice".into(),
                    perm: "rw-".into(),
                    effective: "r--".into(),
                }),
                capability: "CAP_DAC_OVERRIDE".into(),
                note: "n\"".into(),
                ..AccessBasis::default()
            })),
            owner_uid: Some(0),
            owner: "root".into(),
            owner_gid: Some(0),
            owner_group: "root".into(),
            mode: Some(0o100640),
        }
    }

    #[test]
    fn a_file_open_is_written_with_pbjsons_fields_and_values_whatever_it_holds() {
        let full = full_file_open();
        let bare = FileOpen::default();
        let unnamed_grant = FileOpen {
            basis: Some(Box::new(AccessBasis {
                grant: 99,
                ..AccessBasis::default()
            })),
            ..FileOpen::default()
        };
        let whole = |open: &FileOpen, out: &mut Vec<u8>| write_file_open(open, None, out);
        for open in [full.clone(), bare] {
            let pbjson = serde_json::to_value(&open).unwrap();
            assert_eq!(ours(&open, whole), pbjson, "{open:?}");
        }
        // The access part written apart, in the place of the fields the open goes without.
        let pbjson = serde_json::to_value(&full).unwrap();
        let mut without = full.clone();
        let part = AccessPart::take(&mut without);
        let mut written_part = Vec::new();
        access_fields(&part, &mut written_part);
        let held =
            |_: &FileOpen, out: &mut Vec<u8>| write_file_open(&without, Some(&written_part), out);
        assert_eq!(ours(&full, held), pbjson);
        let mut by_value = Vec::new();
        let mut apart = Vec::new();
        write_file_open(&full, None, &mut by_value);
        write_file_open(&without, Some(&written_part), &mut apart);
        assert_eq!(apart, by_value, "the same bytes in the same order");
        // pbjson cannot write a grant the schema does not name; neither is it invented here.
        assert!(serde_json::to_value(&unnamed_grant).is_err());
        let written = ours(&unnamed_grant, whole);
        assert_eq!(written["basis"], serde_json::Value::Null);
    }

    #[test]
    fn an_exit_is_written_with_pbjsons_fields_and_values() {
        let exits = [
            ProcessExit::default(),
            crate::families::exit_status(3 << 8),
            crate::families::exit_status(11 | 0x80),
            ProcessExit {
                code: Some(i32::MIN),
                signal: Some(u32::MAX),
                core_dumped: false,
            },
        ];
        for exit in exits {
            let pbjson = serde_json::to_value(exit).unwrap();
            assert_eq!(ours(&exit, write_process_exit), pbjson, "{exit:?}");
        }
    }

    #[test]
    fn an_events_fields_are_written_as_pbjson_writes_them_for_every_kind_of_body() {
        let bodies = [
            Body::Exec(ProcessExec {
                parent: Some(Box::new(process(1, "/sbin/init"))),
            }),
            Body::Exit(ProcessExit::default()),
            Body::Loss(EventLoss::default()),
            Body::FileOpen(FileOpen {
                path: "/etc/\"shadow\"".into(),
                ..FileOpen::default()
            }),
            Body::SessionEnd(SessionEnd::default()),
            Body::Mount(Mount::default()),
            Body::Alert(Alert::default()),
            Body::Network(NetworkConnection::default()),
            Body::AccessUsage(AccessUsage::default()),
        ];
        let mut events: Vec<Event> = bodies
            .into_iter()
            .map(|body| Event {
                body: Some(body),
                seq: u64::MAX,
                ..event(3, Some(identity(1000)), Some(process(9, "/bin/sh")))
            })
            .collect();
        events.push(Event::default());
        for event in events {
            let written = ours(&event, |event, out| {
                let mut object = Object::open(out);
                write_event_fields(event, WrittenApart::default(), &mut object);
                object.close();
            });
            let whole = serde_json::to_value(named(&event)).unwrap();
            assert_eq!(written, whole, "{event:?}");
        }
    }
}
