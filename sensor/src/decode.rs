//! Raw ring-buffer bytes to typed records. Kernel input is validated, never trusted: a record
//! with a wrong size or unknown kind is an error the pipeline reports as a loss.
use std::mem::size_of;

use sensor_common::{BlobRef, Record};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("record of kind {kind} claims {claimed} bytes but {actual} arrived")]
    SizeMismatch {
        kind: u32,
        claimed: u32,
        actual: usize,
    },
    #[error("record of kind {kind} is {size} bytes, too small for its fixed part")]
    TooSmall { kind: u32, size: usize },
    #[error("record of kind {kind} has a blob reference outside the record")]
    BadBlob { kind: u32 },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

impl DecodeError {
    /// The record kind the bad record claimed, when it got that far.
    pub fn kind(&self) -> u32 {
        match self {
            DecodeError::SizeMismatch { kind, .. }
            | DecodeError::TooSmall { kind, .. }
            | DecodeError::BadBlob { kind } => *kind,
            DecodeError::UnknownKind(kind) => *kind,
            DecodeError::Short(_) => 0,
        }
    }
}

/// A record's fixed part, checked to be there.
pub(crate) fn fixed<T: Record>(bytes: &[u8]) -> Result<T, DecodeError> {
    read_struct(bytes).ok_or(DecodeError::TooSmall {
        kind: T::KIND,
        size: bytes.len(),
    })
}

/// A record's fixed part and the blob that follows it.
pub(crate) fn with_blob<T: Record>(bytes: &[u8]) -> Result<(T, Blob<'_>), DecodeError> {
    let fixed = fixed::<T>(bytes)?;
    let blob = Blob {
        bytes: &bytes[size_of::<T>()..],
        kind: T::KIND,
    };
    Ok((fixed, blob))
}

/// The variable part of a record of `kind`.
pub(crate) struct Blob<'a> {
    bytes: &'a [u8],
    kind: u32,
}

impl<'a> Blob<'a> {
    /// A piece of the blob, checked to lie inside the record.
    pub(crate) fn slice(&self, r: BlobRef) -> Result<&'a [u8], DecodeError> {
        let start = r.offset as usize;
        let end = start + r.len as usize;
        self.bytes
            .get(start..end)
            .ok_or(DecodeError::BadBlob { kind: self.kind })
    }

    /// [`Self::slice`], copied out.
    pub(crate) fn piece(&self, r: BlobRef) -> Result<Vec<u8>, DecodeError> {
        self.slice(r).map(<[u8]>::to_vec)
    }
}

/// Reads a `#[repr(C)]` plain-data struct from the start of `bytes`, if long enough.
pub(crate) fn read_struct<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is a repr(C) struct of integers and byte arrays, valid for any
    // bit pattern; read_unaligned because ring-buffer data is only 8-byte aligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Splits NUL-separated argv into its arguments (a trailing NUL ends the last one), the list
/// allocated once at its final size.
pub fn split_argv(argv: &[u8]) -> Vec<Vec<u8>> {
    let trimmed = argv.strip_suffix(&[0]).unwrap_or(argv);
    if trimmed.is_empty() {
        return Vec::new();
    }
    // memchr finds the separators many bytes at a time; every exec's argv comes through here,
    // and a byte-at-a-time split was most of its decoding.
    let mut args = Vec::with_capacity(memchr::memchr_iter(0, trimmed).count() + 1);
    let mut start = 0;
    for end in memchr::memchr_iter(0, trimmed) {
        args.push(trimmed[start..end].to_vec());
        start = end + 1;
    }
    args.push(trimmed[start..].to_vec());
    args
}

/// The bytes of a NUL-padded fixed-size C string.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splitting_handles_empty_and_unterminated() {
        assert!(split_argv(b"").is_empty());
        assert!(split_argv(b"\0").is_empty());
        assert_eq!(split_argv(b"a\0b"), [&b"a"[..], &b"b"[..]]);
        assert_eq!(split_argv(b"a\0\0b\0"), [&b"a"[..], &b""[..], &b"b"[..]]);
    }
}
