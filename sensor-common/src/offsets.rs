//! Byte offsets of the kernel struct members the programs read.
//!
//! Rust eBPF has no CO-RE relocations for kernel structs, so the daemon resolves these from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) at start-up and writes them into the programs'
//! read-only data before load. One binary then runs on every BTF-enabled kernel.

/// Marks a member the running kernel does not have (e.g. `loginuid` without CONFIG_AUDIT).
pub const MISSING: u32 = u32::MAX;

/// One member the programs read: where it is, and whether a kernel without it is supported
/// (an optional member reads as [`MISSING`] and its feature reports itself unavailable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub struct_name: &'static str,
    pub member: &'static str,
    pub required: bool,
}

/// Declares every member once: the [`KernelOffsets`] field, its struct and member, and whether
/// it is required.
macro_rules! kernel_offsets {
    ($($(#[$doc:meta])* $field:ident: $st:ident.$member:ident $(($optional:ident))?,)*) => {
        /// Offsets, in bytes from the start of the named struct.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct KernelOffsets {
            $($(#[$doc])* pub $field: u32,)*
            /// Starts of "spans": byte ranges read with one helper call to pick several
            /// members, or MISSING where this kernel's layout spreads them wider than the span
            /// (see `spans`); derived from the members above.
            pub file_span: u32,
            pub inode_span: u32,
            pub dentry_span: u32,
        }

        impl KernelOffsets {
            /// Every offset [`MISSING`]: what the programs see if the daemon never filled them.
            pub const UNSET: Self = Self {
                $($field: MISSING,)*
                file_span: MISSING,
                inode_span: MISSING,
                dentry_span: MISSING,
            };

            /// The offsets with each member's found by `offset_of` (spans left [`MISSING`]).
            pub fn from_members<E>(
                mut offset_of: impl FnMut(&Member) -> Result<u32, E>,
            ) -> Result<Self, E> {
                Ok(Self {
                    $($field: offset_of(&Member {
                        struct_name: stringify!($st),
                        member: stringify!($member),
                        required: !kernel_offsets!(@optional $($optional)?),
                    })?,)*
                    ..Self::UNSET
                })
            }
        }
    };
    (@optional optional) => { true };
    (@optional) => { false };
}

kernel_offsets! {
    // struct task_struct
    task_pid: task_struct.pid,
    task_tgid: task_struct.tgid,
    task_real_parent: task_struct.real_parent,
    task_group_leader: task_struct.group_leader,
    task_start_boottime: task_struct.start_boottime,
    task_real_cred: task_struct.real_cred,
    task_loginuid: task_struct.loginuid (optional),
    task_sessionid: task_struct.sessionid (optional),
    task_signal: task_struct.signal,
    task_fs: task_struct.fs,
    task_mm: task_struct.mm,
    task_comm: task_struct.comm,
    // The task's cgroup (v2) id: task_struct -> css_set -> cgroup -> kernfs_node. Cgroups may
    // be compiled out; the id is then the helper's.
    task_cgroups: task_struct.cgroups (optional),
    css_set_dfl_cgrp: css_set.dfl_cgrp (optional),
    cgroup_kn: cgroup.kn (optional),
    kernfs_node_id: kernfs_node.id (optional),
    task_exit_code: task_struct.exit_code,
    // struct cred
    cred_uid: cred.uid,
    cred_gid: cred.gid,
    cred_suid: cred.suid,
    cred_sgid: cred.sgid,
    cred_euid: cred.euid,
    cred_egid: cred.egid,
    cred_fsuid: cred.fsuid,
    cred_fsgid: cred.fsgid,
    cred_group_info: cred.group_info,
    cred_cap_effective: cred.cap_effective,
    cred_cap_permitted: cred.cap_permitted,
    // struct group_info
    group_info_ngroups: group_info.ngroups,
    group_info_gid: group_info.gid,
    // struct signal_struct
    signal_live: signal_struct.live,
    signal_tty: signal_struct.tty,
    // struct tty_struct
    tty_name: tty_struct.name,
    // struct fs_struct
    fs_pwd: fs_struct.pwd,
    // struct path
    path_mnt: path.mnt,
    path_dentry: path.dentry,
    // struct dentry
    dentry_parent: dentry.d_parent,
    dentry_name: dentry.d_name,
    // struct qstr
    qstr_hash: qstr.hash,
    qstr_len: qstr.len,
    qstr_name: qstr.name,
    // struct vfsmount
    vfsmount_mnt_root: vfsmount.mnt_root,
    // struct mount
    mount_mnt: mount.mnt,
    mount_parent: mount.mnt_parent,
    mount_mountpoint: mount.mnt_mountpoint,
    // struct mm_struct
    mm_arg_start: mm_struct.arg_start,
    mm_arg_end: mm_struct.arg_end,
    mm_exe_file: mm_struct.exe_file,
    // struct linux_binprm: the path execve was given, before symlinks (tp_btf only)
    bprm_filename: linux_binprm.filename,
    // struct file
    file_path: file.f_path,
    file_inode: file.f_inode,
    file_flags: file.f_flags,
    file_mode: file.f_mode,
    // struct inode / super_block
    inode_ino: inode.i_ino,
    inode_sb: inode.i_sb,
    // The permission check's inputs: owner, group and (POSIX ACLs may be compiled out) the
    // cached access ACL; a created file's check is on its directory, the dentry's parent.
    inode_uid: inode.i_uid,
    inode_gid: inode.i_gid,
    inode_acl: inode.i_acl (optional),
    posix_acl_count: posix_acl.a_count (optional),
    posix_acl_entries: posix_acl.a_entries (optional),
    dentry_inode: dentry.d_inode,
    sb_dev: super_block.s_dev,
    // struct task_struct -> files_struct -> fdtable
    task_files: task_struct.files,
    files_fdt: files_struct.fdt,
    // The table a small process's descriptors live in: a descriptor's slot is read as one of
    // its elements, a typed `struct file *` (see `ProgramGlobals::files_struct_type`).
    files_fd_array: files_struct.fd_array (optional),
    fdt_max_fds: fdtable.max_fds,
    fdt_fd: fdtable.fd,
    // struct pt_regs (x86_64 syscall registers at syscall exit)
    // x86_64 register names; on other architectures the file sensor reports itself
    // unavailable rather than reading the wrong registers.
    regs_orig_ax: pt_regs.orig_ax (optional),
    regs_di: pt_regs.di (optional),
    regs_si: pt_regs.si (optional),
    regs_dx: pt_regs.dx (optional),
    regs_r10: pt_regs.r10 (optional),
    regs_r8: pt_regs.r8 (optional),
    // struct inode: the device number of a device file
    inode_rdev: inode.i_rdev,
    // struct backing_dev_info: "major:minor" of a new disk
    bdi_dev_name: backing_dev_info.dev_name (optional),
    // struct gendisk: a disk's numbers and name; struct inode: the file type
    gendisk_major: gendisk.major (optional),
    gendisk_first_minor: gendisk.first_minor (optional),
    gendisk_disk_name: gendisk.disk_name (optional),
    inode_mode: inode.i_mode,
    // super_block -> block_device -> gendisk: the whole disk behind a mounted partition
    sb_bdev: super_block.s_bdev (optional),
    bdev_disk: block_device.bd_disk (optional),
    // io_uring: struct io_kiocb, struct io_open (at the start of the request), struct filename,
    // struct io_uring_cqe
    // io_uring may be compiled out; its hooks are then simply not attached.
    kiocb_opcode: io_kiocb.opcode (optional),
    io_open_dfd: io_open.dfd (optional),
    io_open_file_slot: io_open.file_slot (optional),
    io_open_filename: io_open.filename (optional),
    io_open_how: io_open.how (optional),
    filename_name: filename.name (optional),
    cqe_res: io_uring_cqe.res (optional),
    // struct file -> struct socket -> struct sock (whose first member is its sock_common)
    file_private_data: file.private_data,
    socket_sk: socket.sk,
    sk_family: sock_common.skc_family,
    sk_state: sock_common.skc_state,
    sk_num: sock_common.skc_num,
    sk_dport: sock_common.skc_dport,
    sk_rcv_saddr: sock_common.skc_rcv_saddr,
    sk_daddr: sock_common.skc_daddr,
    // IPv6 may be compiled out; IPv6 sockets then do not exist.
    sk_v6_rcv_saddr: sock_common.skc_v6_rcv_saddr (optional),
    sk_v6_daddr: sock_common.skc_v6_daddr (optional),
    sk_protocol: sock.sk_protocol,
    sk_err: sock.sk_err,
    // A connected Unix socket's peer and the address it is bound to (the path connected to, as
    // the kernel resolved it).
    unix_peer: unix_sock.peer (optional),
    unix_addr: unix_sock.addr (optional),
    unix_address_len: unix_address.len (optional),
    unix_address_name: unix_address.name (optional),
    // Payload bytes of a TCP connection (RFC 4898 counters), read when it closes.
    tcp_bytes_sent: tcp_sock.bytes_sent (optional),
    tcp_bytes_retrans: tcp_sock.bytes_retrans (optional),
    tcp_bytes_received: tcp_sock.bytes_received (optional),
}

/// Span lengths, in bytes.
pub mod spans {
    /// `file`: f_mode, f_inode and f_path.
    pub const FILE: usize = 96;
    /// `inode`: i_mode, i_uid, i_gid, i_acl, i_sb and i_ino.
    pub const INODE: usize = 96;
    /// `dentry`: d_parent and d_name.
    pub const DENTRY: usize = 32;
}
