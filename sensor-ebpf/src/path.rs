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

/// This CPU's path walk: its state and the buffer it writes into.
///
/// The walk's state lives here rather than on the stack. What a step loads from a map value is
/// unknown to the verifier, so every step starts from the same state and the step verifies in
/// one pass. On the stack, a verifier that re-checks a `bpf_loop` step until its state stops
/// changing (Linux 6.7 and later) learnt something new about the pointers and flags at every
/// pass: 400,000 instructions and a second and more of load time for each program that walks a
/// path.
#[repr(C)]
pub struct PathScratch {
    walk: Walk,
    buf: [u8; PATH_MAX + NAME_ROOM],
}

/// A path resolved into the per-CPU scratch buffer: `buf[start..PATH_MAX]`.
pub struct ResolvedPath {
    pub data: *const u8,
    pub len: usize,
    pub truncated: bool,
}

#[repr(C)]
struct Walk {
    /// Where the next component ends in `buf`; components are written right to left.
    pos: u64,
    /// Kernel addresses, as numbers: a map value holds no pointer types.
    dentry: u64,
    mount: u64,
    /// Root dentry of the current mount, re-read only when the walk crosses into another mount.
    mnt_root: u64,
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
    let mnt_root = read_ptr(vfsmount, off!(vfsmount_mnt_root))?;
    let scratch = PATH_BUF.get_ptr_mut(0)?;
    let walk = Walk {
        pos: PATH_MAX as u64,
        dentry: dentry as u64,
        mount: vfsmount.wrapping_sub(off!(mount_mnt) as usize) as u64,
        mnt_root: mnt_root as u64,
        truncated: 1,
        failed: 0,
    };
    // SAFETY: `scratch` is this CPU's PATH_BUF slot, used by one program at a time (programs do
    // not preempt each other on a CPU). No reference to it is held across the loop, whose steps
    // write it.
    unsafe { (*scratch).walk = walk };
    // SAFETY: `walk_step` takes no context; it finds the walk in this CPU's PATH_BUF slot.
    unsafe {
        bpf_loop(
            MAX_COMPONENTS,
            walk_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above; the loop is over.
    let (walk, buf) = unsafe { (&(*scratch).walk, (*scratch).buf.as_mut_ptr()) };
    if walk.failed != 0 {
        return None;
    }
    let mut pos = walk.pos as usize;
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

/// One component: prepend the name of the walk's dentry, or cross into the parent mount.
extern "C" fn walk_step(_index: u64, _context: *mut c_void) -> i64 {
    let Some(scratch) = PATH_BUF.get_ptr_mut(0) else {
        return STOP;
    };
    // SAFETY: this CPU's PATH_BUF slot, as in `resolve`, which is waiting for this loop.
    let scratch = unsafe { &mut *scratch };
    match step(scratch) {
        Some(next) => next,
        None => {
            scratch.walk.failed = 1;
            STOP
        }
    }
}

#[inline(always)]
fn step(scratch: &mut PathScratch) -> Option<i64> {
    let walk = &mut scratch.walk;
    if walk.dentry == walk.mnt_root {
        let mount = walk.mount as *const u8;
        let mount_parent = read_ptr(mount, off!(mount_parent))?;
        if mount_parent == mount {
            walk.truncated = 0;
            return Some(STOP);
        }
        // Continue in the parent mount, from the dentry this mount is mounted on.
        walk.dentry = read_ptr(mount, off!(mount_mountpoint))? as u64;
        walk.mount = mount_parent as u64;
        let vfsmount = mount_parent.wrapping_add(off!(mount_mnt) as usize);
        walk.mnt_root = read_ptr(vfsmount, off!(vfsmount_mnt_root))? as u64;
        return Some(CONTINUE);
    }
    // d_parent and d_name in one read.
    let current = walk.dentry as *const u8;
    let dentry = Fields::<{ spans::DENTRY }>::new(current, off!(dentry_span), rooms::dentry());
    let parent = dentry.ptr(off!(dentry_parent))?;
    if current == parent {
        // Root of a filesystem that is not mounted here (pipes, sockets, detached trees).
        walk.truncated = 0;
        return Some(STOP);
    }
    let name_off = off!(dentry_name);
    let name = dentry.ptr(name_off + off!(qstr_name))?;
    let len = (dentry.get::<u32>(name_off + off!(qstr_len))? as usize) & (NAME_ROOM - 1);
    let pos = walk.pos as usize;
    if pos > PATH_MAX || len + 1 > pos {
        return Some(STOP);
    }
    let buf = scratch.buf.as_mut_ptr();
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
    scratch.walk.pos = pos as u64;
    scratch.walk.dentry = parent as u64;
    Some(CONTINUE)
}
