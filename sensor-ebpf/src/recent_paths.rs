//! Paths resolved lately, per CPU, by the name they were resolved from (dentry and mount).
//!
//! Every exec resolves the paths of its executable and of its working directory, and an exec
//! storm runs the same few programs from the same few directories. A walk of the dentry chain
//! costs a probe read per member of each component; a path walked once is kept in this CPU's
//! slot for its name, and the next exec of the same name copies it from there after checking
//! the name with a few loads (plain loads in `tp_btf` programs).
//!
//! A kept path holds only while the name means what it meant: the same dentry, mount, inode,
//! parent directory and name hash (a freed dentry's memory may later hold another name), and no
//! rename, root change or mount change anywhere since (`NAMES_GENERATION`, as for remembered
//! open verdicts): a directory renamed above the name changes the generation, not the name.
use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use sensor_common::BlobRef;

use crate::{
    blob::Blob,
    kread::{off, opaque, Mem},
    maps::{NAMES_GENERATION, RECENT_PATHS},
    path::{resolve, spread_slot, ResolvedPath},
};

/// Slots of `RECENT_PATHS` per CPU (a power of two).
pub const RECENT_PATH_SLOTS: u32 = 64;
/// Room for a kept path; longer ones are walked every time.
const KEPT_PATH_ROOM: usize = 256;

/// What a kept path was resolved from, and what made it valid. The addresses are kept as read
/// (BTF-typed pointers in `tp_btf` programs, which the verifier lets a privileged program
/// compare and store, but not hash): the slot is chosen by the name's hash.
#[repr(C)]
#[derive(Clone, Copy)]
struct NameState {
    dentry: u64,
    vfsmount: u64,
    inode: u64,
    parent: u64,
    name_hash: u32,
    name_len: u32,
    names_generation: u64,
}

impl NameState {
    /// Field by field, each an early exit: a comparison folded into arithmetic on the
    /// addresses would be refused on typed pointers.
    #[inline(always)]
    fn same_as(&self, other: &NameState) -> bool {
        if opaque(self.names_generation) != other.names_generation {
            return false;
        }
        if self.name_hash != other.name_hash || self.name_len != other.name_len {
            return false;
        }
        if self.dentry != other.dentry || self.vfsmount != other.vfsmount {
            return false;
        }
        self.parent == other.parent && self.inode == other.inode
    }
}

/// One CPU's slot: a path and the name it belongs to.
#[repr(C)]
pub struct RecentPath {
    name: NameState,
    /// Bytes of `bytes` in use; 0 while the slot holds nothing valid.
    len: u32,
    truncated: u32,
    bytes: [u8; KEPT_PATH_ROOM],
}

/// Resolves `path` (a `struct path *`, read with `M`) to an absolute path and appends it to
/// `blob`; true when it was truncated. From this CPU's kept copy when the name is unchanged
/// since it was walked, copied with plain loads and stores: a helper call cost more than the
/// few words of a usual path.
#[inline(always)]
pub fn append_path<M: Mem, const MASK: usize>(
    path: *const u8,
    blob: &mut Blob<MASK>,
) -> Option<(BlobRef, bool)> {
    let dentry = M::read_ptr(path, off!(path_dentry))?;
    let vfsmount = M::read_ptr(path, off!(path_mnt))?;
    let Some(name) = name_state::<M>(dentry, vfsmount) else {
        return append_walked(resolve(dentry, vfsmount)?, blob);
    };
    let slot_ptr = RECENT_PATHS.get_ptr_mut(slot_of(&name))?;
    // SAFETY: this CPU's slot of an array map, valid for the program's life and used by one
    // program at a time on this CPU (programs do not preempt each other).
    let slot = unsafe { &mut *slot_ptr };
    let kept = opaque(slot.len as usize) & (KEPT_PATH_ROOM - 1);
    if kept > 0 && slot.name.same_as(&name) {
        return Some((blob.words(&slot.bytes, kept)?, slot.truncated != 0));
    }
    let resolved = resolve(dentry, vfsmount)?;
    keep(slot, name, &resolved);
    append_walked(resolved, blob)
}

#[inline(always)]
fn append_walked<const MASK: usize>(
    resolved: ResolvedPath,
    blob: &mut Blob<MASK>,
) -> Option<(BlobRef, bool)> {
    Some((
        blob.kernel(resolved.data, resolved.len)?,
        resolved.truncated,
    ))
}

/// The name `dentry` on `vfsmount` stands for now. The generation is read before any walk, so
/// that a rename during the walk leaves the kept path stale rather than wrong.
#[inline(always)]
fn name_state<M: Mem>(dentry: *const u8, vfsmount: *const u8) -> Option<NameState> {
    let qstr = off!(dentry_name);
    Some(NameState {
        dentry: dentry as u64,
        vfsmount: vfsmount as u64,
        inode: M::read::<*const u8>(dentry, off!(dentry_inode))? as u64,
        parent: M::read_ptr(dentry, off!(dentry_parent))? as u64,
        name_hash: M::read::<u32>(dentry, qstr + off!(qstr_hash))?,
        name_len: M::read::<u32>(dentry, qstr + off!(qstr_len))?,
        names_generation: *NAMES_GENERATION.get(0)?,
    })
}

/// Copies a walked path into `slot` for `name`, when it fits.
#[inline(always)]
fn keep(slot: &mut RecentPath, name: NameState, resolved: &ResolvedPath) {
    // Never a kept name without its bytes: invalid until the copy succeeded.
    slot.len = 0;
    if resolved.len == 0 || resolved.len >= KEPT_PATH_ROOM {
        return;
    }
    let len = opaque(resolved.len) & (KEPT_PATH_ROOM - 1);
    // SAFETY: fewer than KEPT_PATH_ROOM bytes into the slot's own buffer; the helper checks the
    // source (this CPU's walk scratch).
    let copied = unsafe {
        bpf_probe_read_kernel(
            slot.bytes.as_mut_ptr().cast(),
            len as u32,
            resolved.data.cast(),
        )
    };
    if copied != 0 {
        return;
    }
    slot.name = name;
    slot.truncated = u32::from(resolved.truncated);
    slot.len = len as u32;
}

/// The slot of a name, by its hash and length (numbers, unlike the addresses).
#[inline(always)]
fn slot_of(name: &NameState) -> u32 {
    let key = (u64::from(name.name_hash) << 32) | u64::from(name.name_len);
    spread_slot(key, RECENT_PATH_SLOTS)
}
