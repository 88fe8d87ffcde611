//! Describing a block device from sysfs and the udev database.
use std::{
    fs,
    path::{Path, PathBuf},
};

use custos_proto::v1::BlockDevice;

/// Where device facts are read from.
#[derive(Clone, Debug)]
pub struct DeviceSources {
    pub sys: PathBuf,
    /// udev's database (`/run/udev/data`), whose `b<major>:<minor>` files hold ID_* properties.
    pub udev: PathBuf,
}

impl Default for DeviceSources {
    fn default() -> Self {
        Self {
            sys: PathBuf::from("/sys"),
            udev: PathBuf::from("/run/udev/data"),
        }
    }
}

/// The device `major:minor`, if sysfs knows it.
pub fn describe(sources: &DeviceSources, major: u32, minor: u32) -> Option<BlockDevice> {
    let link = sources.sys.join(format!("dev/block/{major}:{minor}"));
    let real = fs::canonicalize(&link).ok()?;
    let name = uevent_value(&real, "DEVNAME")
        .or_else(|| real.file_name().map(|n| n.to_string_lossy().into_owned()))?;
    // A partition's removable flag and hardware facts live on its disk.
    let disk = if real.join("partition").exists() {
        real.parent().map(Path::to_path_buf).unwrap_or(real.clone())
    } else {
        real.clone()
    };
    let mut device = BlockDevice {
        name,
        major,
        minor,
        removable: read_trimmed(&disk.join("removable")).as_deref() == Some("1"),
        read_only: read_trimmed(&real.join("ro")).as_deref() == Some("1"),
        size_bytes: read_trimmed(&real.join("size"))
            .and_then(|sectors| sectors.parse::<u64>().ok())
            .map_or(0, |sectors| sectors * 512),
        backing_file: read_trimmed(&disk.join("loop/backing_file")).unwrap_or_default(),
        vendor: read_trimmed(&disk.join("device/vendor")).unwrap_or_default(),
        model: read_trimmed(&disk.join("device/model")).unwrap_or_default(),
        ..BlockDevice::default()
    };
    device.bus = bus_of(&disk, &device.name).to_owned();
    if let Some(usb) = usb_device_of(&disk) {
        device.usb_vendor_id = read_trimmed(&usb.join("idVendor")).unwrap_or_default();
        device.usb_product_id = read_trimmed(&usb.join("idProduct")).unwrap_or_default();
        device.serial = read_trimmed(&usb.join("serial")).unwrap_or_default();
        if device.vendor.is_empty() {
            device.vendor = read_trimmed(&usb.join("manufacturer")).unwrap_or_default();
        }
        if device.model.is_empty() {
            device.model = read_trimmed(&usb.join("product")).unwrap_or_default();
        }
    }
    apply_udev(&sources.udev.join(format!("b{major}:{minor}")), &mut device);
    device.watched = device.removable || device.bus == "usb" || device.bus == "loop";
    Some(device)
}

/// The whole disk `major:minor` belongs to, when it is a partition.
pub fn disk_of(sources: &DeviceSources, major: u32, minor: u32) -> Option<(u32, u32)> {
    let real = fs::canonicalize(sources.sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    if !real.join("partition").exists() {
        return None;
    }
    let numbers = read_trimmed(&real.parent()?.join("dev"))?;
    let (disk_major, disk_minor) = numbers.split_once(':')?;
    Some((disk_major.parse().ok()?, disk_minor.parse().ok()?))
}

/// The sysfs directory of the USB device (the one with `idVendor`) a disk hangs off.
pub fn usb_device_of(disk: &Path) -> Option<PathBuf> {
    disk.ancestors()
        .find(|dir| dir.join("idVendor").exists())
        .map(Path::to_path_buf)
}

fn bus_of(disk: &Path, name: &str) -> &'static str {
    // The first of these in the device's sysfs path names its bus, most specific first.
    const BUSES: [(&str, &str); 6] = [
        ("/usb", "usb"),
        ("/nvme", "nvme"),
        ("/virtio", "virtio"),
        ("/mmc", "mmc"),
        ("/ata", "ata"),
        ("/host", "scsi"),
    ];
    if name.starts_with("loop") {
        return "loop";
    }
    let path = disk.to_string_lossy();
    BUSES
        .iter()
        .find(|(marker, _)| path.contains(marker))
        .map_or("", |(_, bus)| bus)
}

/// udev's properties, which are better than sysfs's (decoded vendor names, short serials).
fn apply_udev(path: &Path, device: &mut BlockDevice) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let Some((key, value)) = line.strip_prefix("E:").and_then(|kv| kv.split_once('=')) else {
            continue;
        };
        let value = value.to_owned();
        match key {
            "ID_VENDOR" if !value.is_empty() => device.vendor = value,
            "ID_MODEL" if !value.is_empty() => device.model = value,
            "ID_SERIAL_SHORT" if !value.is_empty() => device.serial = value,
            "ID_VENDOR_ID" if device.usb_vendor_id.is_empty() => device.usb_vendor_id = value,
            "ID_MODEL_ID" if device.usb_product_id.is_empty() => device.usb_product_id = value,
            _ => {}
        }
    }
}

fn uevent_value(dir: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(dir.join("uevent")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs with a USB disk: /sys/devices/.../usb1/1-1/1-1:1.0/host0/.../block/sdb.
    #[test]
    fn usb_disks_get_their_usb_ids_and_udev_properties() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let usb = sys.join("devices/pci0000:00/0000:00:04.0/usb1/1-1");
        let disk = usb.join("1-1:1.0/host0/target0:0:0/0:0:0:0/block/sdb");
        fs::create_dir_all(disk.join("device")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        let write = |path: PathBuf, text: &str| fs::write(path, text).unwrap();
        write(usb.join("idVendor"), "0781\n");
        write(usb.join("idProduct"), "5581\n");
        write(usb.join("serial"), "4C530001\n");
        write(
            disk.join("uevent"),
            "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n",
        );
        write(disk.join("removable"), "1\n");
        write(disk.join("ro"), "0\n");
        write(disk.join("size"), "2048\n");
        write(disk.join("device/vendor"), "SanDisk \n");
        std::os::unix::fs::symlink(&disk, sys.join("dev/block/8:16")).unwrap();
        let udev = root.path().join("udev");
        fs::create_dir_all(&udev).unwrap();
        write(
            udev.join("b8:16"),
            "S:disk/by-id/x\nE:ID_MODEL=Ultra\nE:ID_SERIAL_SHORT=AB12\n",
        );

        let device = describe(&DeviceSources { sys, udev }, 8, 16).unwrap();
        assert_eq!(device.name, "sdb");
        assert_eq!(device.bus, "usb");
        assert_eq!(
            (
                device.usb_vendor_id.as_str(),
                device.usb_product_id.as_str()
            ),
            ("0781", "5581")
        );
        assert_eq!(device.vendor, "SanDisk");
        assert_eq!(device.model, "Ultra");
        assert_eq!(device.serial, "AB12", "udev's short serial wins");
        assert_eq!(device.size_bytes, 1024 * 1024);
        assert!(device.removable && device.watched && !device.read_only);
        assert!(describe(&DeviceSources::default(), 4095, 4095).is_none());
    }

    #[test]
    fn a_partition_leads_to_its_disk() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let disk = sys.join("devices/virtual/block/sdb");
        let partition = disk.join("sdb1");
        fs::create_dir_all(&partition).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        fs::write(disk.join("dev"), "8:16\n").unwrap();
        fs::write(partition.join("partition"), "1\n").unwrap();
        std::os::unix::fs::symlink(&disk, sys.join("dev/block/8:16")).unwrap();
        std::os::unix::fs::symlink(&partition, sys.join("dev/block/8:17")).unwrap();
        let sources = DeviceSources {
            sys,
            udev: root.path().join("udev"),
        };
        assert_eq!(disk_of(&sources, 8, 17), Some((8, 16)));
        assert_eq!(
            disk_of(&sources, 8, 16),
            None,
            "a whole disk has no disk above it"
        );
    }
}
