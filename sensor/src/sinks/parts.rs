//! The parts of events that repeat from event to event (their process, identity, an exec's
//! parent and a file open's access part), known by id, and a cache of their encodings shared
//! by the encoders.
//!
//! Most events come from a handful of busy processes, and their `Process` and `Identity` are
//! most of an event's bytes. Each is encoded once and its bytes reused for every event that
//! carries an equal one. Whether a part is equal to the cached one is settled on the thread
//! that built the event ([`PartTagger`]), where the part's memory is still in that core's
//! cache: the sink thread then knows a part by its id without reading it.
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use custos_proto::v1::{event::Body, AccessBasis, Event, FileOpen, Identity, Process};

/// Slots per cache: enough for the busy processes of a host, small enough to stay in cache.
pub const SLOTS: usize = 64;

/// Identities differ mostly by who (uid) and from which login session.
pub fn identity_slot(identity: &Identity) -> usize {
    let session = identity.session_id.unwrap_or(0);
    (identity.uid ^ identity.euid.rotate_left(8) ^ session.rotate_left(16)) as usize
}

/// Ids of an event's parts: two events whose parts have the same non-zero id have equal parts.
/// 0 means not known: the part is compared in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartIds {
    pub process: u64,
    pub identity: u64,
    /// An exec's parent process.
    pub parent: u64,
    /// A file open's access part.
    pub access: u64,
}

/// An event's parts held apart from it: views the process table shares, which the event goes
/// without until a stage needs the whole event (see [`SharedParts::restore`]). Stages that
/// only read a part read it here, and the encoders write it from here.
#[derive(Clone, Debug, Default)]
pub struct SharedParts {
    pub process: Option<Arc<Process>>,
    pub identity: Option<Arc<Identity>>,
    /// An exec's parent.
    pub parent: Option<Arc<Process>>,
    /// A file open's access part, as the memo of bases keeps it: the same for every open of
    /// one file by one opener.
    pub access: Option<Arc<AccessPart>>,
    /// The event's `run_id`, `boot_id` and `host`, the same on every event of a run.
    pub source: Option<Arc<EventSource>>,
}

/// Where events come from: `Event.run_id`, `boot_id` and `host`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSource {
    pub run_id: String,
    pub boot_id: String,
    pub host: String,
}

/// A file open's access part: its basis and its file's owner, which depend only on what the
/// memo of bases is keyed by (the file's owner and mode, the opener's credentials, what was
/// asked). They are `FileOpen`'s last fields, so an encoder writes them in one piece after the
/// others.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessPart {
    pub basis: Option<AccessBasis>,
    pub owner_uid: Option<u32>,
    pub owner: String,
    pub owner_gid: Option<u32>,
    pub owner_group: String,
    pub mode: Option<u32>,
}

impl AccessPart {
    /// Takes the access part out of `open`, whose fields it leaves empty.
    pub fn take(open: &mut FileOpen) -> Self {
        Self {
            basis: open.basis.take().map(|basis| *basis),
            owner_uid: open.owner_uid.take(),
            owner: std::mem::take(&mut open.owner),
            owner_gid: open.owner_gid.take(),
            owner_group: std::mem::take(&mut open.owner_group),
            mode: open.mode.take(),
        }
    }

    /// Puts the fields back into `open`.
    pub fn put_back(self, open: &mut FileOpen) {
        open.basis = self.basis.map(Box::new);
        open.owner_uid = self.owner_uid;
        open.owner = self.owner;
        open.owner_gid = self.owner_gid;
        open.owner_group = self.owner_group;
        open.mode = self.mode;
    }
}

/// The kind written for `event`: its `kind` field, or its body's kind where the field is left
/// empty. The reader leaves it empty, sparing every event an allocation of a name its body
/// already gives; whole events get it back with the parts ([`SharedParts::restore`]).
pub fn kind_name(event: &Event) -> &str {
    named_kind(&event.kind, event)
}

/// [`kind_name`] for an event whose `kind` field has been taken out (as `field`) to be put
/// back after encoding.
pub fn named_kind<'a>(field: &'a str, event: &Event) -> &'a str {
    if field.is_empty() {
        event.kind().short_name()
    } else {
        field
    }
}

impl SharedParts {
    /// Puts the parts back into `event` (a copy of each view the table still holds), and its
    /// kind's name (see [`kind_name`]).
    pub fn restore(&mut self, event: &mut Event) {
        if event.kind.is_empty() {
            event.kind = kind_name(event).to_owned();
        }
        if let Some(source) = self.source.take() {
            event.run_id.clone_from(&source.run_id);
            event.boot_id.clone_from(&source.boot_id);
            event.host.clone_from(&source.host);
        }
        if let Some(process) = self.process.take() {
            event.process = Some(Box::new(Arc::unwrap_or_clone(process)));
        }
        if let Some(identity) = self.identity.take() {
            event.identity = Some(Box::new(Arc::unwrap_or_clone(identity)));
        }
        if let Some(parent) = self.parent.take() {
            if let Some(Body::Exec(exec)) = &mut event.body {
                exec.parent = Some(Box::new(Arc::unwrap_or_clone(parent)));
            }
        }
        if let Some(access) = self.access.take() {
            if let Some(Body::FileOpen(open)) = &mut event.body {
                Arc::unwrap_or_clone(access).put_back(open);
            }
        }
    }

    /// `event`'s process: its own or the one held apart.
    pub fn process<'a>(&'a self, event: &'a Event) -> Option<&'a Process> {
        event.process.as_deref().or(self.process.as_deref())
    }

    /// `event`'s identity: its own or the one held apart.
    pub fn identity<'a>(&'a self, event: &'a Event) -> Option<&'a Identity> {
        event.identity.as_deref().or(self.identity.as_deref())
    }

    /// The parent of `event` if it is an exec: its own or the one held apart.
    pub fn parent<'a>(&'a self, event: &'a Event) -> Option<&'a Process> {
        match &event.body {
            Some(Body::Exec(exec)) => exec.parent.as_deref().or(self.parent.as_deref()),
            _ => None,
        }
    }

    /// The access basis of `event` if it is a file open: its own or the one held apart.
    pub fn basis<'a>(&'a self, event: &'a Event) -> Option<&'a AccessBasis> {
        match &event.body {
            Some(Body::FileOpen(open)) => open
                .basis
                .as_deref()
                .or_else(|| self.access.as_ref()?.basis.as_ref()),
            _ => None,
        }
    }

    /// The access part held apart for `body` when it is a file open: the one an encoder writes
    /// in place of the fields the open goes without.
    pub fn access_apart(&self, body: Option<&Body>) -> Option<&AccessPart> {
        match body {
            Some(Body::FileOpen(_)) => self.access.as_deref(),
            _ => None,
        }
    }
}

/// The next part id. Ids are unique in the daemon's process, whoever hands them out: the
/// tagger, or the enricher for the views it keeps (see [`PartTagger::tag`]'s `known`).
static NEXT_PART_ID: AtomicU64 = AtomicU64::new(1);

/// A new part id: the holder promises that every part it gives this id has the same contents.
pub fn new_part_id() -> u64 {
    NEXT_PART_ID.fetch_add(1, Ordering::Relaxed)
}

/// Gives each distinct part an id: the one its builder gave it, or one found by comparing it
/// with the recent parts in its slot.
#[derive(Default)]
pub struct PartTagger {
    processes: TagSlots<Process>,
    parents: TagSlots<Process>,
    identities: TagSlots<Identity>,
    /// Ids below this one were given before the last reset.
    valid_from: u64,
}

impl PartTagger {
    /// The ids of `event`'s parts as it will be encoded (after the privacy settings). `known`
    /// holds the ids its builder gave its parts (0 where it gave none): those parts are not
    /// compared. `shared` holds the parts the event goes without.
    pub fn tag(&mut self, event: &Event, shared: &SharedParts, known: PartIds) -> PartIds {
        let trusted = |id: u64| (id != 0 && id >= self.valid_from).then_some(id);
        let process = shared.process(event).map_or(0, |process| {
            trusted(known.process)
                .unwrap_or_else(|| self.processes.id_of(process.tid as usize, process))
        });
        let identity = shared.identity(event).map_or(0, |identity| {
            trusted(known.identity)
                .unwrap_or_else(|| self.identities.id_of(identity_slot(identity), identity))
        });
        let parent = shared.parent(event).map_or(0, |parent| {
            trusted(known.parent).unwrap_or_else(|| self.parents.id_of(parent.pid as usize, parent))
        });
        // Access parts are many and small: one without its builder's id is written, not
        // compared.
        let access = shared
            .access_apart(event.body.as_ref())
            .map_or(0, |_| trusted(known.access).unwrap_or(0));
        PartIds {
            process,
            identity,
            parent,
            access,
        }
    }

    /// Forgets every id given, here and by builders: after a change of privacy settings, an
    /// equal part as built may be encoded differently.
    pub fn reset(&mut self) {
        self.processes = TagSlots::default();
        self.parents = TagSlots::default();
        self.identities = TagSlots::default();
        self.valid_from = new_part_id();
    }
}

/// Per slot, the last part that mapped to it and its id.
struct TagSlots<M> {
    slots: Vec<Option<(M, u64)>>,
}

impl<M> Default for TagSlots<M> {
    fn default() -> Self {
        Self {
            slots: std::iter::repeat_with(|| None).take(SLOTS).collect(),
        }
    }
}

impl<M: PartialEq + Clone> TagSlots<M> {
    fn id_of(&mut self, key: usize, part: &M) -> u64 {
        let slot = &mut self.slots[key % SLOTS];
        match slot {
            Some((cached, id)) if cached == part => *id,
            _ => {
                let id = new_part_id();
                *slot = Some((part.clone(), id));
                id
            }
        }
    }
}

/// A direct-mapped cache of encoded messages: a slot keeps the id or the message last encoded
/// there, and its bytes. A hit by id costs nothing; a part without an id costs one comparison
/// (and on a miss a copy of the message) besides what encoding always cost. A part with an id
/// takes the slot of its id, one without the slot of its key: equal identities of different
/// processes have different ids and the same key, and events of such processes interleave
/// (two busy processes of one user), so slots by key would have them encoded again at every
/// turn.
pub struct PartCache<M> {
    /// Per slot, the id of the part last encoded there, the part itself when it came without
    /// an id, and its bytes.
    slots: Vec<(u64, Option<M>, Vec<u8>)>,
}

impl<M> Default for PartCache<M> {
    fn default() -> Self {
        Self {
            slots: std::iter::repeat_with(|| (0, None, Vec::new()))
                .take(SLOTS)
                .collect(),
        }
    }
}

impl<M: PartialEq + Clone> PartCache<M> {
    /// The bytes `encode` writes for `part` (whose id is `id`, or 0), from its slot when that
    /// holds the same part: the slot of `id`, or of `key` for a part without one.
    pub fn encoded(
        &mut self,
        key: usize,
        id: u64,
        part: &M,
        encode: impl Fn(&M, &mut Vec<u8>),
    ) -> &Vec<u8> {
        let slot = if id != 0 { id as usize } else { key };
        let (cached_id, cached, encoded) = &mut self.slots[slot % SLOTS];
        let hit = if id != 0 {
            *cached_id == id
        } else {
            cached.as_ref() == Some(part)
        };
        if !hit {
            *cached_id = id;
            *cached = (id == 0).then(|| part.clone());
            encoded.clear();
            encode(part, encoded);
        }
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(tid: u32, binary: &str) -> Process {
        Process {
            tid,
            binary: binary.into(),
            ..Process::default()
        }
    }

    fn event(process: Process) -> Event {
        Event {
            process: Some(Box::new(process)),
            ..Event::default()
        }
    }

    #[test]
    fn equal_parts_share_an_id_and_different_ones_never_do() {
        let mut tagger = PartTagger::default();
        let first = tagger
            .tag(
                &event(process(7, "/bin/a")),
                &SharedParts::default(),
                PartIds::default(),
            )
            .process;
        assert_ne!(first, 0);
        assert_eq!(
            tagger
                .tag(
                    &event(process(7, "/bin/a")),
                    &SharedParts::default(),
                    PartIds::default()
                )
                .process,
            first
        );
        let other = tagger
            .tag(
                &event(process(7, "/bin/b")),
                &SharedParts::default(),
                PartIds::default(),
            )
            .process;
        assert_ne!(other, first, "same slot, other contents");
        let back = tagger
            .tag(
                &event(process(7, "/bin/a")),
                &SharedParts::default(),
                PartIds::default(),
            )
            .process;
        assert_ne!(back, first, "an evicted part comes back under a new id");
        assert_ne!(back, other);
        assert_eq!(
            tagger.tag(
                &Event::default(),
                &SharedParts::default(),
                PartIds::default()
            ),
            PartIds::default()
        );
        tagger.reset();
        assert_ne!(
            tagger
                .tag(
                    &event(process(7, "/bin/a")),
                    &SharedParts::default(),
                    PartIds::default()
                )
                .process,
            back
        );
    }

    #[test]
    fn a_builders_id_is_taken_as_given_until_a_reset() {
        let mut tagger = PartTagger::default();
        let given = new_part_id();
        let known = PartIds {
            process: given,
            ..PartIds::default()
        };
        let ids = tagger.tag(&event(process(7, "/bin/a")), &SharedParts::default(), known);
        assert_eq!(ids.process, given);
        assert_eq!(ids.identity, 0, "no identity, no id");
        tagger.reset();
        let after = tagger
            .tag(&event(process(7, "/bin/a")), &SharedParts::default(), known)
            .process;
        assert_ne!(after, given, "an id given before a reset is not trusted");
        assert_ne!(after, 0);
    }

    #[test]
    fn the_cache_answers_by_id_and_without_one_by_content() {
        let mut cache = PartCache::<Process>::default();
        let encodings = std::cell::Cell::new(0);
        let encode = |p: &Process, out: &mut Vec<u8>| {
            encodings.set(encodings.get() + 1);
            out.extend_from_slice(p.binary.as_bytes());
        };
        // (id, binary, encoded again)
        let steps = [
            (5, "/bin/a", true),
            (5, "/bin/a", false),
            (6, "/bin/b", true),
            (0, "/bin/b", true),
            (0, "/bin/b", false),
            (0, "/bin/c", true),
            // Parts with ids keep their own slots whatever their key, and parts without one
            // do not take them.
            (6, "/bin/b", false),
            (5, "/bin/a", false),
            // An id a whole round of slots later takes the slot from the earlier one.
            (5 + SLOTS as u64, "/bin/d", true),
            (5, "/bin/a", true),
        ];
        for (id, binary, encoded_again) in steps {
            let before = encodings.get();
            let bytes = cache.encoded(1, id, &process(1, binary), encode).clone();
            assert_eq!(bytes, binary.as_bytes(), "id {id}, {binary}");
            assert_eq!(
                encodings.get() > before,
                encoded_again,
                "id {id}, {binary}: a hit must not encode, a miss must"
            );
        }
    }
}
