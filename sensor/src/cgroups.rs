//! cgroup v2 ids to paths.
//!
//! The kernel hands out the cgroup id, which is the inode number of the cgroup's directory in
//! cgroupfs. The resolver indexes the hierarchy once and re-indexes on a miss (new cgroups come
//! and go with services and containers), at most once per `rescan_interval` so that ids of
//! cgroups already removed do not trigger a scan per event.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` on hybrid ones. `None` when there is no cgroup2 mount.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount_in(&mountinfo)
}

fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "... mount_point options - fstype source super_options"
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

pub struct CgroupResolver {
    root: PathBuf,
    /// Looked up for every event: hashed with foldhash (ids are the kernel's to give).
    paths: foldhash::HashMap<u64, String>,
    last_scan: Option<Instant>,
    rescan_interval: Duration,
}

impl CgroupResolver {
    pub fn new(root: impl Into<PathBuf>, rescan_interval: Duration) -> Self {
        Self {
            root: root.into(),
            paths: Default::default(),
            last_scan: None,
            rescan_interval,
        }
    }

    /// The path of cgroup `id` below the cgroup2 root (`/` for the root itself), if known.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        let may_rescan = self
            .last_scan
            .is_none_or(|at| at.elapsed() >= self.rescan_interval);
        if !may_rescan {
            return None;
        }
        self.rescan();
        self.paths.get(&id).cloned()
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.paths.clear();
        let root = self.root.clone();
        self.index(&root, &root, 0);
    }

    fn index(&mut self, root: &Path, dir: &Path, depth: u32) {
        // Real hierarchies are shallow; the bound only guards against a pathological tree.
        if depth > 64 {
            return;
        }
        let Ok(meta) = std::fs::metadata(dir) else {
            return;
        };
        // Inode numbers are only unique within one filesystem: never index another mount (v1
        // controllers mounted below a hybrid hierarchy's root, for one).
        let root_dev = std::fs::metadata(root)
            .map(|m| m.dev())
            .unwrap_or(meta.dev());
        if meta.dev() != root_dev {
            return;
        }
        let relative = dir.strip_prefix(root).unwrap_or(dir);
        self.paths
            .insert(meta.ino(), format!("/{}", relative.to_string_lossy()));
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                self.index(root, &entry.path(), depth + 1);
            }
        }
    }
}

/// The systemd unit and the container id a cgroup path names, as far as it names them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CgroupContext {
    pub unit: String,
    pub container_id: String,
}

const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap", ".timer"];

/// Reads the context from the path's components: the innermost systemd unit, and a 64-digit
/// hexadecimal container id as runtimes name their cgroups (`docker-ID.scope`,
/// `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`, `/docker/ID`).
pub fn context_of(path: &str) -> CgroupContext {
    let mut context = CgroupContext::default();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if UNIT_SUFFIXES.iter().any(|s| component.ends_with(s)) {
            context.unit = component.to_owned();
        }
        let bare = UNIT_SUFFIXES
            .iter()
            .find_map(|s| component.strip_suffix(s))
            .unwrap_or(component);
        let id = bare.rsplit(['-', ':']).next().unwrap_or(bare);
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            context.container_id = id.to_owned();
        }
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_directories_by_inode_and_finds_new_ones_on_a_miss() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("system.slice/ssh.service")).unwrap();
        let ino = |p: &str| std::fs::metadata(root.path().join(p)).unwrap().ino();
        let mut resolver = CgroupResolver::new(root.path(), Duration::ZERO);
        assert_eq!(
            resolver.path(ino("system.slice/ssh.service")).as_deref(),
            Some("/system.slice/ssh.service")
        );
        std::fs::create_dir(root.path().join("user.slice")).unwrap();
        assert_eq!(
            resolver.path(ino("user.slice")).as_deref(),
            Some("/user.slice")
        );
        assert_eq!(resolver.path(ino("")).as_deref(), Some("/"));
    }

    #[test]
    fn units_and_container_ids_are_read_from_paths() {
        let id = "3f".repeat(32);
        assert_eq!(
            context_of("/system.slice/ssh.service"),
            CgroupContext {
                unit: "ssh.service".into(),
                container_id: String::new()
            }
        );
        assert_eq!(
            context_of(&format!("/system.slice/docker-{id}.scope")),
            CgroupContext {
                unit: format!("docker-{id}.scope"),
                container_id: id.clone()
            }
        );
        assert_eq!(
            context_of(&format!(
                "/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"
            ))
            .container_id,
            id
        );
        assert_eq!(context_of(&format!("/docker/{id}")).container_id, id);
        assert_eq!(
            context_of("/user.slice/user-1000.slice/session-3.scope").unit,
            "session-3.scope"
        );
        assert_eq!(context_of("/"), CgroupContext::default());
    }

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_systems() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount_in(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount_in("1 0 0:1 / / rw - ext4 /dev/vda rw"), None);
    }

    #[test]
    fn misses_do_not_rescan_within_the_interval() {
        let root = tempfile::tempdir().unwrap();
        let mut resolver = CgroupResolver::new(root.path(), Duration::from_secs(3600));
        assert_eq!(resolver.path(1), None); // first miss scans
        std::fs::create_dir(root.path().join("late")).unwrap();
        let late = std::fs::metadata(root.path().join("late")).unwrap().ino();
        assert_eq!(resolver.path(late), None, "no rescan inside the interval");
    }
}
