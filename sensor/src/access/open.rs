//! The access basis and the file's owner on a file-open event.
use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::Path, sync::Arc};

use custos_proto::v1::FileOpen as FileOpenEvent;
use sensor_common::{access_flags, task_flags, TaskInfo};

use super::{
    acl_entries,
    basis::{decide, Acl, Object, Opener},
    event::{basis_event, Checked},
    examine::examine_denied,
    memo::{BasisKey, BasisMemo, HeldAccess},
    requested, ByteOrder, CREATE_IN_DIRECTORY,
};
use crate::{
    families::FileOpen,
    identity::{NameCache, NameSource},
    sinks::{new_part_id, AccessPart},
    text,
};

const GROUPS_TRUNCATED: &str = "the opener had more groups than the sensor captures: a group \
                                grant may be missed";
const NOT_BY_PERMISSIONS: &str = "the permission bits allow this access: refused by an LSM, \
                                  an immutable file or a read-only mount";

/// Sets `body`'s owner and basis: from the kernel's inputs for an open that succeeded (the
/// same inputs as an earlier open's give its answer from `memo`), from the path as it is now
/// for one that was denied. A remembered answer is returned to be held apart from the event
/// rather than set on it (see [`crate::sinks::SharedParts`]).
pub fn add_access_basis<S: NameSource>(
    open: &FileOpen,
    body: &mut FileOpenEvent,
    names: &mut NameCache<S>,
    memo: &mut BasisMemo,
) -> Option<HeldAccess> {
    let record = &open.fixed;
    if record.ret < 0 {
        if body.denied {
            denied(&record.task, body, names);
        }
        return None;
    }
    if record.access_flags & access_flags::KNOWN == 0 {
        return None;
    }
    let key = BasisKey::of(record, &open.acl);
    if let Some(held) = key.as_ref().and_then(|k| memo.get(k)) {
        return Some(held.clone());
    }
    let (uid, gid, mode) = (record.file_uid, record.file_gid, record.file_mode);
    set_owner(body, uid, gid, mode, names);
    opened(open, body, names);
    let key = key?;
    let held = (Arc::new(AccessPart::take(body)), new_part_id());
    memo.put(key, held.clone());
    Some(held)
}

fn opened<S: NameSource>(open: &FileOpen, body: &mut FileOpenEvent, names: &mut NameCache<S>) {
    let record = &open.fixed;
    let flags = record.access_flags;
    let on_directory = flags & access_flags::ON_DIRECTORY != 0;
    let want = if on_directory {
        CREATE_IN_DIRECTORY
    } else {
        match requested(record.open_flags) {
            Some(want) => want,
            None => {
                body.basis = Some(Box::new(custos_proto::v1::AccessBasis {
                    grant: custos_proto::v1::AccessGrant::None as i32,
                    object: "file".into(),
                    ..Default::default()
                }));
                return;
            }
        }
    };
    let acl = if flags & access_flags::ACL_UNKNOWN != 0 {
        Acl::Unknown
    } else if open.acl.is_empty() {
        Acl::None
    } else {
        Acl::Entries(acl_entries(&open.acl, ByteOrder::Native))
    };
    let object = Object {
        uid: record.checked_uid,
        gid: record.checked_gid,
        mode: record.checked_mode,
        acl,
    };
    let groups = record.task.captured_groups();
    let opener = Opener {
        fsuid: record.task.fsuid,
        fsgid: record.task.fsgid,
        groups,
        cap_dac_override: flags & access_flags::CAP_DAC_OVERRIDE != 0,
        cap_dac_read_search: flags & access_flags::CAP_DAC_READ_SEARCH != 0,
    };
    let decision = decide(&object, &opener, want);
    let directory = on_directory.then(|| parent_of(&body.path));
    let note = note_for(&record.task, &object.acl, flags);
    let checked = Checked {
        want,
        directory: directory.as_deref(),
        after_the_fact: false,
        note,
    };
    body.basis = Some(Box::new(basis_event(&decision, &checked, names)));
}

fn denied<S: NameSource>(task: &TaskInfo, body: &mut FileOpenEvent, names: &mut NameCache<S>) {
    let flags = body.flags;
    let Some(want) = requested(flags) else {
        return;
    };
    let opener = Opener {
        fsuid: task.fsuid,
        fsgid: task.fsgid,
        groups: task.captured_groups(),
        // Either would have let the open through.
        cap_dac_override: false,
        cap_dac_read_search: false,
    };
    let path = Path::new(OsStr::from_bytes(text::exact(&body.path, &body.path_raw)));
    let create = flags as i32 & libc::O_CREAT != 0;
    let Some(found) = examine_denied(path, want, create, &opener) else {
        return;
    };
    if found.directory.is_none() {
        let object = &found.object;
        set_owner(body, object.uid, object.gid, object.mode, names);
    }
    let note = if found.decision.granted() {
        NOT_BY_PERMISSIONS
    } else if task.flags & task_flags::GROUPS_TRUNCATED != 0 {
        GROUPS_TRUNCATED
    } else {
        ""
    };
    let directory = found
        .directory
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned());
    let checked = Checked {
        want: found.want,
        directory: directory.as_deref(),
        after_the_fact: true,
        note,
    };
    body.basis = Some(Box::new(basis_event(&found.decision, &checked, names)));
}

fn set_owner<S: NameSource>(
    body: &mut FileOpenEvent,
    uid: u32,
    gid: u32,
    mode: u32,
    names: &mut NameCache<S>,
) {
    body.owner_uid = Some(uid);
    body.owner = names.user(uid).unwrap_or_default();
    body.owner_gid = Some(gid);
    body.owner_group = names.group(gid).unwrap_or_default();
    body.mode = Some(mode);
}

fn note_for(task: &TaskInfo, acl: &Acl, flags: u32) -> &'static str {
    if task.flags & task_flags::GROUPS_TRUNCATED != 0 {
        GROUPS_TRUNCATED
    } else if *acl == Acl::Unknown {
        "the filesystem's ACL could not be read: an ACL entry may have granted this"
    } else if flags & access_flags::ACL_TRUNCATED != 0 {
        "the ACL had more entries than the sensor copies"
    } else {
        ""
    }
}

fn parent_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) => "/".to_owned(),
        Some(at) => path[..at].to_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroUsize, time::Duration};

    use custos_proto::v1::AccessGrant;
    use sensor_common::FileOpenRecord;

    use super::*;

    struct Names;

    impl NameSource for Names {
        fn user_name(&self, uid: u32) -> Option<String> {
            (uid == 0).then(|| "root".into())
        }
        fn group_name(&self, gid: u32) -> Option<String> {
            (gid == 4).then(|| "adm".into())
        }
    }

    /// uid 1000, in group 4, reads a file of root:adm with mode 0640.
    fn read_of_a_group_file() -> FileOpen {
        // SAFETY: the record is plain integers and arrays of them: all zeroes is a valid one.
        let mut fixed: FileOpenRecord = unsafe { std::mem::zeroed() };
        fixed.ret = 3;
        fixed.access_flags = access_flags::KNOWN | access_flags::NO_ACL;
        (fixed.file_uid, fixed.file_gid, fixed.file_mode) = (0, 4, 0o100640);
        (fixed.checked_uid, fixed.checked_gid, fixed.checked_mode) = (0, 4, 0o100640);
        fixed.open_flags = libc::O_RDONLY as u32;
        (fixed.task.fsuid, fixed.task.fsgid) = (1000, 1000);
        fixed.task.ngroups = 1;
        fixed.task.groups[0] = 4;
        FileOpen {
            fixed,
            path: b"/var/log/syslog".to_vec(),
            dir: Vec::new(),
            acl: Vec::new(),
        }
    }

    #[test]
    fn a_remembered_answer_is_held_apart_whole_and_shared_by_the_next_opens() {
        let capacity = NonZeroUsize::new(8).unwrap();
        let mut names = NameCache::new(Names, capacity, Duration::from_secs(60));
        let mut memo = BasisMemo::default();
        let open = read_of_a_group_file();
        let mut first = FileOpenEvent::default();
        let (part, id) = add_access_basis(&open, &mut first, &mut names, &mut memo).unwrap();
        assert_eq!(
            first,
            FileOpenEvent::default(),
            "the part is held, not left on the event"
        );
        let mut second = FileOpenEvent::default();
        let (again, again_id) =
            add_access_basis(&open, &mut second, &mut names, &mut memo).unwrap();
        assert!(Arc::ptr_eq(&part, &again) && id == again_id && id != 0);
        assert_eq!(second, FileOpenEvent::default());

        let mut restored = FileOpenEvent::default();
        Arc::unwrap_or_clone(again).put_back(&mut restored);
        assert_eq!(
            (
                restored.owner_uid,
                restored.owner.as_str(),
                restored.owner_gid
            ),
            (Some(0), "root", Some(4))
        );
        assert_eq!(
            (restored.owner_group.as_str(), restored.mode),
            ("adm", Some(0o100640))
        );
        let basis = restored.basis.expect("a basis");
        assert_eq!(basis.grant, AccessGrant::Group as i32);
        assert_eq!(basis.group.map(|g| g.name).as_deref(), Some("adm"));
    }
}
