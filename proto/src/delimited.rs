//! Length-delimited streams of `custos.v1.Event`: a varint byte length before each message, as
//! protobuf's `writeDelimitedTo`/`parseDelimitedFrom` define it.
use std::io::{self, BufRead, Write};

use prost::Message;

use crate::v1::Event;

/// Reads the next message, `Ok(None)` at a clean end of stream.
pub fn read_one<R: BufRead>(reader: &mut R) -> io::Result<Option<Event>> {
    let mut length: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte)? == 0 {
            if shift == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ends inside a length prefix",
            ));
        }
        length |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let length = usize::try_from(length)
        .ok()
        .filter(|&l| l <= 64 * 1024 * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "message length over 64 MiB"))?;
    let mut message = vec![0u8; length];
    reader.read_exact(&mut message).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("stream ends inside a {length}-byte message"),
        )
    })?;
    Event::decode(&message[..])
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads every message of a stream.
pub fn read_all<R: BufRead>(mut reader: R) -> io::Result<Vec<Event>> {
    let mut events = Vec::new();
    while let Some(event) = read_one(&mut reader)? {
        events.push(event);
    }
    Ok(events)
}

/// Rewrites a length-delimited stream as JSON lines (canonical proto3 JSON, one event per
/// line); returns how many events it wrote. Errors name the message that could not be read.
pub fn to_json_lines<R: BufRead, W: Write>(mut reader: R, mut out: W) -> io::Result<usize> {
    let mut count = 0usize;
    loop {
        let event = read_one(&mut reader)
            .map_err(|e| io::Error::new(e.kind(), format!("message {}: {e}", count + 1)))?;
        let Some(event) = event else {
            break;
        };
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_truncation() {
        let mut bytes = Vec::new();
        for seq in 1..=3 {
            Event {
                seq,
                host: "x".repeat(200), // lengths over 127 need a two-byte varint
                ..Event::default()
            }
            .encode_length_delimited(&mut bytes)
            .unwrap();
        }
        let events = read_all(&bytes[..]).unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let err = read_all(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let mut json = Vec::new();
        assert_eq!(to_json_lines(&bytes[..], &mut json).unwrap(), 3);
        let first = String::from_utf8(json)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned();
        assert!(first.starts_with("{\"seq\":\"1\""), "{first}");
        let err = to_json_lines(&bytes[..bytes.len() - 1], io::sink()).unwrap_err();
        assert!(err.to_string().starts_with("message 3:"), "{err}");
    }
}
