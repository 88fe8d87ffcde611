//! The syscalls whose results the sensor reads, declared once: their x86_64 numbers, names and
//! the family that reads them. The kernel programs dispatch on the numbers, the daemon attaches
//! one `syscalls:sys_exit_<name>` tracepoint per entry and names the syscalls in events.

/// Which event family reads a syscall's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    File,
    /// Loop-device ioctls and read-only switches.
    BlockDevice,
    Privilege,
    Mount,
    Network,
    /// Renames and root changes: names the file filters remembered may now mean other files.
    Names,
}

/// One watched syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    pub nr: u32,
    pub name: &'static str,
    pub family: Family,
}

macro_rules! watched_syscalls {
    ($($konst:ident = $nr:literal, $name:literal $(tracepoint $tp:literal)?, $family:ident;)*) => {
        $(#[doc = concat!("`", $name, "`")] pub const $konst: u32 = $nr;)*

        /// Every watched syscall.
        pub const WATCHED: &[Syscall] = &[
            $(Syscall { nr: $nr, name: $name, family: Family::$family },)*
        ];

        /// The name of each one's exit tracepoint (`syscalls:sys_exit_<name>`).
        pub const TRACEPOINTS: &[&str] = &[$(watched_syscalls!(@tp $name $($tp)?),)*];
    };
    (@tp $name:literal $tp:literal) => { $tp };
    (@tp $name:literal) => { $name };
}

watched_syscalls! {
    OPEN = 2, "open", File;
    OPENAT = 257, "openat", File;
    OPENAT2 = 437, "openat2", File;
    CREAT = 85, "creat", File;
    IOCTL = 16, "ioctl", BlockDevice;
    SETUID = 105, "setuid", Privilege;
    SETGID = 106, "setgid", Privilege;
    SETREUID = 113, "setreuid", Privilege;
    SETREGID = 114, "setregid", Privilege;
    SETRESUID = 117, "setresuid", Privilege;
    SETRESGID = 119, "setresgid", Privilege;
    SETFSUID = 122, "setfsuid", Privilege;
    SETFSGID = 123, "setfsgid", Privilege;
    SETGROUPS = 116, "setgroups", Privilege;
    CAPSET = 126, "capset", Privilege;
    MOUNT = 165, "mount", Mount;
    // The kernel names umount2's tracepoint after the syscall it replaced.
    UMOUNT2 = 166, "umount2" tracepoint "umount", Mount;
    FSOPEN = 430, "fsopen", Mount;
    FSCONFIG = 431, "fsconfig", Mount;
    FSMOUNT = 432, "fsmount", Mount;
    MOVE_MOUNT = 429, "move_mount", Mount;
    CONNECT = 42, "connect", Network;
    ACCEPT = 43, "accept", Network;
    ACCEPT4 = 288, "accept4", Network;
    LISTEN = 50, "listen", Network;
    BIND = 49, "bind", Network;
    // Only SO_ERROR, for the outcome of a connect the application learnt before the kernel's
    // state change was seen.
    GETSOCKOPT = 55, "getsockopt", Network;
    RENAME = 82, "rename", Names;
    RENAMEAT = 264, "renameat", Names;
    RENAMEAT2 = 316, "renameat2", Names;
    PIVOT_ROOT = 155, "pivot_root", Names;
}

/// The watched syscall numbered `nr`.
pub fn watched(nr: u32) -> Option<&'static Syscall> {
    WATCHED.iter().find(|s| s.nr == nr)
}
