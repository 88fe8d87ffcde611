//! The inputs of the kernel's permission check at an open: the checked inode's owner, group,
//! mode and cached POSIX ACL, and whether the opener could override the mode bits. The daemon
//! works out from them which grant let the open through.
use sensor_common::{access_flags, AclEntry, FileOpenRecord, MAX_ACL_ENTRIES};

use super::lookup::{inode_facts, InodeFacts, ACL_UNAVAILABLE as ACL_DONT_CACHE};
use crate::{
    blob::Blob,
    kread::{off, Mem, Probe},
};

/// `i_acl` sentinels (include/linux/fs.h): never read; `ACL_DONT_CACHE` is not cacheable by
/// this filesystem.
const ACL_NOT_CACHED: u64 = u64::MAX;
/// `f_mode` bit: this open created the file.
const FMODE_CREATED: u32 = 1 << 20;
const CAP_DAC_OVERRIDE: u64 = 1 << 1;
const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
const ACL_ENTRY_SIZE: usize = core::mem::size_of::<AclEntry>();

/// Fills the record's access fields for an open of `file_inode` through `dentry`; the ACL
/// entries go into `blob`.
#[inline(always)]
pub fn record_access<M: Mem, const MASK: usize>(
    record: &mut FileOpenRecord,
    file_inode: &InodeFacts,
    dentry: *const u8,
    blob: &mut Blob<MASK>,
) {
    record.file_uid = file_inode.uid;
    record.file_gid = file_inode.gid;
    record.file_mode = file_inode.mode;
    let mut flags = access_flags::KNOWN | dac_capabilities::<M>();
    // A created file's own permissions were not checked: its directory's were.
    let directory = if record.fmode & FMODE_CREATED != 0 {
        flags |= access_flags::ON_DIRECTORY;
        parent_inode(dentry)
    } else {
        None
    };
    let checked = directory.as_ref().unwrap_or(file_inode);
    record.checked_uid = checked.uid;
    record.checked_gid = checked.gid;
    record.checked_mode = checked.mode;
    flags |= copy_acl(checked.acl, record, blob);
    record.access_flags = flags;
}

#[inline(always)]
fn parent_inode(dentry: *const u8) -> Option<InodeFacts> {
    let parent = Probe::read_ptr(dentry, off!(dentry_parent))?;
    inode_facts(Probe::read_ptr(parent, off!(dentry_inode))?)
}

/// The DAC-overriding capabilities in the opener's effective set, as access flags.
#[inline(always)]
fn dac_capabilities<M: Mem>() -> u32 {
    let effective = M::read_ptr(M::current_task(), off!(task_real_cred))
        .and_then(|cred| M::read::<u64>(cred, off!(cred_cap_effective)))
        .unwrap_or(0);
    let mut flags = 0;
    if effective & CAP_DAC_OVERRIDE != 0 {
        flags |= access_flags::CAP_DAC_OVERRIDE;
    }
    if effective & CAP_DAC_READ_SEARCH != 0 {
        flags |= access_flags::CAP_DAC_READ_SEARCH;
    }
    flags
}

/// Copies the cached ACL's entries; the flags say what `i_acl` held.
#[inline(always)]
fn copy_acl<const MASK: usize>(
    acl: u64,
    record: &mut FileOpenRecord,
    blob: &mut Blob<MASK>,
) -> u32 {
    match acl {
        0 => return access_flags::NO_ACL,
        ACL_NOT_CACHED => return access_flags::ACL_NOT_READ,
        // `inode_facts` reports an unreadable i_acl the same way.
        ACL_DONT_CACHE => return access_flags::ACL_UNKNOWN,
        _ => {}
    }
    let acl = acl as *const u8;
    let Some(count) = Probe::read::<u32>(acl, off!(posix_acl_count)) else {
        return access_flags::ACL_UNKNOWN;
    };
    let mut flags = 0;
    let mut copied = count as usize;
    if copied > MAX_ACL_ENTRIES {
        copied = MAX_ACL_ENTRIES;
        flags |= access_flags::ACL_TRUNCATED;
    }
    let entries = acl.wrapping_add(off!(posix_acl_entries) as usize);
    match blob.kernel(entries, copied * ACL_ENTRY_SIZE) {
        Some(piece) => record.acl = piece,
        None => flags |= access_flags::ACL_UNKNOWN,
    }
    flags
}
