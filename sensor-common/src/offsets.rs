//! Byte offsets of the kernel struct members the programs read.
//!
//! Rust eBPF has no CO-RE relocations for kernel structs, so the daemon resolves these from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) at start-up and writes them into the programs'
//! read-only data before load. One binary then runs on every BTF-enabled kernel.

/// Marks a member the running kernel does not have (e.g. `loginuid` without CONFIG_AUDIT).
pub const MISSING: u32 = u32::MAX;

/// Offsets, in bytes from the start of the named struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    // struct task_struct
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_real_cred: u32,
    pub task_loginuid: u32,
    pub task_sessionid: u32,
    pub task_signal: u32,
    pub task_fs: u32,
    pub task_mm: u32,
    pub task_comm: u32,
    pub task_exit_code: u32,
    // struct cred
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_suid: u32,
    pub cred_sgid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub cred_fsuid: u32,
    pub cred_fsgid: u32,
    pub cred_group_info: u32,
    pub cred_cap_effective: u32,
    pub cred_cap_permitted: u32,
    // struct group_info
    pub group_info_ngroups: u32,
    pub group_info_gid: u32,
    // struct signal_struct
    pub signal_live: u32,
    pub signal_tty: u32,
    // struct tty_struct
    pub tty_name: u32,
    // struct fs_struct
    pub fs_pwd: u32,
    // struct path
    pub path_mnt: u32,
    pub path_dentry: u32,
    // struct dentry
    pub dentry_parent: u32,
    pub dentry_name: u32,
    // struct qstr
    pub qstr_len: u32,
    pub qstr_name: u32,
    // struct vfsmount
    pub vfsmount_mnt_root: u32,
    // struct mount
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    // struct mm_struct
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_exe_file: u32,
    // struct file
    pub file_path: u32,
    pub file_inode: u32,
    pub file_flags: u32,
    pub file_mode: u32,
    // struct inode / super_block
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    // struct task_struct -> files_struct -> fdtable
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    // struct pt_regs (x86_64 syscall registers at syscall exit)
    pub regs_orig_ax: u32,
    pub regs_di: u32,
    pub regs_si: u32,
    pub regs_dx: u32,
    pub regs_r10: u32,
    pub regs_r8: u32,
    // struct inode: the device number of a device file
    pub inode_rdev: u32,
    // struct backing_dev_info: "major:minor" of a new disk
    pub bdi_dev_name: u32,
    // struct gendisk: a disk's numbers and name; struct inode: the file type
    pub gendisk_major: u32,
    pub gendisk_first_minor: u32,
    pub gendisk_disk_name: u32,
    pub inode_mode: u32,
    // super_block -> block_device -> gendisk: the whole disk behind a mounted partition
    pub sb_bdev: u32,
    pub bdev_disk: u32,
    // io_uring: struct io_kiocb, struct io_open (at the start of the request), struct filename,
    // struct io_uring_cqe
    pub kiocb_opcode: u32,
    pub io_open_dfd: u32,
    pub io_open_file_slot: u32,
    pub io_open_filename: u32,
    pub io_open_how: u32,
    pub filename_name: u32,
    pub cqe_res: u32,
    // Starts of "spans": byte ranges read with one helper call to pick several members, or
    // MISSING where this kernel's layout spreads them wider than the span (see `spans`).
    pub file_span: u32,
    pub inode_span: u32,
    pub dentry_span: u32,
}

/// Span lengths, in bytes.
pub mod spans {
    /// `file`: f_mode, f_inode and f_path.
    pub const FILE: usize = 96;
    /// `inode`: i_sb and i_ino.
    pub const INODE: usize = 48;
    /// `dentry`: d_parent and d_name.
    pub const DENTRY: usize = 32;
}

impl KernelOffsets {
    /// Every offset [`MISSING`]: what the programs see if the daemon never filled them in.
    pub const UNSET: Self = Self {
        task_pid: MISSING,
        task_tgid: MISSING,
        task_real_parent: MISSING,
        task_group_leader: MISSING,
        task_start_boottime: MISSING,
        task_real_cred: MISSING,
        task_loginuid: MISSING,
        task_sessionid: MISSING,
        task_signal: MISSING,
        task_fs: MISSING,
        task_mm: MISSING,
        task_comm: MISSING,
        task_exit_code: MISSING,
        cred_uid: MISSING,
        cred_gid: MISSING,
        cred_suid: MISSING,
        cred_sgid: MISSING,
        cred_euid: MISSING,
        cred_egid: MISSING,
        cred_fsuid: MISSING,
        cred_fsgid: MISSING,
        cred_group_info: MISSING,
        cred_cap_effective: MISSING,
        cred_cap_permitted: MISSING,
        group_info_ngroups: MISSING,
        group_info_gid: MISSING,
        signal_live: MISSING,
        signal_tty: MISSING,
        tty_name: MISSING,
        fs_pwd: MISSING,
        path_mnt: MISSING,
        path_dentry: MISSING,
        dentry_parent: MISSING,
        dentry_name: MISSING,
        qstr_len: MISSING,
        qstr_name: MISSING,
        vfsmount_mnt_root: MISSING,
        mount_mnt: MISSING,
        mount_parent: MISSING,
        mount_mountpoint: MISSING,
        mm_arg_start: MISSING,
        mm_arg_end: MISSING,
        mm_exe_file: MISSING,
        file_path: MISSING,
        file_inode: MISSING,
        file_flags: MISSING,
        file_mode: MISSING,
        inode_ino: MISSING,
        inode_sb: MISSING,
        sb_dev: MISSING,
        task_files: MISSING,
        files_fdt: MISSING,
        fdt_max_fds: MISSING,
        fdt_fd: MISSING,
        regs_orig_ax: MISSING,
        regs_di: MISSING,
        regs_si: MISSING,
        regs_dx: MISSING,
        regs_r10: MISSING,
        regs_r8: MISSING,
        inode_rdev: MISSING,
        bdi_dev_name: MISSING,
        gendisk_major: MISSING,
        gendisk_first_minor: MISSING,
        gendisk_disk_name: MISSING,
        inode_mode: MISSING,
        sb_bdev: MISSING,
        bdev_disk: MISSING,
        kiocb_opcode: MISSING,
        io_open_dfd: MISSING,
        io_open_file_slot: MISSING,
        io_open_filename: MISSING,
        io_open_how: MISSING,
        filename_name: MISSING,
        cqe_res: MISSING,
        file_span: MISSING,
        inode_span: MISSING,
        dentry_span: MISSING,
    };
}
