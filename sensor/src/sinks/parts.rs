//! A cache of the encodings of recent events' processes and identities, shared by the encoders.
//!
//! Most events come from a handful of busy processes, and their `Process` and `Identity` are
//! most of an event's bytes. Each is encoded once and its bytes reused for every event that
//! carries an equal one.
use custos_proto::v1::Identity;

/// Slots per cache: enough for the busy processes of a host, small enough to stay in cache.
pub const SLOTS: usize = 64;

/// Identities differ mostly by who (uid) and from which login session.
pub fn identity_slot(identity: &Identity) -> usize {
    let session = identity.session_id.unwrap_or(0);
    (identity.uid ^ identity.euid.rotate_left(8) ^ session.rotate_left(16)) as usize
}

/// A direct-mapped cache of encoded messages: a slot keeps the last message that mapped to it
/// and its bytes. A hit costs one comparison; a miss costs what encoding always cost, plus a
/// copy of the message.
pub struct PartCache<M> {
    /// Per slot, the message last encoded there (none yet) and its bytes.
    slots: Vec<(Option<M>, Vec<u8>)>,
}

impl<M> Default for PartCache<M> {
    fn default() -> Self {
        Self {
            slots: std::iter::repeat_with(|| (None, Vec::new()))
                .take(SLOTS)
                .collect(),
        }
    }
}

impl<M: PartialEq + Clone> PartCache<M> {
    /// The bytes `encode` writes for `part`, from slot `key` when it holds an equal message.
    pub fn encoded(&mut self, key: usize, part: &M, encode: impl Fn(&M, &mut Vec<u8>)) -> &Vec<u8> {
        let (cached, encoded) = &mut self.slots[key % SLOTS];
        if cached.as_ref() != Some(part) {
            *cached = Some(part.clone());
            encoded.clear();
            encode(part, encoded);
        }
        encoded
    }
}
