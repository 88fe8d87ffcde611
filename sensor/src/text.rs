//! Byte strings from the kernel to schema strings.
//!
//! Paths and arguments are bytes, not UTF-8. The schema carries a readable string in which every
//! byte that is not part of valid UTF-8 is written as `\xNN`, plus the exact bytes in a `*_raw`
//! field whenever the string alone would not be exact (see proto/custos/v1/events.proto).
use std::fmt::Write as _;

/// A kernel byte string as the schema carries it.
#[derive(Debug, PartialEq, Eq)]
pub struct SchemaText {
    pub text: String,
    /// The exact bytes, present only when `text` had to escape something.
    pub raw: Option<Vec<u8>>,
}

/// The exact bytes of a schema string and its `*_raw` field: the raw bytes when it has them,
/// else the text.
pub fn exact<'a>(text: &'a str, raw: &'a [u8]) -> &'a [u8] {
    if raw.is_empty() {
        text.as_bytes()
    } else {
        raw
    }
}

/// Whether `bytes` are valid UTF-8. Nearly every path and argument is ASCII, which is checked
/// a word at a time; the full check first, on every exec's few short strings, was 2% of the
/// daemon's instructions per exec.
pub fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}

/// [`from_bytes`] for bytes the caller gives up: valid UTF-8 becomes the text without a copy.
pub fn from_vec(bytes: Vec<u8>) -> SchemaText {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        let text = unsafe { String::from_utf8_unchecked(bytes) };
        return SchemaText { text, raw: None };
    }
    match String::from_utf8(bytes) {
        Ok(text) => SchemaText { text, raw: None },
        Err(err) => {
            let bytes = err.into_bytes();
            SchemaText {
                text: escape_invalid_utf8(&bytes),
                raw: Some(bytes),
            }
        }
    }
}

pub fn from_bytes(bytes: &[u8]) -> SchemaText {
    match std::str::from_utf8(bytes) {
        Ok(text) => SchemaText {
            text: text.to_owned(),
            raw: None,
        },
        Err(_) => SchemaText {
            text: escape_invalid_utf8(bytes),
            raw: Some(bytes.to_vec()),
        },
    }
}

/// Valid UTF-8 runs as they are, each invalid byte as `\xNN`.
pub fn escape_invalid_utf8(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(err) => {
                let (valid, rest) = bytes.split_at(err.valid_up_to());
                // SAFETY-free: `valid_up_to` marks a UTF-8 prefix.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = err.error_len().unwrap_or(rest.len());
                for b in &rest[..bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// Lossy text for short names (comm, tty) where exactness does not matter.
pub fn lossy(bytes: &[u8]) -> String {
    escape_invalid_utf8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_is_exact_and_has_no_raw() {
        let t = from_bytes("/home/zoë/a b\nc".as_bytes());
        assert_eq!(t.text, "/home/zoë/a b\nc");
        assert_eq!(t.raw, None);
    }

    #[test]
    fn invalid_bytes_are_escaped_and_raw_is_kept() {
        let bytes = b"/tmp/a\xffb\xc3";
        let t = from_bytes(bytes);
        assert_eq!(t.text, "/tmp/a\\xffb\\xc3");
        assert_eq!(t.raw.as_deref(), Some(&bytes[..]));
    }

    #[test]
    fn taken_bytes_give_what_borrowed_ones_give() {
        let samples: [&[u8]; 6] = [
            b"",
            b"/etc/passwd",
            b"/a/path/longer/than/two/words/\xff",
            "/home/zoë".as_bytes(),
            b"\xff",
            b"a\xc3",
        ];
        for bytes in samples {
            assert_eq!(from_vec(bytes.to_vec()), from_bytes(bytes), "{bytes:?}");
            let valid = std::str::from_utf8(bytes).is_ok();
            assert_eq!(is_utf8(bytes), valid, "{bytes:?}");
        }
    }

    #[test]
    fn escaping_keeps_valid_multibyte_sequences_between_bad_bytes() {
        assert_eq!(escape_invalid_utf8(b"\x80\xc3\xa9\x80"), "\\x80é\\x80");
    }
}
