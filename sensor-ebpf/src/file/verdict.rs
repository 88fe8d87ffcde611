//! Path-rule exclusions remembered by name. Every program a host starts makes the dynamic
//! loader open the same few libraries, which the default rules exclude; remembering that
//! verdict for the name (dentry and mount) drops the next such open without resolving its path
//! and looking it up in the prefix trie again.
//!
//! A verdict holds only while the name means what it meant: the same inode, parent directory
//! and name hash (a freed dentry's memory may later hold another name), no rename, root change
//! or mount change anywhere since (they all count in `NAMES_GENERATION`), and the same rules.
use sensor_common::{filter_flags, FileFilterConfig, OpenVerdict, OpenVerdictKey};

use super::{filter::path_allows, lookup::OpenedFile};
use crate::{
    emit::atomic_increment,
    maps::{NAMES_GENERATION, OPEN_VERDICTS, RECENT_VERDICTS},
    path::spread_slot,
};

/// Slots of `RECENT_VERDICTS` per CPU (a power of two).
pub const RECENT_VERDICT_SLOTS: u32 = 64;

/// A verdict of `OPEN_VERDICTS` with its key, as a CPU last used it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RecentVerdict {
    key: OpenVerdictKey,
    verdict: OpenVerdict,
}

/// A name an open went through, as a verdict records it.
pub struct Name {
    key: OpenVerdictKey,
    verdict: OpenVerdict,
}

/// Counts a change that may give names other meanings (a rename, a mount, a new root).
#[inline(always)]
pub fn names_changed() {
    if let Some(generation) = NAMES_GENERATION.get_ptr_mut(0) {
        // SAFETY: slot 0 of an array map, valid for the program's life.
        atomic_increment(unsafe { &mut *generation });
    }
}

/// The name `opened` was opened through, when verdicts may be remembered under these rules.
#[inline(always)]
pub fn name_of(config: &FileFilterConfig, opened: &OpenedFile) -> Option<Name> {
    let wanted = filter_flags::PATH_RULES | filter_flags::VERDICT_CACHE;
    if config.flags & wanted != wanted {
        return None;
    }
    let name = opened.name.as_ref()?;
    Some(Name {
        key: OpenVerdictKey {
            dentry: opened.dentry as u64,
            vfsmount: opened.vfsmount as u64,
        },
        verdict: OpenVerdict {
            inode: opened.inode as u64,
            parent: name.parent as u64,
            name_hash_len: (u64::from(name.hash) << 32) | u64::from(name.len),
            names_generation: *NAMES_GENERATION.get(0)?,
            rules_generation: config.rules_generation,
            action: 0,
        },
    })
}

/// True when a remembered verdict for `name` drops an open with `flags` under `config`'s rules.
/// This CPU's slot for the name is asked first; a verdict found in the shared map goes there.
#[inline(always)]
pub fn remembered_exclusion(config: &FileFilterConfig, name: &Name, flags: u32) -> bool {
    let slot = RECENT_VERDICTS.get_ptr_mut(recent_slot(&name.key));
    // SAFETY: this CPU's slot of an array map, valid for the program's life and used by one
    // program at a time, like `PREFIX_KEY`.
    let recent = slot.map(|slot| unsafe { &mut *slot });
    let known = match recent {
        Some(recent) if recent.key == name.key && holds(&recent.verdict, name) => recent.verdict,
        _ => {
            // SAFETY: the value is copied at once; an entry replaced meanwhile reads old or new.
            let Some(known) = (unsafe { OPEN_VERDICTS.get(&name.key) }).copied() else {
                return false;
            };
            if !holds(&known, name) {
                return false;
            }
            if let Some(recent) = recent {
                *recent = RecentVerdict {
                    key: name.key,
                    verdict: known,
                };
            }
            known
        }
    };
    !path_allows(config, Some(known.action), flags)
}

/// Whether a remembered verdict is about `name` as it is now (any action).
#[inline(always)]
fn holds(known: &OpenVerdict, name: &Name) -> bool {
    *known
        == OpenVerdict {
            action: known.action,
            ..name.verdict
        }
}

/// The `RECENT_VERDICTS` slot of a name, by its dentry's and mount's addresses.
#[inline(always)]
fn recent_slot(key: &OpenVerdictKey) -> u32 {
    spread_slot(
        key.dentry ^ key.vfsmount.rotate_left(17),
        RECENT_VERDICT_SLOTS,
    )
}

/// Remembers that the rule with `action` excluded an open of `name`, in the shared map and in
/// this CPU's slot.
#[inline(always)]
pub fn remember_exclusion(name: &Name, action: u32) {
    let verdict = OpenVerdict {
        action,
        ..name.verdict
    };
    let _ = OPEN_VERDICTS.insert(&name.key, &verdict, 0);
    if let Some(slot) = RECENT_VERDICTS.get_ptr_mut(recent_slot(&name.key)) {
        // SAFETY: as in `remembered_exclusion`.
        unsafe {
            *slot = RecentVerdict {
                key: name.key,
                verdict,
            }
        };
    }
}
