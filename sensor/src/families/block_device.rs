//! The block-device family: disks and loop devices appearing, changing and going away, and
//! who did it.
use custos_proto::v1::{event::Body, BlockDevice, BlockDeviceChange, DeviceAction, Event};
use sensor_common::{block_device_op, BlockDeviceRecord};

use super::Enricher;
use crate::{
    decode::{c_str, with_blob, DecodeError},
    devices::kernel_dev,
    identity::NameSource,
    privacy::pseudonym::Pseudonymizer,
    text,
};

/// Loop devices' major number (LOOP_MAJOR).
const LOOP_MAJOR: u32 = 7;

/// A device record with its backing-file path copied out.
#[derive(Clone, Debug)]
pub struct Device {
    pub fixed: BlockDeviceRecord,
    pub backing: Vec<u8>,
}

pub(crate) fn decode_device(bytes: &[u8]) -> Result<Device, DecodeError> {
    let (fixed, blob) = with_blob::<BlockDeviceRecord>(bytes)?;
    let backing = blob.piece(fixed.backing)?;
    Ok(Device { fixed, backing })
}

impl<S: NameSource> Enricher<S> {
    /// A device record: the change, and for a new disk or new media the device-control
    /// decision after it.
    pub(crate) fn device_change(&mut self, record: &Device) -> Option<Event> {
        let fixed = &record.fixed;
        if matches!(
            fixed.op,
            block_device_op::DENIED_MOUNT | block_device_op::DENIED_OPEN
        ) {
            return self.kernel_refusal(record);
        }
        let (action, device) = self.changed_device(record)?;
        let task = &fixed.task;
        let seat_uid = self.devices.seat_uid();
        let exec_id = self.exec_id_of(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        let body = Body::BlockDevice(BlockDeviceChange {
            action: action as i32,
            device: Some(Box::new(device.clone())),
            seat_uid,
            seat_user: seat_uid
                .and_then(|uid| self.names.user(uid))
                .unwrap_or_default(),
        });
        let event = self.envelope(fixed.header.ktime_ns, task, &exec_id, process, body);
        // New media is where control applies: a new disk, or a file in a loop device.
        let controlled = match action {
            DeviceAction::Added => device.bus != "loop",
            DeviceAction::MediaInserted => true,
            _ => false,
        };
        if controlled {
            if let Some(decision) = self.control(task, seat_uid, &device, &event) {
                self.following.push(decision);
            }
        }
        Some(event)
    }

    /// What a device record did and to which device, as sysfs describes it now (or as it was
    /// known, for a device that went away); `None` for what is not reported (again).
    fn changed_device(&mut self, record: &Device) -> Option<(DeviceAction, BlockDevice)> {
        let fixed = &record.fixed;
        let (major, minor) = (fixed.dev >> 20, fixed.dev & 0xfffff);
        Some(match fixed.op {
            block_device_op::DISK_ADDED => {
                let (major, minor) = if fixed.dev != 0 {
                    (major, minor)
                } else {
                    // From the backing device's registration: "major:minor".
                    let name = String::from_utf8_lossy(c_str(&fixed.name)).into_owned();
                    name.split_once(':')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))?
                };
                (DeviceAction::Added, self.devices.refresh(major, minor)?)
            }
            block_device_op::DISK_REMOVED => {
                let device = self
                    .devices
                    .forget(fixed.dev)
                    .unwrap_or_else(|| BlockDevice {
                        name: String::from_utf8_lossy(c_str(&fixed.name)).into_owned(),
                        major,
                        minor,
                        ..BlockDevice::default()
                    });
                (DeviceAction::Removed, device)
            }
            block_device_op::LOOP_ADDED => {
                // Reported already if the new disk's hook fired.
                let known = kernel_dev(LOOP_MAJOR, fixed.value);
                if self.devices.get(known).is_some() {
                    return None;
                }
                let device = self.devices.refresh(LOOP_MAJOR, fixed.value)?;
                (DeviceAction::Added, device)
            }
            block_device_op::LOOP_ATTACHED => {
                let mut device = self.devices.refresh(major, minor)?;
                if !record.backing.is_empty() {
                    device.backing_file = text::from_bytes(&record.backing).text;
                    // sysfs may not show the file yet; later writes must name it.
                    self.devices.remember(&device, fixed.dev);
                }
                (DeviceAction::MediaInserted, device)
            }
            block_device_op::LOOP_DETACHED => {
                let before = self.devices.get(fixed.dev).cloned();
                let mut device = self.devices.refresh(major, minor).or(before.clone())?;
                if let Some(before) = before {
                    device.backing_file = before.backing_file;
                }
                (DeviceAction::MediaRemoved, device)
            }
            // Reported already where disk removal is hooked.
            block_device_op::LOOP_REMOVED if self.devices.removal_hooked => return None,
            block_device_op::LOOP_REMOVED => {
                (DeviceAction::Removed, self.removed_loop(fixed.value))
            }
            block_device_op::READ_ONLY_SET => (
                DeviceAction::ReadOnlyChanged,
                self.devices.refresh(major, minor)?,
            ),
            _ => return None,
        })
    }

    /// A loop device that was removed: as it was known, else by its number.
    fn removed_loop(&mut self, number: u32) -> BlockDevice {
        let dev = kernel_dev(LOOP_MAJOR, number);
        self.devices.forget(dev).unwrap_or_else(|| BlockDevice {
            name: format!("loop{number}"),
            major: LOOP_MAJOR,
            minor: number,
            bus: "loop".into(),
            ..BlockDevice::default()
        })
    }
}

/// The seat's user is a person; a loop device's backing file may be under a home directory.
pub(crate) fn pseudonymise(change: &mut BlockDeviceChange, p: &Pseudonymizer) {
    change.seat_user = p.pseudonym(&change.seat_user);
    if let Some(device) = &mut change.device {
        device.backing_file = p.home_path(&device.backing_file);
    }
}
