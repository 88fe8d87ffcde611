//! The file family: open records to `FileOpen` events.
use custos_proto::v1::{event::Body, Event, FileAccess, FileOpen as FileOpenEvent};
use sensor_common::{file_flags, open_syscall, FileOpenRecord};

use super::{errno_name, Enricher};
use crate::{
    decode::{with_blob, DecodeError},
    identity::NameSource,
    privacy::pseudonym::Pseudonymizer,
    text,
};

/// A file-open record with its path pieces and ACL entries copied out.
#[derive(Clone, Debug)]
pub struct FileOpen {
    pub fixed: FileOpenRecord,
    pub path: Vec<u8>,
    pub dir: Vec<u8>,
    pub acl: Vec<u8>,
}

pub(crate) fn decode_file_open(bytes: &[u8]) -> Result<FileOpen, DecodeError> {
    let (fixed, blob) = with_blob::<FileOpenRecord>(bytes)?;
    let (path, dir) = (blob.piece(fixed.path)?, blob.piece(fixed.dir)?);
    let acl = blob.piece(fixed.acl)?;
    Ok(FileOpen {
        fixed,
        path,
        dir,
        acl,
    })
}

impl<S: NameSource> Enricher<S> {
    /// The event of `open`, whose path bytes it takes.
    pub(crate) fn file_open(&mut self, open: &mut FileOpen) -> Event {
        let (exec_id, process) = self.acting_process(&open.fixed.task);
        let mut body = file_open_body(open);
        self.add_access_basis(open, &mut body);
        self.note_device_write(open, &mut body);
        let record = &open.fixed;
        let task = &record.task;
        self.shared_envelope(
            record.header.ktime_ns,
            task,
            &exec_id,
            process,
            Body::FileOpen(body),
        )
    }
}

impl<S: NameSource> Enricher<S> {
    /// Sets the owner and basis of `body`; a remembered access part is held apart with its id.
    fn add_access_basis(&mut self, open: &FileOpen, body: &mut FileOpenEvent) {
        let memo = &mut self.access_bases;
        let held = crate::access::open::add_access_basis(open, body, &mut self.names, memo);
        if let Some((access, id)) = held {
            self.shared.access = Some(access);
            self.part_ids.access = id;
        }
    }
}

/// The schema's FileOpen from a kernel record, whose path bytes become its path (taken, not
/// copied: every open has one).
pub fn file_open_body(open: &mut FileOpen) -> FileOpenEvent {
    let succeeded = open.fixed.ret >= 0;
    let path = if succeeded || open.path.first() == Some(&b'/') || open.dir.is_empty() {
        text::from_vec(std::mem::take(&mut open.path))
    } else {
        let mut joined = std::mem::take(&mut open.dir);
        if joined.last() != Some(&b'/') {
            joined.push(b'/');
        }
        joined.extend_from_slice(&open.path);
        text::from_vec(joined)
    };
    let record = &open.fixed;
    let flags = record.open_flags;
    let errno = (!succeeded).then(|| record.ret.unsigned_abs());
    FileOpenEvent {
        path: path.text,
        path_raw: path.raw.unwrap_or_default(),
        path_truncated: record.flags & (file_flags::PATH_TRUNCATED | file_flags::DIR_TRUNCATED)
            != 0,
        access: Some(file_access(flags)),
        flags,
        syscall: syscall_name(record.syscall).to_owned(),
        fd: (succeeded && record.flags & file_flags::FD_UNKNOWN == 0).then_some(record.ret),
        errno,
        error: errno.map(errno_name).unwrap_or_default(),
        denied: matches!(errno, Some(e) if e == libc::EACCES as u32 || e == libc::EPERM as u32),
        device_major: succeeded.then_some(record.dev >> 20),
        device_minor: succeeded.then_some(record.dev & 0xfffff),
        inode: succeeded.then_some(record.ino),
        repeats: 0,
        repeat_summary: false,
        device: None,
        ..FileOpenEvent::default()
    }
}

fn file_access(flags: u32) -> FileAccess {
    let mode = flags as i32 & libc::O_ACCMODE;
    FileAccess {
        read: mode == libc::O_RDONLY || mode == libc::O_RDWR,
        write: mode == libc::O_WRONLY || mode == libc::O_RDWR,
        create: flags as i32 & libc::O_CREAT != 0,
        truncate: flags as i32 & libc::O_TRUNC != 0,
        append: flags as i32 & libc::O_APPEND != 0,
    }
}

fn syscall_name(syscall: u32) -> &'static str {
    match syscall {
        open_syscall::OPEN => "open",
        open_syscall::OPENAT => "openat",
        open_syscall::OPENAT2 => "openat2",
        open_syscall::CREAT => "creat",
        open_syscall::IO_URING_OPENAT => "io_uring_openat",
        open_syscall::IO_URING_OPENAT2 => "io_uring_openat2",
        _ => "unknown",
    }
}

/// Paths under home directories name people.
pub(crate) fn pseudonymise(open: &mut FileOpenEvent, p: &Pseudonymizer) {
    open.path = p.home_path(&open.path);
    open.path_raw.clear();
    open.owner = p.pseudonym(&open.owner);
    open.owner_group = p.pseudonym(&open.owner_group);
    if let Some(basis) = &mut open.basis {
        if let Some(group) = &mut basis.group {
            group.name = p.pseudonym(&group.name);
        }
        if let Some(entry) = &mut basis.acl_entry {
            entry.name = p.pseudonym(&entry.name);
        }
        basis.object_path = p.home_path(&basis.object_path);
    }
    if let Some(device) = &mut open.device {
        device.backing_file = p.home_path(&device.backing_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_bits() {
        let access = file_access((libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32);
        assert!(access.write && access.create && access.truncate && !access.read);
        assert!(file_access(libc::O_RDWR as u32).read);
    }
}
