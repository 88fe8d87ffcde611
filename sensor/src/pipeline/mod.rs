//! The daemon's data flow: ring buffer → decode → enrich → sequence → sinks.
//!
//! One task owns the ring buffer and everything up to sequencing, so `seq` is gap-free and in
//! ring order; the sinks run on their own thread behind a bounded channel, so a slow disk or a
//! blocked terminal never stalls the reader. When the channel is full, new events are counted
//! as lost (reported in-band once the sinks move) instead of made, so the daemon's memory stays
//! bounded however long a sink is stuck, while every record is still read and the process
//! table, sessions and device control stay current. On SIGINT/SIGTERM the hooks are detached
//! first, then what the kernel had already accepted is drained and flushed before exit, waiting
//! for the sinks.
use std::{
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};
use aya::maps::{MapData, RingBuf};
use custos_proto::v1::Event;
use sd_notify::NotifyState;
use sensor_common::{
    DENIED_DEVICES_MAP, EVENTS_MAP, FILE_DEDUP_ENTRIES, FILE_DEDUP_MAP, NETWORK_DEDUP_ENTRIES,
    NETWORK_DEDUP_MAP, READER_ASLEEP_MAP, WATCHED_DEVICES_MAP,
};
use tokio::{
    io::unix::{AsyncFd, AsyncFdReadyMutGuard},
    signal::unix::{signal, Signal, SignalKind},
    sync::{
        broadcast,
        mpsc::{self, Sender, UnboundedReceiver},
    },
};

mod batch_timer;
mod sink_stall;
mod stages;
mod wakeups;

use batch_timer::BatchTimer;
use sink_stall::SinkStall;
use stages::{EventCounters, Stages, DRAIN_BUDGET, SINK_BATCH};
use wakeups::{Alarm, RingWakeups};

use crate::{
    access::usage::UsageTracker,
    alert::AlertEngine,
    cgroups::{cgroup2_mount, CgroupResolver},
    config::{Config, PrivacyConfig},
    dedup::{Dedup, KernelDedup},
    devices::{
        deny::KernelDenyList,
        kernel_dev,
        sysfs::DeviceSources,
        uevents::{BlockChanges, Uevents},
        DeviceTracker,
    },
    families::Hook,
    families::{Enricher, EnricherParts},
    host::HostInfo,
    identity::{NameCache, Nss},
    kernel::{
        drops::DropCounters,
        filters::{self, FilterMaps},
        loader, network_rules,
    },
    metrics::{self, GaugeRefresh, GaugeRequest, HookLabels, Metrics, ProgramLabels, SinkLabels},
    people::PeopleFile,
    privacy::{redact::Redactor, Privacy},
    proc_scan,
    process_table::ProcessTable,
    sessions::{SessionSources, SessionTracker},
    sinks::{spool::Spool, Batch, PartTagger, Sinks, SpoolLoss},
    tail,
};

/// How long exited processes stay in the table for late events.
const EXITED_GRACE: Duration = Duration::from_secs(10);
/// How often drop counters are read and the table swept.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

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
    let mut rules = filters::resolve(
        &config.file,
        config.sensors.file,
        config.sensors.devices,
        &sensitive,
        config.privacy.file_events,
        cgroup_root,
    )?;
    rules.network = network_rules::resolve(config.sensors.network, &config.network)?;
    Ok(rules)
}

/// Entitlement usage, when the configuration wants it.
fn access_tracker(config: &Config) -> Result<Option<UsageTracker>> {
    if !config.access.usage {
        return Ok(None);
    }
    UsageTracker::start(&config.access, config.alerts.rules.clone()).map(Some)
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
/// or socket that cannot be bound is logged, not fatal. Returns their requests to read the
/// gauges, which the daemon answers.
async fn serve_observability(
    config: &Config,
    metrics: &Arc<Metrics>,
    tail_events: &broadcast::Sender<Arc<Event>>,
) -> mpsc::Receiver<GaugeRequest> {
    let (gauges, gauge_requests) = GaugeRefresh::channel();
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
                tokio::spawn(metrics::serve_http(
                    listener,
                    metrics.clone(),
                    gauges.clone(),
                ));
            }
            Err(err) => tracing::error!(
                listen = %config.metrics.listen,
                "metrics endpoint not started: {err}; change metrics.listen"
            ),
        }
    }
    match metrics::bind_status(&config.status.socket) {
        Ok(listener) => {
            tokio::spawn(metrics::serve_status(
                listener,
                metrics.clone(),
                gauges.clone(),
            ));
        }
        Err(err) => tracing::warn!("no status socket: {err:#}"),
    }
    gauge_requests
}

/// Reads the gauges when asked (see [`GaugeRefresh`]): process, spools, eBPF run statistics.
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

/// The running daemon: the loaded programs and the maps it reads, the stages, the sink thread.
struct Daemon {
    sensor: loader::LoadedSensor,
    ring: AsyncFd<RingBuf<MapData>>,
    wakeups: RingWakeups,
    drops: DropCounters,
    filters: FilterMaps,
    stages: Stages,
    writer: std::thread::JoinHandle<Result<()>>,
    metrics: Arc<Metrics>,
    /// Scrapes and status reports waiting for the gauges to be read.
    gauge_requests: mpsc::Receiver<GaugeRequest>,
    /// The kernel's announcements of devices, when the device sensor is on and they can be
    /// had.
    uevents: Option<Uevents>,
    spools: Vec<(String, Arc<Spool>)>,
    config_path: Option<PathBuf>,
    cgroup_root: PathBuf,
    max_latency: Duration,
    /// The most records the ring can hold: each has at least its header.
    ring_records_max: usize,
    summary_every: Duration,
    /// When the last device-write summary was made, monotonic and wall-clock.
    last_summary: (Instant, std::time::SystemTime),
    /// Whether the sinks have stopped taking events, for the log.
    sink_stall: SinkStall,
    /// Run time and count per program, for the metrics; held for as long as the sensor runs.
    _bpf_stats: Option<std::os::fd::OwnedFd>,
}

/// The identity map, when one is configured. A broken one stops start-up: events would
/// silently lack their people.
fn people_file(config: &Config) -> Result<Option<PeopleFile>> {
    config
        .identity
        .map
        .as_deref()
        .map(PeopleFile::load)
        .transpose()
}

/// The gid of `[files] group`.
fn reader_group(name: &str) -> Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => {
            anyhow::bail!("[files] group {name:?} does not exist: create it or remove the setting")
        }
    }
}

/// Runs the sensor until SIGINT/SIGTERM. With `config_path`, SIGHUP reloads the file rules and
/// event selection from it (sinks and ring size need a restart).
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<()> {
    // Caught from before start-up, so that a stop which comes as soon as the sensor says it is
    // ready (or while it starts) is a clean one, not the signal's default of dying at once.
    let mut signals = Signals::install()?;
    let mut daemon = Daemon::start(config, config_path).await?;
    let result = daemon.event_loop(&mut signals).await;
    daemon.shutdown(result).await
}

/// The signals the daemon acts on.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
        })
    }
}

impl Daemon {
    /// Opens the sinks, loads and attaches the programs, seeds the process table and starts
    /// the sink thread; the sensor is ready when this returns.
    async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Self> {
        let host = HostInfo::probe()?;
        if let Some(group) = &config.files.group {
            crate::files::set_reader_group(reader_group(group)?);
            crate::files::share_logs_directories()?;
        }
        let people = people_file(&config)?;
        let metrics = Metrics::new(&host.run_id);
        let sinks = Sinks::open(&config.sinks, &config.spool, &config.privacy, &metrics)?;
        let spools = sinks.spools();
        let cgroup_root = cgroup2_mount().unwrap_or_else(|| "/sys/fs/cgroup".into());
        // Resolve the rules before loading anything, so a bad rule stops start-up early.
        let rules = kernel_rules(&config, &cgroup_root)?;
        let mut sensor = load_kernel(&config, &metrics)?;
        let _bpf_stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| tracing::warn!("eBPF run-time statistics unavailable: {e}"))
            .ok();
        let (tail_events, _) = broadcast::channel(tail::BACKLOG);
        let gauge_requests = serve_observability(&config, &metrics, &tail_events).await;
        let renames_seen = sensor.attached(Hook::IoUringComplete);
        let network_hooks = network_hook_flags(&sensor);
        let mut filters = FilterMaps::take(&mut sensor.ebpf, network_hooks, renames_seen)?;
        filters.apply(&rules)?;
        let ring = take_ring(&mut sensor)?;
        let wakeups = RingWakeups::new(take_map(&mut sensor, READER_ASLEEP_MAP)?);
        let drops = DropCounters::take(&mut sensor.ebpf)?;
        let forks_recorded = sensor.attached(Hook::SchedProcessFork);
        let enricher = new_enricher(&config, host, people, &cgroup_root, forks_recorded)?;
        let queue_batches = config.output.queue_events.div_ceil(SINK_BATCH);
        let (writer, channels) = spawn_sink_thread(sinks, queue_batches)?;
        let dedup = kernel_dedup(&mut sensor, &config)?;
        let mut stages = new_stages(&config, enricher, dedup, channels, &metrics, tail_events)?;
        let uevents = watch_devices(&config, &mut sensor, stages.enricher.devices_mut())?;
        let daemon = Self {
            sensor,
            ring,
            wakeups,
            drops,
            filters,
            stages,
            writer,
            metrics,
            gauge_requests,
            uevents,
            spools,
            config_path,
            cgroup_root,
            max_latency: Duration::from_millis(config.kernel.max_latency_ms),
            ring_records_max: config.kernel.ring_buffer_bytes as usize
                / size_of::<sensor_common::RecordHeader>(),
            summary_every: Duration::from_secs(config.devices.summary_seconds),
            last_summary: (Instant::now(), std::time::SystemTime::now()),
            sink_stall: SinkStall::default(),
            _bpf_stats,
        };
        daemon.announce_ready();
        crate::allocator::steady();
        Ok(daemon)
    }

    /// Logs the hooks and their paths, and tells systemd (Type=notify) the sensor is ready:
    /// only now is every hook attached.
    fn announce_ready(&self) {
        let hooks: Vec<String> = self
            .sensor
            .hooks
            .iter()
            .map(|(hook, path)| format!("{hook}={path}"))
            .collect();
        tracing::info!(
            hooks = %hooks.join(","),
            processes = self.stages.enricher.known_processes(),
            run_id = %self.stages.enricher.run_id(),
            "sensor ready"
        );
        notify(&[NotifyState::Ready]);
    }

    /// Drains the ring buffer as records come (or at the latest every `max_latency`), keeps
    /// house every second, and reloads on SIGHUP, until SIGINT or SIGTERM.
    async fn event_loop(&mut self, signals: &mut Signals) -> Result<()> {
        let watchdog_period = sd_notify::watchdog_enabled()
            .map(|timeout| timeout / 2)
            .unwrap_or(Duration::from_secs(3600));
        let mut watchdog = tokio::time::interval(watchdog_period);
        // Housekeeping rides on a drain that comes when it is due; its own alarm rings only
        // when none does (the ring is quiet), so it costs no wakeup of its own while records
        // come.
        let housekeeping = Alarm::new()?;
        housekeeping.ring_every(HOUSEKEEPING)?;
        let mut housekept = Instant::now();
        // Records below the wakeup threshold are collected by this timer while they come; it
        // stops when they stop (see `on_drain_timer`). Every drain empties the ring, so it is
        // set again from each one: `max_latency` after the last drain, not on a fixed beat.
        let drain_alarm = Alarm::new()?;
        drain_alarm.ring_after(self.max_latency)?;
        let mut timer_running = true;
        loop {
            let backed_up = self.stages.backed_up();
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let guard = guard.context("waiting on the ring buffer")?;
                    let more = drain_ready(&mut self.stages, guard)?;
                    drain_alarm.ring_after(self.max_latency)?;
                    timer_running = true;
                    if more {
                        // The runtime gets its turn (timers, scrapes, signals) first.
                        tokio::task::yield_now().await;
                    }
                }
                room = stages::sink_room(&self.stages.out), if backed_up => {
                    room?;
                    self.stages.hand_over()?;
                }
                rang = drain_alarm.rang(), if timer_running => {
                    rang?;
                    timer_running = self.on_drain_timer()?;
                    if timer_running {
                        drain_alarm.ring_after(self.max_latency)?;
                    }
                    if housekept.elapsed() >= HOUSEKEEPING {
                        housekeeping.ring_every(HOUSEKEEPING)?;
                        housekept = Instant::now();
                        self.housekeep()?;
                    }
                }
                rang = housekeeping.rang() => {
                    rang?;
                    housekept = Instant::now();
                    self.housekeep()?;
                }
                changed = block_devices_changed(self.uevents.as_ref()) => {
                    self.on_block_devices_changed(changed)?;
                }
                Some(done) = self.gauge_requests.recv() => {
                    refresh_gauges(&self.metrics, &self.spools, &self.sensor.ebpf);
                    let _ = done.send(());
                }
                _ = watchdog.tick() => notify(&[NotifyState::Watchdog]),
                _ = signals.hangup.recv() => {
                    self.stages.hand_over()?;
                    self.reload();
                }
                _ = signals.terminate.recv() => return Ok(()),
                _ = signals.interrupt.recv() => return Ok(()),
            }
            // While records come, events go to the sinks in batches; once the ring is quiet
            // (the timer stopped), nothing is held back.
            if timer_running {
                self.stages.hand_over_when_due()?;
            } else {
                self.stages.hand_over()?;
            }
        }
    }

    /// The kernel announced a change of block devices: removed partitions are forgotten, so
    /// that their numbers' next partitions are described anew, and the devices are listed.
    /// Should the announcements fail, housekeeping lists them every second from then on.
    fn on_block_devices_changed(&mut self, changed: std::io::Result<BlockChanges>) -> Result<()> {
        match changed {
            Ok(changes) if !changes.partitions_removed.is_empty() => {
                // The records of what was done on them before they went are described first:
                // as many as the ring can hold.
                let most = self.ring_records_max;
                self.stages
                    .drain_while(self.ring.get_mut(), most, |_| true)?;
                let devices = self.stages.enricher.devices_mut();
                for (major, minor) in changes.partitions_removed {
                    devices.forget(kernel_dev(major, minor));
                }
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(
                    "device announcements stopped ({err}): block devices are listed every \
                     second instead"
                );
                self.uevents = None;
            }
        }
        self.stages.enricher.devices_mut().rescan();
        Ok(())
    }

    /// The drain timer expired: drains, and says whether the timer should keep running. When
    /// nothing came since the last tick, the kernel is asked to wake the daemon at the next
    /// record instead, so an idle host costs no timer ticks. A record submitted just as the
    /// request is made may not wake it; the drain after the request, and at worst the next
    /// housekeeping tick, collect it.
    fn on_drain_timer(&mut self) -> Result<bool> {
        if self.stages.drain(self.ring.get_mut())? > 0 {
            return Ok(true);
        }
        self.wakeups.wake_at_next_record()?;
        Ok(self.stages.drain(self.ring.get_mut())? > 0)
    }

    /// Once a second: losses and repeat summaries in-band, the table swept, the identity map
    /// re-read, device-write summaries when due, and the devices listed where the kernel does
    /// not announce them.
    fn housekeep(&mut self) -> Result<()> {
        self.stages.drain(self.ring.get_mut())?;
        self.stages.hand_over()?;
        let behind = self.stages.backed_up();
        self.sink_stall.observe(behind);
        let queued = self.stages.queued_events();
        self.metrics.sink_queue_events.set(queued as i64);
        // While the sinks are behind, reports would be lost too: they wait, counting on. The
        // access used meanwhile still goes to disk, so that a stop that never ends keeps it.
        if !behind {
            self.report()?;
        } else if let Some(access) = &mut self.stages.access {
            access.save_when_due();
        }
        self.stages.enricher.housekeep();
        // Without the kernel's announcements of devices, the devices are listed every second.
        if self.uevents.is_none() {
            self.stages.enricher.devices_mut().rescan();
        }
        Ok(())
    }

    /// Losses, closed repeat windows, access usage and, when due, device-write summaries.
    fn report(&mut self) -> Result<()> {
        let stages = &mut self.stages;
        stages.report_losses(&mut self.drops)?;
        stages.report_repeats(false)?;
        stages.report_access_usage()?;
        let every = self.summary_every;
        if !every.is_zero() && self.last_summary.0.elapsed() >= every {
            stages.report_device_writes(self.last_summary.1)?;
            self.last_summary = (Instant::now(), std::time::SystemTime::now());
        }
        Ok(())
    }

    /// SIGHUP: applies the configuration file's rules to the running programs and stages; a
    /// file that does not load leaves the rules in force.
    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            tracing::warn!("SIGHUP ignored: running on the embedded default");
            return;
        };
        notify(&[NotifyState::Reloading]);
        match self.apply(&path) {
            Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
            Err(err) => tracing::error!(
                config = %path.display(),
                "configuration not reloaded, the previous one stays in force: {err:#}"
            ),
        }
        notify(&[NotifyState::Ready]);
    }

    fn apply(&mut self, path: &Path) -> Result<()> {
        let config = Config::load(path)?;
        let rules = kernel_rules(&config, &self.cgroup_root)?;
        self.filters.apply(&rules)?;
        let stages = &mut self.stages;
        stages
            .dedup
            .files
            .set_window(Duration::from_millis(config.file.dedup_window_ms));
        stages
            .dedup
            .network
            .set_window(Duration::from_millis(config.network.dedup_window_ms));
        stages.process_events = config.sensors.process;
        stages
            .enricher
            .set_rules(config.devices.rules, redactor_for(&config.privacy)?);
        stages.privacy = Privacy::new(&config.privacy)?;
        // Equal parts may now be encoded differently.
        stages.tagger.reset();
        stages.file_events = config.privacy.file_events;
        if let Some(access) = &mut stages.access {
            access.replace_rules(config.alerts.rules.clone());
        }
        stages.alerts.replace_rules(config.alerts.rules);
        Ok(())
    }

    /// Detaches the hooks, then drains and reports what the kernel had already accepted, and
    /// waits for the sink thread to write it all.
    async fn shutdown(self, result: Result<()>) -> Result<()> {
        notify(&[NotifyState::Stopping]);
        let Self {
            sensor,
            mut ring,
            mut drops,
            mut stages,
            writer,
            gauge_requests,
            ..
        } = self;
        // Scrapes and status reports meanwhile get the gauges as last read, not a wait for a
        // stop that a stuck output may hold up.
        drop(gauge_requests);
        drop(sensor);
        // A stuck output may hold the stop until it is killed: the access used is saved first.
        let behind = stages.backed_up();
        if let Some(access) = stages.access.as_mut().filter(|_| behind) {
            access.save();
        }
        let flushed = flush_accepted(&mut stages, ring.get_mut(), &mut drops).await;
        let sent = stages.next_seq - 1;
        if let Some(access) = &mut stages.access {
            access.save();
        }
        drop(stages);
        // Waited for off the runtime: a stuck output holds the sink thread, and meanwhile
        // `custos status` and scrapes are still answered.
        let written = tokio::task::spawn_blocking(move || writer.join())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| anyhow!("the sink thread panicked"))?;
        tracing::info!(events = sent, "sensor stopped");
        result.and(flushed).and(written)
    }
}

/// Drains the ring the runtime found ready; whether records may be left (the drain used its
/// whole budget), in which case the ring stays ready and the loop comes back to them.
fn drain_ready(
    stages: &mut Stages,
    mut ring: AsyncFdReadyMutGuard<RingBuf<MapData>>,
) -> Result<bool> {
    let more = stages.drain(ring.get_inner_mut())? == DRAIN_BUDGET;
    if !more {
        ring.clear_ready();
    }
    Ok(more)
}

/// Drains what the kernel accepted, reports losses and open summaries, and hands it all to the
/// sinks, waiting for them when they are behind.
async fn flush_accepted(
    stages: &mut Stages,
    ring: &mut RingBuf<MapData>,
    drops: &mut DropCounters,
) -> Result<()> {
    if stages.backed_up() {
        tracing::warn!("stopping: waiting for the sinks to take the events already accepted");
    }
    // Nothing is lost for the sinks being behind now: the reader waits for them instead.
    loop {
        // The hooks are detached: the ring only empties, so this drain ends.
        stages.drain_while(ring, usize::MAX, |stages| !stages.backed_up())?;
        if !stages.backed_up() {
            break;
        }
        stages.wait_for_sinks().await?;
    }
    stages.report_losses(drops)?;
    stages.report_repeats(true)?;
    stages.hand_over_all().await
}

/// The stages between the ring buffer and the sink thread, nothing emitted yet.
fn new_stages(
    config: &Config,
    enricher: Enricher<Nss>,
    dedup: KernelDedup,
    channels: SinkChannels,
    metrics: &Arc<Metrics>,
    tail: broadcast::Sender<Arc<Event>>,
) -> Result<Stages> {
    Ok(Stages {
        enricher,
        dedup,
        process_events: config.sensors.process,
        next_seq: 1,
        out: channels.out,
        batch: Batch::with_capacity(SINK_BATCH),
        batch_timer: BatchTimer::configured(config),
        tagger: PartTagger::default(),
        spent: channels.spent,
        spare: None,
        held: None,
        unmade: Vec::new(),
        events_sent: 0,
        events_written: 0,
        undecodable: Vec::new(),
        spool_losses: channels.spool_losses,
        counters: EventCounters::new(metrics),
        alerts: AlertEngine::new(config.alerts.rules.clone()),
        access: access_tracker(config)?,
        privacy: Privacy::new(&config.privacy)?,
        file_events: config.privacy.file_events,
        own_pid: std::process::id(),
        tail,
        metrics: metrics.clone(),
    })
}

/// Loads and attaches the programs, records the path each hook took in the metrics.
fn load_kernel(config: &Config, metrics: &Metrics) -> Result<loader::LoadedSensor> {
    let sensor = loader::load(&loader::LoadOptions {
        ring_buffer_bytes: config.kernel.ring_buffer_bytes,
        wakeup_bytes: config.kernel.ring_buffer_bytes / 16,
        self_tgid: std::process::id(),
        mode: config.kernel.attach,
        file_sensor: config.sensors.file,
        device_sensor: config.sensors.devices,
        network_sensor: config.sensors.network,
        max_open_connections: config.network.max_open_connections,
    })?;
    // Parsing BTF and loading the programs left tens of MiB of freed heap; give it back.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    for (hook, path) in &sensor.hooks {
        metrics
            .hooks
            .get_or_create(&HookLabels {
                hook: hook.name().to_owned(),
                path: path.to_string(),
            })
            .set(1);
    }
    Ok(sensor)
}

/// A map of the loaded object, taken out of it as the type `M` its user reads it as.
/// The network settings' bits that depend on attached hooks: connects followed to their
/// outcome and end (the state-change hook), and a connect whose error its application took
/// first waiting for that error (the socket-end hook, which guarantees it is sent).
fn network_hook_flags(sensor: &loader::LoadedSensor) -> u32 {
    use sensor_common::network_flags as nf;
    let mut flags = 0;
    if sensor.attached(Hook::InetSockSetState) {
        flags |= nf::COMPLETIONS;
        if sensor.attached(Hook::TcpDestroySock) {
            flags |= nf::SOCKET_ENDS;
        }
    }
    flags
}

fn take_map<M>(sensor: &mut loader::LoadedSensor, name: &str) -> Result<M>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = sensor
        .ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    Ok(M::try_from(map)?)
}

/// The daemon's side of the kernel's deduplication of file opens and connects.
fn kernel_dedup(sensor: &mut loader::LoadedSensor, config: &Config) -> Result<KernelDedup> {
    Ok(KernelDedup {
        files: Dedup::new(
            take_map(sensor, FILE_DEDUP_MAP)?,
            Duration::from_millis(config.file.dedup_window_ms),
            FILE_DEDUP_ENTRIES,
        ),
        network: Dedup::new(
            take_map(sensor, NETWORK_DEDUP_MAP)?,
            Duration::from_millis(config.network.dedup_window_ms),
            NETWORK_DEDUP_ENTRIES,
        ),
    })
}

/// The ring buffer, registered with tokio.
fn take_ring(sensor: &mut loader::LoadedSensor) -> Result<AsyncFd<RingBuf<MapData>>> {
    let ring: RingBuf<MapData> = take_map(sensor, EVENTS_MAP).context("opening the ring buffer")?;
    // SAFETY: the RingBuf owns the map's fd, and the AsyncFd owns the RingBuf, so the fd stays
    // open for as long as it is registered.
    unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow!("registering the ring buffer with tokio: {e}"))
}

/// The enricher with a process table seeded from /proc. Seeded after attaching, so a process
/// started in between is seen by one or the other; `forks_recorded` when the fork hook is
/// attached.
fn new_enricher(
    config: &Config,
    host: HostInfo,
    people: Option<PeopleFile>,
    cgroup_root: &Path,
    forks_recorded: bool,
) -> Result<Enricher<Nss>> {
    let mut processes = ProcessTable::new(EXITED_GRACE);
    let redactor = redactor_for(&config.privacy)?;
    proc_scan::seed(&mut processes, &host, Path::new("/proc"), redactor.as_ref());
    let started_boottime_ns = boottime_now_ns();
    let cache_size = NonZeroUsize::new(4096).expect("non-zero");
    Ok(Enricher::new(EnricherParts {
        host,
        names: NameCache::new(Nss, cache_size, Duration::from_secs(300)),
        cgroups: CgroupResolver::new(cgroup_root.to_owned(), Duration::from_secs(1)),
        processes,
        redactor,
        identities: cache_size,
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
        started_boottime_ns,
        forks_recorded_since: forks_recorded.then_some(started_boottime_ns),
    }))
}

/// The reader's ends of the channels to and from the sink thread.
struct SinkChannels {
    out: Sender<Batch>,
    spool_losses: UnboundedReceiver<SpoolLoss>,
    spent: std::sync::mpsc::Receiver<Batch>,
}

/// Starts the thread that writes to the sinks, with room for `queue_batches` batches.
fn spawn_sink_thread(
    sinks: Sinks,
    queue_batches: usize,
) -> Result<(std::thread::JoinHandle<Result<()>>, SinkChannels)> {
    let (out, events) = mpsc::channel(queue_batches);
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
    let channels = SinkChannels {
        out,
        spool_losses,
        spent,
    };
    Ok((writer, channels))
}

/// With the device sensor on: the kernel's announcements of devices (`None`, with a warning,
/// when they cannot be had), and the kernel's device maps.
fn watch_devices(
    config: &Config,
    sensor: &mut loader::LoadedSensor,
    devices: &mut DeviceTracker,
) -> Result<Option<Uevents>> {
    if !config.sensors.devices {
        return Ok(None);
    }
    // Opened before the devices are first listed, so that none comes in between unseen.
    let uevents = Uevents::open()
        .map_err(|err| {
            tracing::warn!(
                "no device announcements from the kernel ({err}): block devices are listed \
                 every second instead"
            );
        })
        .ok();
    attach_device_control(sensor, devices)?;
    Ok(uevents)
}

/// Returns when the kernel announced a change of block devices; never without announcements.
async fn block_devices_changed(uevents: Option<&Uevents>) -> std::io::Result<BlockChanges> {
    match uevents {
        Some(uevents) => uevents.block_devices_changed().await,
        None => std::future::pending().await,
    }
}

/// Device control: the watched-devices map, whether removals are hooked, and the kernel's deny
/// list where the LSM hooks that enforce it are attached.
fn attach_device_control(
    sensor: &mut loader::LoadedSensor,
    devices: &mut DeviceTracker,
) -> Result<()> {
    devices.attach_watch_map(take_map(sensor, WATCHED_DEVICES_MAP)?);
    devices.removal_hooked = sensor.attached(Hook::DiskRemoved);
    if sensor.attached(Hook::SbSetMntOpts) && sensor.attached(Hook::FileOpen) {
        let map = take_map(sensor, DENIED_DEVICES_MAP)?;
        devices.kernel_deny = Some(KernelDenyList::new(map));
    }
    Ok(())
}
