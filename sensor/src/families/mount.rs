//! The mount family: mount(2), umount2(2) and the new mount API's steps to `Mount` events.
use std::path::Path;

use custos_proto::v1::{event::Body, Event, Mount as MountEvent, MountOperation};
use sensor_common::{syscalls, MountRecord};

use super::{errno_name, Enricher};
use crate::{
    decode::{with_blob, DecodeError},
    identity::NameSource,
    privacy::pseudonym::Pseudonymizer,
    text,
};

/// A mount record with its strings copied out.
#[derive(Clone, Debug)]
pub struct Mount {
    pub fixed: MountRecord,
    pub source: Vec<u8>,
    pub target: Vec<u8>,
    pub fstype: Vec<u8>,
}

pub(crate) fn decode_mount(bytes: &[u8]) -> Result<Mount, DecodeError> {
    let (fixed, blob) = with_blob::<MountRecord>(bytes)?;
    let source = blob.piece(fixed.source)?;
    let target = blob.piece(fixed.target)?;
    let fstype = blob.piece(fixed.fstype)?;
    Ok(Mount {
        fixed,
        source,
        target,
        fstype,
    })
}

impl<S: NameSource> Enricher<S> {
    /// A mount-family record: a mount event for mount, umount2 and move_mount; the steps of the
    /// new API only update what the final move_mount will report.
    pub(crate) fn mount(&mut self, record: &Mount) -> Option<Event> {
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
        let body = Body::Mount(MountEvent {
            operation: operation as i32,
            syscall: syscall.to_owned(),
            source: text::from_bytes(&source).text,
            target: text::from_bytes(&record.target).text,
            fstype: text::lossy(&fstype),
            flags: fixed.flags,
            errno,
            error: errno.map(errno_name).unwrap_or_default(),
            device: device.map(Box::new),
        });
        let exec_id = self.exec_id_of(task.tgid, task.start_boottime_ns);
        let process = self.process_of(task, &exec_id);
        Some(self.envelope(fixed.header.ktime_ns, task, &exec_id, process, body))
    }
}

/// Sources and targets may be under home directories.
pub(crate) fn pseudonymise(mount: &mut MountEvent, p: &Pseudonymizer) {
    mount.source = p.home_path(&mount.source);
    mount.target = p.home_path(&mount.target);
}
