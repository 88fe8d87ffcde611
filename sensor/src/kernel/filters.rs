//! File-open filter rules: resolved from the configuration, then written into the kernel maps.
//!
//! Resolution (names to uids, executables to device and inode, cgroup paths to ids) happens
//! before anything is written, so a bad rule is refused whole and the rules in force stay.
use std::{collections::HashSet, hash::Hash, os::unix::fs::MetadataExt, path::Path};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData},
    Ebpf, Pod,
};
use sensor_common::{
    filter_action::{EXCLUDE, EXCLUDE_READS, INCLUDE, KEEP},
    filter_flags as ff, ExeKey, FileFilterConfig, FILE_FILTER_MAP, FILTER_CGROUPS_MAP,
    FILTER_COMMS_MAP, FILTER_EXES_MAP, FILTER_UIDS_MAP, PATH_PREFIXES_MAP, PREFIX_MAX,
};

use super::network_rules::{NetworkMaps, NetworkRules};
use crate::config::{FileEvents, FileSensor};

/// Filter rules in kernel form.
#[derive(Debug, Default, PartialEq)]
pub struct KernelRules {
    pub config: FileFilterConfig,
    /// The network sensor's rules.
    pub network: NetworkRules,
    pub prefixes: Vec<(Vec<u8>, u32)>,
    pub uids: Vec<(u32, u32)>,
    pub comms: Vec<([u8; 16], u32)>,
    pub cgroups: Vec<(u64, u32)>,
    pub exes: Vec<(ExeKey, u32)>,
}

/// Resolves `file` into kernel rules; `cgroup_root` is the cgroup2 mount. With
/// `watch_devices`, write opens on the devices in the watched-device map bypass the rules.
/// `keep_paths` (alert rules' sensitive sets) are kept whatever the path rules say, and
/// `events` (the privacy setting) narrows what else is collected.
pub fn resolve(
    file: &FileSensor,
    enabled: bool,
    watch_devices: bool,
    keep_paths: &[String],
    events: FileEvents,
    cgroup_root: &Path,
) -> Result<KernelRules> {
    let mut rules = KernelRules::default();
    let mut flags = if enabled { ff::ENABLED } else { 0 };
    if watch_devices {
        flags |= ff::WATCHED_DEVICES;
    }
    if file.writes_only {
        flags |= ff::WRITES_ONLY;
    }
    if file.access_basis {
        flags |= ff::ACCESS_BASIS;
    }
    rules.prefixes = tagged(&file.include_paths, &file.exclude_paths, |p| {
        Ok(p.as_bytes().to_vec())
    })?;
    for path in &file.exclude_read_paths {
        let key = path.as_bytes().to_vec();
        if !rules.prefixes.iter().any(|(k, _)| *k == key) {
            rules.prefixes.push((key, EXCLUDE_READS));
        }
    }
    match events {
        FileEvents::All => {}
        FileEvents::NoHome => {
            if !rules.prefixes.iter().any(|(k, _)| k == b"/home/") {
                rules.prefixes.push((b"/home/".to_vec(), EXCLUDE));
            }
        }
        FileEvents::SensitiveAndRemovable => {
            // Only the sensitive sets: an include no path can match (paths hold no NUL) makes
            // everything else drop even when there are no sets.
            rules.prefixes = vec![(b"\0".to_vec(), INCLUDE)];
        }
    }
    // KEEP is not an include: it keeps what it matches without dropping what matches nothing.
    for path in keep_paths {
        let key = path.as_bytes().to_vec();
        match rules.prefixes.iter_mut().find(|(k, _)| *k == key) {
            Some((_, action)) => *action = KEEP,
            None => rules.prefixes.push((key, KEEP)),
        }
    }
    rules.uids = tagged(&file.include_users, &file.exclude_users, |u| uid_of(u))?;
    rules.comms = tagged(&file.include_comms, &file.exclude_comms, |c| {
        Ok(comm_key(c))
    })?;
    rules.cgroups = tagged(&file.include_cgroups, &file.exclude_cgroups, |c| {
        cgroup_id(cgroup_root, c)
    })?;
    rules.exes = tagged(&file.include_executables, &file.exclude_executables, |p| {
        exe_key(p)
    })?;
    flags |= dimension(&rules.prefixes, ff::PATH_RULES, ff::PATH_INCLUDES);
    flags |= dimension(&rules.uids, ff::UID_RULES, ff::UID_INCLUDES);
    flags |= dimension(&rules.comms, ff::COMM_RULES, ff::COMM_INCLUDES);
    flags |= dimension(&rules.cgroups, ff::CGROUP_RULES, ff::CGROUP_INCLUDES);
    flags |= dimension(&rules.exes, ff::EXE_RULES, ff::EXE_INCLUDES);
    rules.config = FileFilterConfig {
        flags,
        rules_generation: 0,
        dedup_window_ns: file.dedup_window_ms.saturating_mul(1_000_000),
    };
    Ok(rules)
}

/// Includes then excludes, each resolved; an entry in both lists is an error.
pub(super) fn tagged<T, K: PartialEq + std::fmt::Debug>(
    include: &[T],
    exclude: &[T],
    resolve: impl Fn(&T) -> Result<K>,
) -> Result<Vec<(K, u32)>> {
    let mut out: Vec<(K, u32)> = Vec::new();
    for (list, action) in [(include, INCLUDE), (exclude, EXCLUDE)] {
        for item in list {
            let key = resolve(item)?;
            if let Some((_, existing)) = out.iter().find(|(k, _)| *k == key) {
                if *existing != action {
                    bail!("{key:?} is both included and excluded");
                }
                continue;
            }
            out.push((key, action));
        }
    }
    Ok(out)
}

pub(super) fn dimension<K>(rules: &[(K, u32)], has_rules: u32, has_includes: u32) -> u32 {
    let mut flags = 0;
    if !rules.is_empty() {
        flags |= has_rules;
    }
    if rules.iter().any(|(_, a)| *a == INCLUDE) {
        flags |= has_includes;
    }
    flags
}

pub(super) fn uid_of(user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    nix::unistd::User::from_name(user)
        .with_context(|| format!("looking up user {user:?}"))?
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| {
            anyhow!("file user rule {user:?}: no such user (use a uid for users NSS does not know)")
        })
}

pub(super) fn comm_key(comm: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = comm.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

fn cgroup_id(root: &Path, cgroup: &str) -> Result<u64> {
    let dir = root.join(cgroup.trim_start_matches('/'));
    std::fs::metadata(&dir).map(|m| m.ino()).with_context(|| {
        format!(
            "file cgroup rule {cgroup:?}: {} does not exist",
            dir.display()
        )
    })
}

/// The kernel's dev_t (major << 20 | minor) and inode of an executable.
pub fn exe_key(path: &Path) -> Result<ExeKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("file executable rule {}: cannot stat it", path.display()))?;
    Ok(ExeKey {
        dev: kernel_dev(meta.dev()),
        _pad: 0,
        ino: meta.ino(),
    })
}

/// Userspace dev_t to the kernel's internal encoding.
pub fn kernel_dev(dev: u64) -> u32 {
    crate::devices::kernel_dev(libc::major(dev), libc::minor(dev))
}

/// The filter maps, taken from the loaded object.
pub struct FilterMaps {
    config: Array<MapData, FileFilterConfig>,
    prefixes: LpmTrie<MapData, [u8; PREFIX_MAX], u32>,
    uids: HashMap<MapData, u32, u32>,
    comms: HashMap<MapData, [u8; 16], u32>,
    cgroups: HashMap<MapData, u64, u32>,
    exes: HashMap<MapData, ExeKey, u32>,
    network: NetworkMaps,
    /// Whether the kernel may remember path-rule exclusions by name (see
    /// `filter_flags::VERDICT_CACHE`).
    remember_verdicts: bool,
    /// Bumped at every rule change, so that remembered verdicts of older rules lapse.
    rules_generation: u32,
}

impl FilterMaps {
    /// The filter maps of the loaded programs; `network_hooks` are the network settings' bits
    /// the attached hooks allow (`network_flags::COMPLETIONS`, `SOCKET_ENDS`), `renames_seen`
    /// whether every way to rename
    /// is (the io_uring completion hook as well as the syscalls), so that the kernel may
    /// remember path verdicts by name.
    pub fn take(ebpf: &mut Ebpf, network_hooks: u32, renames_seen: bool) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))
        };
        Ok(Self {
            config: Array::try_from(take(FILE_FILTER_MAP)?)?,
            prefixes: LpmTrie::try_from(take(PATH_PREFIXES_MAP)?)?,
            uids: HashMap::try_from(take(FILTER_UIDS_MAP)?)?,
            comms: HashMap::try_from(take(FILTER_COMMS_MAP)?)?,
            cgroups: HashMap::try_from(take(FILTER_CGROUPS_MAP)?)?,
            exes: HashMap::try_from(take(FILTER_EXES_MAP)?)?,
            network: NetworkMaps::take(ebpf, network_hooks)?,
            remember_verdicts: renames_seen,
            rules_generation: 0,
        })
    }

    /// Replaces the rules in force. The settings word goes last, so the kernel never consults a
    /// dimension whose map is still being filled.
    pub fn apply(&mut self, rules: &KernelRules) -> Result<()> {
        self.rules_generation = self.rules_generation.wrapping_add(1);
        let mut config = rules.config;
        config.rules_generation = self.rules_generation;
        if self.remember_verdicts {
            config.flags |= ff::VERDICT_CACHE;
        }
        let mut staged = config;
        staged.flags &=
            !(ff::PATH_RULES | ff::UID_RULES | ff::COMM_RULES | ff::CGROUP_RULES | ff::EXE_RULES);
        self.config
            .set(0, staged, 0)
            .context("updating file filter settings")?;

        let prefix_keys: Vec<(Key<[u8; PREFIX_MAX]>, u32)> = rules
            .prefixes
            .iter()
            .map(|(bytes, action)| {
                let mut data = [0u8; PREFIX_MAX];
                data[..bytes.len()].copy_from_slice(bytes);
                (Key::new((bytes.len() * 8) as u32, data), *action)
            })
            .collect();
        replace_trie(&mut self.prefixes, &prefix_keys).context("updating path rules")?;
        replace(&mut self.uids, &rules.uids).context("updating user rules")?;
        replace(&mut self.comms, &rules.comms).context("updating comm rules")?;
        replace(&mut self.cgroups, &rules.cgroups).context("updating cgroup rules")?;
        replace(&mut self.exes, &rules.exes).context("updating executable rules")?;
        self.config
            .set(0, config, 0)
            .context("updating file filter settings")?;
        self.network.apply(&rules.network)
    }
}

/// Replaces every rule of a longest-prefix-match trie with `rules`.
pub(super) fn replace_trie<K: Pod>(
    trie: &mut LpmTrie<MapData, K, u32>,
    rules: &[(Key<K>, u32)],
) -> Result<()> {
    let stale: Vec<Key<K>> = trie.keys().flatten().collect();
    for key in &stale {
        trie.remove(key)?;
    }
    for (key, action) in rules {
        trie.insert(key, action, 0)?;
    }
    Ok(())
}

pub(super) fn replace<K: Pod + Eq + Hash>(
    map: &mut HashMap<MapData, K, u32>,
    rules: &[(K, u32)],
) -> Result<()> {
    let wanted: HashSet<K> = rules.iter().map(|(k, _)| *k).collect();
    let stale: Vec<K> = map
        .keys()
        .flatten()
        .filter(|k| !wanted.contains(k))
        .collect();
    for key in &stale {
        map.remove(key)?;
    }
    for (key, action) in rules {
        map.insert(key, action, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_resolve_to_kernel_form_with_dimension_flags() {
        let cgroups = tempfile::tempdir().unwrap();
        std::fs::create_dir(cgroups.path().join("app")).unwrap();
        let file = FileSensor {
            writes_only: true,
            include_paths: vec!["/home/".into()],
            exclude_paths: vec!["/home/bob/.cache/".into()],
            exclude_users: vec!["root".into(), "4242".into()],
            include_comms: vec!["bash".into()],
            exclude_cgroups: vec!["/app".into()],
            exclude_executables: vec!["/bin/sh".into()],
            dedup_window_ms: 250,
            ..FileSensor::default()
        };
        let rules = resolve(&file, true, false, &[], FileEvents::All, cgroups.path()).unwrap();
        let f = rules.config.flags;
        assert_ne!(f & ff::ENABLED, 0);
        assert_ne!(f & ff::WRITES_ONLY, 0);
        assert_ne!(f & ff::PATH_INCLUDES, 0);
        assert_eq!(f & ff::UID_INCLUDES, 0);
        assert_ne!(f & ff::UID_RULES, 0);
        assert_ne!(f & ff::COMM_INCLUDES, 0);
        assert_ne!(f & ff::CGROUP_RULES, 0);
        assert_ne!(f & ff::EXE_RULES, 0);
        assert_eq!(rules.config.dedup_window_ns, 250_000_000);
        assert_eq!(rules.uids, vec![(0, EXCLUDE), (4242, EXCLUDE)]);
        assert_eq!(rules.prefixes[1], (b"/home/bob/.cache/".to_vec(), EXCLUDE));
        assert_eq!(&rules.comms[0].0[..5], b"bash\0");
    }

    #[test]
    fn unknown_users_missing_files_and_contradictions_are_refused() {
        let refusal = |sensor: &FileSensor| {
            let err = resolve(sensor, true, false, &[], FileEvents::All, Path::new("/"));
            format!("{:#}", err.unwrap_err())
        };
        let no_user = FileSensor {
            exclude_users: vec!["no-such-user-custos".into()],
            ..FileSensor::default()
        };
        assert!(refusal(&no_user).contains("no such user"));
        let no_exe = FileSensor {
            include_executables: vec!["/nonexistent/bin".into()],
            ..FileSensor::default()
        };
        assert!(refusal(&no_exe).contains("/nonexistent/bin"));
        let both = FileSensor {
            include_paths: vec!["/tmp/".into()],
            exclude_paths: vec!["/tmp/".into()],
            ..FileSensor::default()
        };
        assert!(refusal(&both).contains("both"));
    }
}
