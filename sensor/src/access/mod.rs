//! What access is actually used: the grant behind each open (`basis`, replayed from the
//! kernel's inputs; `examine` for denied opens), and per person which entitlements are used.
pub mod basis;
pub mod command;
pub mod event;
pub mod examine;
pub mod fleet;
pub mod grants;
pub mod memo;
pub mod open;
pub mod report;
pub mod sudo_rules;
pub mod usage;

use sensor_common::AclEntry;

use basis::{READ, SEARCH, WRITE};

/// The bits an open with `flags` asks of the file, or `None` for O_PATH (no check at all).
pub fn requested(flags: u32) -> Option<u32> {
    let flags = flags as i32;
    if flags & libc::O_PATH != 0 {
        return None;
    }
    let mut want = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => READ,
        libc::O_WRONLY => WRITE,
        _ => READ | WRITE,
    };
    if flags & libc::O_TRUNC != 0 {
        want |= WRITE;
    }
    Some(want)
}

/// What creating a file asks of its directory.
pub const CREATE_IN_DIRECTORY: u32 = WRITE | SEARCH;

/// Byte order of ACL entries: the kernel's own in records, little-endian in xattrs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteOrder {
    Native,
    Little,
}

/// ACL entries of 8 bytes each (u16 tag, u16 perm, u32 id).
pub fn acl_entries(bytes: &[u8], order: ByteOrder) -> Vec<AclEntry> {
    let half = |b: [u8; 2]| match order {
        ByteOrder::Native => u16::from_ne_bytes(b),
        ByteOrder::Little => u16::from_le_bytes(b),
    };
    let word = |b: [u8; 4]| match order {
        ByteOrder::Native => u32::from_ne_bytes(b),
        ByteOrder::Little => u32::from_le_bytes(b),
    };
    bytes
        .chunks_exact(8)
        .map(|e| AclEntry {
            tag: half([e[0], e[1]]),
            perm: half([e[2], e[3]]),
            id: word([e[4], e[5], e[6], e[7]]),
        })
        .collect()
}
