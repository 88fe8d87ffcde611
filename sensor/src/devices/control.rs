//! Device control: which rule applies to a new device and user, and enforcing it.
use std::{fs::OpenOptions, os::fd::AsRawFd, path::Path};

use custos_proto::v1::{BlockDevice, DeviceControlAction};

use super::deny::KernelDenyList;
use crate::{
    config::{DeviceAction, DeviceRule},
    identity::Subject,
};

const BLKROSET: libc::c_ulong = 0x125D;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

/// The first rule matching `device` and `subject`, with its display name.
pub fn decide<'a>(
    rules: &'a [DeviceRule],
    device: &BlockDevice,
    subject: &Subject,
) -> Option<(String, &'a DeviceRule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, rule)| matches_device(rule, device) && applies_to(rule, subject))
        .map(|(n, rule)| {
            let name = match &rule.name {
                Some(name) => format!("devices.rules[{n}] ({name})"),
                None => format!("devices.rules[{n}]"),
            };
            (name, rule)
        })
}

fn matches_device(rule: &DeviceRule, device: &BlockDevice) -> bool {
    let ids = format!("{}:{}", device.usb_vendor_id, device.usb_product_id);
    rule.bus.as_ref().is_none_or(|bus| bus == &device.bus)
        && rule
            .vendor_product
            .as_ref()
            .is_none_or(|want| want.eq_ignore_ascii_case(&ids))
        && rule
            .serial
            .as_ref()
            .is_none_or(|serial| serial == &device.serial)
}

fn applies_to(rule: &DeviceRule, subject: &Subject) -> bool {
    let member = |groups: &[String]| groups.iter().any(|g| subject.groups.contains(g));
    (rule.groups.is_empty() || member(&rule.groups)) && !member(&rule.except_groups)
}

/// What enforcing a decision did.
pub struct Enforcement {
    pub action: DeviceControlAction,
    pub method: Method,
    pub result: Result<(), String>,
}

/// How a device-control decision is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Nothing to do (allowed).
    None,
    /// The kernel refuses the device's mounts and node opens (BPF LSM and the deny map).
    BpfLsm,
    /// The block device is switched read-only (`BLKROSET`).
    ReadOnlyIoctl,
    /// The USB device is de-authorized through sysfs.
    UsbDeauthorize,
    /// The loop device's file is detached (`LOOP_CLR_FD`).
    LoopDetach,
}

impl Method {
    /// Its name in `DeviceControl.method`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "",
            Self::BpfLsm => "bpf-lsm",
            Self::ReadOnlyIoctl => "BLKROSET",
            Self::UsbDeauthorize => "usb-deauthorize",
            Self::LoopDetach => "loop-detach",
        }
    }
}

/// Applies `action`, decided by `rule`, to the device node `/dev/<name>` (under `dev_root`).
/// Where the kernel enforces denials itself (`kernel_deny`), a denied device stays present but
/// cannot be mounted or opened; loop devices are detached either way.
pub fn enforce(
    action: DeviceAction,
    rule: &str,
    device: &BlockDevice,
    dev_root: &Path,
    sys: &Path,
    kernel_deny: Option<&mut KernelDenyList>,
) -> Enforcement {
    let node = dev_root.join(&device.name);
    if let (DeviceAction::Deny, Some(deny)) = (action, kernel_deny) {
        if device.bus != "loop" {
            return Enforcement {
                action: DeviceControlAction::Deny,
                method: Method::BpfLsm,
                result: deny.deny(super::kernel_dev(device.major, device.minor), rule),
            };
        }
    }
    match action {
        DeviceAction::Allow => Enforcement {
            action: DeviceControlAction::Allow,
            method: Method::None,
            result: Ok(()),
        },
        DeviceAction::ReadOnly => Enforcement {
            action: DeviceControlAction::ReadOnly,
            method: Method::ReadOnlyIoctl,
            result: set_read_only(&node),
        },
        DeviceAction::Deny if device.bus == "usb" => Enforcement {
            action: DeviceControlAction::Deny,
            method: Method::UsbDeauthorize,
            result: deauthorize_usb(sys, device),
        },
        DeviceAction::Deny if device.bus == "loop" => Enforcement {
            action: DeviceControlAction::Deny,
            method: Method::LoopDetach,
            result: device_ioctl(&node, LOOP_CLR_FD, 0),
        },
        // Nothing to unplug from here: the strongest step left is making it read-only.
        DeviceAction::Deny => Enforcement {
            action: DeviceControlAction::ReadOnly,
            method: Method::ReadOnlyIoctl,
            result: set_read_only(&node).and(Err(format!(
                "bus {:?} cannot be denied from userspace; made read-only instead",
                device.bus
            ))),
        },
    }
}

fn set_read_only(node: &Path) -> Result<(), String> {
    let on: libc::c_int = 1;
    device_ioctl(node, BLKROSET, &on as *const libc::c_int as libc::c_ulong)
}

fn device_ioctl(node: &Path, request: libc::c_ulong, arg: libc::c_ulong) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .open(node)
        .map_err(|e| format!("opening {}: {e}", node.display()))?;
    // SAFETY: a valid fd; BLKROSET reads an int at `arg`, LOOP_CLR_FD ignores it.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), request, arg) };
    if ret == 0 {
        Ok(())
    } else {
        Err(format!(
            "ioctl on {}: {}",
            node.display(),
            std::io::Error::last_os_error()
        ))
    }
}

fn deauthorize_usb(sys: &Path, device: &BlockDevice) -> Result<(), String> {
    let disk =
        std::fs::canonicalize(sys.join(format!("dev/block/{}:{}", device.major, device.minor)))
            .map_err(|e| format!("finding the device in sysfs: {e}"))?;
    let usb = super::sysfs::usb_device_of(&disk).ok_or("no USB device above this disk")?;
    std::fs::write(usb.join("authorized"), b"0")
        .map_err(|e| format!("writing {}/authorized: {e}", usb.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: DeviceAction) -> DeviceRule {
        DeviceRule {
            name: None,
            action,
            bus: None,
            vendor_product: None,
            serial: None,
            groups: Vec::new(),
            except_groups: Vec::new(),
        }
    }

    fn subject(groups: &[&str]) -> Subject {
        Subject {
            name: "alice".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn first_matching_rule_decides_by_device_and_group() {
        let usb = BlockDevice {
            bus: "usb".into(),
            usb_vendor_id: "0781".into(),
            usb_product_id: "5581".into(),
            serial: "S1".into(),
            ..BlockDevice::default()
        };
        let rules = vec![
            DeviceRule {
                name: Some("trusted stick".into()),
                vendor_product: Some("0781:5581".into()),
                serial: Some("S2".into()),
                ..rule(DeviceAction::Allow)
            },
            DeviceRule {
                bus: Some("usb".into()),
                except_groups: vec!["usb-writers".into()],
                ..rule(DeviceAction::ReadOnly)
            },
            DeviceRule {
                bus: Some("loop".into()),
                ..rule(DeviceAction::Deny)
            },
        ];
        let (name, decided) = decide(&rules, &usb, &subject(&["staff"])).unwrap();
        assert_eq!(
            (name.as_str(), decided.action),
            ("devices.rules[1]", DeviceAction::ReadOnly)
        );
        assert!(decide(&rules, &usb, &subject(&["usb-writers"])).is_none());
        let trusted = BlockDevice {
            serial: "S2".into(),
            ..usb
        };
        let (name, decided) = decide(&rules, &trusted, &subject(&[])).unwrap();
        assert_eq!(name, "devices.rules[0] (trusted stick)");
        assert_eq!(decided.action, DeviceAction::Allow);
    }
}
