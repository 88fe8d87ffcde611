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
    let mut inode_members = vec![
        (o.inode_mode, 2),
        (o.inode_uid, 4),
        (o.inode_gid, 4),
        (o.inode_sb, 8),
        (o.inode_ino, 8),
    ];
    // Without POSIX ACLs the other members still share one read.
    if o.inode_acl != MISSING {
        inode_members.push((o.inode_acl, 8));
    }
    offsets.inode_span = span(&inode_members, spans::INODE);
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
    KernelOffsets::from_members(|m| match m.required {
        true => layout.required(m.struct_name, m.member),
        false => layout.optional(m.struct_name, m.member),
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
        assert_eq!(offsets.qstr_hash, 0);
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
