//! Raw ring-buffer bytes to typed records. Kernel input is validated, never trusted: a record
//! with a wrong size or unknown kind is an error the pipeline reports as a loss.
use std::mem::size_of;

use sensor_common::{
    kind, BlobRef, BlockDeviceRecord, ExecRecord, ExitRecord, FileOpenRecord, ForkRecord,
    MountRecord, PrivilegeChangeRecord, RecordHeader, TaskInfo, BLOCK_DEVICE_FIXED_SIZE,
    EXEC_FIXED_SIZE, FILE_FIXED_SIZE, MOUNT_FIXED_SIZE,
};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("record of kind {kind} claims {claimed} bytes but {actual} arrived")]
    SizeMismatch {
        kind: u32,
        claimed: u32,
        actual: usize,
    },
    #[error("record of kind {kind} is {size} bytes, too small for its fixed part")]
    TooSmall { kind: u32, size: usize },
    #[error("record of kind {kind} has a blob reference outside the record")]
    BadBlob { kind: u32 },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

impl DecodeError {
    /// The record kind the bad record claimed, when it got that far.
    pub fn kind(&self) -> u32 {
        match self {
            DecodeError::SizeMismatch { kind, .. }
            | DecodeError::TooSmall { kind, .. }
            | DecodeError::BadBlob { kind } => *kind,
            DecodeError::UnknownKind(kind) => *kind,
            DecodeError::Short(_) => 0,
        }
    }
}

/// An exec record with its variable parts copied out of the ring buffer.
#[derive(Clone, Debug)]
pub struct Exec {
    pub header: RecordHeader,
    pub task: TaskInfo,
    pub flags: u32,
    pub path: Vec<u8>,
    /// argv as in the process image: NUL-separated, NUL-terminated.
    pub argv: Vec<u8>,
    pub cwd: Vec<u8>,
    pub cap_effective: u64,
    pub cap_permitted: u64,
}

/// A file-open record with its path pieces copied out.
#[derive(Clone, Debug)]
pub struct FileOpen {
    pub fixed: FileOpenRecord,
    pub path: Vec<u8>,
    pub dir: Vec<u8>,
}

/// A device record with its backing-file path copied out.
#[derive(Clone, Debug)]
pub struct Device {
    pub fixed: BlockDeviceRecord,
    pub backing: Vec<u8>,
}

/// A mount record with its strings copied out.
#[derive(Clone, Debug)]
pub struct Mount {
    pub fixed: MountRecord,
    pub source: Vec<u8>,
    pub target: Vec<u8>,
    pub fstype: Vec<u8>,
}

#[derive(Clone, Debug)]
pub enum Record {
    Exec(Exec),
    Exit(ExitRecord),
    Fork(ForkRecord),
    FileOpen(FileOpen),
    Cred(PrivilegeChangeRecord),
    Device(Device),
    Mount(Mount),
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: RecordHeader = read_struct(bytes).ok_or(DecodeError::Short(bytes.len()))?;
    if header.size as usize != bytes.len() {
        return Err(DecodeError::SizeMismatch {
            kind: header.kind,
            claimed: header.size,
            actual: bytes.len(),
        });
    }
    match header.kind {
        kind::EXEC => decode_exec(bytes).map(Record::Exec),
        kind::EXIT => fixed(bytes, header.kind).map(Record::Exit),
        kind::FORK => fixed(bytes, header.kind).map(Record::Fork),
        kind::FILE_OPEN => decode_file_open(bytes).map(Record::FileOpen),
        kind::PRIVILEGE_CHANGE => fixed(bytes, header.kind).map(Record::Cred),
        kind::BLOCK_DEVICE => decode_device(bytes).map(Record::Device),
        kind::MOUNT => decode_mount(bytes).map(Record::Mount),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn decode_exec(bytes: &[u8]) -> Result<Exec, DecodeError> {
    let record: ExecRecord = fixed(bytes, kind::EXEC)?;
    let blob = &bytes[EXEC_FIXED_SIZE..];
    Ok(Exec {
        header: record.header,
        task: record.task,
        flags: record.flags,
        path: piece(blob, record.path, kind::EXEC)?,
        argv: piece(blob, record.argv, kind::EXEC)?,
        cwd: piece(blob, record.cwd, kind::EXEC)?,
        cap_effective: record.cap_effective,
        cap_permitted: record.cap_permitted,
    })
}

fn decode_file_open(bytes: &[u8]) -> Result<FileOpen, DecodeError> {
    let fixed: FileOpenRecord = fixed(bytes, kind::FILE_OPEN)?;
    let blob = &bytes[FILE_FIXED_SIZE..];
    Ok(FileOpen {
        path: piece(blob, fixed.path, kind::FILE_OPEN)?,
        dir: piece(blob, fixed.dir, kind::FILE_OPEN)?,
        fixed,
    })
}

fn decode_device(bytes: &[u8]) -> Result<Device, DecodeError> {
    let fixed: BlockDeviceRecord = fixed(bytes, kind::BLOCK_DEVICE)?;
    let blob = &bytes[BLOCK_DEVICE_FIXED_SIZE..];
    Ok(Device {
        backing: piece(blob, fixed.backing, kind::BLOCK_DEVICE)?,
        fixed,
    })
}

fn decode_mount(bytes: &[u8]) -> Result<Mount, DecodeError> {
    let fixed: MountRecord = fixed(bytes, kind::MOUNT)?;
    let blob = &bytes[MOUNT_FIXED_SIZE..];
    Ok(Mount {
        source: piece(blob, fixed.source, kind::MOUNT)?,
        target: piece(blob, fixed.target, kind::MOUNT)?,
        fstype: piece(blob, fixed.fstype, kind::MOUNT)?,
        fixed,
    })
}

/// A blob piece, checked to lie inside the record.
fn piece(blob: &[u8], r: BlobRef, kind: u32) -> Result<Vec<u8>, DecodeError> {
    let start = r.offset as usize;
    let end = start + r.len as usize;
    blob.get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or(DecodeError::BadBlob { kind })
}

fn fixed<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    read_struct(bytes).ok_or(DecodeError::TooSmall {
        kind,
        size: bytes.len(),
    })
}

/// Reads a `#[repr(C)]` plain-data struct from the start of `bytes`, if long enough.
fn read_struct<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is a repr(C) struct of integers and byte arrays, valid for any
    // bit pattern; read_unaligned because ring-buffer data is only 8-byte aligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Splits NUL-separated argv into its arguments (a trailing NUL ends the last one).
pub fn split_argv(argv: &[u8]) -> Vec<&[u8]> {
    let trimmed = argv.strip_suffix(&[0]).unwrap_or(argv);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split(|&b| b == 0).collect()
}

/// The bytes of a NUL-padded fixed-size C string.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sensor_common::{COMM_LEN, MAX_GROUPS, TTY_LEN};

    pub fn task(tgid: u32) -> TaskInfo {
        TaskInfo {
            tgid,
            pid: tgid,
            ppid: 1,
            flags: 0,
            start_boottime_ns: 5_000_000_000,
            parent_start_boottime_ns: 1_000_000,
            cgroup_id: 1,
            uid: 65534,
            gid: 65534,
            euid: 65534,
            egid: 65534,
            suid: 65534,
            sgid: 65534,
            fsuid: 65534,
            fsgid: 65534,
            loginuid: 1000,
            sessionid: 7,
            ngroups: 0,
            _pad: 0,
            groups: [0; MAX_GROUPS],
            tty: [0; TTY_LEN],
            comm: [0; COMM_LEN],
        }
    }

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data struct.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    pub fn exec_bytes(path: &[u8], argv: &[u8], cwd: &[u8]) -> Vec<u8> {
        let mut blob = Vec::new();
        let mut blob_ref = |data: &[u8]| {
            let r = BlobRef {
                offset: blob.len() as u16,
                len: data.len() as u16,
            };
            blob.extend_from_slice(data);
            r
        };
        let (path, argv, cwd) = (blob_ref(path), blob_ref(argv), blob_ref(cwd));
        let record = ExecRecord {
            header: RecordHeader {
                kind: kind::EXEC,
                size: (EXEC_FIXED_SIZE + blob.len()) as u32,
                ktime_ns: 42,
            },
            task: task(100),
            flags: 0,
            argv_total: 0,
            path,
            argv,
            cwd,
            _pad: 0,
            cap_effective: 0,
            cap_permitted: 0,
        };
        let mut bytes = bytes_of(&record);
        bytes.extend_from_slice(&blob);
        bytes
    }

    #[test]
    fn decodes_exec_with_blob_pieces() {
        let bytes = exec_bytes(b"/usr/bin/marker", b"marker\0one two\0\xff\0", b"/tmp");
        let Record::Exec(exec) = decode(&bytes).unwrap() else {
            panic!("not an exec");
        };
        assert_eq!(exec.path, b"/usr/bin/marker");
        assert_eq!(exec.cwd, b"/tmp");
        assert_eq!(
            split_argv(&exec.argv),
            vec![&b"marker"[..], &b"one two"[..], &b"\xff"[..]]
        );
        assert_eq!(exec.task.tgid, 100);
    }

    #[test]
    fn rejects_truncated_and_inconsistent_records() {
        assert_eq!(decode(&[1, 2, 3]).unwrap_err(), DecodeError::Short(3));

        let mut bytes = exec_bytes(b"/bin/x", b"x\0", b"/");
        bytes.pop();
        assert!(matches!(
            decode(&bytes).unwrap_err(),
            DecodeError::SizeMismatch {
                kind: kind::EXEC,
                ..
            }
        ));

        // A blob reference past the end of the record.
        let mut bytes = exec_bytes(b"/bin/x", b"x\0", b"/");
        let path_len_at = std::mem::offset_of!(ExecRecord, path) + 2;
        bytes[path_len_at..path_len_at + 2].copy_from_slice(&4000u16.to_ne_bytes());
        assert_eq!(
            decode(&bytes).unwrap_err(),
            DecodeError::BadBlob { kind: kind::EXEC }
        );
    }

    #[test]
    fn rejects_unknown_kind_and_short_fixed_part() {
        let header = RecordHeader {
            kind: 99,
            size: 16,
            ktime_ns: 0,
        };
        assert_eq!(
            decode(&bytes_of(&header)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
        let header = RecordHeader {
            kind: kind::EXIT,
            size: 16,
            ktime_ns: 0,
        };
        assert!(matches!(
            decode(&bytes_of(&header)).unwrap_err(),
            DecodeError::TooSmall {
                kind: kind::EXIT,
                size: 16
            }
        ));
    }

    #[test]
    fn argv_splitting_handles_empty_and_unterminated() {
        assert!(split_argv(b"").is_empty());
        assert!(split_argv(b"\0").is_empty());
        assert_eq!(split_argv(b"a\0b"), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(
            split_argv(b"a\0\0b\0"),
            vec![&b"a"[..], &b""[..], &b"b"[..]]
        );
    }
}
