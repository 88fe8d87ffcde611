//! The file family: open(2)-family syscalls and io_uring opens, and the in-kernel filters and
//! deduplication that decide which are sent.
use crate::{kind, BlobRef, Record, RecordHeader, TaskInfo, PATH_MAX};

/// Flags in [`FileOpenRecord::flags`].
pub mod file_flags {
    /// The resolved path hit the walk's depth or size limit; `path` is a suffix.
    pub const PATH_TRUNCATED: u32 = 1 << 0;
    /// The directory a relative request was resolved against was truncated the same way.
    pub const DIR_TRUNCATED: u32 = 1 << 1;
    /// The requested path (failed opens) could not be read from user memory.
    pub const PATH_UNREADABLE: u32 = 1 << 2;
    /// First open of a deduplication window: identical opens that follow are counted in the
    /// kernel (see `FileDedupKey`) instead of sent.
    pub const DEDUP_FIRST: u32 = 1 << 3;
    /// A write open on a watched device (removable media, loop devices): reported whatever the
    /// filters and deduplication say.
    pub const WATCHED_DEVICE: u32 = 1 << 4;
    /// Reported at the permission check (LSM `file_open`), before the descriptor exists:
    /// `ret` is 0, not the fd.
    pub const FD_UNKNOWN: u32 = 1 << 5;
}

/// Bits of [`FileOpenRecord::access_flags`]: the inputs of the kernel's permission check, read
/// at the open (success only).
pub mod access_flags {
    /// The owner, group, mode and capability fields were read.
    pub const KNOWN: u32 = 1 << 0;
    /// The open created the file: the check was write and search on its directory.
    pub const ON_DIRECTORY: u32 = 1 << 1;
    /// The inode has no POSIX ACL (the kernel's cached answer).
    pub const NO_ACL: u32 = 1 << 2;
    /// The inode's ACL was never read by the kernel, so no check consulted it.
    pub const ACL_NOT_READ: u32 = 1 << 3;
    /// The filesystem does not cache ACLs, or the entries could not be read: an ACL may exist.
    pub const ACL_UNKNOWN: u32 = 1 << 4;
    /// The ACL had more entries than [`super::MAX_ACL_ENTRIES`]; `acl` holds the first ones.
    pub const ACL_TRUNCATED: u32 = 1 << 5;
    /// The opener's effective capability set held CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH.
    pub const CAP_DAC_OVERRIDE: u32 = 1 << 6;
    pub const CAP_DAC_READ_SEARCH: u32 = 1 << 7;
}

/// One POSIX ACL entry as the kernel stores it (`struct posix_acl_entry`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AclEntry {
    /// ACL_USER_OBJ (1), ACL_USER (2), ACL_GROUP_OBJ (4), ACL_GROUP (8), ACL_MASK (0x10),
    /// ACL_OTHER (0x20).
    pub tag: u16,
    /// rwx bits (4, 2, 1).
    pub perm: u16,
    /// The user or group id of ACL_USER and ACL_GROUP entries.
    pub id: u32,
}

/// ACL entries copied per open at most.
pub const MAX_ACL_ENTRIES: usize = 16;

/// The syscall behind a [`FileOpenRecord`].
pub mod open_syscall {
    pub const OPEN: u32 = 1;
    pub const OPENAT: u32 = 2;
    pub const OPENAT2: u32 = 3;
    pub const CREAT: u32 = 4;
    /// IORING_OP_OPENAT through io_uring.
    pub const IO_URING_OPENAT: u32 = 5;
    /// IORING_OP_OPENAT2 through io_uring.
    pub const IO_URING_OPENAT2: u32 = 6;
}

/// An io_uring open request seen at submission, kept until its completion (the kernel frees
/// its copy of the path before then).
#[repr(C)]
pub struct UringOpen {
    pub syscall: u32,
    pub dfd: i32,
    pub flags: u32,
    /// Non-zero: the file goes to a fixed-file slot, not a descriptor.
    pub file_slot: u32,
    pub path_len: u32,
    pub _pad: u32,
    pub path: [u8; PATH_MAX],
}

/// Bits of [`FileFilterConfig::flags`].
pub mod filter_flags {
    /// The file sensor is on.
    pub const ENABLED: u32 = 1 << 0;
    /// Only opens that can modify the file (write access, create, truncate) are reported.
    pub const WRITES_ONLY: u32 = 1 << 1;
    /// Per dimension: the map has rules (worth a lookup), and some are includes (so a value
    /// that matches none is dropped).
    pub const PATH_RULES: u32 = 1 << 2;
    pub const PATH_INCLUDES: u32 = 1 << 3;
    pub const UID_RULES: u32 = 1 << 4;
    pub const UID_INCLUDES: u32 = 1 << 5;
    pub const COMM_RULES: u32 = 1 << 6;
    pub const COMM_INCLUDES: u32 = 1 << 7;
    pub const CGROUP_RULES: u32 = 1 << 8;
    pub const CGROUP_INCLUDES: u32 = 1 << 9;
    pub const EXE_RULES: u32 = 1 << 10;
    pub const EXE_INCLUDES: u32 = 1 << 11;
    /// `WATCHED_DEVICES` has entries (worth a lookup on write opens).
    pub const WATCHED_DEVICES: u32 = 1 << 12;
    /// Path-rule exclusions may be remembered per name in `OPEN_VERDICTS`: every way a name
    /// can change (renames, io_uring renames, mounts) is hooked.
    pub const VERDICT_CACHE: u32 = 1 << 13;
    /// Reported opens carry the permission check's inputs (`FileOpenRecord::access_flags`).
    pub const ACCESS_BASIS: u32 = 1 << 14;
}

/// Values of the filter maps.
pub mod filter_action {
    pub const INCLUDE: u32 = 1;
    pub const EXCLUDE: u32 = 2;
    /// Kept (a policy's sensitive path), without making the other paths need an include.
    pub const KEEP: u32 = 3;
    /// Read-only opens are dropped, opens that can modify the file kept (the dynamic loader's
    /// and locale files every process reads).
    pub const EXCLUDE_READS: u32 = 4;
}

/// An open(2)-family syscall completed, successfully or not.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileOpenRecord {
    pub header: RecordHeader,
    pub task: TaskInfo,
    /// One of [`open_syscall`].
    pub syscall: u32,
    /// [`file_flags`].
    pub flags: u32,
    /// open(2) flags: the opened file's `f_flags` on success, the requested flags on failure.
    pub open_flags: u32,
    /// The opened file's `f_mode` (FMODE_READ = 1, FMODE_WRITE = 2); 0 on failure.
    pub fmode: u32,
    /// The new file descriptor, or -errno.
    pub ret: i32,
    /// The directory fd the request was relative to (AT_FDCWD = -100).
    pub dfd: i32,
    /// Kernel dev_t of the file's filesystem (major << 20 | minor); 0 on failure.
    pub dev: u32,
    /// [`access_flags`].
    pub access_flags: u32,
    pub ino: u64,
    /// The opened file's owner, group and mode (`i_uid`, `i_gid`, `i_mode`); 0 on failure.
    pub file_uid: u32,
    pub file_gid: u32,
    pub file_mode: u32,
    pub _pad: u32,
    /// The inode the permission check was made on: the file itself, or its directory when the
    /// open created the file ([`access_flags::ON_DIRECTORY`]).
    pub checked_uid: u32,
    pub checked_gid: u32,
    pub checked_mode: u32,
    /// Entries of the checked inode's cached POSIX ACL, as the kernel holds them.
    pub acl: BlobRef,
    /// Identical opens counted in this record's dedup window so far (the first record of a
    /// window carries the running total of the previous windows, see `sensor`'s dedup module).
    pub suppressed_total: u64,
    /// The opener's `mm` and `real_cred` pointers, part of the dedup key (a new program image
    /// or new credentials start new windows). Never output.
    pub key_mm: u64,
    pub key_cred: u64,
    /// Success: the opened file's absolute path, resolved in the kernel. Failure: the path as
    /// the caller passed it.
    pub path: BlobRef,
    /// Failure with a relative path: the directory it was relative to (cwd or `dfd`).
    pub dir: BlobRef,
}

/// Blob offsets of file records are masked to 13 bits: a path and a directory, 4 KiB each.
pub const FILE_BLOB_OFFSET_MASK: usize = 0x1fff;
pub const FILE_BLOB_CAP: usize = FILE_BLOB_OFFSET_MASK + 1 + PATH_MAX;

/// Kernel-side staging area for a file record.
#[repr(C)]
pub struct FileBuffer {
    pub record: FileOpenRecord,
    pub blob: [u8; FILE_BLOB_CAP],
}

/// Runtime filter settings, in slot 0 of the `FILE_FILTER` array; the daemon rewrites it on
/// reload, without reloading programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileFilterConfig {
    /// [`filter_flags`].
    pub flags: u32,
    /// Changes whenever the daemon replaces the rules: remembered verdicts of older rules no
    /// longer count.
    pub rules_generation: u32,
    /// Identical opens within this many nanoseconds of a window's first are counted, not sent;
    /// 0 turns deduplication off.
    pub dedup_window_ns: u64,
}

/// A name an open went through: its dentry and mount (kernel addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenVerdictKey {
    pub dentry: u64,
    pub vfsmount: u64,
}

/// A path rule's exclusion of a name, remembered so that the next open of the same name is
/// dropped without resolving its path. It holds only while the name is what it was: the same
/// inode, parent directory and name (a freed dentry's memory may hold another name later), no
/// rename or mount anywhere since (`names_generation`), and the same rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenVerdict {
    /// The inode's address: read with the file's other members, where its number would take
    /// one more read of kernel memory on every open the verdict drops.
    pub inode: u64,
    pub parent: u64,
    /// The dentry's `d_name.hash_len`: the name's hash and length.
    pub name_hash_len: u64,
    pub names_generation: u64,
    pub rules_generation: u32,
    /// The [`filter_action`] of the rule that matched.
    pub action: u32,
}

pub const OPEN_VERDICTS_ENTRIES: u32 = 8192;

/// Bytes of a path compared against the prefix rules (the LPM trie's key limit is 256).
pub const PREFIX_MAX: usize = 252;

/// Key of the `PATH_PREFIXES` LPM trie: the prefix length in bits, then the path bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PrefixKey {
    pub prefix_len: u32,
    pub data: [u8; PREFIX_MAX],
}

/// Identity of "the same open" for deduplication: same process, program image and credentials,
/// same file, same access. After an execve or a credential change the opens are someone else's
/// to report, so `mm` and `cred` (the kernel objects' addresses) are part of the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileDedupKey {
    pub tgid: u32,
    /// open flags that define the access: O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND.
    pub access: u32,
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
    pub mm: u64,
    pub cred: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileDedupState {
    /// When the current window began (CLOCK_BOOTTIME ns).
    pub window_start_ns: u64,
    /// Opens counted instead of sent, over the life of this entry (never reset).
    pub suppressed_total: u64,
}

/// File-open filter maps.
pub const FILE_FILTER_MAP: &str = "FILE_FILTER";
pub const PATH_PREFIXES_MAP: &str = "PATH_PREFIXES";
pub const FILTER_UIDS_MAP: &str = "FILTER_UIDS";
pub const FILTER_COMMS_MAP: &str = "FILTER_COMMS";
pub const FILTER_CGROUPS_MAP: &str = "FILTER_CGROUPS";
/// Executables filtered by (dev, inode) of their file, see [`ExeKey`].
pub const FILTER_EXES_MAP: &str = "FILTER_EXES";
pub const FILE_DEDUP_MAP: &str = "FILE_DEDUP";
/// Dedup windows the kernel keeps for file opens (an LRU map).
pub const FILE_DEDUP_ENTRIES: u32 = 65536;
/// Devices (kernel dev_t) whose write opens are always reported.
pub const WATCHED_DEVICES_MAP: &str = "WATCHED_DEVICES";
/// Slot 0 is 1 while LSM `file_open` reports successful opens (`sys_exit` then reports only
/// failures).
pub const OPEN_HOOK_MAP: &str = "OPEN_HOOK";

/// An executable file, as filter key: its filesystem's dev_t and its inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

const _: () = assert!(core::mem::size_of::<FileOpenRecord>() == 384);
const _: () = assert!(core::mem::size_of::<FileBuffer>() <= 32 * 1024);
const _: () = assert!(PATH_MAX + PATH_MAX <= FILE_BLOB_OFFSET_MASK + 1);
const _: () = assert!(core::mem::size_of::<PrefixKey>() == 256);
const _: () = assert!(core::mem::size_of::<AclEntry>() == 8);
const _: () = assert!(core::mem::size_of::<FileDedupKey>() == 40);

// SAFETY: repr(C), starts with its header, all integers (zero is valid).
unsafe impl Record for FileOpenRecord {
    const KIND: u32 = kind::FILE_OPEN;
}
