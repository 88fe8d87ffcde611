//! A daemon's memory as the benchmarks report it: its resident set, that set with the ring
//! buffer counted once, its private memory, sampled while a load runs.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::bench::status_kib;

/// The largest figures sampled from /proc while the load ran, in KiB.
#[derive(Default, Clone, Copy)]
pub struct LoadMemory {
    pub rss: u64,
    /// The resident set with the ring buffer counted once: the kernel maps its data pages twice
    /// in a row (so that a record across the end reads as one) and fills both mappings at
    /// mmap, so VmRSS counts the ring's memory twice.
    pub rss_ring_once: u64,
    /// Private (anonymous) memory: the resident set less the binary's pages and the ring.
    pub private: u64,
}

impl LoadMemory {
    pub fn sample(pid: u32) -> Self {
        let rss = status_kib(pid, "VmRSS:");
        Self {
            rss,
            rss_ring_once: rss.saturating_sub(ring_second_mapping_kib(pid)),
            private: status_kib(pid, "RssAnon:"),
        }
    }

    pub fn max(self, other: Self) -> Self {
        Self {
            rss: self.rss.max(other.rss),
            rss_ring_once: self.rss_ring_once.max(other.rss_ring_once),
            private: self.private.max(other.private),
        }
    }
}

/// KiB of the ring buffer's second mapping of its data pages, resident in `pid`: the
/// read-only shared mapping of a BPF map that holds the producer page and the data twice.
fn ring_second_mapping_kib(pid: u32) -> u64 {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return 0;
    };
    let mut in_ring = false;
    let mut largest = 0u64;
    for line in smaps.lines() {
        if is_mapping_header(line) {
            let perms = line.split_whitespace().nth(1);
            in_ring = perms == Some("r--s") && line.ends_with("anon_inode:bpf-map");
        } else if let Some(rss) = line.strip_prefix("Rss:").filter(|_| in_ring) {
            let kib = rss.split_whitespace().next().and_then(|v| v.parse().ok());
            largest = largest.max(kib.unwrap_or(0));
        }
    }
    let producer_page = 4;
    largest.saturating_sub(producer_page) / 2
}

/// A line of smaps that starts a mapping (`start-end perms ...`) rather than giving a figure.
fn is_mapping_header(line: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    line.split_whitespace()
        .next()
        .and_then(|range| range.split_once('-'))
        .is_some_and(|(start, end)| hex(start) && hex(end))
}

/// Samples a process's memory on a thread of its own, every `interval`.
pub struct MemorySampler {
    sampling: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<LoadMemory>,
}

impl MemorySampler {
    pub fn start(pid: u32, interval: Duration) -> Self {
        let sampling = Arc::new(AtomicBool::new(true));
        let running = sampling.clone();
        let thread = std::thread::spawn(move || {
            let mut largest = LoadMemory::default();
            while running.load(Ordering::Relaxed) {
                largest = largest.max(LoadMemory::sample(pid));
                std::thread::sleep(interval);
            }
            largest
        });
        Self { sampling, thread }
    }

    /// The largest figures sampled.
    pub fn finish(self) -> LoadMemory {
        self.sampling.store(false, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}
