//! The access part of file-open events, computed once per distinct set of inputs: a program
//! that opens the same files over and over gets the same owner names and basis each time, so
//! only the first costs name lookups and the permission replay.
use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use custos_proto::v1::{AccessBasis, FileOpen as FileOpenEvent};
use lru::LruCache;
use sensor_common::{access_flags, FileOpenRecord, MAX_GROUPS};

/// Distinct inputs remembered.
const ENTRIES: NonZeroUsize = match NonZeroUsize::new(4096) {
    Some(n) => n,
    None => unreachable!(),
};
/// Names in remembered parts are looked up again after this long, like the name cache's.
const TTL: Duration = Duration::from_secs(300);

/// Everything the owner fields and the basis of a successful open depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BasisKey {
    file: [u32; 3],
    checked: [u32; 3],
    flags: u32,
    /// The open flags that decide what is asked for (access mode, O_TRUNC, O_PATH).
    asked: u32,
    fsuid: u32,
    fsgid: u32,
    ngroups: u32,
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
            file: [record.file_uid, record.file_gid, record.file_mode],
            checked: [record.checked_uid, record.checked_gid, record.checked_mode],
            flags: record.access_flags,
            asked,
            fsuid: task.fsuid,
            fsgid: task.fsgid,
            ngroups: task.ngroups,
            groups: task.comparable_groups(),
            acl: acl.to_vec(),
        })
    }
}

/// The fields the access part sets on a `FileOpen`.
#[derive(Clone, Debug, Default)]
pub struct AccessPart {
    pub owner_uid: Option<u32>,
    pub owner: String,
    pub owner_gid: Option<u32>,
    pub owner_group: String,
    pub mode: Option<u32>,
    pub basis: Option<AccessBasis>,
}

impl AccessPart {
    pub fn of(body: &FileOpenEvent) -> Self {
        Self {
            owner_uid: body.owner_uid,
            owner: body.owner.clone(),
            owner_gid: body.owner_gid,
            owner_group: body.owner_group.clone(),
            mode: body.mode,
            basis: body.basis.clone(),
        }
    }

    pub fn apply(&self, body: &mut FileOpenEvent) {
        body.owner_uid = self.owner_uid;
        body.owner.clone_from(&self.owner);
        body.owner_gid = self.owner_gid;
        body.owner_group.clone_from(&self.owner_group);
        body.mode = self.mode;
        body.basis.clone_from(&self.basis);
    }
}

pub struct BasisMemo {
    parts: LruCache<BasisKey, AccessPart>,
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
    pub fn get(&mut self, key: &BasisKey) -> Option<&AccessPart> {
        if self.since.elapsed() >= TTL {
            self.parts.clear();
            self.since = Instant::now();
        }
        self.parts.get(key)
    }

    pub fn put(&mut self, key: BasisKey, part: AccessPart) {
        self.parts.put(key, part);
    }
}
