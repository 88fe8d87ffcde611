//! Block-device, mount and device-control events, and the device on write opens.
use std::{path::Path, time::SystemTime};

use custos_proto::v1::{
    event::Body, BlockDevice, BlockDeviceChange, DeviceAction, DeviceControl, DeviceControlAction,
    DeviceWriteSummary, Event, FileOpen as FileOpenEvent, Identity, Mount, MountOperation,
};
use sensor_common::{block_device_op, file_flags, syscalls, TaskInfo};

use super::{
    bodies::{errno_name, timestamp},
    Enricher,
};
use crate::{
    decode::{c_str, Device, FileOpen, Mount as MountRecord},
    devices::{
        control::{self, Method},
        kernel_dev,
        summary::Writer,
    },
    identity::{NameSource, Subject, UNSET_ID},
    text,
};

/// Loop devices' major number (LOOP_MAJOR).
const LOOP_MAJOR: u32 = 7;

impl<S: NameSource> Enricher<S> {
    /// A device record: the change, and for a new disk or new media the device-control
    /// decision after it.
    pub(super) fn device_change(&mut self, record: &Device) -> Option<Event> {
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
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        let body = Body::BlockDevice(BlockDeviceChange {
            action: action as i32,
            device: Some(device.clone()),
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

    /// Evaluates the rules for a new device and enforces the first that matches.
    fn control(
        &mut self,
        task: &TaskInfo,
        seat_uid: Option<u32>,
        device: &BlockDevice,
        change: &Event,
    ) -> Option<Event> {
        let login_uid = (task.loginuid != UNSET_ID).then_some(task.loginuid);
        let uid = login_uid.or(seat_uid).unwrap_or(task.uid);
        let subject = Subject::of(uid);
        let (rule, decided) = control::decide(&self.devices.rules, device, &subject)?;
        let action = decided.action;
        let enforcement = control::enforce(
            action,
            &rule,
            device,
            &self.devices.dev_root,
            &self.devices.sources.sys,
            self.devices.kernel_deny.as_mut(),
        );
        match &enforcement.result {
            Ok(()) => {
                tracing::info!(device = %device.name, %rule, ?action, "device control applied")
            }
            Err(err) => {
                tracing::error!(device = %device.name, %rule, ?action, "device control failed: {err}")
            }
        }
        let mut device = device.clone();
        if enforcement.result.is_ok() && enforcement.method == Method::ReadOnlyIoctl {
            device.read_only = true;
        }
        Some(Event {
            time: Some(timestamp(SystemTime::now())),
            body: Some(Body::DeviceControl(DeviceControl {
                device: Some(device),
                action: enforcement.action as i32,
                rule,
                method: enforcement.method.name().to_owned(),
                enforced: enforcement.result.is_ok(),
                error: enforcement.result.err().unwrap_or_default(),
                decided_for_uid: uid,
                decided_for_user: subject.name,
                blocked_operation: String::new(),
            })),
            ..change.clone()
        })
    }

    /// The kernel refused to mount or open a denied device: who tried, on which device.
    fn kernel_refusal(&mut self, record: &Device) -> Option<Event> {
        let fixed = &record.fixed;
        let task = &fixed.task;
        let (major, minor) = (fixed.dev >> 20, fixed.dev & 0xfffff);
        let device = self
            .devices
            .get(fixed.dev)
            .cloned()
            .or_else(|| self.devices.refresh(major, minor))
            .unwrap_or(BlockDevice {
                major,
                minor,
                ..BlockDevice::default()
            });
        let rule = self.devices.denying_rule(major, minor);
        let operation = if fixed.op == block_device_op::DENIED_MOUNT {
            "mount"
        } else {
            "open"
        };
        tracing::info!(device = %device.name, operation, "the kernel refused a denied device");
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        let body = Body::DeviceControl(DeviceControl {
            device: Some(device),
            action: DeviceControlAction::Deny as i32,
            rule: rule.unwrap_or_default(),
            method: Method::BpfLsm.name().to_owned(),
            enforced: true,
            error: String::new(),
            decided_for_uid: task.uid,
            decided_for_user: self.names.user(task.uid).unwrap_or_default(),
            blocked_operation: operation.to_owned(),
        });
        Some(self.envelope(fixed.header.ktime_ns, task, &exec_id, process, body))
    }

    /// A mount-family record: a mount event for mount, umount2 and move_mount; the steps of the
    /// new API only update what the final move_mount will report.
    pub(super) fn mount(&mut self, record: &MountRecord) -> Option<Event> {
        let fixed = &record.fixed;
        let task = &fixed.task;
        let pid = task.tgid;
        let ok = fixed.ret >= 0;
        let (operation, syscall, source, fstype) = match fixed.syscall {
            syscalls::MOUNT => (
                MountOperation::Mount,
                "mount",
                record.source.clone(),
                record.fstype.clone(),
            ),
            syscalls::UMOUNT2 => (MountOperation::Unmount, "umount2", Vec::new(), Vec::new()),
            syscalls::MOVE_MOUNT => {
                let pending = self.devices.mounts.moved(pid, fixed.fd).unwrap_or_default();
                let source = if pending.source.is_empty() {
                    record.source.clone()
                } else {
                    pending.source
                };
                (MountOperation::Mount, "move_mount", source, pending.fstype)
            }
            syscalls::FSOPEN if ok => {
                self.devices
                    .mounts
                    .opened(pid, fixed.ret, record.fstype.clone());
                return None;
            }
            syscalls::FSCONFIG if ok => {
                self.devices
                    .mounts
                    .configured(pid, fixed.fd, record.source.clone());
                return None;
            }
            syscalls::FSMOUNT if ok => {
                self.devices.mounts.mounted(pid, fixed.fd, fixed.ret);
                return None;
            }
            _ => return None,
        };
        let device = (source.first() == Some(&b'/'))
            .then(|| {
                use std::os::unix::ffi::OsStrExt;
                self.devices
                    .of_node(Path::new(std::ffi::OsStr::from_bytes(&source)))
            })
            .flatten();
        let errno = (!ok).then(|| fixed.ret.unsigned_abs());
        let body = Body::Mount(Mount {
            operation: operation as i32,
            syscall: syscall.to_owned(),
            source: text::from_bytes(&source).text,
            target: text::from_bytes(&record.target).text,
            fstype: text::lossy(&fstype),
            flags: fixed.flags,
            errno,
            error: errno.map(errno_name).unwrap_or_default(),
            device,
        });
        let exec_id = self.host.exec_id(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        Some(self.envelope(fixed.header.ktime_ns, task, &exec_id, process, body))
    }

    /// Adds the device to a write open on a watched device, and counts it for the summary.
    pub(super) fn note_device_write(&mut self, open: &FileOpen, body: &mut FileOpenEvent) {
        let record = &open.fixed;
        if record.ret < 0 {
            return;
        }
        let watched = record.flags & file_flags::WATCHED_DEVICE != 0;
        let device = match self.devices.get(record.dev) {
            Some(device) if device.watched => device.clone(),
            _ if watched => match self.devices.refresh(record.dev >> 20, record.dev & 0xfffff) {
                Some(device) => device,
                None => return,
            },
            _ => return,
        };
        let access = body.access.unwrap_or_default();
        if access.write || access.create || access.truncate || access.append {
            let writer = Writer {
                uid: record.task.uid,
                login_uid: record.task.loginuid,
            };
            self.devices
                .writes
                .count(writer, &device, record.ino, access.create);
        }
        body.device = Some(device);
    }

    /// One summary per identity and device of the writes since the last call.
    pub fn device_write_summaries(&mut self, since: SystemTime) -> Vec<Event> {
        let now = SystemTime::now();
        let mut events = Vec::new();
        for ((writer, _), counts) in self.devices.writes.take() {
            let device = counts.device;
            let identity = self.writer_identity(writer);
            events.push(Event {
                run_id: self.host.run_id.clone(),
                boot_id: self.host.boot_id.clone(),
                host: self.host.host.clone(),
                time: Some(timestamp(now)),
                identity: Some(identity),
                body: Some(Body::DeviceWriteSummary(DeviceWriteSummary {
                    device: Some(device),
                    start: Some(timestamp(since)),
                    end: Some(timestamp(now)),
                    write_opens: counts.write_opens,
                    distinct_files: counts.files.len() as u64,
                    create_opens: counts.create_opens,
                })),
                ..Event::default()
            });
        }
        events
    }

    fn writer_identity(&mut self, writer: Writer) -> Identity {
        let login_uid = (writer.login_uid != UNSET_ID).then_some(writer.login_uid);
        let user = self.names.user(writer.uid);
        let login_user = login_uid.and_then(|uid| self.names.user(uid));
        let person = self.person_of(
            writer.uid,
            user.as_deref(),
            login_uid,
            login_user.as_deref(),
        );
        Identity {
            uid: writer.uid,
            user: user.clone().unwrap_or_default(),
            euid: writer.uid,
            euser: user.unwrap_or_default(),
            login_uid,
            login_user: login_user.unwrap_or_default(),
            person,
            ..Identity::default()
        }
    }
}
