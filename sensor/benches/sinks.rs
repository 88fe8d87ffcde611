//! How fast the configured sinks take and deliver events, without the kernel in the way
//! (`cargo bench -p custos --bench sinks -- --config FILE [--events N]`, run by
//! `cargo xtask bench sink`). Synthetic file-open events shaped like real ones go through the
//! same encoding, spooling and senders as in `custos run`. Prints
//! `events accepted_ns delivered_ns`.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use custos_proto::v1::{
    event::Body, Cgroup, Event, FileAccess, FileOpen, Group, Identity, Process,
};

use custos::{
    config::Config,
    families::timestamp,
    sinks::{new_part_id, PartIds, PartTagger, SharedParts, Sinks},
};

fn run(config_path: &Path, events: u64) -> Result<()> {
    let config = Config::load(config_path)?;
    let metrics = custos::metrics::Metrics::new("bench");
    let mut sinks = Sinks::open(&config.sinks, &config.spool, &config.privacy, &metrics)?;
    let template = sample_event();
    let start = Instant::now();
    let mut event = template.clone();
    // As in the daemon, the reader side names each event's parts. The daemon's enricher gives
    // a process's kept view and an identity's cached form an id of their own, so the tagger
    // takes them without comparing: one process and one identity here.
    let mut tagger = PartTagger::default();
    let known = PartIds {
        process: new_part_id(),
        identity: new_part_id(),
        ..PartIds::default()
    };
    for seq in 1..=events {
        event.seq = seq;
        let ids = tagger.tag(&event, &SharedParts::default(), known);
        sinks.write(&mut event, ids, &SharedParts::default())?;
        if seq % 1024 == 0 {
            sinks.flush()?;
        }
    }
    sinks.flush()?;
    let accepted = start.elapsed();
    wait_delivered(&sinks, &metrics)?;
    let delivered = start.elapsed();
    sinks.finish();
    println!("{events} {} {}", accepted.as_nanos(), delivered.as_nanos());
    Ok(())
}

/// How long the sinks may deliver nothing before the benchmark gives up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the sinks delivered every event; fails with their last errors once they
/// delivered nothing for [`STALL_LIMIT`] (a stream or server that is missing, for example).
fn wait_delivered(sinks: &Sinks, metrics: &custos::metrics::Metrics) -> Result<()> {
    let mut progress = (sinks.backlog_bytes(), Instant::now());
    loop {
        let backlog = sinks.backlog_bytes();
        if backlog == 0 {
            return Ok(());
        }
        if backlog != progress.0 {
            progress = (backlog, Instant::now());
        } else if progress.1.elapsed() > STALL_LIMIT {
            let errors = metrics.sink_last_error.latest();
            bail!(
                "the sinks delivered nothing for {STALL_LIMIT:?} with {backlog} bytes to go; \
                 their last errors: {}",
                if errors.is_empty() {
                    "none".into()
                } else {
                    errors.join("; ")
                }
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A file-open event of typical size: a full identity and process with a few arguments.
fn sample_event() -> Event {
    Event {
        seq: 0,
        // A run id of its own: events of another run with the same seqs would be resends to
        // NATS, which JetStream drops as duplicates instead of storing.
        run_id: custos::host::HostInfo::probe()
            .expect("this host's facts (/proc mounted)")
            .run_id,
        boot_id: "59b1f51c-1a07-40be-aa86-5571ae1ce2ac".into(),
        host: "bench-host".into(),
        kind: "file_open".into(),
        time: Some(timestamp(std::time::SystemTime::now())),
        identity: Some(Box::new(Identity {
            uid: 1000,
            user: "alice".into(),
            gid: 1000,
            group: "alice".into(),
            euid: 1000,
            euser: "alice".into(),
            egid: 1000,
            egroup: "alice".into(),
            groups: vec![Group {
                gid: 27,
                name: "sudo".into(),
            }],
            login_uid: Some(1000),
            login_user: "alice".into(),
            session_id: Some(3),
            tty: "pts/0".into(),
            ..Identity::default()
        })),
        process: Some(Box::new(Process {
            pid: 4242,
            tid: 4242,
            ppid: 4200,
            exec_id: "59b1f51c-1a07-40be-aa86-5571ae1ce2ac:123456:4242".into(),
            parent_exec_id: "59b1f51c-1a07-40be-aa86-5571ae1ce2ac:123400:4200".into(),
            binary: "/usr/bin/python3.11".into(),
            args: vec![
                "python3".into(),
                "/opt/app/worker.py".into(),
                "--queue=high".into(),
            ],
            cwd: "/opt/app".into(),
            comm: "python3".into(),
            start_time: Some(timestamp(std::time::SystemTime::now())),
            cgroup: Some(Cgroup {
                id: 4321,
                path: "/system.slice/app-worker.service".into(),
                unit: "app-worker.service".into(),
                container_id: String::new(),
            }),
            ..Process::default()
        })),
        body: Some(Body::FileOpen(FileOpen {
            path: "/opt/app/data/customers/2026-11/export.csv".into(),
            access: Some(FileAccess {
                read: true,
                ..FileAccess::default()
            }),
            flags: 0o2000000,
            syscall: "openat".into(),
            fd: Some(5),
            device_major: Some(254),
            device_minor: Some(0),
            inode: Some(409_701),
            ..FileOpen::default()
        })),
    }
}

/// `--config FILE` and `--events N`; cargo's own `--bench` flag is ignored.
fn main() -> Result<()> {
    let mut config = None;
    let mut events = 100_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = args.next(),
            "--events" => events = args.next().context("--events needs a number")?.parse()?,
            _ => {}
        }
    }
    let config = config.context("usage: sinks --config FILE [--events N]")?;
    run(Path::new(&config), events)
}
