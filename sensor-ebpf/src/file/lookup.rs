//! Finding a task's open files and their identity.
use sensor_common::offsets::spans;

use crate::{
    kread::{load, off, rooms, typed_as, untyped, Direct, Fields, Mem, Probe, GLOBALS},
    path::{resolve_path, ResolvedPath},
};

/// What an open's record and its remembered verdict need of the file it opened, as numbers.
pub struct OpenedFile {
    pub mode: u32,
    pub inode: *const u8,
    pub dentry: *const u8,
    pub vfsmount: *const u8,
    /// `None` where the dentry's members could not be read.
    pub name: Option<DentryName>,
}

/// A dentry's parent and its name's hash and length, which say whether a remembered verdict is
/// still about the name.
pub struct DentryName {
    pub parent: *const u8,
    pub hash: u32,
    pub len: u32,
}

impl OpenedFile {
    /// The file behind descriptor `fd` of the current task. Where the kernel can type the
    /// descriptor's slot (`bpf_rdonly_cast`), every member is a plain load; otherwise a helper
    /// call reads the slot and one each reads the file's and the dentry's members. Those calls
    /// were most of the cost of an open the rules drop (the dynamic loader's, at every exec).
    #[inline(always)]
    pub fn of_fd<M: Mem>(task: *const u8, fd: i32) -> Option<Self> {
        let slot = slot_of_fd::<M>(task, fd)?;
        match typed_slot(slot) {
            Some(typed) => Self::of_typed(Direct::read_ptr(typed, off!(files_fd_array))?),
            None => Self::of_untyped(Probe::read_ptr(slot, 0)?),
        }
    }

    /// From a BTF-typed `struct file` pointer: plain loads.
    #[inline(always)]
    pub fn of_typed(file: *const u8) -> Option<Self> {
        let path = off!(file_path);
        let dentry = Direct::read_ptr(file, path + off!(path_dentry))?;
        let qstr = off!(dentry_name);
        let name = Direct::read_ptr(dentry, off!(dentry_parent)).and_then(|parent| {
            Some(DentryName {
                parent: untyped(parent),
                hash: Direct::read::<u32>(dentry, qstr + off!(qstr_hash))?,
                len: Direct::read::<u32>(dentry, qstr + off!(qstr_len))?,
            })
        });
        Some(Self {
            mode: Direct::read::<u32>(file, off!(file_mode)).unwrap_or(0),
            inode: untyped(Direct::read_ptr(file, off!(file_inode))?),
            dentry: untyped(dentry),
            vfsmount: untyped(Direct::read_ptr(file, path + off!(path_mnt))?),
            name,
        })
    }

    /// From an untyped `struct file` pointer: the file's and the dentry's members each in one
    /// span read.
    #[inline(always)]
    pub fn of_untyped(file: *const u8) -> Option<Self> {
        let fields = Fields::<{ spans::FILE }>::new(file, off!(file_span), rooms::file());
        let path = off!(file_path);
        let dentry = fields.ptr(path + off!(path_dentry))?;
        let names = Fields::<{ spans::DENTRY }>::new(dentry, off!(dentry_span), rooms::dentry());
        let qstr = off!(dentry_name);
        let name = names.ptr(off!(dentry_parent)).and_then(|parent| {
            Some(DentryName {
                parent,
                hash: names.get::<u32>(qstr + off!(qstr_hash))?,
                len: names.get::<u32>(qstr + off!(qstr_len))?,
            })
        });
        Some(Self {
            mode: fields.get::<u32>(off!(file_mode)).unwrap_or(0),
            inode: fields.ptr(off!(file_inode))?,
            dentry,
            vfsmount: fields.ptr(path + off!(path_mnt))?,
            name,
        })
    }
}

/// A descriptor's `slot`, typed as the first element of a `files_struct`'s own `fd_array`
/// (the table small processes use, of `struct file *`), so that the pointer loaded from it is
/// typed; `None` where the kernel cannot type it. A slot in a larger table, allocated apart,
/// is typed the same way: the cast only gives the load its type, and the load is fault-safe.
#[inline(always)]
fn typed_slot(slot: *const u8) -> Option<*const u8> {
    let array_at = off!(files_fd_array);
    if array_at == sensor_common::offsets::MISSING {
        return None;
    }
    let typed = typed_as(
        (slot as u64).wrapping_sub(u64::from(array_at)),
        load(&GLOBALS.files_struct_type),
    );
    (!typed.is_null()).then_some(typed)
}

/// The address of descriptor `fd`'s `struct file *` in the table of `task` (the current
/// task, as `M` reads it).
#[inline(always)]
fn slot_of_fd<M: Mem>(task: *const u8, fd: i32) -> Option<*const u8> {
    if fd < 0 {
        return None;
    }
    let files = M::read_ptr(task, off!(task_files))?;
    let fdt = M::read_ptr(files, off!(files_fdt))?;
    let max_fds = M::read::<u32>(fdt, off!(fdt_max_fds))?;
    if fd as u32 >= max_fds {
        return None;
    }
    let array = M::read_ptr(fdt, off!(fdt_fd))?;
    Some(array.wrapping_add(fd as usize * 8))
}

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
    Probe::read_ptr(slot_of_fd::<M>(M::current_task(), fd)?, 0)
}

#[inline(always)]
pub fn cwd_path<M: Mem>() -> Option<ResolvedPath> {
    let fs = M::read_ptr(M::current_task(), off!(task_fs))?;
    resolve_path::<M>(fs.wrapping_add(off!(fs_pwd) as usize))
}
