//! Event bodies from kernel records, and the small conversions they need.
use std::time::{SystemTime, UNIX_EPOCH};

use custos_proto::v1::{FileAccess, FileOpen as FileOpenEvent, ProcessExit};
use sensor_common::{file_flags, open_syscall};

use crate::{decode::FileOpen, text};

/// The schema's FileOpen from a kernel record.
pub fn file_open_body(open: &FileOpen) -> FileOpenEvent {
    let record = &open.fixed;
    let succeeded = record.ret >= 0;
    let path = if succeeded || open.path.first() == Some(&b'/') || open.dir.is_empty() {
        text::from_bytes(&open.path)
    } else {
        let mut joined = open.dir.clone();
        if joined.last() != Some(&b'/') {
            joined.push(b'/');
        }
        joined.extend_from_slice(&open.path);
        text::from_bytes(&joined)
    };
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

/// "ENOENT" for 2; the number for errors this libc does not name.
pub(super) fn errno_name(errno: u32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno as i32));
    if name == "UnknownErrno" {
        errno.to_string()
    } else {
        name
    }
}

/// wait(2) status to exit code or signal.
pub fn exit_status(status: u32) -> ProcessExit {
    let signal = status & 0x7f;
    if signal == 0 {
        ProcessExit {
            code: Some(((status >> 8) & 0xff) as i32),
            signal: None,
            core_dumped: false,
        }
    } else {
        ProcessExit {
            code: None,
            signal: Some(signal),
            core_dumped: status & 0x80 != 0,
        }
    }
}

pub fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decodes_codes_and_signals() {
        assert_eq!(exit_status(3 << 8).code, Some(3));
        let killed = exit_status(9);
        assert_eq!(
            (killed.code, killed.signal, killed.core_dumped),
            (None, Some(9), false)
        );
        let dumped = exit_status(11 | 0x80);
        assert_eq!((dumped.signal, dumped.core_dumped), (Some(11), true));
    }

    #[test]
    fn errno_names_and_access_bits() {
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(errno_name(100_000), "100000");
        let access = file_access((libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32);
        assert!(access.write && access.create && access.truncate && !access.read);
        assert!(file_access(libc::O_RDWR as u32).read);
    }
}
