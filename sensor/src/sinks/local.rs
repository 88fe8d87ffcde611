//! A file or standard output. Events are encoded straight into its buffer, which is written in
//! large pieces, so an event's bytes are copied once, by the kernel; a rotating file starts a
//! new file between records, never inside one.
use std::io::{self, Write};

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;

use super::rotate::Rotation;

/// Room for the record that fills the buffer past its capacity, so that it rarely grows.
const RECORD_ROOM: usize = 16 * 1024;

pub struct LocalOutput {
    name: String,
    written: Counter,
    writer: Box<dyn Write + Send>,
    /// Whole records not written yet, then the one being encoded.
    pending: Vec<u8>,
    /// Bytes held before they are written.
    capacity: usize,
    rotation: Option<Rotation>,
}

impl LocalOutput {
    pub fn new(
        name: String,
        written: Counter,
        writer: Box<dyn Write + Send>,
        capacity: usize,
        rotation: Option<Rotation>,
    ) -> Self {
        Self {
            name,
            written,
            writer,
            pending: Vec::with_capacity(capacity + RECORD_ROOM),
            capacity,
            rotation,
        }
    }

    /// Appends one record, which `encode` writes at the end of the buffer; a record whose
    /// encoding fails leaves nothing behind.
    pub fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
        let start = self.pending.len();
        append_whole(&mut self.pending, encode)?;
        self.written.inc();
        self.settle(start)
    }

    /// After a record was appended at `start`: a new file first when the record does not fit
    /// in this one, and the buffer written once it is full.
    fn settle(&mut self, start: usize) -> Result<()> {
        let len = self.pending.len() - start;
        if let Some(rotation) = &mut self.rotation {
            if rotation.due(len) {
                write_front(&mut self.writer, &mut self.pending, start)
                    .and_then(|()| self.writer.flush())
                    .with_context(|| format!("flushing sink {}", self.name))?;
                let file = rotation
                    .rotate()
                    .with_context(|| format!("rotating sink {}", self.name))?;
                self.writer = Box::new(file);
            }
            rotation.written(len);
        }
        if self.pending.len() >= self.capacity {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        let all = self.pending.len();
        write_front(&mut self.writer, &mut self.pending, all)
            .with_context(|| format!("writing to sink {}", self.name))
    }

    /// Writes what is held and flushes the writer.
    pub fn flush(&mut self) -> Result<()> {
        self.write_pending()?;
        self.writer
            .flush()
            .with_context(|| format!("flushing sink {}", self.name))
    }
}

impl Drop for LocalOutput {
    /// What was accepted is written even when the sinks stop on another output's error.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Appends what `encode` writes to `buffer`; an encoding that fails leaves nothing behind.
pub fn append_whole(
    buffer: &mut Vec<u8>,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let start = buffer.len();
    encode(buffer).inspect_err(|_| buffer.truncate(start))
}

/// Writes the first `end` bytes of `pending` and takes them out of it; on an error, only what
/// was written is taken out, so that nothing is written twice or lost from the buffer.
fn write_front(writer: &mut dyn Write, pending: &mut Vec<u8>, end: usize) -> io::Result<()> {
    let mut written = 0;
    let result = loop {
        if written == end {
            break Ok(());
        }
        match writer.write(&pending[written..end]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break Err(err),
        }
    };
    pending.drain(..written);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what it is given, taking at most `limit` bytes a call and failing
    /// once `fail_after` bytes were taken.
    #[derive(Clone)]
    struct Kept {
        bytes: Arc<Mutex<Vec<u8>>>,
        limit: usize,
        fail_after: usize,
    }

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut bytes = self.bytes.lock().unwrap();
            let room = self.fail_after.saturating_sub(bytes.len());
            if room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.limit).min(room);
            bytes.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn output(kept: &Kept, capacity: usize) -> LocalOutput {
        LocalOutput::new(
            "test".into(),
            Counter::default(),
            Box::new(kept.clone()),
            capacity,
            None,
        )
    }

    /// An encoding that appends `bytes`.
    fn record(bytes: &[u8]) -> impl FnOnce(&mut Vec<u8>) -> Result<()> + '_ {
        move |out| {
            out.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn kept(limit: usize, fail_after: usize) -> Kept {
        Kept {
            bytes: Arc::default(),
            limit,
            fail_after,
        }
    }

    #[test]
    fn records_are_held_until_the_buffer_fills_then_written_whole() {
        let sink = kept(7, usize::MAX);
        let mut out = output(&sink, 10);
        out.append(record(b"one\n")).unwrap();
        assert!(sink.bytes.lock().unwrap().is_empty());
        out.append(record(b"two two\n")).unwrap();
        assert_eq!(*sink.bytes.lock().unwrap(), b"one\ntwo two\n");
        out.append(record(b"three\n")).unwrap();
        out.flush().unwrap();
        assert_eq!(*sink.bytes.lock().unwrap(), b"one\ntwo two\nthree\n");
    }

    #[test]
    fn a_failed_encoding_leaves_nothing_behind() {
        let sink = kept(usize::MAX, usize::MAX);
        let mut out = output(&sink, 1024);
        out.append(record(b"a\n")).unwrap();
        let failed = out.append(|b| {
            b.extend_from_slice(b"half");
            Err(anyhow::anyhow!("cannot encode"))
        });
        assert!(failed.is_err());
        out.append(record(b"b\n")).unwrap();
        out.flush().unwrap();
        assert_eq!(*sink.bytes.lock().unwrap(), b"a\nb\n");
    }

    #[test]
    fn a_failed_write_keeps_what_was_not_written_and_writes_it_once() {
        let sink = kept(3, 5);
        let mut out = output(&sink, 4);
        assert!(out.append(record(b"abcdefgh\n")).is_err());
        assert_eq!(*sink.bytes.lock().unwrap(), b"abcde");
        sink.bytes.lock().unwrap().clear();
        drop(out);
        assert_eq!(*sink.bytes.lock().unwrap(), b"fgh\n");
    }
}
