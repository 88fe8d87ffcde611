//! `kill -9` of the daemon at random moments while events flow and the collector goes down
//! and comes back: every event the spool accepted is delivered, in order, a duplicate only
//! where a new connection resends what the last one had not confirmed, and a `seq` gap only
//! where a loss event accounts for it.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{ensure, Result};
use custos_proto::v1::{event::Body, Event, LossReason};
use custos_tests::{
    collector::SwitchedCollector, load::ExecLoad, require_root, Entry, Marker, Sensor, TestConfig,
};

const KILLS: usize = 20;

/// An event's identity across runs: the run and its number in that run.
type Key = (String, u64);

fn key(event: &Event) -> Key {
    (event.run_id.clone(), event.seq)
}

#[test]
fn kill_9_at_random_moments_with_the_collector_going_up_and_down_loses_nothing() -> Result<()> {
    require_root();
    let seed = std::env::var("CUSTOS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (set CUSTOS_TEST_SEED to repeat this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let spool = tempfile::tempdir()?;
    let collector = Arc::new(Mutex::new(SwitchedCollector::new()?));
    let address = collector.lock().expect("lock").address.to_string();
    let config = TestConfig::new()
        .file_sensor(false)
        .spool(spool.path())
        .spool_max_bytes(256 << 20)
        .sink(Entry::tcp_sink("collector", &address));
    let marker = Marker::new("/bin/true")?;
    let _load = ExecLoad::start(&marker)?;
    let switching = Switching::start(collector.clone(), rng.u64(..));

    let watch = SpoolWatch::start(spool.path().join("collector"));
    for _ in 0..KILLS {
        let sensor = Sensor::start(&config)?;
        std::thread::sleep(Duration::from_millis(rng.u64(100..1500)));
        custos_tests::signal(sensor.pid(), "KILL")?;
        drop(sensor);
    }
    let accepted = watch.finish();
    switching.finish();
    collector.lock().expect("lock").up()?;
    // A last run, stopped cleanly, delivers everything left.
    let mut sensor = Sensor::start(&config)?;
    std::thread::sleep(Duration::from_secs(1));
    sensor.stop()?;
    let connections = collector.lock().expect("lock").events_by_connection();
    check_delivery(&connections, &accepted)
}

/// What the spool accepted: every whole record that appeared in its segments, read as they
/// grow (a sent segment is deleted soon, so reading only at the kills would miss most).
struct SpoolWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeSet<Key>>,
}

impl SpoolWatch {
    fn start(dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            // How far each segment was read, in whole records.
            let mut read: HashMap<PathBuf, usize> = HashMap::new();
            while !stopping.load(Ordering::Relaxed) {
                read_new_records(&dir, &mut read, &mut seen);
                std::thread::sleep(Duration::from_millis(10));
            }
            read_new_records(&dir, &mut read, &mut seen);
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> BTreeSet<Key> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the spool watch")
    }
}

fn read_new_records(dir: &Path, read: &mut HashMap<PathBuf, usize>, seen: &mut BTreeSet<Key>) {
    let Ok(segments) = custos_tests::spool_segments(dir) else {
        return; // not made yet
    };
    for segment in segments {
        let Ok(bytes) = std::fs::read(&segment) else {
            continue; // deleted meanwhile
        };
        let offset = read.entry(segment).or_default();
        let mut reader = bytes.get(*offset..).unwrap_or_default();
        // A record still being written, or torn, is not read yet.
        while let Ok(Some(event)) = custos_proto::delimited::read_one(&mut reader) {
            seen.insert(key(&event));
            *offset = bytes.len() - reader.len();
        }
    }
}

fn check_delivery(connections: &[Vec<Event>], accepted: &BTreeSet<Key>) -> Result<()> {
    let delivered: BTreeSet<Key> = connections.iter().flatten().map(key).collect();
    let missing: Vec<_> = accepted.difference(&delivered).take(10).collect();
    ensure!(
        missing.is_empty(),
        "spooled but never delivered (of {} spooled): {missing:?}",
        accepted.len()
    );
    ensure!(connections.len() > 2, "{} connections", connections.len());
    let runs = run_order(connections);
    // A run killed before its first spool flush has nothing to deliver; most have.
    ensure!(
        runs.len() > KILLS / 2,
        "{} runs delivered events",
        runs.len()
    );
    let mut earlier = BTreeSet::new();
    for (n, events) in connections.iter().enumerate() {
        check_connection(n, events, &runs, &earlier)?;
        earlier.extend(events.iter().map(key));
    }
    check_seq_gaps(connections, &delivered)?;
    eprintln!(
        "{} events from {} runs over {} connections; {} seen in the spool at the kills",
        delivered.len(),
        runs.len(),
        connections.len(),
        accepted.len()
    );
    Ok(())
}

/// Each run's place in the spool's order, as the runs first appear.
fn run_order(connections: &[Vec<Event>]) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for event in connections.iter().flatten() {
        let next = runs.len();
        runs.entry(event.run_id.clone()).or_insert(next);
    }
    runs
}

/// In one connection events come in the spool's order, and those already delivered on an
/// earlier connection (the resent ones) all come before the first new one.
fn check_connection(
    n: usize,
    events: &[Event],
    runs: &HashMap<String, usize>,
    earlier: &BTreeSet<Key>,
) -> Result<()> {
    let mut last: Option<(usize, u64)> = None;
    let mut new_seen = false;
    for event in events {
        let place = (runs[&event.run_id], event.seq);
        ensure!(
            last.is_none_or(|last| place > last),
            "connection {n}: {place:?} after {last:?}"
        );
        last = Some(place);
        let resent = earlier.contains(&key(event));
        ensure!(
            !(resent && new_seen),
            "connection {n}: {place:?} resent after new events"
        );
        new_seen |= !resent;
    }
    Ok(())
}

/// Within each run, numbers missing between delivered ones are covered by that run's
/// reported losses for this sink.
fn check_seq_gaps(connections: &[Vec<Event>], delivered: &BTreeSet<Key>) -> Result<()> {
    let mut lost_by_run: BTreeMap<&str, u64> = BTreeMap::new();
    for event in connections.iter().flatten() {
        if let Some(Body::Loss(loss)) = &event.body {
            let spool_loss = [LossReason::SpoolFull, LossReason::SpoolWriteFailed]
                .map(|r| r as i32)
                .contains(&loss.reason);
            if spool_loss && loss.sink == "collector" {
                *lost_by_run.entry(&event.run_id).or_default() += loss.count;
            }
        }
    }
    let mut by_run: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (run, seq) in delivered {
        by_run.entry(run).or_default().push(*seq);
    }
    for (run, seqs) in by_run {
        let first = seqs[0];
        let span = seqs[seqs.len() - 1] - first + 1;
        let missing = span - seqs.len() as u64;
        ensure!(
            first == 1 || lost_by_run.get(run).copied().unwrap_or(0) >= first - 1,
            "run {run} starts at seq {first}"
        );
        ensure!(
            missing <= lost_by_run.get(run).copied().unwrap_or(0),
            "run {run}: {missing} seq numbers missing between {first} and {}, losses reported: {:?}",
            seqs[seqs.len() - 1],
            lost_by_run.get(run)
        );
    }
    Ok(())
}

/// Takes the collector down and brings it back at random moments, until finished.
struct Switching {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Switching {
    fn start(collector: Arc<Mutex<SwitchedCollector>>, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            while !stopping.load(Ordering::Relaxed) {
                {
                    let mut collector = collector.lock().expect("lock");
                    if collector.is_up() {
                        collector.down();
                    } else if let Err(err) = collector.up() {
                        eprintln!("bringing the collector up: {err:#}");
                    }
                }
                std::thread::sleep(Duration::from_millis(rng.u64(200..2000)));
            }
        });
        Self { stop, thread }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
