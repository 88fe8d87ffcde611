//! The fuzz targets' bodies: each takes arbitrary bytes to one reader of untrusted input and
//! must return without panicking. `fuzz/` runs them under libFuzzer (`cargo xtask fuzz`); the
//! test suite replays their seeds and past crashes (`tests/fuzz_corpus.rs`).
use std::time::Duration;

/// Ring-buffer records. The first byte picks the kind and the header's size is made to match,
/// so inputs reach the record bodies (blob references, lengths, flags) rather than stopping at
/// the header check; one input in eight keeps its own header.
pub fn ring_record(bytes: &[u8]) {
    let Some((&choice, body)) = bytes.split_first() else {
        return;
    };
    if choice & 7 == 0 {
        let _ = crate::families::decode(body);
        return;
    }
    let mut record = body.to_vec();
    if record.len() < 8 {
        record.resize(8, 0);
    }
    let kind = u32::from(choice >> 3) % 16;
    let size = record.len() as u32;
    record[0..4].copy_from_slice(&kind.to_ne_bytes());
    record[4..8].copy_from_slice(&size.to_ne_bytes());
    let _ = crate::families::decode(&record);
}

/// Configuration text, parsed and validated.
pub fn config(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = crate::config::Config::parse(text, "fuzz");
    }
}

/// Identity maps; the first byte picks TOML (even) or CSV (odd).
pub fn identity_map(bytes: &[u8]) {
    let Some((&choice, rest)) = bytes.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = crate::people::People::parse(text, choice & 1 == 1, "fuzz");
    }
}

/// A spool as a crash could leave it: the first byte (mod 24) is the cursor file's length, the
/// rest the segment. Opening repairs or refuses it, and every record handed out is whole.
pub fn spool_recovery(bytes: &[u8]) {
    let split = bytes
        .first()
        .map_or(0, |&b| usize::from(b % 24))
        .min(bytes.len());
    let (cursor, segment) = bytes.split_at(split);
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let segment_path = dir.path().join(format!("{:016}.seg", 1));
    if std::fs::write(segment_path, segment).is_err()
        || std::fs::write(dir.path().join("cursor"), cursor).is_err()
    {
        return;
    }
    let Ok(spool) = crate::sinks::spool::Spool::open(dir.path(), 1 << 20) else {
        return;
    };
    if let Ok((records, _)) = spool.peek(1024, Duration::ZERO) {
        for record in records {
            let mut rest = record.as_slice();
            let len = prost::encoding::decode_varint(&mut rest).expect("a length prefix");
            assert_eq!(len as usize, rest.len(), "a torn record was handed out");
        }
    }
}

/// Length-delimited event streams (`custos decode`'s input).
pub fn delimited(bytes: &[u8]) {
    let _ = custos_proto::delimited::to_json_lines(bytes, std::io::sink());
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/Cargo.toml` names them.
pub const TARGETS: [(&str, Target); 5] = [
    ("ring_record", ring_record),
    ("config", config),
    ("identity_map", identity_map),
    ("spool_recovery", spool_recovery),
    ("delimited", delimited),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Each target's seeds and past crashes (`fuzz/seeds/TARGET`, `fuzz/regressions/TARGET`)
    /// still pass through it.
    #[test]
    fn every_target_takes_its_seeds_and_past_crashes() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut inputs = 0;
        for (name, target) in super::TARGETS {
            for kept in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(fuzz.join(kept).join(name)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    target(&std::fs::read(entry.path()).unwrap());
                    inputs += 1;
                }
            }
        }
        assert!(inputs >= 5, "the seeds are there ({inputs} inputs)");
    }
}
