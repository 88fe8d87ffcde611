//! What the host grants a person: group memberships (NSS, so directory groups count), sudo
//! rules, and the set-user-id and file-capability programs they may run.
use std::{
    collections::BTreeMap,
    ffi::CString,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::unistd::{getgrouplist, Group, User};

use super::{
    basis::{decide, Acl, Object, Opener, SEARCH},
    sudo_rules::{self, SudoRule},
    usage::model::Kind,
};
use crate::credentials::capability_names;

const FILE_CAPABILITY_XATTR: &str = "security.capability";

/// A program that runs with more privilege than its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivilegedProgram {
    pub path: String,
    pub kind: Kind,
    /// Its entitlement's name: the path, with the capabilities for file capabilities.
    pub name: String,
    pub object: Object,
}

/// The grants one person holds on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostGrants {
    /// False when the name is not a user of this host (nothing is granted then).
    pub known: bool,
    pub groups: Vec<String>,
    /// `None` when sudo could not be asked (the rules are then left as they were).
    pub sudo: Option<Vec<SudoRule>>,
    /// Entitlement names of the privileged programs the person may run.
    pub programs: Vec<(Kind, String)>,
}

/// The set-user-id, set-group-id and file-capability programs in `dirs` (not recursive),
/// each once whatever the symlinked directories that show it.
pub fn privileged_programs(dirs: &[PathBuf]) -> Vec<PrivilegedProgram> {
    let mut found: BTreeMap<PathBuf, PrivilegedProgram> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(real) = std::fs::canonicalize(entry.path()) else {
                continue;
            };
            if found.contains_key(&real) {
                continue;
            }
            if let Some(program) = privileged_program(&real) {
                found.insert(real, program);
            }
        }
    }
    found.into_values().collect()
}

fn privileged_program(path: &Path) -> Option<PrivilegedProgram> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let text = path.to_string_lossy().into_owned();
    let (kind, name) = if metadata.mode() & 0o6000 != 0 {
        (Kind::Setuid, text.clone())
    } else {
        let capabilities = file_capabilities(path)?;
        let names = capability_names(capabilities).join(",").to_lowercase();
        (Kind::FileCapability, format!("{text} ({names})"))
    };
    Some(PrivilegedProgram {
        path: text,
        kind,
        name,
        object: Object {
            uid: metadata.uid(),
            gid: metadata.gid(),
            mode: metadata.mode(),
            acl: Acl::None,
        },
    })
}

/// The permitted set of a file's capabilities (`struct vfs_cap_data`), if it has any.
fn file_capabilities(path: &Path) -> Option<u64> {
    let bytes = xattr::get(path, FILE_CAPABILITY_XATTR).ok()??;
    let word = |at: usize| -> Option<u64> {
        let chunk: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(chunk)))
    };
    let low = word(4)?;
    // Revision 2 and 3 carry a second 32-bit word of each set.
    let high = word(12).unwrap_or(0);
    let permitted = low | high << 32;
    (permitted != 0).then_some(permitted)
}

/// What the host grants `person` now.
pub fn grants_of(person: &str, programs: &[PrivilegedProgram]) -> HostGrants {
    let Ok(Some(user)) = User::from_name(person) else {
        return HostGrants::default();
    };
    let gids: Vec<u32> = CString::new(person)
        .ok()
        .and_then(|name| getgrouplist(&name, user.gid).ok())
        .unwrap_or_else(|| vec![user.gid])
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    let groups = gids
        .iter()
        .filter_map(|gid| Group::from_gid((*gid).into()).ok().flatten())
        .map(|group| group.name)
        .collect();
    let sudo = match sudo_rules::rules_of(person) {
        Ok(rules) => Some(rules),
        Err(err) => {
            tracing::warn!(person, "sudo rules unknown: {err:#}");
            None
        }
    };
    let uid = user.uid.as_raw();
    let opener = Opener {
        fsuid: uid,
        fsgid: user.gid.as_raw(),
        groups: &gids,
        cap_dac_override: uid == 0,
        cap_dac_read_search: uid == 0,
    };
    let programs = programs
        .iter()
        .filter(|program| decide(&program.object, &opener, SEARCH).granted())
        .map(|program| (program.kind, program.name.clone()))
        .collect();
    HostGrants {
        known: true,
        groups,
        sudo,
        programs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_granted_its_groups_and_the_setuid_programs_it_can_run() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("elevate");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o4755);
        std::fs::set_permissions(&program, mode).unwrap();
        std::fs::write(dir.path().join("plain"), "").unwrap();
        let programs = privileged_programs(&[dir.path().to_path_buf()]);
        assert_eq!(programs.len(), 1, "{programs:?}");
        assert_eq!(programs[0].kind, Kind::Setuid);
        let grants = grants_of("root", &programs);
        assert!(grants.known && grants.groups.contains(&"root".to_owned()));
        assert_eq!(
            grants.programs,
            vec![(Kind::Setuid, programs[0].name.clone())]
        );
        assert!(!grants_of("no-such-user-here", &programs).known);
    }
}
