//! Finding a task's open files and their identity.
use sensor_common::offsets::spans;

use crate::{
    kread::{off, rooms, Fields, Mem, Probe},
    path::{resolve_path, ResolvedPath},
};

/// (dev_t, inode number) of an open file.
#[inline(always)]
pub fn file_identity<M: Mem>(file: *const u8) -> Option<(u32, u64)> {
    let inode = M::read_ptr(file, off!(file_inode))?;
    inode_identity(inode)
}

/// (dev_t, inode number) of an inode (untyped).
#[inline(always)]
pub fn inode_identity(inode: *const u8) -> Option<(u32, u64)> {
    inode_facts(inode).map(|facts| (facts.dev, facts.ino))
}

/// What an open's report needs of an inode, read with one helper call where the span fits.
pub struct InodeFacts {
    pub dev: u32,
    pub ino: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// `i_acl`: NULL, a sentinel (not cached, not cacheable) or the cached ACL.
    pub acl: u64,
}

#[inline(always)]
pub fn inode_facts(inode: *const u8) -> Option<InodeFacts> {
    let fields = Fields::<{ spans::INODE }>::new(inode, off!(inode_span), rooms::inode());
    let ino = fields.get::<u64>(off!(inode_ino))?;
    let sb = fields.ptr(off!(inode_sb))?;
    let dev = Probe::read::<u32>(sb, off!(sb_dev))?;
    Some(InodeFacts {
        dev,
        ino,
        uid: fields.get::<u32>(off!(inode_uid)).unwrap_or(u32::MAX),
        gid: fields.get::<u32>(off!(inode_gid)).unwrap_or(u32::MAX),
        mode: fields.get::<u16>(off!(inode_mode)).unwrap_or(0) as u32,
        acl: fields
            .get::<u64>(off!(inode_acl))
            .unwrap_or(ACL_UNAVAILABLE),
    })
}

/// `i_acl` of a kernel without POSIX ACLs, or one that could not be read: the kernel's own
/// `ACL_DONT_CACHE`, since either way an ACL may exist that the record cannot show.
pub const ACL_UNAVAILABLE: u64 = 0xfffffffffffffffd;

/// The `struct file` behind descriptor `fd` of the current task. The result is untyped even
/// for `Direct` (`fdt->fd` is `struct file **`, which the verifier does not type): read it
/// with `Probe`.
#[inline(always)]
pub fn file_of_fd<M: Mem>(fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let files = M::read_ptr(M::current_task(), off!(task_files))?;
    let fdt = M::read_ptr(files, off!(files_fdt))?;
    let max_fds = M::read::<u32>(fdt, off!(fdt_max_fds))?;
    if fd as u32 >= max_fds {
        return None;
    }
    let array = M::read_ptr(fdt, off!(fdt_fd))?;
    Probe::read_ptr(array.wrapping_add(fd as usize * 8), 0)
}

#[inline(always)]
pub fn cwd_path<M: Mem>() -> Option<ResolvedPath> {
    let fs = M::read_ptr(M::current_task(), off!(task_fs))?;
    resolve_path::<M>(fs.wrapping_add(off!(fs_pwd) as usize))
}
