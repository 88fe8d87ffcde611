//! The daemon's data flow: ring buffer → decode → enrich → sequence → sinks.
//!
//! One task owns the ring buffer and everything up to sequencing, so `seq` is gap-free and in
//! ring order; the sinks run on their own thread behind an unbounded channel, so the ring buffer
//! is drained whatever the sinks do. On SIGINT/SIGTERM the hooks are detached first, then what
//! the kernel had already accepted is drained and flushed before exit.
use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use custos_proto::v1::{event::Body, Event, EventKind, LossReason};
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use sd_notify::NotifyState;
use sensor_common::{
    file_flags, FileDedupKey, FileDedupState, DENIED_DEVICES_MAP, EVENTS_MAP, FILE_DEDUP_MAP,
    WATCHED_DEVICES_MAP,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::{
        broadcast,
        mpsc::{self, UnboundedReceiver, UnboundedSender},
    },
};

use crate::{
    alerts::AlertEngine,
    cgroups::{cgroup2_mount, CgroupResolver},
    config::{Config, FileEvents, PrivacyConfig},
    decode::{self, Record},
    dedup::Dedup,
    devices::{deny::KernelDenyList, sysfs::DeviceSources, DeviceTracker},
    enrich::{event_kind, Enricher},
    host::HostInfo,
    identity::{NameCache, Nss},
    kernel::{
        drops::DropCounters,
        filters::{self, FilterMaps},
        loader,
    },
    metrics::{self, HookLabels, KindLabels, Metrics, ProgramLabels, SinkLabels},
    people::PeopleFile,
    privacy::{redact::Redactor, Privacy},
    proc_scan,
    process_table::ProcessTable,
    sessions::{SessionSources, SessionTracker},
    sinks::{spool::Spool, Sinks, SpoolLoss},
    tail,
};

/// How long exited processes stay in the table for late events.
const EXITED_GRACE: Duration = Duration::from_secs(10);
/// How often drop counters are read and the table swept.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Events handed to the sink thread at once at most (a large drain goes over in pieces, so the
/// sinks start writing early and memory stays flat).
const SINK_BATCH: usize = 256;

type KernelDedup = Dedup<BpfHashMap<MapData, FileDedupKey, FileDedupState>>;

/// Per-kind event counters, looked up once so that counting costs no label hashing.
/// Events emitted, by kind: one counter handle per kind, fetched once.
struct EventCounters {
    by_kind: Vec<(EventKind, Counter)>,
}

impl EventCounters {
    fn new(metrics: &Metrics) -> Self {
        let by_kind = EventKind::OF_BODIES
            .iter()
            .map(|&kind| {
                let labels = KindLabels {
                    kind: kind.short_name().to_owned(),
                };
                (kind, metrics.events.get_or_create(&labels).clone())
            })
            .collect();
        Self { by_kind }
    }

    fn count(&self, event: &Event) {
        let kind = event.kind();
        if let Some((_, counter)) = self.by_kind.iter().find(|(k, _)| *k == kind) {
            counter.inc();
        }
    }
}

/// The kernel's file filters for a configuration: its [file] rules, the watched devices, the
/// alert rules' sensitive paths (no path rule may hide them) and the privacy setting's file
/// events.
fn kernel_rules(config: &Config, cgroup_root: &Path) -> Result<filters::KernelRules> {
    let sensitive: Vec<String> = config
        .alerts
        .rules
        .iter()
        .flat_map(|rule| rule.paths.iter().cloned())
        .collect();
    filters::resolve(
        &config.file,
        config.sensors.file,
        config.sensors.devices,
        &sensitive,
        config.privacy.file_events,
        cgroup_root,
    )
}

/// The argument redactor the privacy settings ask for.
fn redactor_for(privacy: &PrivacyConfig) -> Result<Option<Redactor>> {
    Ok(if privacy.redact_secrets {
        Some(Redactor::new(&privacy.secret_patterns)?)
    } else {
        None
    })
}

/// CLOCK_BOOTTIME now, in nanoseconds (the kernel records' clock).
fn boottime_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Starts the metrics endpoint and the status socket. Neither is the sensor's job, so a port
/// or socket that cannot be bound is logged, not fatal.
async fn serve_observability(
    config: &Config,
    metrics: &Arc<Metrics>,
    tail_events: &broadcast::Sender<Arc<Event>>,
) {
    if !config.tail.socket.as_os_str().is_empty() {
        match tail::bind(&config.tail.socket) {
            Ok(listener) => {
                tokio::spawn(tail::serve(
                    listener,
                    tail_events.clone(),
                    config.tail.groups.clone(),
                    config.privacy.clone(),
                ));
            }
            Err(err) => tracing::warn!("no live stream for custos tail: {err:#}"),
        }
    }
    if !config.metrics.listen.is_empty() {
        match tokio::net::TcpListener::bind(&config.metrics.listen).await {
            Ok(listener) => {
                if let Ok(address) = listener.local_addr() {
                    tracing::info!("metrics on http://{address}/metrics");
                }
                tokio::spawn(metrics::serve_http(listener, metrics.clone()));
            }
            Err(err) => tracing::error!(
                listen = %config.metrics.listen,
                "metrics endpoint not started: {err}; change metrics.listen"
            ),
        }
    }
    match metrics::bind_status(&config.status.socket) {
        Ok(listener) => {
            tokio::spawn(metrics::serve_status(listener, metrics.clone()));
        }
        Err(err) => tracing::warn!("no status socket: {err:#}"),
    }
}

/// Stages between the ring buffer and the sink channel.
struct Stages {
    enricher: Enricher<Nss>,
    dedup: KernelDedup,
    /// Whether exec/exit events are wanted (the table is kept either way).
    process_events: bool,
    next_seq: u64,
    /// Events for the sink thread, handed over a batch at a time: one wakeup of the sink
    /// thread per drain instead of one per event.
    out: UnboundedSender<Vec<Event>>,
    batch: Vec<Event>,
    /// Batches the sink thread has written, coming back: their events are freed here, on the
    /// thread that allocated them, so their memory goes straight back to this thread's free
    /// lists (a smaller resident set than freeing across threads), and one buffer is kept for
    /// the next batch.
    spent: std::sync::mpsc::Receiver<Vec<Event>>,
    spare: Option<Vec<Event>>,
    /// Undecodable records per kind since the last housekeeping tick.
    undecodable: Vec<(u32, u64)>,
    /// What the sinks' spools dropped, to report in-band.
    spool_losses: UnboundedReceiver<SpoolLoss>,
    metrics: Arc<Metrics>,
    counters: EventCounters,
    alerts: AlertEngine,
    privacy: Privacy,
    file_events: FileEvents,
    /// The live stream's clients (`custos tail`); they get events before the sinks' privacy
    /// view and apply their own.
    tail: broadcast::Sender<Arc<Event>>,
}

impl Stages {
    fn emit(&mut self, mut event: Event) -> Result<()> {
        if !self.collected(&event) {
            return Ok(());
        }
        self.counters.count(&event);
        event.seq = self.next_seq;
        self.next_seq += 1;
        // Rules see the real identity; sinks only ever see what privacy lets through.
        let alerts = self.alerts.evaluate(&event);
        if self.tail.receiver_count() > 0 {
            let _ = self.tail.send(Arc::new(event.clone()));
        }
        self.privacy.apply(&mut event);
        self.batch.push(event);
        if self.batch.len() >= SINK_BATCH {
            self.hand_over()?;
        }
        for alert in alerts {
            self.emit(alert)?;
        }
        Ok(())
    }

    /// Hands the events emitted so far to the sink thread.
    fn hand_over(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.free_spent();
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(SINK_BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        self.out
            .send(batch)
            .map_err(|_| anyhow!("the sink thread stopped; see the error above"))
    }

    /// Frees the events of the batches the sink thread has written.
    fn free_spent(&mut self) {
        while let Ok(mut spent) = self.spent.try_recv() {
            spent.clear();
            if self.spare.is_none() {
                self.spare = Some(spent);
            }
        }
    }

    /// The privacy setting's file events: what the kernel could not leave out is left out here,
    /// before the event takes a seq.
    fn collected(&self, event: &Event) -> bool {
        let Some(Body::FileOpen(open)) = &event.body else {
            return true;
        };
        let keep = || {
            open.device.as_ref().is_some_and(|d| d.watched)
                || self.alerts.in_sensitive_set(&open.path)
        };
        match self.file_events {
            FileEvents::All => true,
            FileEvents::NoHome => !open.path.starts_with("/home/") || keep(),
            FileEvents::SensitiveAndRemovable => keep(),
        }
    }

    fn handle(&mut self, bytes: &[u8]) -> Result<()> {
        match decode::decode(bytes) {
            Ok(record) => {
                let dedup_first = match &record {
                    Record::FileOpen(open) if open.fixed.flags & file_flags::DEDUP_FIRST != 0 => {
                        Some((
                            KernelDedup::key_of(&open.fixed),
                            open.fixed.suppressed_total,
                        ))
                    }
                    Record::Exec(_) | Record::Exit(_) if !self.process_events => {
                        self.enricher.event(record);
                        self.enricher.preceding.clear();
                        self.enricher.following.clear();
                        return Ok(());
                    }
                    _ => None,
                };
                let event = self.enricher.event(record);
                for before in std::mem::take(&mut self.enricher.preceding) {
                    self.emit(before)?;
                }
                if let Some(event) = event {
                    if let Some((key, total)) = dedup_first {
                        if let Some(summary) = self.dedup.on_first(key, total, &event) {
                            self.emit(summary)?;
                        }
                    }
                    self.emit(event)?;
                }
                for after in std::mem::take(&mut self.enricher.following) {
                    self.emit(after)?;
                }
            }
            Err(err) => {
                tracing::warn!("undecodable kernel record: {err}");
                let kind = err.kind();
                match self.undecodable.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => self.undecodable.push((kind, 1)),
                }
            }
        }
        Ok(())
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<()> {
        while let Some(item) = ring.next() {
            self.handle(&item)?;
        }
        Ok(())
    }

    /// Turns kernel drops and undecodable records into in-band loss events.
    fn report_losses(&mut self, drops: &mut DropCounters) -> Result<()> {
        for (kind, count) in drops.new_drops() {
            tracing::warn!(kind, count, "kernel ring buffer full: records dropped");
            self.metrics
                .kernel_drops
                .get_or_create(&KindLabels {
                    kind: format!("{:?}", event_kind(kind)),
                })
                .inc_by(count);
            let event =
                self.enricher
                    .loss(event_kind(kind), count, LossReason::KernelBufferFull, "");
            self.emit(event)?;
        }
        for (kind, count) in std::mem::take(&mut self.undecodable) {
            let event = self
                .enricher
                .loss(event_kind(kind), count, LossReason::Undecodable, "");
            self.emit(event)?;
        }
        while let Ok(loss) = self.spool_losses.try_recv() {
            for (kind, count) in loss.dropped {
                let event = self
                    .enricher
                    .loss(kind, count, LossReason::SpoolFull, &loss.sink);
                self.emit(event)?;
            }
        }
        Ok(())
    }

    /// Per-identity, per-device write summaries since `since`.
    fn report_device_writes(&mut self, since: std::time::SystemTime) -> Result<()> {
        for summary in self.enricher.device_write_summaries(since) {
            self.emit(summary)?;
        }
        Ok(())
    }

    /// Summaries of closed deduplication windows (all of them when `all`).
    fn report_repeats(&mut self, all: bool) -> Result<()> {
        for summary in self.dedup.sweep(all) {
            self.emit(summary)?;
        }
        Ok(())
    }
}

/// Gauges read on the housekeeping tick: process, spools, eBPF run statistics.
fn refresh_gauges(metrics: &Metrics, spools: &[(String, Arc<Spool>)], ebpf: &aya::Ebpf) {
    metrics.refresh_process();
    for (sink, spool) in spools {
        let labels = SinkLabels { sink: sink.clone() };
        metrics
            .spool_bytes
            .get_or_create(&labels)
            .set(spool.backlog_bytes() as i64);
        let age = spool
            .oldest_unsent_time()
            .and_then(|t| {
                let at = std::time::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                std::time::SystemTime::now().duration_since(at).ok()
            })
            .unwrap_or_default();
        metrics
            .spool_age
            .get_or_create(&labels)
            .set(age.as_secs_f64());
    }
    for (name, program) in ebpf.programs() {
        let Ok(info) = program.info() else {
            continue;
        };
        let labels = ProgramLabels {
            program: name.to_owned(),
        };
        metrics
            .bpf_run_seconds
            .get_or_create(&labels)
            .set(info.run_time().as_secs_f64());
        metrics
            .bpf_run_count
            .get_or_create(&labels)
            .set(info.run_count() as i64);
    }
}

/// Tells systemd about our state when it supervises us (NOTIFY_SOCKET set); a no-op otherwise.
fn notify(state: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!("could not notify systemd: {err}");
    }
}

/// Applies a new configuration's file rules to the running programs.
fn reload(
    path: &Path,
    filters: &mut FilterMaps,
    stages: &mut Stages,
    cgroup_root: &Path,
) -> Result<()> {
    let config = Config::load(path)?;
    let rules = kernel_rules(&config, cgroup_root)?;
    filters.apply(&rules)?;
    stages
        .dedup
        .set_window(Duration::from_millis(config.file.dedup_window_ms));
    stages.process_events = config.sensors.process;
    stages.enricher.devices.rules = config.devices.rules;
    stages.enricher.redactor = redactor_for(&config.privacy)?;
    stages.privacy = Privacy::new(&config.privacy)?;
    stages.file_events = config.privacy.file_events;
    stages.alerts.replace_rules(config.alerts.rules);
    Ok(())
}

/// Runs the sensor until SIGINT/SIGTERM. With `config_path`, SIGHUP reloads the file rules and
/// event selection from it (sinks and ring size need a restart).
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<()> {
    let host = HostInfo::probe()?;
    // A broken identity map stops start-up: events would silently lack their people.
    let people = config
        .identity
        .map
        .as_deref()
        .map(PeopleFile::load)
        .transpose()?;
    let metrics = Metrics::new(&host.run_id);
    let sinks = Sinks::open(&config.sinks, &config.spool, &config.privacy, &metrics)?;
    let spools = sinks.spools();
    let cgroup_root = cgroup2_mount().unwrap_or_else(|| "/sys/fs/cgroup".into());
    // Resolve the rules before loading anything, so a bad rule stops start-up early.
    let rules = kernel_rules(&config, &cgroup_root)?;

    let mut sensor = loader::load(&loader::LoadOptions {
        ring_buffer_bytes: config.kernel.ring_buffer_bytes,
        wakeup_bytes: config.kernel.ring_buffer_bytes / 16,
        self_tgid: std::process::id(),
        mode: config.kernel.attach,
        file_sensor: config.sensors.file,
        device_sensor: config.sensors.devices,
    })?;
    // Parsing BTF and loading the programs left tens of MiB of freed heap; give it back.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    for (hook, path) in &sensor.hooks {
        metrics
            .hooks
            .get_or_create(&HookLabels {
                hook: (*hook).to_owned(),
                path: path.to_string(),
            })
            .set(1);
    }
    // Run time and count per program, for the metrics; held for as long as the sensor runs.
    let _bpf_stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|e| tracing::warn!("eBPF run-time statistics unavailable: {e}"))
        .ok();
    let (tail_events, _) = broadcast::channel(tail::BACKLOG);
    serve_observability(&config, &metrics, &tail_events).await;
    let mut filters = FilterMaps::take(&mut sensor.ebpf)?;
    filters.apply(&rules)?;
    let watch_map = sensor
        .ebpf
        .take_map(WATCHED_DEVICES_MAP)
        .ok_or_else(|| anyhow!("map {WATCHED_DEVICES_MAP} missing from the object"))?;
    let watch_map = BpfHashMap::try_from(watch_map)?;
    let dedup_map = sensor
        .ebpf
        .take_map(FILE_DEDUP_MAP)
        .ok_or_else(|| anyhow!("map {FILE_DEDUP_MAP} missing from the object"))?;
    let dedup = Dedup::new(
        BpfHashMap::try_from(dedup_map)?,
        Duration::from_millis(config.file.dedup_window_ms),
    );
    let ring = sensor
        .ebpf
        .take_map(EVENTS_MAP)
        .ok_or_else(|| anyhow!("map {EVENTS_MAP} missing from the object"))?;
    let ring = RingBuf::try_from(ring).context("opening the ring buffer")?;
    // SAFETY: the RingBuf owns the map's fd, and the AsyncFd owns the RingBuf, so the fd stays
    // open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut drops = DropCounters::take(&mut sensor.ebpf)?;

    // Seed after attaching, so a process started in between is seen by one or the other.
    let mut processes = ProcessTable::new(EXITED_GRACE);
    let redactor = redactor_for(&config.privacy)?;
    let seeded = proc_scan::seed(&mut processes, &host, Path::new("/proc"), redactor.as_ref());
    let (out, events) = mpsc::unbounded_channel();
    let (loss_tx, spool_losses) = mpsc::unbounded_channel();
    let (spent_tx, spent) = std::sync::mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("custos-sinks".into())
        .spawn(move || {
            sinks.run(events, loss_tx, |batch| {
                // Once the reader is gone, the batch is simply freed here.
                let _ = spent_tx.send(batch);
            })
        })
        .context("starting the sink thread")?;

    let mut stages = Stages {
        enricher: Enricher {
            host,
            names: NameCache::new(
                Nss,
                NonZeroUsize::new(4096).expect("non-zero"),
                Duration::from_secs(300),
            ),
            cgroups: CgroupResolver::new(cgroup_root.clone(), Duration::from_secs(1)),
            processes,
            redactor,
            identities: LruCache::new(NonZeroUsize::new(4096).expect("non-zero")),
            people,
            devices: DeviceTracker::new(
                DeviceSources::default(),
                config.devices.rules.clone(),
                config.identity.utmp.clone(),
            ),
            sessions: SessionTracker::new(SessionSources {
                proc_root: PathBuf::from("/proc"),
                logind_dir: config.identity.logind_sessions.clone(),
                utmp: config.identity.utmp.clone(),
            }),
            started_boottime_ns: boottime_now_ns(),
            preceding: Vec::new(),
            following: Vec::new(),
        },
        dedup,
        process_events: config.sensors.process,
        next_seq: 1,
        out,
        batch: Vec::with_capacity(SINK_BATCH),
        spent,
        spare: None,
        undecodable: Vec::new(),
        spool_losses,
        counters: EventCounters::new(&metrics),
        alerts: AlertEngine::new(config.alerts.rules.clone()),
        privacy: Privacy::new(&config.privacy)?,
        file_events: config.privacy.file_events,
        tail: tail_events,
        metrics: metrics.clone(),
    };
    if config.sensors.devices {
        let devices = &mut stages.enricher.devices;
        devices.attach_watch_map(watch_map);
        devices.removal_hooked = sensor.attached("disk_removed");
        if sensor.attached("sb_set_mnt_opts") && sensor.attached("file_open") {
            let map = sensor
                .ebpf
                .take_map(DENIED_DEVICES_MAP)
                .ok_or_else(|| anyhow!("map {DENIED_DEVICES_MAP} missing from the object"))?;
            devices.kernel_deny = Some(KernelDenyList::new(BpfHashMap::try_from(map)?));
        }
    }
    let summary_every = Duration::from_secs(config.devices.summary_seconds);
    let mut last_summary = (Instant::now(), std::time::SystemTime::now());

    let hooks: Vec<String> = sensor
        .hooks
        .iter()
        .map(|(hook, path)| format!("{hook}={path}"))
        .collect();
    tracing::info!(
        hooks = %hooks.join(","),
        processes = seeded,
        run_id = %stages.enricher.host.run_id,
        "sensor ready"
    );

    // systemd (Type=notify): ready only now that every hook is attached.
    notify(&[NotifyState::Ready]);
    let watchdog_period = sd_notify::watchdog_enabled()
        .map(|timeout| timeout / 2)
        .unwrap_or(Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval(watchdog_period);

    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    // Records below the wakeup threshold are collected by this timer.
    let mut drain_timer =
        tokio::time::interval(Duration::from_millis(config.kernel.max_latency_ms));
    drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<()> = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                if let Err(err) = stages.drain(guard.get_inner_mut()) {
                    break Err(err);
                }
                guard.clear_ready();
            }
            _ = drain_timer.tick() => {
                if let Err(err) = stages.drain(ring.get_mut()) {
                    break Err(err);
                }
            }
            _ = housekeeping.tick() => {
                if let Err(err) = stages
                    .report_losses(&mut drops)
                    .and_then(|()| stages.report_repeats(false))
                {
                    break Err(err);
                }
                stages.enricher.processes.sweep();
                stages.free_spent();
                stages.enricher.refresh_people();
                stages.enricher.devices.rescan();
                if !summary_every.is_zero() && last_summary.0.elapsed() >= summary_every {
                    if let Err(err) = stages.report_device_writes(last_summary.1) {
                        break Err(err);
                    }
                    last_summary = (Instant::now(), std::time::SystemTime::now());
                }
                refresh_gauges(&metrics, &spools, &sensor.ebpf);
            }
            _ = watchdog.tick() => notify(&[NotifyState::Watchdog]),
            _ = sighup.recv() => match &config_path {
                Some(path) => {
                    notify(&[NotifyState::Reloading]);
                    match reload(path, &mut filters, &mut stages, &cgroup_root) {
                        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                        Err(err) => tracing::error!(
                            config = %path.display(),
                            "configuration not reloaded, the previous one stays in force: {err:#}"
                        ),
                    }
                    notify(&[NotifyState::Ready]);
                }
                None => tracing::warn!("SIGHUP ignored: running on the embedded default"),
            },
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
        if let Err(err) = stages.hand_over() {
            break Err(err);
        }
    };

    // Detach the hooks, then drain and report what was already accepted.
    notify(&[NotifyState::Stopping]);
    drop(sensor);
    let flushed = stages
        .drain(ring.get_mut())
        .and_then(|()| stages.report_losses(&mut drops))
        .and_then(|()| stages.report_repeats(true))
        .and_then(|()| stages.hand_over());
    let sent = stages.next_seq - 1;
    drop(stages);
    let written = writer
        .join()
        .map_err(|_| anyhow!("the sink thread panicked"))?;
    tracing::info!(events = sent, "sensor stopped");
    result.and(flushed).and(written)
}
