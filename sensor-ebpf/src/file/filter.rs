//! The file filters, applied in the kernel: by writes only, user, command name, cgroup,
//! executable and path prefix; writes to watched devices pass whatever the filters say.
use aya_ebpf::helpers::{
    bpf_get_current_uid_gid,
    generated::{bpf_get_current_cgroup_id, bpf_probe_read_kernel},
};
use sensor_common::{filter_action, filter_flags, ExeKey, FileFilterConfig, PREFIX_MAX};

use super::{
    lookup::{file_identity, inode_identity},
    Request, O_ACCMODE, O_APPEND, O_CREAT, O_RDWR, O_TRUNC, O_WRONLY,
};
use crate::{
    kread::{current_comm, off, Mem},
    maps::{
        FILTER_CGROUPS, FILTER_COMMS, FILTER_EXES, FILTER_UIDS, PATH_PREFIXES, PREFIX_KEY,
        WATCHED_DEVICES,
    },
    path::ResolvedPath,
};

const LOOP_MAJOR: u32 = 7;

#[inline(always)]
pub fn is_write(flags: u32) -> bool {
    flags & O_ACCMODE == O_WRONLY
        || flags & O_ACCMODE == O_RDWR
        || flags & (O_CREAT | O_TRUNC | O_APPEND) != 0
}

/// Applies one filter dimension: an exclude match drops; with includes present, so does no match.
#[inline(always)]
fn keep(action: Option<u32>, has_includes: bool) -> bool {
    match action {
        Some(filter_action::EXCLUDE) => false,
        Some(_) => true,
        None => !has_includes,
    }
}

#[inline(always)]
pub fn passes_process_filters<M: Mem>(config: &FileFilterConfig, request: &Request) -> bool {
    let f = config.flags;
    if f & filter_flags::WRITES_ONLY != 0 && !is_write(request.flags) {
        return false;
    }
    if f & filter_flags::UID_RULES != 0 {
        let uid = bpf_get_current_uid_gid() as u32;
        // SAFETY: the value is copied at once; a concurrent rewrite by the daemon gives the old or
        // the new rule.
        let action = unsafe { FILTER_UIDS.get(&uid) }.copied();
        if !keep(action, f & filter_flags::UID_INCLUDES != 0) {
            return false;
        }
    }
    if f & filter_flags::COMM_RULES != 0 {
        let comm = current_comm();
        // SAFETY: as above.
        let action = unsafe { FILTER_COMMS.get(&comm) }.copied();
        if !keep(action, f & filter_flags::COMM_INCLUDES != 0) {
            return false;
        }
    }
    if f & filter_flags::CGROUP_RULES != 0 {
        // SAFETY: a helper without arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as for FILTER_UIDS.
        let action = unsafe { FILTER_CGROUPS.get(&cgroup) }.copied();
        if !keep(action, f & filter_flags::CGROUP_INCLUDES != 0) {
            return false;
        }
    }
    if f & filter_flags::EXE_RULES != 0 {
        let exe = current_exe::<M>().unwrap_or_default();
        // SAFETY: as for FILTER_UIDS.
        let action = unsafe { FILTER_EXES.get(&exe) }.copied();
        if !keep(action, f & filter_flags::EXE_INCLUDES != 0) {
            return false;
        }
    }
    true
}

/// True for a write open of a file (of `inode`) on a device the daemon watches (removable
/// media).
#[inline(always)]
pub fn on_watched_device(config: &FileFilterConfig, request: &Request, inode: *const u8) -> bool {
    if config.flags & filter_flags::WATCHED_DEVICES == 0 || !is_write(request.flags) {
        return false;
    }
    // Loop devices are always watched: decided here, so a write right after an attach cannot
    // beat the daemon's update of the map.
    inode_identity(inode).is_some_and(|(dev, _)| {
        // SAFETY: presence only.
        dev >> 20 == LOOP_MAJOR || unsafe { WATCHED_DEVICES.get(&dev) }.is_some()
    })
}

/// The current process's executable as (dev, inode).
#[inline(always)]
fn current_exe<M: Mem>() -> Option<ExeKey> {
    let mm = M::read_ptr(M::current_task(), off!(task_mm))?;
    let exe_file = M::read_ptr(mm, off!(mm_exe_file))?;
    let (dev, ino) = file_identity::<M>(exe_file)?;
    Some(ExeKey { dev, _pad: 0, ino })
}

/// Prefix rules on a resolved path: whether an open with `flags` passes them.
#[inline(always)]
pub fn passes_path_filter(config: &FileFilterConfig, path: &ResolvedPath, flags: u32) -> bool {
    path_allows(config, path_action(config, path), flags)
}

/// Whether an open with `flags` passes the prefix rules, given the `action` of the rule its
/// path matched.
#[inline(always)]
pub fn path_allows(config: &FileFilterConfig, action: Option<u32>, flags: u32) -> bool {
    let f = config.flags;
    if f & filter_flags::PATH_RULES == 0 {
        return true;
    }
    if action == Some(filter_action::EXCLUDE_READS) {
        return is_write(flags);
    }
    keep(action, f & filter_flags::PATH_INCLUDES != 0)
}

/// The action of the prefix rule a resolved path matches, if any. A path longer than the
/// compared bytes matches on its head.
#[inline(always)]
pub fn path_action(config: &FileFilterConfig, path: &ResolvedPath) -> Option<u32> {
    if config.flags & filter_flags::PATH_RULES == 0 {
        return None;
    }
    let key = PREFIX_KEY.get_ptr_mut(0)?;
    // SAFETY: this CPU's PREFIX_KEY slot, used by one program at a time.
    let key = unsafe { &mut *key };
    let len = if path.len > PREFIX_MAX {
        PREFIX_MAX
    } else {
        path.len
    };
    // SAFETY: `len` is at most PREFIX_MAX, the size of `key.data`.
    unsafe {
        bpf_probe_read_kernel(key.data.as_mut_ptr().cast(), len as u32, path.data.cast());
    }
    key.prefix_len = (len * 8) as u32;
    let lpm_key = key as *const _ as *const aya_ebpf::maps::lpm_trie::Key<[u8; PREFIX_MAX]>;
    // SAFETY: `PrefixKey` has the layout of an LPM key: a u32 prefix length, then the data.
    PATH_PREFIXES.get(unsafe { &*lpm_key }).copied()
}
