//! Which grant lets an access through: the kernel's permission check (`generic_permission` in
//! fs/namei.c, `posix_acl_permission` in fs/posix_acl.c) replayed on the inputs the kernel held
//! at the access.
use sensor_common::AclEntry;

/// Permission bits as the mode's "rwx" triplets and ACL entries hold them.
pub const READ: u32 = 4;
pub const WRITE: u32 = 2;
pub const SEARCH: u32 = 1;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;

/// ACL entry tags (include/uapi/linux/posix_acl.h).
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// What the checked inode's ACL is known to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acl {
    /// No ACL, or one no check consults: the mode bits decide.
    None,
    Entries(Vec<AclEntry>),
    /// An ACL may exist but could not be read.
    Unknown,
}

/// The inode a permission check is made on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub acl: Acl,
}

impl Object {
    pub fn is_directory(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// The credentials a permission check uses.
#[derive(Clone, Copy, Debug)]
pub struct Opener<'a> {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: &'a [u32],
    pub cap_dac_override: bool,
    pub cap_dac_read_search: bool,
}

impl Opener<'_> {
    fn in_group(&self, gid: u32) -> bool {
        gid == self.fsgid || self.groups.contains(&gid)
    }
}

/// The class of bits that applied to the opener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Owner,
    /// A named user's ACL entry: its own and its masked permissions.
    AclUser {
        uid: u32,
        perm: u32,
        effective: u32,
    },
    /// The owning group (by the mode bits, or the ACL's owning-group entry).
    Group {
        gid: u32,
        supplementary: bool,
    },
    /// A named group's ACL entry.
    AclGroup {
        gid: u32,
        supplementary: bool,
        perm: u32,
        effective: u32,
    },
    Other,
}

impl Class {
    pub fn name(&self) -> &'static str {
        match self {
            Class::Owner => "owner",
            Class::AclUser { .. } => "acl_user",
            Class::Group { .. } => "group",
            Class::AclGroup { .. } => "acl_group",
            Class::Other => "other",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub class: Class,
    /// Requested bits the class did not give.
    pub missing: u32,
    /// The capability that overrode `missing`, if one did.
    pub capability: Option<&'static str>,
}

impl Decision {
    pub fn granted(&self) -> bool {
        self.missing == 0 || self.capability.is_some()
    }
}

/// Replays the kernel's check of `want` (READ | WRITE | SEARCH bits) on `object`.
pub fn decide(object: &Object, opener: &Opener, want: u32) -> Decision {
    let (class, bits) = class_of(object, opener, want);
    let missing = want & !bits;
    let capability = if missing == 0 {
        None
    } else {
        overriding_capability(object, opener, want)
    };
    Decision {
        class,
        missing,
        capability,
    }
}

fn class_of(object: &Object, opener: &Opener, want: u32) -> (Class, u32) {
    if opener.fsuid == object.uid {
        return (Class::Owner, (object.mode >> 6) & 7);
    }
    // The group bits of a file with an ACL are its mask: none means no entry can grant.
    if let Acl::Entries(entries) = &object.acl {
        if object.mode & 0o070 != 0 {
            if let Some(found) = acl_class(entries, object, opener, want) {
                return found;
            }
        }
    }
    if opener.in_group(object.gid) {
        let supplementary = object.gid != opener.fsgid;
        let class = Class::Group {
            gid: object.gid,
            supplementary,
        };
        return (class, (object.mode >> 3) & 7);
    }
    (Class::Other, object.mode & 7)
}

/// `posix_acl_permission`: the first matching named user, else the first matching group entry
/// that grants (any matching group denies when none does), else the other entry.
fn acl_class(
    entries: &[AclEntry],
    object: &Object,
    opener: &Opener,
    want: u32,
) -> Option<(Class, u32)> {
    let mask = entries
        .iter()
        .find(|e| e.tag == ACL_MASK)
        .map_or(7, |e| u32::from(e.perm));
    let mut first_group: Option<(Class, u32)> = None;
    for entry in entries {
        let perm = u32::from(entry.perm);
        let group = match entry.tag {
            ACL_USER if entry.id == opener.fsuid => {
                let effective = perm & mask;
                return Some((
                    Class::AclUser {
                        uid: entry.id,
                        perm,
                        effective,
                    },
                    effective,
                ));
            }
            ACL_GROUP_OBJ if opener.in_group(object.gid) => Class::Group {
                gid: object.gid,
                supplementary: object.gid != opener.fsgid,
            },
            ACL_GROUP if opener.in_group(entry.id) => Class::AclGroup {
                gid: entry.id,
                supplementary: entry.id != opener.fsgid,
                perm,
                effective: perm & mask,
            },
            ACL_OTHER => return first_group.or(Some((Class::Other, perm))),
            _ => continue,
        };
        if perm & want == want {
            return Some((group, perm & mask));
        }
        first_group.get_or_insert((group, perm & mask));
    }
    first_group
}

/// The capability `generic_permission` lets override the mode bits for `want`.
fn overriding_capability(object: &Object, opener: &Opener, want: u32) -> Option<&'static str> {
    let read_search = opener.cap_dac_read_search.then_some("CAP_DAC_READ_SEARCH");
    let dac_override = opener.cap_dac_override.then_some("CAP_DAC_OVERRIDE");
    if object.is_directory() {
        return if want & WRITE == 0 {
            read_search.or(dac_override)
        } else {
            dac_override
        };
    }
    if want == READ && read_search.is_some() {
        return read_search;
    }
    // Executing needs an execute bit somewhere, whatever the capability.
    if want & SEARCH == 0 || object.mode & 0o111 != 0 {
        return dac_override;
    }
    None
}

/// Permission bits as "rwx" letters with dashes ("r-x").
pub fn triplet(bits: u32) -> String {
    [(READ, 'r'), (WRITE, 'w'), (SEARCH, 'x')]
        .iter()
        .map(|(bit, c)| if bits & bit != 0 { *c } else { '-' })
        .collect()
}

/// Permission bits as the letters that are set ("rw").
pub fn letters(bits: u32) -> String {
    triplet(bits).chars().filter(|c| *c != '-').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: u32 = 1000;
    const STAFF: u32 = 50;

    fn file(uid: u32, gid: u32, mode: u32) -> Object {
        Object {
            uid,
            gid,
            mode: 0o100000 | mode,
            acl: Acl::None,
        }
    }

    fn alice(groups: &[u32]) -> Opener<'_> {
        Opener {
            fsuid: ALICE,
            fsgid: ALICE,
            groups,
            cap_dac_override: false,
            cap_dac_read_search: false,
        }
    }

    fn entry(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    #[test]
    fn owner_group_and_other_classes() {
        let d = decide(&file(ALICE, 0, 0o600), &alice(&[]), READ);
        assert_eq!((d.class, d.missing), (Class::Owner, 0));
        let d = decide(&file(0, STAFF, 0o640), &alice(&[STAFF]), READ);
        assert_eq!(
            d.class,
            Class::Group {
                gid: STAFF,
                supplementary: true
            }
        );
        assert!(d.granted());
        let d = decide(&file(0, 0, 0o644), &alice(&[STAFF]), READ);
        assert_eq!((d.class, d.granted()), (Class::Other, true));
        // The owner class decides for the owner even where others could do more.
        let d = decide(&file(ALICE, 0, 0o066), &alice(&[]), READ);
        assert_eq!(
            (d.class, d.missing, d.granted()),
            (Class::Owner, READ, false)
        );
    }

    #[test]
    fn capabilities_override_in_the_kernels_order() {
        let root = Opener {
            fsuid: 0,
            fsgid: 0,
            groups: &[],
            cap_dac_override: true,
            cap_dac_read_search: true,
        };
        let secret = file(ALICE, ALICE, 0o600);
        let read = decide(&secret, &root, READ);
        assert_eq!(read.capability, Some("CAP_DAC_READ_SEARCH"));
        assert_eq!((read.class, read.missing), (Class::Other, READ));
        let write = decide(&secret, &root, READ | WRITE);
        assert_eq!(write.capability, Some("CAP_DAC_OVERRIDE"));
        let no_read_search = Opener {
            cap_dac_read_search: false,
            ..root
        };
        assert_eq!(
            decide(&secret, &no_read_search, READ).capability,
            Some("CAP_DAC_OVERRIDE")
        );
        // No execute bit at all: not even root may execute.
        assert_eq!(decide(&secret, &root, SEARCH).capability, None);
    }

    #[test]
    fn acl_entries_grant_through_the_mask() {
        let mut object = file(0, 0, 0o640);
        object.acl = Acl::Entries(vec![
            entry(1, 6, 0),
            entry(ACL_USER, 4, ALICE),
            entry(ACL_GROUP_OBJ, 4, 0),
            entry(ACL_GROUP, 6, STAFF),
            entry(ACL_MASK, 4, 0),
            entry(ACL_OTHER, 0, 0),
        ]);
        let d = decide(&object, &alice(&[]), READ);
        assert_eq!(
            d.class,
            Class::AclUser {
                uid: ALICE,
                perm: 4,
                effective: 4
            }
        );
        assert!(d.granted());
        let bob = Opener {
            fsuid: 1001,
            fsgid: 1001,
            ..alice(&[STAFF])
        };
        let write = decide(&object, &bob, WRITE);
        assert!(
            matches!(
                write.class,
                Class::AclGroup {
                    gid: STAFF,
                    perm: 6,
                    effective: 4,
                    ..
                }
            ),
            "{write:?}"
        );
        assert_eq!(write.missing, WRITE, "the mask takes write away");
        let stranger = Opener {
            fsuid: 7,
            fsgid: 7,
            ..alice(&[])
        };
        assert_eq!(decide(&object, &stranger, READ).class, Class::Other);
        assert!(!decide(&object, &stranger, READ).granted());
    }

    #[test]
    fn directories_let_read_search_skip_writes() {
        let dir = Object {
            mode: 0o040700,
            ..file(0, 0, 0)
        };
        let opener = Opener {
            cap_dac_read_search: true,
            ..alice(&[])
        };
        assert_eq!(
            decide(&dir, &opener, SEARCH).capability,
            Some("CAP_DAC_READ_SEARCH")
        );
        assert_eq!(decide(&dir, &opener, WRITE | SEARCH).capability, None);
        assert_eq!(triplet(READ | SEARCH), "r-x");
        assert_eq!(letters(WRITE | SEARCH), "wx");
    }
}
