//! Resolves [`KernelOffsets`] from the running kernel's BTF.
//!
//! Members are looked up by name, descending into anonymous structs and unions (task_struct and
//! mm_struct group many fields that way, and `randomize_layout` kernels reorder them), so the
//! offsets match the kernel actually running, not the one the programs were built on.
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use sensor_common::{
    offsets::{spans, MISSING},
    KernelOffsets,
};

use super::btf_reader::KernelBtf;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Struct member lookups over one BTF blob.
pub struct BtfLayout {
    btf: KernelBtf,
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
        let context = || format!("reading kernel BTF from {}", path.display());
        let data = std::fs::read(path).with_context(context)?;
        let btf = KernelBtf::parse(data).with_context(context)?;
        Ok(Self { btf })
    }

    pub fn from_running_kernel() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// The kernel's BTF with its types' names and kinds only (see
    /// [`KernelBtf::names_and_kinds`]), for finding the ids programs attach to.
    pub fn names_and_kinds(&self) -> Result<Vec<u8>> {
        self.btf.names_and_kinds()
    }

    /// The BTF id of `struct name`, where this kernel has it with members.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.btf.struct_named(name)
    }

    /// The BTF id of the kernel function `name`, where this kernel has it.
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.btf.function_named(name)
    }

    /// Byte offset of `member` in `struct name`, or `None` when this kernel has no such member.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<Option<u32>> {
        let composite = self
            .btf
            .struct_named(name)
            .ok_or_else(|| anyhow!("kernel BTF has no struct {name} with members"))?;
        Ok(self
            .search_members(composite, member, 0)?
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

    /// Depth-first search for `member` in struct `composite`; returns its bit offset from the
    /// outermost struct.
    fn search_members(&self, composite: u32, member: &str, base_bits: u32) -> Result<Option<u32>> {
        for m in self.btf.members(composite)? {
            if m.name == member {
                return Ok(Some(base_bits + m.bit_offset));
            }
            if m.name.is_empty() {
                if let Some(inner) = self.btf.composite_behind(m.type_id)? {
                    if let Some(found) =
                        self.search_members(inner, member, base_bits + m.bit_offset)?
                    {
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
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
            (o.dentry_name + o.qstr_hash, 4),
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

    /// Every member the programs use is where btf-rs, a general BTF parser, puts it.
    #[test]
    fn every_offset_agrees_with_a_general_btf_parser() {
        let Some(layout) = layout() else {
            return;
        };
        let oracle = btf_rs::Btf::from_file(VMLINUX_BTF).expect("btf-rs reads the kernel BTF");
        let mut compared = 0;
        KernelOffsets::from_members(|m| -> Result<u32> {
            let ours = layout.optional(m.struct_name, m.member)?;
            let theirs = oracle::offset(&oracle, m.struct_name, m.member);
            assert_eq!(ours, theirs, "{}.{}", m.struct_name, m.member);
            compared += u32::from(ours != MISSING);
            Ok(ours)
        })
        .unwrap();
        assert!(compared >= 30, "only {compared} members found");
    }

    /// Member offsets by btf-rs: depth-first through anonymous members.
    mod oracle {
        use btf_rs::{Btf, Struct, Type};
        use sensor_common::offsets::MISSING;

        pub fn offset(btf: &Btf, name: &str, member: &str) -> u32 {
            let found = btf.resolve_types_by_name(name).ok().and_then(|types| {
                types.into_iter().find_map(|t| match t {
                    Type::Struct(s) | Type::Union(s) if !s.members.is_empty() => Some(s),
                    _ => None,
                })
            });
            found
                .and_then(|s| search(btf, &s, member, 0))
                .map_or(MISSING, |bits| bits / 8)
        }

        fn search(btf: &Btf, composite: &Struct, member: &str, base: u32) -> Option<u32> {
            for m in &composite.members {
                let name = btf.resolve_name(m).unwrap_or_default();
                if name == member {
                    return Some(base + m.bit_offset());
                }
                let inner = name.is_empty().then(|| composite_of(btf, m)).flatten();
                if let Some(found) =
                    inner.and_then(|s| search(btf, &s, member, base + m.bit_offset()))
                {
                    return Some(found);
                }
            }
            None
        }

        fn composite_of(btf: &Btf, member: &btf_rs::Member) -> Option<Struct> {
            let mut ty = btf.resolve_chained_type(member).ok()?;
            for _ in 0..16 {
                ty = match ty {
                    Type::Struct(s) | Type::Union(s) => return Some(s),
                    Type::Typedef(t) => btf.resolve_chained_type(&t).ok()?,
                    Type::Const(t) => btf.resolve_chained_type(&t).ok()?,
                    Type::Volatile(t) => btf.resolve_chained_type(&t).ok()?,
                    Type::Restrict(t) => btf.resolve_chained_type(&t).ok()?,
                    Type::TypeTag(t) => btf.resolve_chained_type(&t).ok()?,
                    _ => return None,
                };
            }
            None
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
