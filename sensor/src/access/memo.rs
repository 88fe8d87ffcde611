//! The access part of file-open events, computed once per distinct set of inputs: a program
//! that opens the same files over and over gets the same owner names and basis each time, so
//! only the first costs name lookups and the permission replay.
use std::{
    hash::{Hash, Hasher},
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, Instant},
};

use lru::LruCache;
use sensor_common::{access_flags, FileOpenRecord, MAX_GROUPS};

use crate::sinks::AccessPart;

/// A remembered access part, shared by the events of the opens it answers, and its part id
/// (see [`crate::sinks::PartIds`]): the encoders write it once for all of them.
pub type HeldAccess = (Arc<AccessPart>, u64);

/// Distinct inputs remembered.
const ENTRIES: NonZeroUsize = match NonZeroUsize::new(4096) {
    Some(n) => n,
    None => unreachable!(),
};
/// Names in remembered parts are looked up again after this long, like the name cache's.
const TTL: Duration = Duration::from_secs(300);

/// Where [`BasisKey::scalars`] holds the task's group count.
const GROUP_COUNT: usize = 10;

/// Everything the owner fields and the basis of a successful open depend on.
///
/// Compared and hashed on the groups the task has, not the whole array: it is looked up for
/// every open, and the unused slots (always zero) were most of the key's bytes.
#[derive(Clone, Debug)]
pub struct BasisKey {
    /// The file's uid, gid and mode; those checked (the directory's, for a create); the access
    /// flags; the open flags that decide what is asked for (access mode, O_TRUNC, O_PATH); the
    /// task's fsuid, fsgid and group count. One array: compared and hashed as one.
    scalars: [u32; 11],
    groups: [u32; MAX_GROUPS],
    acl: Vec<u8>,
}

impl BasisKey {
    /// The key of `record`, or `None` where the answer depends on the path (a created file's
    /// directory is named in the basis).
    pub fn of(record: &FileOpenRecord, acl: &[u8]) -> Option<Self> {
        if record.access_flags & access_flags::ON_DIRECTORY != 0 {
            return None;
        }
        let task = &record.task;
        let asked = record.open_flags & (libc::O_ACCMODE | libc::O_TRUNC | libc::O_PATH) as u32;
        Some(Self {
            scalars: [
                record.file_uid,
                record.file_gid,
                record.file_mode,
                record.checked_uid,
                record.checked_gid,
                record.checked_mode,
                record.access_flags,
                asked,
                task.fsuid,
                task.fsgid,
                task.ngroups,
            ],
            groups: task.comparable_groups(),
            acl: acl.to_vec(),
        })
    }

    fn used_groups(&self) -> &[u32] {
        let ngroups = self.scalars[GROUP_COUNT];
        &self.groups[..(ngroups as usize).min(MAX_GROUPS)]
    }
}

impl PartialEq for BasisKey {
    fn eq(&self, other: &Self) -> bool {
        // Word by word without an early exit: a few vector instructions, where `==` on the
        // arrays called memcmp for every open.
        let differ = |a: &[u32], b: &[u32]| a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) != 0;
        let (groups, other_groups) = (self.used_groups(), other.used_groups());
        !differ(&self.scalars, &other.scalars)
            && groups.len() == other_groups.len()
            && !differ(groups, other_groups)
            && self.acl.len() == other.acl.len()
            // Most files have no ACL: two empty lists are equal without calling memcmp.
            && (self.acl.is_empty() || self.acl == other.acl)
    }
}

impl Eq for BasisKey {}

impl Hash for BasisKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.scalars.hash(state);
        self.used_groups().hash(state);
        self.acl.hash(state);
    }
}

pub struct BasisMemo {
    parts: LruCache<BasisKey, HeldAccess>,
    since: Instant,
}

impl Default for BasisMemo {
    fn default() -> Self {
        Self {
            parts: LruCache::new(ENTRIES),
            since: Instant::now(),
        }
    }
}

impl BasisMemo {
    pub fn get(&mut self, key: &BasisKey) -> Option<&HeldAccess> {
        self.parts.get(key)
    }

    /// Forgets every part once they are [`TTL`] old, so that renamed owners show; called
    /// once a second rather than per open.
    pub fn expire(&mut self) {
        if self.since.elapsed() >= TTL {
            self.parts.clear();
            self.since = Instant::now();
        }
    }

    pub fn put(&mut self, key: BasisKey, part: HeldAccess) {
        self.parts.put(key, part);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn key(groups: &[u32], acl: &[u8]) -> BasisKey {
        let mut all = [0; MAX_GROUPS];
        all[..groups.len()].copy_from_slice(groups);
        let mut scalars = [0, 0, 0o644, 0, 0, 0o644, 0, 0, 1000, 1000, 0];
        scalars[GROUP_COUNT] = groups.len() as u32;
        BasisKey {
            scalars,
            groups: all,
            acl: acl.to_vec(),
        }
    }

    #[test]
    fn keys_differ_by_any_group_the_task_has_or_the_acl_and_equal_ones_hash_alike() {
        let hasher = std::collections::hash_map::RandomState::new();
        let base = key(&[4, 24, 27], b"");
        assert_eq!(base, key(&[4, 24, 27], b""));
        assert_eq!(
            hasher.hash_one(&base),
            hasher.hash_one(key(&[4, 24, 27], b""))
        );
        assert_ne!(base, key(&[4, 24, 28], b""), "another group");
        assert_ne!(base, key(&[4, 24], b""), "one group fewer");
        assert_ne!(base, key(&[4, 24, 27, 0], b""), "group 0 added");
        assert_ne!(base, key(&[4, 24, 27], b"\x01"), "an ACL");
        let mut other_mode = base.clone();
        other_mode.scalars[2] = 0o600; // the file's mode
        assert_ne!(base, other_mode);
    }
}
