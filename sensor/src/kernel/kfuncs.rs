//! Links the programs' calls of kernel functions (kfuncs), which aya leaves alone: each call is
//! written in the object as a marked instruction (see `sensor_common::kfunc`), and gets the
//! BTF id of the running kernel's function here, before load. Where the kernel lacks the
//! function the call becomes a harmless move, on a path the programs take only when the
//! daemon says the function exists (`ProgramGlobals::files_struct_type`).
use anyhow::{bail, Result};
use sensor_common::{kfunc, offsets::MISSING, KernelOffsets};

use super::btf_offsets::BtfLayout;

/// What the running kernel offers the programs' typed reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypedReads {
    /// BTF id of `bpf_rdonly_cast`.
    pub rdonly_cast: u32,
    /// BTF id of `struct files_struct`, the type a descriptor's slot is read as.
    pub files_struct: u32,
}

impl TypedReads {
    /// `None` on kernels before 6.2 (no `bpf_rdonly_cast`), or without the table it types.
    pub fn of_kernel(layout: &BtfLayout, offsets: &KernelOffsets) -> Option<Self> {
        if offsets.files_fd_array == MISSING {
            return None;
        }
        Some(Self {
            rdonly_cast: layout.function_id("bpf_rdonly_cast")?,
            files_struct: layout.struct_id("files_struct")?,
        })
    }
}

/// The object, 8-aligned as the ELF parser wants, with its kfunc calls linked.
pub struct LinkedObject {
    words: Vec<u64>,
    len: usize,
    /// How many calls were linked (or turned into moves).
    pub calls: usize,
}

impl LinkedObject {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes (see `link`), and u8 has no
        // alignment or validity requirement.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// `object` with every marked `bpf_rdonly_cast` call linked to `typed`'s function, or made a
/// move where the kernel has none. Instructions are 8-aligned in the ELF file (BPF sections
/// are), so the object is scanned a word at a time; a marked call found off that grid is an
/// error, as the kernel would refuse the unlinked call.
pub fn link(object: &[u8], typed: Option<TypedReads>) -> Result<LinkedObject> {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    let mut calls = 0;
    for (word, chunk) in words.iter_mut().zip(object.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        let value = u64::from_le_bytes(bytes);
        *word = if value == kfunc::RDONLY_CAST_CALL {
            calls += 1;
            match typed {
                Some(typed) => (u64::from(typed.rdonly_cast) << 32) | (value & 0xffff_ffff),
                None => kfunc::CLEAR_R0,
            }
            .to_le()
        } else {
            u64::from_ne_bytes(bytes)
        };
    }
    let linked = LinkedObject {
        words,
        len: object.len(),
        calls,
    };
    let marker = kfunc::RDONLY_CAST_CALL.to_le_bytes();
    if linked.bytes().windows(8).any(|window| window == marker) {
        bail!(
            "the eBPF object holds a kfunc call off the 8-byte instruction grid, which could \
             not be linked: rebuild custos"
        );
    }
    Ok(linked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_with_call(at: usize) -> Vec<u8> {
        let mut object = vec![0x11u8; 64];
        object[at..at + 8].copy_from_slice(&kfunc::RDONLY_CAST_CALL.to_le_bytes());
        object.extend_from_slice(&[1, 2, 3]);
        object
    }

    #[test]
    fn links_the_marked_call_and_nothing_else() {
        let object = object_with_call(16);
        let typed = TypedReads {
            rdonly_cast: 0x1234,
            files_struct: 7,
        };
        let linked = link(&object, Some(typed)).unwrap();
        assert_eq!(linked.calls, 1);
        let bytes = linked.bytes();
        assert_eq!(bytes.len(), object.len());
        assert_eq!(&bytes[16..24], &[0x85, 0x20, 0, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(&bytes[..16], &object[..16]);
        assert_eq!(&bytes[24..], &object[24..]);
    }

    #[test]
    fn without_the_kfunc_the_call_clears_r0() {
        let linked = link(&object_with_call(8), None).unwrap();
        assert_eq!(linked.calls, 1);
        assert_eq!(&linked.bytes()[8..16], &[0xb7, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_marked_call_off_the_instruction_grid_is_refused() {
        let err = link(&object_with_call(12), None).err().expect("refused");
        assert!(err.to_string().contains("off the 8-byte instruction grid"));
    }

    #[test]
    fn this_kernel_offers_typed_reads_if_its_btf_has_the_kfunc() {
        let Ok(layout) = BtfLayout::from_running_kernel() else {
            return;
        };
        let offsets = super::super::btf_offsets::resolve(&layout).unwrap();
        let typed = TypedReads::of_kernel(&layout, &offsets);
        assert_eq!(
            typed.is_some(),
            layout.function_id("bpf_rdonly_cast").is_some()
        );
        if let Some(typed) = typed {
            assert_ne!(typed.rdonly_cast, typed.files_struct);
        }
    }
}
