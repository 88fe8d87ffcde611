//! Process credentials as the daemon tracks them, and what changed between two of them.
use sensor_common::{TaskInfo, MAX_GROUPS};

/// The credentials of a process at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    pub cap_effective: u64,
    pub cap_permitted: u64,
    pub ngroups: u32,
    pub groups: [u32; MAX_GROUPS],
}

impl Credentials {
    /// The ids and groups of a kernel record, with the capability sets given separately (not
    /// every record carries them).
    pub fn of(task: &TaskInfo, cap_effective: u64, cap_permitted: u64) -> Self {
        Self {
            uid: task.uid,
            gid: task.gid,
            euid: task.euid,
            egid: task.egid,
            suid: task.suid,
            sgid: task.sgid,
            fsuid: task.fsuid,
            fsgid: task.fsgid,
            cap_effective,
            cap_permitted,
            ngroups: task.ngroups,
            groups: task.comparable_groups(),
        }
    }

    /// The supplementary groups captured.
    pub fn groups(&self) -> &[u32] {
        &self.groups[..(self.ngroups as usize).min(MAX_GROUPS)]
    }

    /// True when the ids and capability sets match (the groups are left out: execve never
    /// changes them).
    pub fn same_ids_and_capabilities(&self, other: &Credentials) -> bool {
        Self {
            ngroups: 0,
            groups: [0; MAX_GROUPS],
            ..*self
        } == Self {
            ngroups: 0,
            groups: [0; MAX_GROUPS],
            ..*other
        }
    }

    /// True when privilege grew from `before` to `self`: the effective user became root, or
    /// effective capabilities were added.
    pub fn escalates_from(&self, before: &Credentials) -> bool {
        (self.euid == 0 && before.euid != 0) || self.cap_effective & !before.cap_effective != 0
    }
}

/// Names of the capabilities whose bits are set (`CAP_SYS_ADMIN`); unknown bits as `CAP_<n>`.
pub fn capability_names(bits: u64) -> Vec<String> {
    (0..64u8)
        .filter(|bit| bits & (1u64 << bit) != 0)
        .map(|bit| {
            caps::all()
                .into_iter()
                .find(|cap| cap.index() == bit)
                .map(|cap| cap.to_string())
                .unwrap_or_else(|| format!("CAP_{bit}"))
        })
        .collect()
}

/// The name of a credential-changing syscall by its number.
pub fn syscall_name(nr: u32) -> &'static str {
    sensor_common::syscalls::watched(nr).map_or("unknown", |s| s.name)
}

/// True for setfsuid/setfsgid, which return the previous id instead of 0 or -errno.
pub fn returns_previous_id(nr: u32) -> bool {
    use sensor_common::syscalls::{SETFSGID, SETFSUID};
    matches!(nr, SETFSUID | SETFSGID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_bits_are_named() {
        assert_eq!(capability_names(0), Vec::<String>::new());
        assert_eq!(
            capability_names((1 << 0) | (1 << 21)),
            ["CAP_CHOWN", "CAP_SYS_ADMIN"]
        );
        assert_eq!(capability_names(1 << 63), ["CAP_63"]);
    }

    #[test]
    fn escalation_is_becoming_root_or_gaining_capabilities() {
        let task = crate::families::tests::task(1);
        let user = Credentials {
            euid: 1000,
            ..Credentials::of(&task, 0, 0)
        };
        let root = Credentials {
            euid: 0,
            cap_effective: u64::MAX,
            ..user
        };
        assert!(root.escalates_from(&user));
        assert!(!user.escalates_from(&root));
        let ping = Credentials {
            cap_effective: 1 << 13,
            ..user
        };
        assert!(ping.escalates_from(&user));
    }
}
