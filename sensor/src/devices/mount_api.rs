//! The new mount API in steps: fsopen gives a context fd with a filesystem type, fsconfig sets
//! its "source", fsmount turns it into a mount fd, and move_mount attaches that to the tree.
//! The steps are remembered per process and fd so the final move_mount reports the whole
//! mount.
use std::collections::HashMap;

/// What is known about a filesystem context or detached mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub fstype: Vec<u8>,
    pub source: Vec<u8>,
}

/// Contexts and mounts in flight, by (process, fd). Bounded: a process that leaks contexts
/// cannot grow it without end.
#[derive(Default)]
pub struct MountSteps {
    by_fd: HashMap<(u32, i32), Pending>,
}

const MAX_PENDING: usize = 4096;

impl MountSteps {
    /// fsopen returned the context `fd` for `fstype`.
    pub fn opened(&mut self, pid: u32, fd: i32, fstype: Vec<u8>) {
        if self.by_fd.len() >= MAX_PENDING {
            self.by_fd.clear();
        }
        self.by_fd.insert(
            (pid, fd),
            Pending {
                fstype,
                source: Vec::new(),
            },
        );
    }

    /// fsconfig set the context's source.
    pub fn configured(&mut self, pid: u32, fd: i32, source: Vec<u8>) {
        self.by_fd.entry((pid, fd)).or_default().source = source;
    }

    /// fsmount made mount fd `mount_fd` from context `fd`.
    pub fn mounted(&mut self, pid: u32, fd: i32, mount_fd: i32) {
        let pending = self.by_fd.get(&(pid, fd)).cloned().unwrap_or_default();
        self.by_fd.insert((pid, mount_fd), pending);
    }

    /// What move_mount of `fd` attaches, if the earlier steps were seen.
    pub fn moved(&mut self, pid: u32, fd: i32) -> Option<Pending> {
        self.by_fd.remove(&(pid, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fold_into_what_move_mount_attaches() {
        let mut steps = MountSteps::default();
        steps.opened(10, 3, b"ext4".to_vec());
        steps.configured(10, 3, b"/dev/loop8".to_vec());
        steps.mounted(10, 3, 4);
        assert_eq!(steps.moved(11, 4), None, "another process's fd");
        let pending = steps.moved(10, 4).unwrap();
        assert_eq!(
            (pending.fstype.as_slice(), pending.source.as_slice()),
            (&b"ext4"[..], &b"/dev/loop8"[..])
        );
        assert_eq!(steps.moved(10, 4), None);
    }
}
