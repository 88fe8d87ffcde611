//! The kernel's BTF read in place: the raw blob and where each type starts, nothing more.
//!
//! The programs need a few dozen struct members. General BTF parsers build every one of the
//! kernel's types and names as owned values first, which at start-up took more memory than the
//! daemon then uses in all (about 44 MiB for a 5.5 MB vmlinux), so the daemon's peak was that
//! parse. This walks the type section once, keeps one `u32` per type, and reads members from
//! the blob when asked (format: the kernel's Documentation/bpf/btf.rst).
use std::ops::Range;

use anyhow::{bail, Context as _, Result};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size or type.
const TYPE_LEN: usize = 12;
/// `struct btf_member`: name_off, type, offset.
const MEMBER_LEN: usize = 12;
/// Typedefs and qualifiers followed from a member to its struct before giving up.
const MAX_CHAIN: usize = 16;

/// `BTF_KIND_*`.
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

pub struct KernelBtf {
    data: Vec<u8>,
    strings: Range<usize>,
    /// Where each type starts in `data`: type id `n` at index `n - 1` (id 0 is void).
    starts: Vec<u32>,
}

/// A member of a struct or union.
pub struct Member<'a> {
    /// Empty for an anonymous struct or union member.
    pub name: &'a str,
    pub type_id: u32,
    /// From the start of the struct, in bits.
    pub bit_offset: u32,
}

/// One `struct btf_type` header.
struct TypeHeader {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
}

impl KernelBtf {
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let magic = data.get(..2).map(|m| u16::from_ne_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            bail!("not BTF of this machine's byte order (no 0xeb9f magic)");
        }
        let field = |at: usize| read_u32(&data, at).context("BTF header cut short");
        let header_len = field(4)? as usize;
        let section = |off: usize, len: usize| -> Result<Range<usize>> {
            let start = header_len + field(off)? as usize;
            let end = start + field(len)? as usize;
            if header_len < HEADER_LEN || end > data.len() {
                bail!(
                    "BTF section {start}..{end} outside the {} bytes",
                    data.len()
                );
            }
            Ok(start..end)
        };
        let types = section(8, 12)?;
        let strings = section(16, 20)?;
        let starts = type_starts(&data, types)?;
        Ok(Self {
            data,
            strings,
            starts,
        })
    }

    /// The id of the struct or union called `name` that has members (not a declaration).
    pub fn struct_named(&self, name: &str) -> Option<u32> {
        (1..=self.starts.len() as u32).find(|&id| {
            self.header(id).is_ok_and(|t| {
                matches!(t.kind, kind::STRUCT | kind::UNION)
                    && t.vlen > 0
                    && self.string(t.name_off) == name
            })
        })
    }

    /// The id of the function called `name` (kfuncs are listed as functions).
    pub fn function_named(&self, name: &str) -> Option<u32> {
        (1..=self.starts.len() as u32).find(|&id| {
            self.header(id)
                .is_ok_and(|t| t.kind == kind::FUNC && self.string(t.name_off) == name)
        })
    }

    /// The members of struct or union `id`, in order.
    pub fn members(&self, id: u32) -> Result<Vec<Member<'_>>> {
        let t = self.header(id)?;
        if !matches!(t.kind, kind::STRUCT | kind::UNION) {
            bail!("BTF type {id} is not a struct or union");
        }
        let first = self.start(id)? + TYPE_LEN;
        (0..t.vlen)
            .map(|n| {
                let at = first + n * MEMBER_LEN;
                let offset = read_u32(&self.data, at + 8).context("BTF member cut short")?;
                Ok(Member {
                    name: self.string(read_u32(&self.data, at).unwrap_or(0)),
                    type_id: read_u32(&self.data, at + 4).unwrap_or(0),
                    // With kind_flag, the top byte is the bitfield's size.
                    bit_offset: if t.kind_flag {
                        offset & 0xff_ffff
                    } else {
                        offset
                    },
                })
            })
            .collect()
    }

    /// The struct or union that type `id` is, through typedefs and qualifiers.
    pub fn composite_behind(&self, mut id: u32) -> Result<Option<u32>> {
        for _ in 0..MAX_CHAIN {
            if id == 0 {
                return Ok(None);
            }
            let t = self.header(id)?;
            match t.kind {
                kind::STRUCT | kind::UNION => return Ok(Some(id)),
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// This BTF with each type's name, kind and size or referred type, but nothing a type
    /// lists after its header (members, enumerators, parameters, a section's variables): every
    /// type keeps its id. Finding the id of a type by name and kind (what attaching tp_btf, LSM
    /// and fentry programs needs) takes no more; a general parser given the whole builds every
    /// member of every type, which was the daemon's peak of memory.
    pub fn names_and_kinds(&self) -> Result<Vec<u8>> {
        let strings = &self.data[self.strings.clone()];
        let mut types = Vec::with_capacity(self.starts.len() * TYPE_LEN);
        for id in 1..=self.starts.len() as u32 {
            let at = self.start(id)?;
            let t = self.header(id)?;
            let listed = listed_item_len(t.kind).is_some();
            let info = read_u32(&self.data, at + 4).context("BTF type cut short")?;
            let info = if listed { info & !0xffff } else { info };
            types.extend_from_slice(&self.data[at..at + 4]);
            types.extend_from_slice(&info.to_ne_bytes());
            types.extend_from_slice(&t.size_or_type.to_ne_bytes());
            if !listed {
                let extra = trailing_bytes(&t)?;
                let from = at + TYPE_LEN;
                types.extend_from_slice(&self.data[from..from + extra]);
            }
        }
        let mut blob = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
        blob.extend_from_slice(&self.data[..4]);
        let (types_len, strings_len) = (types.len() as u32, strings.len() as u32);
        for word in [HEADER_LEN as u32, 0, types_len, types_len, strings_len] {
            blob.extend_from_slice(&word.to_ne_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(strings);
        Ok(blob)
    }

    fn start(&self, id: u32) -> Result<usize> {
        let index = (id as usize).checked_sub(1).context("BTF type 0 is void")?;
        let start = self.starts.get(index).context("BTF type id out of range")?;
        Ok(*start as usize)
    }

    fn header(&self, id: u32) -> Result<TypeHeader> {
        let at = self.start(id)?;
        header_at(&self.data, at).context("BTF type cut short")
    }

    /// The NUL-terminated string at `offset` in the string section ("" when out of range or
    /// not UTF-8: no member the programs use has such a name).
    fn string(&self, offset: u32) -> &str {
        let start = self.strings.start + offset as usize;
        let Some(bytes) = self.data.get(start..self.strings.end) else {
            return "";
        };
        let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at + 4)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn header_at(data: &[u8], at: usize) -> Option<TypeHeader> {
    let info = read_u32(data, at + 4)?;
    Some(TypeHeader {
        name_off: read_u32(data, at)?,
        kind: (info >> 24) & 0x1f,
        vlen: (info & 0xffff) as usize,
        kind_flag: info >> 31 == 1,
        size_or_type: read_u32(data, at + 8)?,
    })
}

/// Where each type of the section `types` starts.
fn type_starts(data: &[u8], types: Range<usize>) -> Result<Vec<u32>> {
    let mut starts = Vec::with_capacity(types.len() / 24);
    let mut at = types.start;
    while at < types.end {
        let t = header_at(data, at).with_context(|| format!("BTF type at byte {at} cut short"))?;
        starts.push(u32::try_from(at).context("BTF larger than 4 GiB")?);
        at += TYPE_LEN + trailing_bytes(&t).with_context(|| format!("BTF type at byte {at}"))?;
    }
    if at != types.end {
        bail!("the last BTF type runs past its section");
    }
    Ok(starts)
}

/// The bytes that follow a type's header, by kind.
fn trailing_bytes(t: &TypeHeader) -> Result<usize> {
    if let Some(item) = listed_item_len(t.kind) {
        return Ok(item * t.vlen);
    }
    Ok(match t.kind {
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        other => bail!(
            "BTF kind {other} is newer than this custos knows: upgrade custos for this kernel"
        ),
    })
}

/// For kinds whose header is followed by a list of `vlen` items (members, enumerators,
/// parameters, a section's variables), the bytes of one item. Other kinds use `vlen`, if at
/// all, for something else (a function's linkage).
fn listed_item_len(kind: u32) -> Option<usize> {
    match kind {
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => Some(12),
        kind::ENUM | kind::FUNC_PROTO => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types` (each a header and what follows it) and `strings`.
    fn blob(types: &[Vec<u32>], strings: &[u8]) -> Vec<u8> {
        let types: Vec<u8> = types
            .iter()
            .flatten()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let mut data = Vec::new();
        data.extend(MAGIC.to_ne_bytes());
        data.extend([1, 0]);
        for word in [HEADER_LEN, 0, types.len(), types.len(), strings.len()] {
            data.extend((word as u32).to_ne_bytes());
        }
        data.extend(types);
        data.extend(strings);
        data
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    /// 1: int; 2: struct outer { int a; (anonymous) inner_t; int bits:3 at bit 70 }
    /// (kind_flag); 3: typedef inner_t = 4; 4: struct inner { int b at byte 4 }.
    fn sample() -> KernelBtf {
        let strings = b"\0int\0outer\0a\0bits\0inner_t\0inner\0b\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let types = [
            vec![name("int"), info(kind::INT, 0, false), 4, 32],
            vec![
                name("outer"),
                info(kind::STRUCT, 3, true),
                16,
                name("a"),
                1,
                0,
                0,
                3,
                32,
                name("bits"),
                1,
                (3 << 24) | 70,
            ],
            vec![name("inner_t"), info(kind::TYPEDEF, 0, false), 4],
            vec![
                name("inner"),
                info(kind::STRUCT, 1, false),
                8,
                name("b"),
                1,
                32,
            ],
        ];
        KernelBtf::parse(blob(&types, strings)).unwrap()
    }

    #[test]
    fn members_are_read_in_place_through_typedefs_and_bitfields() {
        let btf = sample();
        let outer = btf.struct_named("outer").unwrap();
        assert_eq!(outer, 2);
        assert_eq!(
            btf.struct_named("inner_t"),
            None,
            "a typedef is not a struct"
        );
        let members = btf.members(outer).unwrap();
        let found: Vec<(&str, u32)> = members.iter().map(|m| (m.name, m.bit_offset)).collect();
        assert_eq!(found, [("a", 0), ("", 32), ("bits", 70)]);
        assert_eq!(btf.composite_behind(members[1].type_id).unwrap(), Some(4));
        assert_eq!(btf.composite_behind(members[0].type_id).unwrap(), None);
        assert_eq!(btf.members(4).unwrap()[0].bit_offset, 32);
        assert!(btf.members(1).is_err(), "an int has no members");
        assert!(btf.members(9).is_err(), "no such type");
    }

    #[test]
    fn names_and_kinds_keep_every_id_and_drop_what_types_list() {
        let btf = sample();
        let skeleton = KernelBtf::parse(btf.names_and_kinds().unwrap()).unwrap();
        assert_eq!(skeleton.starts.len(), btf.starts.len());
        for id in 1..=btf.starts.len() as u32 {
            let (full, kept) = (btf.header(id).unwrap(), skeleton.header(id).unwrap());
            assert_eq!(skeleton.string(kept.name_off), btf.string(full.name_off));
            assert_eq!(
                (kept.kind, kept.kind_flag, kept.size_or_type),
                (full.kind, full.kind_flag, full.size_or_type),
                "type {id}"
            );
        }
        let outer = skeleton.header(2).unwrap();
        assert_eq!(outer.vlen, 0, "members dropped");
        assert!(skeleton.members(2).unwrap().is_empty());
        let int = skeleton.start(1).unwrap() + TYPE_LEN;
        assert_eq!(
            read_u32(&skeleton.data, int),
            Some(32),
            "an int keeps its encoding"
        );
    }

    #[test]
    fn bad_blobs_are_refused_with_the_reason() {
        let err = |data: Vec<u8>| format!("{:#}", KernelBtf::parse(data).err().unwrap());
        assert!(err(vec![0; 30]).contains("magic"));
        let one_member = vec![1, info(kind::STRUCT, 1, false), 8, 1, 1, 0];
        let mut cut = blob(&[one_member], b"\0x\0");
        cut.truncate(cut.len() - 3);
        assert!(err(cut).contains("outside"));
        let newer = err(blob(&[vec![1, info(30, 0, false), 0]], b"\0x\0"));
        assert!(newer.contains("newer than this custos"), "{newer}");
        let two_members_one_given = vec![1, info(kind::STRUCT, 2, false), 8, 1, 1, 0];
        let overrun = err(blob(&[two_members_one_given], b"\0x\0"));
        assert!(overrun.contains("past its section"), "{overrun}");
    }
}
