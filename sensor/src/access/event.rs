//! A permission decision as the schema's `AccessBasis`, with names.
use custos_proto::v1::{AccessBasis, AccessGrant, AclEntry as AclEntryEvent, Group};

use super::basis::{letters, triplet, Class, Decision};
use crate::identity::{NameCache, NameSource};

/// What the basis describes besides the decision.
pub struct Checked<'a> {
    /// The bits asked for.
    pub want: u32,
    /// The directory checked instead of the file, if any.
    pub directory: Option<&'a str>,
    pub after_the_fact: bool,
    pub note: &'a str,
}

pub fn basis_event<S: NameSource>(
    decision: &Decision,
    checked: &Checked,
    names: &mut NameCache<S>,
) -> AccessBasis {
    let mut basis = AccessBasis {
        grant: grant_of(decision) as i32,
        capability: decision.capability.unwrap_or_default().to_owned(),
        requested: letters(checked.want),
        missing: letters(decision.missing),
        permission_class: decision.class.name().to_owned(),
        object: if checked.directory.is_some() {
            "directory"
        } else {
            "file"
        }
        .to_owned(),
        object_path: checked.directory.unwrap_or_default().to_owned(),
        after_the_fact: checked.after_the_fact,
        note: checked.note.to_owned(),
        ..AccessBasis::default()
    };
    match decision.class {
        Class::Group { gid, supplementary } => {
            basis.group = Some(group(gid, names));
            basis.supplementary = supplementary;
        }
        Class::AclGroup {
            gid,
            supplementary,
            perm,
            effective,
        } => {
            basis.group = Some(group(gid, names));
            basis.supplementary = supplementary;
            let name = names.group(gid).unwrap_or_default();
            basis.acl_entry = Some(acl_entry("group", gid, name, perm, effective));
        }
        Class::AclUser {
            uid,
            perm,
            effective,
        } => {
            let name = names.user(uid).unwrap_or_default();
            basis.acl_entry = Some(acl_entry("user", uid, name, perm, effective));
        }
        Class::Owner | Class::Other => {}
    }
    basis
}

fn acl_entry(tag: &str, id: u32, name: String, perm: u32, effective: u32) -> AclEntryEvent {
    AclEntryEvent {
        tag: tag.to_owned(),
        id,
        name,
        perm: triplet(perm),
        effective: triplet(effective),
    }
}

fn grant_of(decision: &Decision) -> AccessGrant {
    if decision.missing != 0 {
        return match decision.capability {
            Some(_) => AccessGrant::Capability,
            None => AccessGrant::Denied,
        };
    }
    match decision.class {
        Class::Owner => AccessGrant::Owner,
        Class::Group { .. } => AccessGrant::Group,
        Class::AclUser { .. } | Class::AclGroup { .. } => AccessGrant::Acl,
        Class::Other => AccessGrant::Other,
    }
}

fn group<S: NameSource>(gid: u32, names: &mut NameCache<S>) -> Group {
    Group {
        gid,
        name: names.group(gid).unwrap_or_default(),
    }
}
