//! Turns the kernel's deduplication counts into summary events, for the families the kernel
//! deduplicates: file opens (`FILE_DEDUP`) and connects (`NETWORK_DEDUP`).
//!
//! The kernel sends the first record of a window (a process opening a file with one access, or
//! connecting to one peer with one outcome) and counts identical ones without sending them; its
//! counter only grows. The daemon remembers how
//! much of each counter it has reported: when a window closes (or a new window's first event
//! arrives with a larger total) it emits one summary for the difference. Nothing counted is
//! lost, and nothing is reported twice.
use std::{
    collections::HashMap,
    hash::Hash,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use custos_proto::v1::{event::Body, Event};
use lru::LruCache;
use sensor_common::{
    FileDedupKey, FileDedupState, FileOpenRecord, NetworkDedupKey, NetworkDedupState, NetworkRecord,
};

use crate::families::timestamp;

/// Reads a key's running counter in the kernel.
pub trait CounterSource<K> {
    fn suppressed_total(&self, key: &K) -> Option<u64>;
}

impl CounterSource<FileDedupKey> for BpfHashMap<MapData, FileDedupKey, FileDedupState> {
    fn suppressed_total(&self, key: &FileDedupKey) -> Option<u64> {
        self.get(key, 0).ok().map(|s| s.suppressed_total)
    }
}

impl CounterSource<NetworkDedupKey> for BpfHashMap<MapData, NetworkDedupKey, NetworkDedupState> {
    fn suppressed_total(&self, key: &NetworkDedupKey) -> Option<u64> {
        self.get(key, 0).ok().map(|s| s.suppressed_total)
    }
}

/// The dedup key of a file-open record, computed as the kernel computes it.
pub fn file_key(record: &FileOpenRecord) -> FileDedupKey {
    let mask = (libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u32;
    FileDedupKey {
        tgid: record.task.tgid,
        access: record.open_flags & mask,
        dev: record.dev,
        _pad: 0,
        ino: record.ino,
        mm: record.key_mm,
        cred: record.key_cred,
    }
}

/// The dedup key of a network record, computed as the kernel computes it.
pub fn network_key(record: &NetworkRecord) -> NetworkDedupKey {
    // The path's 8-byte words XORed into the two halves of the address.
    let mut remote_addr = record.remote_addr;
    for (i, word) in record.unix_path.chunks_exact(8).enumerate() {
        let half = &mut remote_addr[(i % 2) * 8..(i % 2) * 8 + 8];
        for (byte, folded) in half.iter_mut().zip(word) {
            *byte ^= folded;
        }
    }
    NetworkDedupKey {
        tgid: record.task.tgid,
        op: record.op,
        ret: record.ret,
        family: record.family,
        protocol: record.protocol,
        remote_port: record.remote_port,
        _pad_short: 0,
        _pad_word: 0,
        remote_addr,
    }
}

struct Window {
    closes: Instant,
    /// The window's first event: summaries repeat its process, identity and file.
    first: Event,
}

pub struct Dedup<K, C> {
    counters: C,
    window: Duration,
    reported: LruCache<K, u64>,
    open: HashMap<K, Window>,
    /// Windows whose kernel entry was evicted before their counts were read.
    pub evicted: u64,
}

/// Slack on top of the window before its counter is read, so the kernel's window (timed from
/// the hook) has surely closed.
const GRACE: Duration = Duration::from_millis(100);

impl<K: Copy + Eq + Hash, C: CounterSource<K>> Dedup<K, C> {
    /// `kernel_entries`: the size of the kernel's map of windows.
    pub fn new(counters: C, window: Duration, kernel_entries: u32) -> Self {
        // Twice the kernel map's size, so a key the kernel still holds is never forgotten.
        let remembered = NonZeroUsize::new(2 * kernel_entries as usize).expect("non-zero");
        Self {
            counters,
            window,
            reported: LruCache::new(remembered),
            open: HashMap::new(),
            evicted: 0,
        }
    }

    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// A window opened with `first`; `suppressed_total` is the kernel counter at that moment.
    /// Returns the summary still owed for earlier windows of the same key, if any.
    pub fn on_first(&mut self, key: K, suppressed_total: u64, first: &Event) -> Option<Event> {
        let previous = self.open.remove(&key);
        let reported = self.reported.get(&key).copied().unwrap_or(0);
        let summary = (suppressed_total > reported).then(|| {
            let template = previous.as_ref().map_or(first, |w| &w.first);
            summary_of(template, suppressed_total - reported)
        });
        // A counter below what was reported means the kernel evicted and recreated the entry.
        self.reported.put(key, suppressed_total);
        self.open.insert(
            key,
            Window {
                closes: Instant::now() + self.window + GRACE,
                first: first.clone(),
            },
        );
        summary
    }

    /// Summaries for windows that have closed (all windows when `all`, at shutdown).
    pub fn sweep(&mut self, all: bool) -> Vec<Event> {
        let now = Instant::now();
        let closed: Vec<K> = self
            .open
            .iter()
            .filter(|(_, w)| all || w.closes <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut summaries = Vec::new();
        for key in closed {
            let Some(window) = self.open.remove(&key) else {
                continue;
            };
            let Some(total) = self.counters.suppressed_total(&key) else {
                self.evicted += 1;
                continue;
            };
            let reported = self.reported.get(&key).copied().unwrap_or(0);
            if total > reported {
                summaries.push(summary_of(&window.first, total - reported));
                self.reported.put(key, total);
            }
        }
        summaries
    }
}

fn summary_of(first: &Event, repeats: u64) -> Event {
    let mut summary = first.clone();
    summary.seq = 0;
    summary.time = Some(timestamp(std::time::SystemTime::now()));
    match summary.body.as_mut() {
        Some(Body::FileOpen(open)) => {
            open.repeats = repeats;
            open.repeat_summary = true;
            open.fd = None;
        }
        Some(Body::Network(connection)) => {
            connection.repeats = repeats;
            connection.repeat_summary = true;
        }
        _ => {}
    }
    summary
}

/// The kernel's deduplicated families, each with its windows.
pub struct KernelDedup {
    pub files: Dedup<FileDedupKey, BpfHashMap<MapData, FileDedupKey, FileDedupState>>,
    pub network: Dedup<NetworkDedupKey, BpfHashMap<MapData, NetworkDedupKey, NetworkDedupState>>,
}

/// A record that opened a kernel dedup window: its key and the running count at that moment.
pub enum WindowStart {
    File(FileDedupKey, u64),
    Network(NetworkDedupKey, u64),
}

impl KernelDedup {
    /// See [`Dedup::on_first`].
    pub fn on_first(&mut self, start: WindowStart, first: &Event) -> Option<Event> {
        match start {
            WindowStart::File(key, total) => self.files.on_first(key, total, first),
            WindowStart::Network(key, total) => self.network.on_first(key, total, first),
        }
    }

    /// See [`Dedup::sweep`].
    pub fn sweep(&mut self, all: bool) -> Vec<Event> {
        let mut summaries = self.files.sweep(all);
        summaries.extend(self.network.sweep(all));
        summaries
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use custos_proto::v1::FileOpen;

    use super::*;

    #[derive(Default)]
    struct Counters(RefCell<HashMap<FileDedupKey, u64>>);

    impl CounterSource<FileDedupKey> for &Counters {
        fn suppressed_total(&self, key: &FileDedupKey) -> Option<u64> {
            self.0.borrow().get(key).copied()
        }
    }

    fn first_event(path: &str) -> Event {
        Event {
            body: Some(Body::FileOpen(FileOpen {
                path: path.into(),
                fd: Some(3),
                ..FileOpen::default()
            })),
            ..Event::default()
        }
    }

    fn repeats(event: &Event) -> u64 {
        match &event.body {
            Some(Body::FileOpen(open)) if open.repeat_summary => open.repeats,
            _ => panic!("not a summary"),
        }
    }

    fn a_key() -> FileDedupKey {
        FileDedupKey {
            tgid: 1,
            ino: 9,
            ..FileDedupKey::default()
        }
    }

    #[test]
    fn a_closed_window_reports_its_count_once() {
        let (counters, key) = (Counters::default(), a_key());
        let mut dedup = Dedup::new(&counters, Duration::ZERO, 8);
        assert!(dedup.on_first(key, 0, &first_event("/etc/hosts")).is_none());
        counters.0.borrow_mut().insert(key, 999);
        std::thread::sleep(GRACE);
        let summaries = dedup.sweep(false);
        assert_eq!(summaries.len(), 1);
        assert_eq!(repeats(&summaries[0]), 999);
        assert!(dedup.sweep(true).is_empty(), "nothing left to report");
    }

    #[test]
    fn counts_after_the_sweep_ride_on_the_next_first_event() {
        let (counters, key) = (Counters::default(), a_key());
        let mut dedup = Dedup::new(&counters, Duration::from_secs(3600), 8);
        dedup.on_first(key, 0, &first_event("/a"));
        counters.0.borrow_mut().insert(key, 5);
        let summaries = dedup.sweep(true);
        assert_eq!(repeats(&summaries[0]), 5);
        // Two more were counted in the kernel after the sweep read 5.
        let owed = dedup.on_first(key, 7, &first_event("/a")).unwrap();
        assert_eq!(repeats(&owed), 2);
    }

    #[test]
    fn an_evicted_kernel_entry_is_counted_not_reported() {
        let counters = Counters::default();
        let key = FileDedupKey {
            tgid: 2,
            ..FileDedupKey::default()
        };
        let mut dedup = Dedup::new(&counters, Duration::ZERO, 8);
        dedup.on_first(key, 0, &first_event("/b"));
        assert!(dedup.sweep(true).is_empty());
        assert_eq!(dedup.evicted, 1);
        // Recreated entry starting over from zero: no bogus summary.
        assert!(dedup.on_first(key, 0, &first_event("/b")).is_none());
    }
}
