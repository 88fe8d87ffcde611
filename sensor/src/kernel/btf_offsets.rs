//! Resolves [`KernelOffsets`] from the running kernel's BTF.
//!
//! Members are looked up by name, descending into anonymous structs and unions (task_struct and
//! mm_struct group many fields that way, and `randomize_layout` kernels reorder them), so the
//! offsets match the kernel actually running, not the one the programs were built on.
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use btf_rs::{Btf, BtfType, Type};
use sensor_common::{
    offsets::{spans, MISSING},
    KernelOffsets,
};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Struct member lookups over one BTF blob.
pub struct BtfLayout {
    btf: Btf,
}

impl BtfLayout {
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "{} does not exist: this kernel was built without BTF (CONFIG_DEBUG_INFO_BTF=y is \
                 required; most distribution kernels since 5.4 have it)",
                path.display()
            );
        }
        let btf = Btf::from_file(path)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("reading kernel BTF from {}", path.display()))?;
        Ok(Self { btf })
    }

    pub fn from_running_kernel() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Byte offset of `member` in `struct name`, or `None` when this kernel has no such member.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<Option<u32>> {
        let composite = self.find_composite(name)?;
        Ok(self
            .search_members(&composite, member, 0)?
            .map(|bits| bits / 8))
    }

    /// Like [`Self::member_offset`], for members the sensor cannot work without.
    pub fn required(&self, name: &str, member: &str) -> Result<u32> {
        self.member_offset(name, member)?.ok_or_else(|| {
            anyhow!("kernel BTF has no member {name}.{member}: this kernel is not supported")
        })
    }

    /// Like [`Self::member_offset`], mapping an absent member (or struct) to [`MISSING`].
    pub fn optional(&self, name: &str, member: &str) -> Result<u32> {
        Ok(self
            .member_offset(name, member)
            .ok()
            .flatten()
            .unwrap_or(MISSING))
    }

    fn find_composite(&self, name: &str) -> Result<btf_rs::Struct> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("kernel BTF has no type {name}"))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name} with members"))
    }

    /// Depth-first search for `member`; returns its bit offset from the outermost struct.
    fn search_members(
        &self,
        composite: &btf_rs::Struct,
        member: &str,
        base_bits: u32,
    ) -> Result<Option<u32>> {
        for m in &composite.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return Ok(Some(base_bits + m.bit_offset()));
            }
            if name.is_empty() {
                if let Some(inner) = self.composite_of(m)? {
                    if let Some(found) =
                        self.search_members(&inner, member, base_bits + m.bit_offset())?
                    {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// The struct/union a member's type is, through typedefs and qualifiers.
    fn composite_of(&self, member: &dyn BtfType) -> Result<Option<btf_rs::Struct>> {
        let mut ty = self
            .btf
            .resolve_chained_type(member)
            .map_err(|e| anyhow!("{e}"))?;
        for _ in 0..16 {
            ty = match ty {
                Type::Struct(s) | Type::Union(s) => return Ok(Some(s)),
                Type::Typedef(ref t) => self.chain(t)?,
                Type::Const(ref t) => self.chain(t)?,
                Type::Volatile(ref t) => self.chain(t)?,
                Type::Restrict(ref t) => self.chain(t)?,
                Type::TypeTag(ref t) => self.chain(t)?,
                _ => return Ok(None),
            };
        }
        Ok(None)
    }

    fn chain(&self, t: &dyn BtfType) -> Result<Type> {
        self.btf.resolve_chained_type(t).map_err(|e| anyhow!("{e}"))
    }
}

/// The start of a span of `len` bytes covering `members` (offset, size), or MISSING when they
/// do not fit in one.
pub fn span(members: &[(u32, u32)], len: usize) -> u32 {
    let start = members.iter().map(|(o, _)| *o).min().unwrap_or(MISSING);
    let end = members
        .iter()
        .map(|(o, s)| o.saturating_add(*s))
        .max()
        .unwrap_or(0);
    if start == MISSING
        || members.iter().any(|(o, _)| *o == MISSING)
        || (end - start) as usize > len
    {
        MISSING
    } else {
        start
    }
}

/// Every offset the programs use, from the running kernel.
pub fn resolve(layout: &BtfLayout) -> Result<KernelOffsets> {
    let mut offsets = resolve_members(layout)?;
    let o = offsets;
    offsets.file_span = span(
        &[
            (o.file_mode, 4),
            (o.file_inode, 8),
            (o.file_path + o.path_mnt, 8),
            (o.file_path + o.path_dentry, 8),
        ],
        spans::FILE,
    );
    offsets.inode_span = span(&[(o.inode_sb, 8), (o.inode_ino, 8)], spans::INODE);
    offsets.dentry_span = span(
        &[
            (o.dentry_parent, 8),
            (o.dentry_name + o.qstr_len, 4),
            (o.dentry_name + o.qstr_name, 8),
        ],
        spans::DENTRY,
    );
    Ok(offsets)
}

fn resolve_members(layout: &BtfLayout) -> Result<KernelOffsets> {
    let l = layout;
    Ok(KernelOffsets {
        task_pid: l.required("task_struct", "pid")?,
        task_tgid: l.required("task_struct", "tgid")?,
        task_real_parent: l.required("task_struct", "real_parent")?,
        task_group_leader: l.required("task_struct", "group_leader")?,
        task_start_boottime: l.required("task_struct", "start_boottime")?,
        task_real_cred: l.required("task_struct", "real_cred")?,
        task_loginuid: l.optional("task_struct", "loginuid")?,
        task_sessionid: l.optional("task_struct", "sessionid")?,
        task_signal: l.required("task_struct", "signal")?,
        task_fs: l.required("task_struct", "fs")?,
        task_mm: l.required("task_struct", "mm")?,
        task_comm: l.required("task_struct", "comm")?,
        task_exit_code: l.required("task_struct", "exit_code")?,
        cred_uid: l.required("cred", "uid")?,
        cred_gid: l.required("cred", "gid")?,
        cred_suid: l.required("cred", "suid")?,
        cred_sgid: l.required("cred", "sgid")?,
        cred_euid: l.required("cred", "euid")?,
        cred_egid: l.required("cred", "egid")?,
        cred_fsuid: l.required("cred", "fsuid")?,
        cred_fsgid: l.required("cred", "fsgid")?,
        cred_group_info: l.required("cred", "group_info")?,
        cred_cap_effective: l.required("cred", "cap_effective")?,
        cred_cap_permitted: l.required("cred", "cap_permitted")?,
        group_info_ngroups: l.required("group_info", "ngroups")?,
        group_info_gid: l.required("group_info", "gid")?,
        signal_live: l.required("signal_struct", "live")?,
        signal_tty: l.required("signal_struct", "tty")?,
        tty_name: l.required("tty_struct", "name")?,
        fs_pwd: l.required("fs_struct", "pwd")?,
        path_mnt: l.required("path", "mnt")?,
        path_dentry: l.required("path", "dentry")?,
        dentry_parent: l.required("dentry", "d_parent")?,
        dentry_name: l.required("dentry", "d_name")?,
        qstr_len: l.required("qstr", "len")?,
        qstr_name: l.required("qstr", "name")?,
        vfsmount_mnt_root: l.required("vfsmount", "mnt_root")?,
        mount_mnt: l.required("mount", "mnt")?,
        mount_parent: l.required("mount", "mnt_parent")?,
        mount_mountpoint: l.required("mount", "mnt_mountpoint")?,
        mm_arg_start: l.required("mm_struct", "arg_start")?,
        mm_arg_end: l.required("mm_struct", "arg_end")?,
        mm_exe_file: l.required("mm_struct", "exe_file")?,
        file_path: l.required("file", "f_path")?,
        file_inode: l.required("file", "f_inode")?,
        file_flags: l.required("file", "f_flags")?,
        file_mode: l.required("file", "f_mode")?,
        inode_ino: l.required("inode", "i_ino")?,
        inode_sb: l.required("inode", "i_sb")?,
        sb_dev: l.required("super_block", "s_dev")?,
        task_files: l.required("task_struct", "files")?,
        files_fdt: l.required("files_struct", "fdt")?,
        fdt_max_fds: l.required("fdtable", "max_fds")?,
        fdt_fd: l.required("fdtable", "fd")?,
        // x86_64 register names; on other architectures the file sensor reports itself
        // unavailable rather than reading the wrong registers.
        regs_orig_ax: l.optional("pt_regs", "orig_ax")?,
        regs_di: l.optional("pt_regs", "di")?,
        regs_si: l.optional("pt_regs", "si")?,
        regs_dx: l.optional("pt_regs", "dx")?,
        regs_r10: l.optional("pt_regs", "r10")?,
        regs_r8: l.optional("pt_regs", "r8")?,
        inode_rdev: l.required("inode", "i_rdev")?,
        bdi_dev_name: l.optional("backing_dev_info", "dev_name")?,
        gendisk_major: l.optional("gendisk", "major")?,
        gendisk_first_minor: l.optional("gendisk", "first_minor")?,
        gendisk_disk_name: l.optional("gendisk", "disk_name")?,
        inode_mode: l.required("inode", "i_mode")?,
        sb_bdev: l.optional("super_block", "s_bdev")?,
        bdev_disk: l.optional("block_device", "bd_disk")?,
        // io_uring may be compiled out; its hooks are then simply not attached.
        kiocb_opcode: l.optional("io_kiocb", "opcode")?,
        io_open_dfd: l.optional("io_open", "dfd")?,
        io_open_file_slot: l.optional("io_open", "file_slot")?,
        io_open_filename: l.optional("io_open", "filename")?,
        io_open_how: l.optional("io_open", "how")?,
        filename_name: l.optional("filename", "name")?,
        cqe_res: l.optional("io_uring_cqe", "res")?,
        file_span: MISSING,
        inode_span: MISSING,
        dentry_span: MISSING,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Option<BtfLayout> {
        BtfLayout::from_running_kernel().ok()
    }

    #[test]
    fn resolves_every_offset_on_this_kernel() {
        let Some(layout) = layout() else {
            eprintln!("skipped: no kernel BTF on this machine");
            return;
        };
        let offsets = resolve(&layout).expect("all required members present");
        // qstr is { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const char *name; }
        assert_eq!(
            offsets.qstr_len, 4,
            "len sits inside an anonymous struct in a union"
        );
        assert_eq!(offsets.qstr_name, 8);
        assert_eq!(offsets.path_mnt, 0);
        assert_eq!(offsets.path_dentry, 8);
        assert!(
            offsets.task_tgid > offsets.task_pid,
            "tgid follows pid in task_struct"
        );
    }

    #[test]
    fn spans_cover_their_members_or_are_missing() {
        assert_eq!(span(&[(40, 8), (64, 8)], 48), 40);
        assert_eq!(span(&[(40, 8), (96, 8)], 48), MISSING, "too far apart");
        assert_eq!(span(&[(40, 8), (MISSING, 8)], 48), MISSING);
        if let Some(layout) = layout() {
            let offsets = resolve(&layout).unwrap();
            assert_ne!(
                offsets.dentry_span, MISSING,
                "this kernel's dentry fits a span"
            );
        }
    }

    #[test]
    fn a_kernel_without_btf_gets_an_explanation() {
        let err = BtfLayout::from_file(Path::new("/nonexistent/vmlinux"))
            .err()
            .expect("missing BTF is an error");
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    #[test]
    fn unknown_member_is_none_and_required_errors() {
        let Some(layout) = layout() else {
            return;
        };
        assert_eq!(
            layout
                .member_offset("task_struct", "no_such_member")
                .unwrap(),
            None
        );
        let err = layout
            .required("task_struct", "no_such_member")
            .unwrap_err();
        assert!(err.to_string().contains("task_struct.no_such_member"));
    }
}
