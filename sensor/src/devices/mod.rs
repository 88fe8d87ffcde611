//! Block devices the sensor knows: described from sysfs and udev, watched in the kernel when
//! removable, and the person at the seat when one appears.
pub mod control;
pub mod deny;
pub mod mount_api;
pub mod summary;
pub mod sysfs;
pub mod uevents;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use custos_proto::v1::BlockDevice;

use crate::config::DeviceRule;
use sysfs::DeviceSources;

/// The kernel's dev_t encoding (major << 20 | minor).
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

pub struct DeviceTracker {
    pub sources: DeviceSources,
    /// Where device nodes are (`/dev`).
    pub dev_root: PathBuf,
    pub rules: Vec<DeviceRule>,
    /// systemd-logind's seat state directory and the utmp file, for the user at the seat.
    pub seats_dir: PathBuf,
    pub utmp: PathBuf,
    pub writes: summary::WriteCounter,
    pub mounts: mount_api::MountSteps,
    known: HashMap<u32, BlockDevice>,
    /// The kernel's list of watched devices, if the file sensor has one.
    watch_map: Option<BpfHashMap<MapData, u32, u32>>,
    /// Where BPF LSM runs: devices the kernel refuses to mount or open.
    pub kernel_deny: Option<deny::KernelDenyList>,
    /// Whether disk removal is hooked (`del_gendisk`), so it is reported from there.
    pub removal_hooked: bool,
}

impl DeviceTracker {
    pub fn new(sources: DeviceSources, rules: Vec<DeviceRule>, utmp: PathBuf) -> Self {
        Self {
            sources,
            dev_root: PathBuf::from("/dev"),
            rules,
            seats_dir: PathBuf::from("/run/systemd/seats"),
            utmp,
            writes: summary::WriteCounter::default(),
            mounts: mount_api::MountSteps::default(),
            known: HashMap::new(),
            watch_map: None,
            kernel_deny: None,
            removal_hooked: false,
        }
    }

    /// Hands over the kernel's watch list and fills it with every watched device present.
    pub fn attach_watch_map(&mut self, map: BpfHashMap<MapData, u32, u32>) {
        self.watch_map = Some(map);
        self.rescan();
    }

    /// Describes devices that appeared since the last scan (partitions show up after their
    /// disk; drives present before start). Cheap: one directory listing when nothing changed.
    pub fn rescan(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.sources.sys.join("dev/block")) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((major, minor)) = name
                .to_str()
                .and_then(|n| n.split_once(':'))
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            else {
                continue;
            };
            if !self.known.contains_key(&kernel_dev(major, minor)) {
                self.refresh(major, minor);
            }
        }
    }

    /// Reads the device's current description and updates the kernel's watch list.
    pub fn refresh(&mut self, major: u32, minor: u32) -> Option<BlockDevice> {
        let dev = kernel_dev(major, minor);
        let device = sysfs::describe(&self.sources, major, minor)?;
        let was_watched = self.known.get(&dev).is_some_and(|d| d.watched);
        if let Some(map) = &mut self.watch_map {
            let result = match (was_watched, device.watched) {
                (false, true) => map.insert(dev, 1, 0),
                (true, false) => map.remove(&dev),
                _ => Ok(()),
            };
            if let Err(err) = result {
                tracing::warn!(device = %device.name, "updating the watched-device map: {err}");
            }
        }
        self.known.insert(dev, device.clone());
        Some(device)
    }

    /// The rule that denied `major:minor` in the kernel, directly or through its disk.
    pub fn denying_rule(&self, major: u32, minor: u32) -> Option<String> {
        let deny = self.kernel_deny.as_ref()?;
        deny.rule_of(kernel_dev(major, minor))
            .or_else(|| {
                let (disk_major, disk_minor) = sysfs::disk_of(&self.sources, major, minor)?;
                deny.rule_of(kernel_dev(disk_major, disk_minor))
            })
            .map(str::to_owned)
    }

    /// Keeps what an event learned about a device that sysfs does not show yet.
    pub fn remember(&mut self, device: &BlockDevice, dev: u32) {
        if let Some(known) = self.known.get_mut(&dev) {
            known.clone_from(device);
        }
    }

    pub fn get(&self, dev: u32) -> Option<&BlockDevice> {
        self.known.get(&dev)
    }

    /// The device went away.
    pub fn forget(&mut self, dev: u32) -> Option<BlockDevice> {
        if let Some(deny) = &mut self.kernel_deny {
            deny.release(dev);
        }
        let device = self.known.remove(&dev)?;
        if let Some(map) = self.watch_map.as_mut().filter(|_| device.watched) {
            let _ = map.remove(&dev);
        }
        Some(device)
    }

    /// The device a path such as `/dev/loop8` names, if it is a block device node.
    pub fn of_node(&mut self, path: &Path) -> Option<BlockDevice> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(path).ok()?;
        if !meta.file_type().is_block_device() {
            return None;
        }
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        match self.known.get(&kernel_dev(major, minor)) {
            Some(device) => Some(device.clone()),
            None => self.refresh(major, minor),
        }
    }

    /// The uid of the user at the local seat: logind's active user of seat0, else a utmp login
    /// on a local terminal.
    pub fn seat_uid(&self) -> Option<u32> {
        if let Ok(text) = std::fs::read_to_string(self.seats_dir.join("seat0")) {
            if let Some(uid) = text
                .lines()
                .find_map(|line| line.strip_prefix("ACTIVE_UID="))
                .and_then(|uid| uid.parse().ok())
            {
                return Some(uid);
            }
        }
        let entries = utmp_rs::parse_from_path(&self.utmp).ok()?;
        entries.into_iter().find_map(|entry| match entry {
            utmp_rs::UtmpEntry::UserProcess { line, user, .. }
                if line.starts_with("tty") || line.starts_with(':') =>
            {
                nix::unistd::User::from_name(&user)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw())
            }
            _ => None,
        })
    }
}
