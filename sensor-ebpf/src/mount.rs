//! Mounts: mount(2), umount2(2) and the new mount API (fsopen, fsconfig "source", fsmount,
//! move_mount), seen at `sys_exit` with their result. Strings are copied as the caller passed
//! them; the daemon ties the steps of the new API together.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user};
use sensor_common::{syscalls, BlobRef, MountRecord, BLOB_OFFSET_MASK};

use crate::{
    blob::Blob,
    emit::now_ns,
    kread::{off, self_tgid, Mem},
    maps::MOUNT_BUF,
    record::{send, stage},
    task::fill_task_info,
};

const FSCONFIG_SET_STRING: u64 = 1;

#[inline(always)]
pub fn is_mount_syscall(nr: u64) -> bool {
    matches!(
        nr as u32,
        syscalls::MOUNT
            | syscalls::UMOUNT2
            | syscalls::MOVE_MOUNT
            | syscalls::FSOPEN
            | syscalls::FSCONFIG
            | syscalls::FSMOUNT
    )
}

#[inline(always)]
pub fn on_mount_syscall<M: Mem>(regs: *const u8, nr: u64, ret: i64) {
    if (bpf_get_current_pid_tgid() >> 32) as u32 == self_tgid() {
        return;
    }
    let arg = |offset: u32| M::read::<u64>(regs, offset).unwrap_or(0);
    let (a0, a1, a2, a3) = (
        arg(off!(regs_di)),
        arg(off!(regs_si)),
        arg(off!(regs_dx)),
        arg(off!(regs_r10)),
    );
    let syscall = nr as u32;
    if syscall == syscalls::FSCONFIG && (a1 != FSCONFIG_SET_STRING || !is_source_key(a2)) {
        // Only the "source" string matters to a mount event.
        return;
    }
    let Some(buffer) = stage(&MOUNT_BUF, now_ns()) else {
        return;
    };
    let record = &mut buffer.record;
    record.syscall = syscall;
    record.ret = ret as i32;
    record.fd = -1;
    let mut blob = Blob::<BLOB_OFFSET_MASK>::new(buffer.blob.as_mut_ptr());
    let strings = string_args(&mut buffer.record, syscall, [a0, a1, a2, a3], || {
        arg(off!(regs_r8))
    });
    let pieces = strings.map(|pointer| {
        if pointer == 0 {
            return BlobRef::default();
        }
        blob.user_str(pointer as *const u8)
            .map_or(BlobRef::default(), |(piece, _)| piece)
    });
    let record = &mut buffer.record;
    [record.source, record.target, record.fstype] = pieces;
    fill_task_info::<M>(M::current_task(), &mut buffer.record.task);
    let used = blob.used;
    send(buffer, used);
}

/// The user-string pointers (source, target, fstype) of a mount-family syscall's arguments,
/// with its flags and descriptor set on `record` (`r8` is read only by move_mount).
#[inline(always)]
fn string_args(
    record: &mut MountRecord,
    syscall: u32,
    [a0, a1, a2, a3]: [u64; 4],
    r8: impl FnOnce() -> u64,
) -> [u64; 3] {
    match syscall {
        // mount(source, target, fstype, flags, data)
        syscalls::MOUNT => {
            record.flags = a3;
            [a0, a1, a2]
        }
        // umount2(target, flags)
        syscalls::UMOUNT2 => {
            record.flags = a1;
            [0, a0, 0]
        }
        // move_mount(from_dfd, from_path, to_dfd, to_path, flags)
        syscalls::MOVE_MOUNT => {
            record.fd = a0 as i32;
            record.flags = r8();
            [a1, a3, 0]
        }
        // fsopen(fsname, flags)
        syscalls::FSOPEN => {
            record.flags = a1;
            [0, 0, a0]
        }
        // fsconfig(fd, FSCONFIG_SET_STRING, "source", value, aux)
        syscalls::FSCONFIG => {
            record.fd = a0 as i32;
            [a3, 0, 0]
        }
        // fsmount(fs_fd, flags, attr_flags)
        _ => {
            record.fd = a0 as i32;
            record.flags = a1;
            [0, 0, 0]
        }
    }
}

/// True when the user string at `key` is "source".
#[inline(always)]
fn is_source_key(key: u64) -> bool {
    let mut bytes = [0u8; 7];
    // SAFETY: a 7-byte read into a local array of 7 bytes.
    let ret = unsafe { bpf_probe_read_user(bytes.as_mut_ptr().cast(), 7, key as *const _) };
    ret == 0 && &bytes == b"source\0"
}
