//! A denied open, examined right after it: the kernel keeps no inode for an open that failed,
//! so the daemon looks at the path's directories and file as they are now.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sensor_common::AclEntry;

use super::{
    acl_entries,
    basis::{decide, Acl, Decision, Object, Opener, SEARCH, WRITE},
    ByteOrder,
};

/// The extended attribute that holds a file's access ACL.
const ACCESS_ACL_XATTR: &str = "system.posix_acl_access";
/// Version of the ACL xattr format (include/uapi/linux/posix_acl_xattr.h).
const ACL_XATTR_VERSION: u32 = 2;

/// Where a denied open's check failed, and how.
#[derive(Debug)]
pub struct Examined {
    pub object: Object,
    /// The directory that refused search, or (creating a missing file) write and search.
    pub directory: Option<PathBuf>,
    pub want: u32,
    pub decision: Decision,
}

/// Replays the checks of an open of `path` asking for `want`: search on every directory above
/// it, then the file itself, or its directory when `create` and the file does not exist.
pub fn examine_denied(path: &Path, want: u32, create: bool, opener: &Opener) -> Option<Examined> {
    let directories: Vec<&Path> = path.ancestors().skip(1).collect();
    for directory in directories.into_iter().rev() {
        let object = object_at(directory)?;
        let decision = decide(&object, opener, SEARCH);
        if !decision.granted() {
            return Some(examined(object, Some(directory), SEARCH, decision));
        }
    }
    match object_at(path) {
        Some(object) => {
            let decision = decide(&object, opener, want);
            Some(examined(object, None, want, decision))
        }
        None if create => {
            let directory = path.parent()?;
            let object = object_at(directory)?;
            let decision = decide(&object, opener, WRITE | SEARCH);
            Some(examined(object, Some(directory), WRITE | SEARCH, decision))
        }
        None => None,
    }
}

fn examined(object: Object, directory: Option<&Path>, want: u32, decision: Decision) -> Examined {
    Examined {
        object,
        directory: directory.map(Path::to_path_buf),
        want,
        decision,
    }
}

/// The owner, group, mode and ACL of `path` (symlinks followed, as open does).
pub fn object_at(path: &Path) -> Option<Object> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Object {
        uid: metadata.uid(),
        gid: metadata.gid(),
        mode: metadata.mode(),
        acl: acl_of(path),
    })
}

fn acl_of(path: &Path) -> Acl {
    match xattr::get(path, ACCESS_ACL_XATTR) {
        Ok(None) => Acl::None,
        Ok(Some(bytes)) => parse_acl_xattr(&bytes).map_or(Acl::Unknown, Acl::Entries),
        // Filesystems without ACL support say so; that is "no ACL".
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => Acl::None,
        Err(_) => Acl::Unknown,
    }
}

/// The xattr form: a little-endian u32 version, then (u16 tag, u16 perm, u32 id) entries.
pub fn parse_acl_xattr(bytes: &[u8]) -> Option<Vec<AclEntry>> {
    let (version, entries) = bytes.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != ACL_XATTR_VERSION || entries.len() % 8 != 0 {
        return None;
    }
    Some(acl_entries(entries, ByteOrder::Little))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::basis::{Class, READ};

    #[test]
    fn acl_xattrs_parse_and_bad_ones_do_not() {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        let entries = parse_acl_xattr(&bytes).unwrap();
        assert_eq!(
            entries,
            vec![AclEntry {
                tag: 2,
                perm: 4,
                id: 1000
            }]
        );
        assert!(parse_acl_xattr(&bytes[..7]).is_none());
        assert!(parse_acl_xattr(&[1, 0, 0, 0]).is_none());
    }

    #[test]
    fn a_closed_directory_is_named_before_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        std::fs::write(closed.join("f"), "x").unwrap();
        let permissions = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        std::fs::set_permissions(&closed, permissions).unwrap();
        let owner = std::fs::metadata(&closed).unwrap().uid();
        let stranger = Opener {
            fsuid: owner.wrapping_add(4242),
            fsgid: 4242,
            groups: &[],
            cap_dac_override: false,
            cap_dac_read_search: false,
        };
        let found = examine_denied(&closed.join("f"), READ, false, &stranger).unwrap();
        assert_eq!(found.directory.as_deref(), Some(closed.as_path()));
        assert_eq!((found.want, found.decision.missing), (SEARCH, SEARCH));
        assert_eq!(found.decision.class, Class::Other);
    }
}
