//! File-open records: an open that succeeded (resolved in the kernel) or one that failed (the
//! path as requested, and the directory a relative one was relative to).
use sensor_common::{
    file_flags, filter_flags, BlobRef, FileBuffer, FileFilterConfig, FILE_BLOB_OFFSET_MASK,
};

use super::{
    access::record_access,
    dedup::{close_window, counted_as_repeat, dedup_key, open_window},
    filter::{passes_path_filter, path_action, path_allows},
    lookup::{cwd_path, file_of_fd, inode_facts, OpenedFile},
    verdict::{name_of, remember_exclusion, remembered_exclusion, Name},
    Request, AT_FDCWD,
};
use crate::{
    blob::Blob,
    emit::now_ns,
    kread::{off, Mem, Probe},
    maps::FILE_BUF,
    path::{resolve, resolve_path, ResolvedPath},
    record::{send, stage},
    task::fill_task_info,
};

/// A zeroed file-open record for `request` with result `ret`, in this CPU's staging buffer.
#[inline(always)]
fn start(request: &Request, ret: i32, now: u64) -> Option<&'static mut FileBuffer> {
    let buffer = stage(&FILE_BUF, now)?;
    let record = &mut buffer.record;
    record.syscall = request.syscall;
    record.open_flags = request.flags;
    record.ret = ret;
    record.dfd = request.dfd;
    Some(buffer)
}

// Inlined: as a BPF subprogram returning nothing, R0 may be left holding a stack pointer,
// which the verifier refuses at a subprogram's exit. `fd` is -1 where it does not exist yet.
#[inline(always)]
pub fn opened<M: Mem>(
    config: &FileFilterConfig,
    request: &Request,
    tgid: u32,
    file: &OpenedFile,
    fd: i32,
    watched: bool,
) {
    // The requested flags: the file's f_flags has O_CREAT and O_TRUNC already cleared.
    let flags = request.flags;
    let (dentry, vfsmount) = (file.dentry, file.vfsmount);
    // A remembered exclusion needs nothing of the inode but its address: the inode (and its
    // superblock's device) is read for opens that go further.
    let name = if watched { None } else { name_of(config, file) };
    if name
        .as_ref()
        .is_some_and(|n| remembered_exclusion(config, n, flags))
    {
        return;
    }
    let Some(inode) = inode_facts(file.inode) else {
        return;
    };
    let (dev, ino) = (inode.dev, inode.ino);
    let now = now_ns();
    let key = dedup_key::<M>(tgid, flags, dev, ino);
    if !watched && counted_as_repeat(config, &key, now) {
        return;
    }
    let Some(resolved) = resolve(dentry, vfsmount) else {
        return;
    };
    if !watched && dropped_by_path_rules(config, &resolved, flags, name.as_ref()) {
        return;
    }
    let Some(buffer) = start(request, if fd < 0 { 0 } else { fd }, now) else {
        return;
    };
    if fd < 0 {
        buffer.record.flags |= file_flags::FD_UNKNOWN;
    }
    if watched {
        buffer.record.flags |= file_flags::WATCHED_DEVICE;
    }
    let record = &mut buffer.record;
    record.fmode = file.mode;
    record.dev = dev;
    record.ino = ino;
    if resolved.truncated {
        record.flags |= file_flags::PATH_TRUNCATED;
    }
    let opens_window = config.dedup_window_ns != 0 && !watched;
    if opens_window {
        record.flags |= file_flags::DEDUP_FIRST;
        record.suppressed_total = open_window(&key, now);
        record.key_mm = key.mm;
        record.key_cred = key.cred;
    }
    fill_task_info::<M>(M::current_task(), &mut record.task);
    let mut blob = Blob::<FILE_BLOB_OFFSET_MASK>::new(buffer.blob.as_mut_ptr());
    buffer.record.path = blob.kernel(resolved.data, resolved.len).unwrap_or_default();
    if config.flags & filter_flags::ACCESS_BASIS != 0 {
        record_access::<M, FILE_BLOB_OFFSET_MASK>(&mut buffer.record, &inode, dentry, &mut blob);
    }
    if !send(buffer, blob.used) && opens_window {
        close_window(config, &key, now);
    }
}

/// Whether the path rules drop an open of `resolved`; a rule's exclusion is remembered under
/// the open's `name` (the absence of an include is not).
#[inline(always)]
fn dropped_by_path_rules(
    config: &FileFilterConfig,
    resolved: &ResolvedPath,
    flags: u32,
    name: Option<&Name>,
) -> bool {
    let action = path_action(config, resolved);
    if path_allows(config, action, flags) {
        return false;
    }
    if let (Some(name), Some(action)) = (name, action) {
        remember_exclusion(name, action);
    }
    true
}

#[inline(always)]
pub fn failed<M: Mem>(config: &FileFilterConfig, request: &Request, ret: i32, denied: bool) {
    let Some(buffer) = start(request, ret, now_ns()) else {
        return;
    };
    let mut blob = Blob::<FILE_BLOB_OFFSET_MASK>::new(buffer.blob.as_mut_ptr());
    let requested = match request.kernel_path_len {
        Some(len) => blob.kernel(request.path, len).map(|piece| (piece, false)),
        None => blob.user_str(request.path),
    };
    let (path, truncated) = match requested {
        Some(piece) => piece,
        None => {
            buffer.record.flags |= file_flags::PATH_UNREADABLE;
            (BlobRef::default(), false)
        }
    };
    buffer.record.path = path;
    if truncated {
        buffer.record.flags |= file_flags::PATH_TRUNCATED;
    }
    // A relative request is relative to the cwd or to dfd; report that directory too, and
    // filter on it (the file itself does not exist to resolve).
    let first = first_byte(buffer, path);
    if path.len > 0 && first != b'/' {
        let dir = if request.dfd == AT_FDCWD {
            cwd_path::<M>()
        } else {
            file_of_fd::<M>(request.dfd)
                .and_then(|f| resolve_path::<Probe>(f.wrapping_add(off!(file_path) as usize)))
        };
        if let Some(dir) = dir {
            if !denied && !passes_path_filter(config, &dir, request.flags) {
                return;
            }
            if dir.truncated {
                buffer.record.flags |= file_flags::DIR_TRUNCATED;
            }
            buffer.record.dir = blob.kernel(dir.data, dir.len).unwrap_or_default();
        }
    } else if !denied && path.len > 0 {
        let absolute = ResolvedPath {
            // SAFETY: the blob offset is masked, and the path piece lies inside the blob.
            data: unsafe {
                buffer
                    .blob
                    .as_ptr()
                    .add(path.offset as usize & FILE_BLOB_OFFSET_MASK)
            },
            len: path.len as usize,
            truncated,
        };
        if !passes_path_filter(config, &absolute, request.flags) {
            return;
        }
    }
    fill_task_info::<M>(M::current_task(), &mut buffer.record.task);
    send(buffer, blob.used);
}

#[inline(always)]
fn first_byte(buffer: &FileBuffer, piece: BlobRef) -> u8 {
    let at = piece.offset as usize & FILE_BLOB_OFFSET_MASK;
    buffer.blob[at]
}
