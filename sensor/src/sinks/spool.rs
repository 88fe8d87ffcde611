//! A bounded, crash-safe, on-disk queue in front of each network sink.
//!
//! Events are appended as length-delimited protobuf records to numbered segment files; a cursor
//! file names the first record not yet acknowledged by the sink. An appended record reaches the
//! kernel (a write(2)) before the append returns, so it survives `kill -9` of the daemon; the
//! sender commits the cursor only after the sink took the records, so delivery is at least once
//! and replays in order after an outage or a restart. When the spool exceeds its bound, whole
//! oldest segments are dropped and the caller is told how many events of which kinds it lost.
use std::{
    collections::{BTreeMap, VecDeque},
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Condvar, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use custos_proto::v1::{Event, EventKind};
use prost::Message as _;

use crate::files;

/// A position in the spool: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Events dropped from the spool because it was full, by event kind name.
pub type Dropped = BTreeMap<EventKind, u64>;

/// No event is this large (arguments and paths are capped far below it).
const MAX_RECORD_BYTES: u64 = 16 << 20;

/// A segment being written is replaced by a new one once this much of it was sent.
const RECYCLE_BYTES: u64 = 64 * 1024;

/// What one append did besides spooling.
#[derive(Debug, Default, PartialEq)]
pub struct Appended {
    /// The oldest unsent events, dropped to stay within the bound.
    pub dropped: Dropped,
    /// This batch's events, which the filesystem refused (full disk, I/O error).
    pub refused: Dropped,
}

struct State {
    /// Segment ids on disk, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    total_bytes: u64,
    writer: File,
    cursor: Position,
    /// The last append failed (logged once per outage).
    refusing: bool,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    appended: Condvar,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, repairing a record torn by a crash.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        files::private_dir(dir).with_context(|| format!("creating spool {}", dir.display()))?;
        let mut ids: Vec<u64> = fs::read_dir(dir)
            .with_context(|| format!("reading spool {}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            ids.push(1);
        }
        let last = *ids.last().unwrap_or(&1);
        let mut segments = VecDeque::new();
        let mut total_bytes = 0;
        for id in ids {
            let path = segment_path(dir, id);
            let len = if id == last {
                repair_tail(&path)?
            } else {
                fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            };
            segments.push_back((id, len));
            total_bytes += len;
        }
        let writer = files::private_file(
            &segment_path(dir, last),
            OpenOptions::new().create(true).append(true),
        )
        .with_context(|| format!("opening spool segment in {}", dir.display()))?;
        let first = segments.front().map_or(1, |(id, _)| *id);
        let cursor = read_cursor(dir)
            .filter(|c| c.segment >= first)
            .map(|c| record_start_at_or_before(dir, c))
            .unwrap_or(Position {
                segment: first,
                offset: 0,
            });
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024),
            state: Mutex::new(State {
                segments,
                total_bytes,
                writer,
                cursor,
                refusing: false,
            }),
            appended: Condvar::new(),
        })
    }

    /// Appends already-encoded delimited records: what had to be dropped to stay within the
    /// bound, and what the filesystem refused (full, or failing). A refused batch leaves the
    /// segment ending on a whole record, and the next batch is tried afresh.
    pub fn append(&self, records: &[u8]) -> Result<Appended> {
        let mut outcome = Appended::default();
        if records.is_empty() {
            return Ok(outcome);
        }
        let mut state = self.lock();
        let written = self.next_segment_if_full(&mut state).and_then(|()| {
            let before = state.segments.back().map_or(0, |(_, len)| *len);
            state.writer.write_all(records).map_err(|err| {
                // Cut a partial record off.
                let _ = state.writer.set_len(before);
                anyhow::Error::from(err)
            })
        });
        if let Err(err) = written {
            if !std::mem::replace(&mut state.refusing, true) {
                tracing::error!(
                    spool = %self.dir.display(),
                    "cannot write to the spool ({err:#}); events are counted as lost until it can"
                );
            }
            // Reading a slice cannot fail.
            let _ = count_by_kind(&mut &records[..], &mut outcome.refused);
            return Ok(outcome);
        }
        if std::mem::replace(&mut state.refusing, false) {
            tracing::info!(spool = %self.dir.display(), "the spool takes events again");
        }
        let dropped = &mut outcome.dropped;
        if let Some((_, len)) = state.segments.back_mut() {
            *len += records.len() as u64;
        }
        state.total_bytes += records.len() as u64;
        while state.total_bytes > self.max_bytes && state.segments.len() > 1 {
            self.drop_oldest(&mut state, dropped)?;
        }
        drop(state);
        self.appended.notify_all();
        Ok(outcome)
    }

    /// Starts the next segment when the last one reached its size.
    fn next_segment_if_full(&self, state: &mut State) -> Result<()> {
        if state
            .segments
            .back()
            .is_some_and(|(_, len)| *len >= self.segment_bytes)
        {
            self.open_next_segment(state)?;
        }
        Ok(())
    }

    /// Starts writing a new segment; returns its id.
    fn open_next_segment(&self, state: &mut State) -> Result<u64> {
        let next = state.segments.back().map_or(1, |(id, _)| id + 1);
        state.writer = files::private_file(
            &segment_path(&self.dir, next),
            OpenOptions::new().create(true).append(true),
        )?;
        state.segments.push_back((next, 0));
        Ok(next)
    }

    fn drop_oldest(&self, state: &mut State, dropped: &mut Dropped) -> Result<()> {
        let Some((id, len)) = state.segments.pop_front() else {
            return Ok(());
        };
        let path = segment_path(&self.dir, id);
        // Only what the sink had not taken yet is lost.
        let from = if state.cursor.segment == id {
            state.cursor.offset
        } else if state.cursor.segment > id {
            len
        } else {
            0
        };
        count_kinds(&path, from, dropped)?;
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        state.total_bytes -= len;
        if state.cursor.segment <= id {
            let next = state.segments.front().map_or(id + 1, |(n, _)| *n);
            state.cursor = Position {
                segment: next,
                offset: 0,
            };
            write_cursor(&self.dir, state.cursor)?;
        }
        Ok(())
    }

    /// Up to `max` records from the cursor, waiting up to `wait` for the first; with the
    /// position after them, to pass to [`Self::commit`] once the sink took them.
    pub fn peek(&self, max: usize, wait: Duration) -> Result<(Vec<Vec<u8>>, Position)> {
        self.peek_after(Position::default(), max, wait)
    }

    /// Like [`Self::peek`], but from `after` when that is past the cursor: the records after
    /// those already sent and not yet confirmed.
    pub fn peek_after(
        &self,
        after: Position,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Vec<u8>>, Position)> {
        let mut state = self.lock();
        if !has_records_after(&state, after.max(state.cursor)) {
            state = self
                .appended
                .wait_timeout(state, wait)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let mut records = Vec::new();
        // Segments dropped or recycled meanwhile moved the cursor past `after`.
        let mut position = after.max(state.cursor);
        while records.len() < max {
            let Some(&(_, len)) = state
                .segments
                .iter()
                .find(|(id, _)| *id == position.segment)
            else {
                break;
            };
            if position.offset >= len {
                match state.segments.iter().find(|(id, _)| *id > position.segment) {
                    Some(&(next, _)) => {
                        position = Position {
                            segment: next,
                            offset: 0,
                        };
                        continue;
                    }
                    None => break,
                }
            }
            let path = segment_path(&self.dir, position.segment);
            let mut file = BufReader::new(File::open(&path)?);
            file.seek(SeekFrom::Start(position.offset))?;
            while records.len() < max && position.offset < len {
                let Some(record) = read_record(&mut file)? else {
                    // Whole records end at `len`, so this is damage (a disk error, or a file
                    // changed behind the daemon's back): skip it rather than read it forever.
                    tracing::error!(
                        segment = %path.display(),
                        "spool segment unreadable from byte {}; skipping its last {} bytes",
                        position.offset,
                        len - position.offset
                    );
                    position.offset = len;
                    break;
                };
                position.offset += record.len() as u64;
                records.push(record);
            }
        }
        Ok((records, position))
    }

    /// The sink took everything before `position`.
    pub fn commit(&self, position: Position) -> Result<()> {
        let mut state = self.lock();
        if position <= state.cursor {
            return Ok(());
        }
        state.cursor = position;
        // Everything in the segment being written was sent: writing goes on in a new one, so
        // the sent one's space is given back (a spool on a full disk takes events again).
        let drained = state
            .segments
            .back()
            .is_some_and(|&(id, len)| id == position.segment && len == position.offset);
        if drained && position.offset >= RECYCLE_BYTES {
            if let Ok(next) = self.open_next_segment(&mut state) {
                state.cursor = Position {
                    segment: next,
                    offset: 0,
                };
            }
        }
        // A cursor that cannot be saved only means resending after a crash.
        let saved = write_cursor(&self.dir, state.cursor);
        // Segments wholly before the cursor are done (the one being written stays).
        let current = state.cursor.segment;
        while state.segments.len() > 1
            && state.segments.front().is_some_and(|(id, _)| *id < current)
        {
            if let Some((id, len)) = state.segments.pop_front() {
                let _ = fs::remove_file(segment_path(&self.dir, id));
                state.total_bytes -= len;
            }
        }
        saved
    }

    /// When the oldest event still waiting was observed, if any is waiting.
    pub fn oldest_unsent_time(&self) -> Option<pbjson_types::Timestamp> {
        let (records, _) = self.peek(1, Duration::ZERO).ok()?;
        let record = records.first()?;
        Event::decode_length_delimited(&record[..]).ok()?.time
    }

    /// Bytes waiting to be sent.
    pub fn backlog_bytes(&self) -> u64 {
        let state = self.lock();
        let sent_before: u64 = state
            .segments
            .iter()
            .take_while(|(id, _)| *id < state.cursor.segment)
            .map(|(_, len)| *len)
            .sum();
        state.total_bytes - sent_before - state.cursor.offset
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn has_records_after(state: &State, position: Position) -> bool {
    state.segments.iter().any(|(id, len)| {
        *id > position.segment || (*id == position.segment && *len > position.offset)
    })
}

/// `cursor`, or the start of the record it points into (a damaged cursor file): that record
/// is sent again rather than read from its middle.
fn record_start_at_or_before(dir: &Path, cursor: Position) -> Position {
    let Ok(file) = File::open(segment_path(dir, cursor.segment)) else {
        return cursor;
    };
    let mut reader = BufReader::new(file);
    let mut offset = 0;
    while offset < cursor.offset {
        match read_record(&mut reader) {
            Ok(Some(record)) if offset + record.len() as u64 <= cursor.offset => {
                offset += record.len() as u64;
            }
            _ => break,
        }
    }
    if offset != cursor.offset {
        tracing::warn!(
            spool = %dir.display(),
            "the spool cursor points inside a record; resuming at its start, byte {offset}"
        );
    }
    Position {
        segment: cursor.segment,
        offset,
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

/// One delimited record (its varint prefix included), `None` at the end or at a torn tail.
fn read_record(reader: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    // The prefix: at most ten bytes, the last without the continuation bit.
    let mut record = Vec::new();
    while record.len() < 10 && record.last().is_none_or(|byte| byte & 0x80 != 0) {
        let mut byte = [0u8; 1];
        if reader.read(&mut byte)? == 0 {
            return Ok(None);
        }
        record.push(byte[0]);
    }
    // A prefix that is no varint, or a length no event can have, is a corrupt tail (a crash
    // wrote garbage): stop there rather than hand it on or allocate it.
    let Some(length) = prost::encoding::decode_varint(&mut &record[..])
        .ok()
        .filter(|&length| length <= MAX_RECORD_BYTES)
    else {
        return Ok(None);
    };
    let start = record.len();
    record.resize(start + length as usize, 0);
    match reader.read_exact(&mut record[start..]) {
        Ok(()) => Ok(Some(record)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Truncates a segment to its last complete record; returns its length.
fn repair_tail(path: &Path) -> Result<u64> {
    let Ok(file) = File::open(path) else {
        return Ok(0);
    };
    let mut reader = BufReader::new(file);
    let mut good = 0u64;
    while let Some(record) = read_record(&mut reader)? {
        good += record.len() as u64;
    }
    let len = fs::metadata(path)?.len();
    if len != good {
        tracing::warn!(segment = %path.display(), "spool segment ends in a torn record; truncating it");
        OpenOptions::new().write(true).open(path)?.set_len(good)?;
    }
    Ok(good)
}

/// Counts the delimited events `reader` holds, by kind.
fn count_by_kind(reader: &mut impl Read, counted: &mut Dropped) -> io::Result<()> {
    while let Some(record) = read_record(reader)? {
        let kind = Event::decode_length_delimited(&record[..])
            .map(|e| e.kind())
            .unwrap_or(EventKind::Unspecified);
        *counted.entry(kind).or_default() += 1;
    }
    Ok(())
}

fn count_kinds(path: &Path, from: u64, dropped: &mut Dropped) -> Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    reader.seek(SeekFrom::Start(from))?;
    count_by_kind(&mut reader, dropped)?;
    Ok(())
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = fs::read_to_string(dir.join("cursor")).ok()?;
    let (segment, offset) = text.trim().split_once(':')?;
    Some(Position {
        segment: segment.parse().ok()?,
        offset: offset.parse().ok()?,
    })
}

/// Replaces the cursor file atomically (write a temporary, rename it over).
fn write_cursor(dir: &Path, position: Position) -> Result<()> {
    let tmp = dir.join("cursor.tmp");
    files::write_private(
        &tmp,
        format!("{}:{}\n", position.segment, position.offset).as_bytes(),
    )?;
    fs::rename(&tmp, dir.join("cursor")).context("replacing the spool cursor")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{event::Body, ProcessExec, ProcessExit};

    use super::*;

    fn record(seq: u64, exec: bool) -> Vec<u8> {
        let body = if exec {
            Body::Exec(ProcessExec::default())
        } else {
            Body::Exit(ProcessExit::default())
        };
        Event {
            seq,
            host: "h".repeat(100),
            body: Some(body),
            ..Event::default()
        }
        .encode_length_delimited_to_vec()
    }

    fn seqs(records: &[Vec<u8>]) -> Vec<u64> {
        records
            .iter()
            .map(|r| Event::decode_length_delimited(&r[..]).unwrap().seq)
            .collect()
    }

    /// What a spool opened on a segment with these bytes hands out.
    fn recovered(segment: &[u8]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{:016}.seg", 1)), segment).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.peek(10, Duration::ZERO).unwrap().0
    }

    #[test]
    fn a_cursor_inside_a_record_resumes_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let segment = [record(1, true), record(2, false), record(3, true)].concat();
        fs::write(dir.path().join(format!("{:016}.seg", 1)), &segment).unwrap();
        let inside_second = record(1, true).len() + 3;
        fs::write(dir.path().join("cursor"), format!("1:{inside_second}\n")).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(seqs(&spool.peek(10, Duration::ZERO).unwrap().0), [2, 3]);
    }

    #[test]
    fn garbage_inside_an_older_segment_is_skipped_not_read_forever() {
        let dir = tempfile::tempdir().unwrap();
        let mut older = [record(1, true), record(2, false)].concat();
        older.extend_from_slice(&[0xff; 10]); // no varint: unreadable from here
        older.extend_from_slice(&record(3, true));
        fs::write(dir.path().join(format!("{:016}.seg", 1)), &older).unwrap();
        fs::write(dir.path().join(format!("{:016}.seg", 2)), record(4, false)).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (first, at) = spool.peek(10, Duration::ZERO).unwrap();
        assert_eq!(seqs(&first), [1, 2, 4]);
        spool.commit(at).unwrap();
        assert_eq!(spool.backlog_bytes(), 0);
    }

    #[test]
    fn a_garbage_length_is_a_torn_tail_not_an_allocation() {
        let mut segment = record(1, true);
        segment.extend_from_slice(&[0xff; 9]);
        segment.push(0x7f); // a ten-byte varint near 2^64
        segment.extend_from_slice(b"garbage");
        assert_eq!(
            recovered(&segment),
            vec![record(1, true)],
            "cut back to the whole record"
        );
        // Ten bytes that all say "more follows" are no length at all.
        let mut segment = record(1, true);
        segment.extend_from_slice(&[0x80; 12]);
        assert_eq!(
            recovered(&segment),
            vec![record(1, true)],
            "no record of a broken prefix"
        );
    }

    #[test]
    fn a_drained_segment_gives_its_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 64 << 20).unwrap();
        for seq in 1..=1000 {
            spool.append(&record(seq, true)).unwrap();
        }
        let on_disk = || -> u64 {
            fs::read_dir(dir.path())
                .unwrap()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        };
        assert!(on_disk() >= RECYCLE_BYTES);
        loop {
            let (records, position) = spool.peek(512, Duration::ZERO).unwrap();
            if records.is_empty() {
                break;
            }
            spool.commit(position).unwrap();
        }
        assert_eq!(on_disk(), 0, "the sent segment was removed");
        assert_eq!(spool.backlog_bytes(), 0);
        spool.append(&record(1001, true)).unwrap();
        let (records, _) = spool.peek(10, Duration::ZERO).unwrap();
        assert_eq!(records, vec![record(1001, true)]);
        drop(spool);
        let reopened = Spool::open(dir.path(), 64 << 20).unwrap();
        let (records, _) = reopened.peek(10, Duration::ZERO).unwrap();
        assert_eq!(records, vec![record(1001, true)], "the cursor survives");
    }

    #[test]
    fn records_replay_in_order_until_committed_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for seq in 1..=5 {
            spool.append(&record(seq, true)).unwrap();
        }
        let (records, at) = spool.peek(3, Duration::ZERO).unwrap();
        assert_eq!(seqs(&records), vec![1, 2, 3]);
        // Not committed: a crash now replays them.
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (records, _) = spool.peek(10, Duration::ZERO).unwrap();
        assert_eq!(seqs(&records), vec![1, 2, 3, 4, 5]);
        spool.commit(at).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (records, _) = spool.peek(10, Duration::ZERO).unwrap();
        assert_eq!(seqs(&records), vec![4, 5]);
    }

    #[test]
    fn a_torn_last_record_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&record(1, true)).unwrap();
        let torn = record(2, true);
        spool.append(&torn[..torn.len() / 2]).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(&record(3, true)).unwrap();
        let (records, _) = spool.peek(10, Duration::ZERO).unwrap();
        assert_eq!(seqs(&records), vec![1, 3]);
    }

    #[test]
    fn the_bound_drops_the_oldest_unsent_events_and_counts_them_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB segments (the minimum), 256 KiB bound.
        let spool = Spool::open(dir.path(), 256 * 1024).unwrap();
        let mut dropped = Dropped::new();
        let mut appended = 0u64;
        for seq in 1..=4000 {
            for (kind, n) in spool.append(&record(seq, seq % 2 == 0)).unwrap().dropped {
                *dropped.entry(kind).or_default() += n;
            }
            appended += 1;
        }
        let total_dropped: u64 = dropped.values().sum();
        assert!(total_dropped > 0);
        assert!(
            dropped.contains_key(&EventKind::ProcessExec)
                && dropped.contains_key(&EventKind::ProcessExit)
        );
        let (records, _) = spool.peek(usize::MAX, Duration::ZERO).unwrap();
        assert_eq!(
            records.len() as u64 + total_dropped,
            appended,
            "every event kept or counted"
        );
        assert_eq!(seqs(&records).last(), Some(&4000), "the newest are kept");
        assert!(spool.backlog_bytes() <= 256 * 1024 + 64 * 1024);
    }
}
