//! Absolute paths from `struct path`, resolved in the kernel.
//!
//! `bpf_d_path` is only allowed for fentry/LSM programs, so the tracepoint path walks the dentry
//! chain itself, crossing mount points through `struct mount`, as d_path does. Components are
//! written right to left, ending at `PATH_MAX` in the scratch buffer.
use aya_ebpf::{
    cty::c_void,
    helpers::generated::{bpf_loop, bpf_probe_read_kernel},
};
use sensor_common::{offsets::spans, PATH_MAX};

use crate::{
    kread::{off, opaque, read_ptr, rooms, Fields, Mem},
    maps::PATH_BUF,
};

/// Longest component name (NAME_MAX) plus one, so a masked write offset plus a name always fits.
const NAME_ROOM: usize = 256;
/// Deepest path the walk follows; deeper paths come out as a truncated suffix.
const MAX_COMPONENTS: u32 = 128;

#[repr(C)]
pub struct PathScratch {
    /// Write position of the walk. Kept here rather than on the stack: a value loaded from a map
    /// is unknown to the verifier, so every step looks alike and the loop verifies in one pass.
    pub pos: u64,
    pub buf: [u8; PATH_MAX + NAME_ROOM],
}

/// A path resolved into the per-CPU scratch buffer: `buf[start..PATH_MAX]`.
pub struct ResolvedPath {
    pub data: *const u8,
    pub len: usize,
    pub truncated: bool,
}

/// Walk state, on the caller's stack; `bpf_loop` hands it to each step.
#[repr(C)]
struct Walk {
    dentry: *const u8,
    vfsmount: *const u8,
    mount: *const u8,
    /// Root dentry of `vfsmount`, re-read only when the walk crosses into another mount.
    mnt_root: *const u8,
    truncated: u64,
    failed: u64,
}

const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// The slot of `key` in a per-CPU array of `slots` (a power of two): `key` multiplied so that
/// the top bits depend on all of it (kernel addresses are aligned, name hashes clustered), then
/// those top bits. Serves the caches kept by name (open verdicts, exec paths).
#[inline(always)]
pub fn spread_slot(key: u64, slots: u32) -> u32 {
    let mixed = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> (64 - slots.trailing_zeros())) as u32
}

/// Resolves `path` (a `struct path *`) to an absolute path, reading `path` itself with `M`.
#[inline(always)]
pub fn resolve_path<M: Mem>(path: *const u8) -> Option<ResolvedPath> {
    let dentry = M::read_ptr(path, off!(path_dentry))?;
    let vfsmount = M::read_ptr(path, off!(path_mnt))?;
    resolve(dentry, vfsmount)
}

/// Resolves a (dentry, vfsmount) pair to an absolute path.
///
/// The walk always uses probe reads, because crossing a mount needs
/// `container_of(vfsmount, struct mount, mnt)`, a negative offset the verifier refuses on typed
/// pointers. It runs under `bpf_loop`, so the verifier checks one step instead of every
/// unrolled iteration (a plain bounded loop exceeds its one-million-instruction budget).
#[inline(always)]
pub fn resolve(dentry: *const u8, vfsmount: *const u8) -> Option<ResolvedPath> {
    if dentry.is_null() || vfsmount.is_null() {
        return None;
    }
    let scratch = PATH_BUF.get_ptr_mut(0)?;
    // SAFETY: `scratch` is this CPU's PATH_BUF slot, used by one program at a time.
    unsafe { (*scratch).pos = PATH_MAX as u64 };
    let mut walk = Walk {
        dentry,
        vfsmount,
        mount: vfsmount.wrapping_sub(off!(mount_mnt) as usize),
        mnt_root: read_ptr(vfsmount, off!(vfsmount_mnt_root))?,
        truncated: 1,
        failed: 0,
    };
    // SAFETY: `walk_step` takes the `Walk` passed here, which outlives the loop.
    unsafe {
        bpf_loop(
            MAX_COMPONENTS,
            walk_step as *mut c_void,
            (&mut walk as *mut Walk).cast(),
            0,
        );
    }
    if walk.failed != 0 {
        return None;
    }
    // SAFETY: this CPU's PATH_BUF slot, as above.
    let buf = unsafe { (*scratch).buf.as_mut_ptr() };
    // SAFETY: as above.
    let mut pos = unsafe { (*scratch).pos } as usize;
    if pos >= PATH_MAX {
        // The path is the root itself.
        pos = PATH_MAX - 1;
        // SAFETY: `pos` is PATH_MAX - 1 here, inside the buffer.
        unsafe { *buf.add(pos) = b'/' };
    }
    let start = opaque(pos) & (PATH_MAX - 1);
    Some(ResolvedPath {
        data: buf.wrapping_add(start),
        len: PATH_MAX - start,
        truncated: walk.truncated != 0,
    })
}

/// One component: prepend the name of `walk.dentry`, or cross into the parent mount.
extern "C" fn walk_step(_index: u64, walk: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the `Walk` that `resolve` passed it, alive for the loop.
    let walk = unsafe { &mut *(walk as *mut Walk) };
    match step(walk) {
        Some(next) => next,
        None => {
            walk.failed = 1;
            STOP
        }
    }
}

#[inline(always)]
fn step(walk: &mut Walk) -> Option<i64> {
    if walk.dentry == walk.mnt_root {
        let mount_parent = read_ptr(walk.mount, off!(mount_parent))?;
        if mount_parent == walk.mount {
            walk.truncated = 0;
            return Some(STOP);
        }
        // Continue in the parent mount, from the dentry this mount is mounted on.
        walk.dentry = read_ptr(walk.mount, off!(mount_mountpoint))?;
        walk.mount = mount_parent;
        walk.vfsmount = mount_parent.wrapping_add(off!(mount_mnt) as usize);
        walk.mnt_root = read_ptr(walk.vfsmount, off!(vfsmount_mnt_root))?;
        return Some(CONTINUE);
    }
    // d_parent and d_name in one read.
    let dentry = Fields::<{ spans::DENTRY }>::new(walk.dentry, off!(dentry_span), rooms::dentry());
    let parent = dentry.ptr(off!(dentry_parent))?;
    if walk.dentry == parent {
        // Root of a filesystem that is not mounted here (pipes, sockets, detached trees).
        walk.truncated = 0;
        return Some(STOP);
    }
    let name_off = off!(dentry_name);
    let name = dentry.ptr(name_off + off!(qstr_name))?;
    let len = (dentry.get::<u32>(name_off + off!(qstr_len))? as usize) & (NAME_ROOM - 1);
    let scratch = PATH_BUF.get_ptr_mut(0)?;
    // SAFETY: this CPU's PATH_BUF slot, as in `resolve`.
    let pos = unsafe { (*scratch).pos } as usize;
    if pos > PATH_MAX || len + 1 > pos {
        return Some(STOP);
    }
    // SAFETY: as above.
    let buf = unsafe { (*scratch).buf.as_mut_ptr() };
    let pos = pos - len;
    // SAFETY: `len + 1 <= pos <= PATH_MAX` was checked above, so the name fits before `pos`.
    unsafe {
        bpf_probe_read_kernel(
            buf.add(pos & (PATH_MAX - 1)).cast(),
            len as u32,
            name.cast(),
        );
    }
    let pos = pos - 1;
    // SAFETY: the mask keeps the write inside the buffer.
    unsafe { *buf.add(pos & (PATH_MAX - 1)) = b'/' };
    // SAFETY: this CPU's PATH_BUF slot, as above.
    unsafe { (*scratch).pos = pos as u64 };
    walk.dentry = parent;
    Some(CONTINUE)
}
