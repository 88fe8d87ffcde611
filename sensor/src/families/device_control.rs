//! The device-control family: decisions on new devices, the kernel's refusals of denied
//! ones, and summaries of what each identity wrote to watched devices.
use std::time::SystemTime;

use custos_proto::v1::{
    event::Body, BlockDevice, DeviceControl, DeviceControlAction, DeviceWriteSummary, Event,
    FileOpen as FileOpenEvent, Identity,
};
use sensor_common::{block_device_op, file_flags, TaskInfo};

use super::{block_device::Device, file::FileOpen, timestamp, Enricher};
use crate::{
    devices::{
        control::{self, Method},
        summary::Writer,
    },
    identity::{NameSource, Subject, UNSET_ID},
    privacy::pseudonym::Pseudonymizer,
};

impl<S: NameSource> Enricher<S> {
    /// Evaluates the rules for a new device and enforces the first that matches.
    pub(super) fn control(
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
                device: Some(Box::new(device)),
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
    pub(super) fn kernel_refusal(&mut self, record: &Device) -> Option<Event> {
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
        let exec_id = self.exec_id_of(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        let body = Body::DeviceControl(DeviceControl {
            device: Some(Box::new(device)),
            action: DeviceControlAction::Deny as i32,
            rule: rule.unwrap_or_default(),
            method: Method::BpfLsm.name().to_owned(),
            enforced: true,
            error: String::new(),
            decided_for_uid: task.uid,
            decided_for_user: self.user_name(task.uid),
            blocked_operation: operation.to_owned(),
        });
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
        body.device = Some(Box::new(device));
    }

    /// One summary per identity and device of the writes since the last call.
    pub(crate) fn device_write_summaries(&mut self, since: SystemTime) -> Vec<Event> {
        let now = SystemTime::now();
        let mut events = Vec::new();
        for ((writer, _), counts) in self.devices.writes.take() {
            let device = counts.device;
            let identity = self.writer_identity(writer);
            let summary = DeviceWriteSummary {
                device: Some(Box::new(device)),
                start: Some(timestamp(since)),
                end: Some(timestamp(now)),
                write_opens: counts.write_opens,
                distinct_files: counts.files.len() as u64,
                create_opens: counts.create_opens,
            };
            let mut event = self.host_event(now, Body::DeviceWriteSummary(summary));
            event.identity = Some(Box::new(identity));
            events.push(event);
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

/// Who a decision was made for is a person.
pub(crate) fn pseudonymise(control: &mut DeviceControl, p: &Pseudonymizer) {
    control.decided_for_user = p.pseudonym(&control.decided_for_user);
}

/// A loop device's backing file may be under a home directory.
pub(crate) fn pseudonymise_summary(summary: &mut DeviceWriteSummary, p: &Pseudonymizer) {
    if let Some(device) = &mut summary.device {
        device.backing_file = p.home_path(&device.backing_file);
    }
}
