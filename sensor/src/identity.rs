//! uid/gid to names through NSS, cached.
//!
//! Lookups go through getpwuid_r/getgrgid_r, so every source nsswitch.conf names (files, LDAP,
//! SSSD) answers. The cache is bounded (LRU) and entries expire, so renamed or removed accounts
//! are seen within the TTL; an unknown id caches as "no name" and stays a number in the output.
use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;

/// Where names come from; NSS in production, a table in tests.
pub trait NameSource {
    fn user_name(&self, uid: u32) -> Option<String>;
    fn group_name(&self, gid: u32) -> Option<String>;
}

/// The host's name service switch.
pub struct Nss;

impl NameSource for Nss {
    fn user_name(&self, uid: u32) -> Option<String> {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|u| u.name)
    }

    fn group_name(&self, gid: u32) -> Option<String> {
        nix::unistd::Group::from_gid(gid.into())
            .ok()
            .flatten()
            .map(|g| g.name)
    }
}

/// A user with the names of their primary and supplementary groups, as NSS has them now: who a
/// device rule or a live-stream view is decided for.
pub struct Subject {
    pub name: String,
    pub groups: Vec<String>,
}

impl Subject {
    pub fn of(uid: u32) -> Self {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let Some(user) = user else {
            return Self {
                name: String::new(),
                groups: Vec::new(),
            };
        };
        let groups = std::ffi::CString::new(user.name.clone())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid])
            .into_iter()
            .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
            .map(|group| group.name)
            .collect();
        Self {
            name: user.name,
            groups,
        }
    }
}

/// The kernel's "no id" value (an unset login uid, for example); never looked up.
pub const UNSET_ID: u32 = u32::MAX;

struct Entry {
    name: Option<String>,
    fetched: Instant,
}

pub struct NameCache<S> {
    source: S,
    users: LruCache<u32, Entry>,
    groups: LruCache<u32, Entry>,
    ttl: Duration,
}

impl<S: NameSource> NameCache<S> {
    pub fn new(source: S, capacity: NonZeroUsize, ttl: Duration) -> Self {
        Self {
            source,
            users: LruCache::new(capacity),
            groups: LruCache::new(capacity),
            ttl,
        }
    }

    /// The user name of `uid`, or `None` if it has none.
    pub fn user(&mut self, uid: u32) -> Option<String> {
        let source = &self.source;
        lookup(&mut self.users, self.ttl, uid, |id| source.user_name(id))
    }

    /// The group name of `gid`, or `None` if it has none.
    pub fn group(&mut self, gid: u32) -> Option<String> {
        let source = &self.source;
        lookup(&mut self.groups, self.ttl, gid, |id| source.group_name(id))
    }
}

fn lookup(
    cache: &mut LruCache<u32, Entry>,
    ttl: Duration,
    id: u32,
    fetch: impl FnOnce(u32) -> Option<String>,
) -> Option<String> {
    if id == UNSET_ID {
        return None;
    }
    if let Some(entry) = cache.get(&id) {
        if entry.fetched.elapsed() < ttl {
            return entry.name.clone();
        }
    }
    let name = fetch(id);
    cache.put(
        id,
        Entry {
            name: name.clone(),
            fetched: Instant::now(),
        },
    );
    name
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, collections::HashMap};

    use super::*;

    #[derive(Default)]
    struct Table {
        users: HashMap<u32, String>,
        lookups: Cell<u32>,
    }

    impl NameSource for Table {
        fn user_name(&self, uid: u32) -> Option<String> {
            self.lookups.set(self.lookups.get() + 1);
            self.users.get(&uid).cloned()
        }
        fn group_name(&self, _gid: u32) -> Option<String> {
            None
        }
    }

    fn cache(ttl: Duration, capacity: usize) -> NameCache<Table> {
        let mut table = Table::default();
        table.users.insert(1000, "alice".into());
        table.users.insert(1001, "bob".into());
        NameCache::new(table, NonZeroUsize::new(capacity).unwrap(), ttl)
    }

    #[test]
    fn hits_are_served_from_the_cache() {
        let mut c = cache(Duration::from_secs(60), 8);
        assert_eq!(c.user(1000).as_deref(), Some("alice"));
        assert_eq!(c.user(1000).as_deref(), Some("alice"));
        assert_eq!(c.source.lookups.get(), 1);
    }

    #[test]
    fn unknown_ids_are_cached_as_unnamed_and_unset_is_never_looked_up() {
        let mut c = cache(Duration::from_secs(60), 8);
        assert_eq!(c.user(4242), None);
        assert_eq!(c.user(4242), None);
        assert_eq!(c.source.lookups.get(), 1);
        assert_eq!(c.user(UNSET_ID), None);
        assert_eq!(c.source.lookups.get(), 1);
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut c = cache(Duration::ZERO, 8);
        c.user(1000);
        c.user(1000);
        assert_eq!(c.source.lookups.get(), 2);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = cache(Duration::from_secs(60), 1);
        c.user(1000);
        c.user(1001); // evicts 1000
        c.user(1000);
        assert_eq!(c.source.lookups.get(), 3);
        assert_eq!(c.users.len(), 1);
    }

    #[test]
    fn real_nss_resolves_root_and_leaves_unknown_ids_unnamed() {
        let mut c = NameCache::new(Nss, NonZeroUsize::new(4).unwrap(), Duration::from_secs(1));
        assert_eq!(c.user(0).as_deref(), Some("root"));
        assert_eq!(c.group(0).as_deref(), Some("root"));
        assert_eq!(c.user(3_999_999_999), None);
    }
}
