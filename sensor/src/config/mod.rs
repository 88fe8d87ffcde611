//! The TOML configuration. Unknown keys are errors: a misspelt key must not silently leave a
//! default in force on a security sensor.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use serde::Deserialize;
use smart_default::SmartDefault;

mod validate;

/// The configuration used when `custos run` gets no --config: every sensor on, JSON to stdout.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../packaging/custos.toml");

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sensors: Sensors,
    #[serde(default)]
    pub kernel: Kernel,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub file: FileSensor,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub devices: DevicesConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    #[serde(default)]
    pub tail: TailConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub files: FilesConfig,
    pub sinks: Vec<SinkConfig>,
}

/// The files the daemon writes (spools, file sinks, state): root's alone, or readable by a
/// group too.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// A group given read access (files 0640, directories 0750); fixed at start.
    pub group: Option<String>,
}

/// Entitlement usage per person.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// Track which entitlements each person uses.
    #[default(true)]
    pub usage: bool,
    /// Holds access-usage.json.
    #[default("/var/lib/custos".into())]
    pub state_dir: PathBuf,
    /// Seconds between access_usage summaries of each person; 0 sends none.
    #[default(3600)]
    pub summary_seconds: u64,
    /// Seconds between lookups of what the host grants each person.
    #[default(600)]
    pub refresh_seconds: u64,
    #[default(10_000)]
    pub max_persons: usize,
    /// Entitlements and sudo commands remembered per person.
    #[default(512)]
    pub max_entitlements: usize,
    #[default(default_program_dirs())]
    pub program_dirs: Vec<PathBuf>,
}

pub fn default_program_dirs() -> Vec<PathBuf> {
    [
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/lib/openssh",
        "/usr/lib/dbus-1.0",
        "/usr/libexec",
    ]
    .map(PathBuf::from)
    .to_vec()
}

impl AccessConfig {
    /// The usage state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("access-usage.json")
    }
}

/// Where people and their login sessions come from.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// The organisation's identity map (TOML, or CSV when the name ends in .csv); re-read when
    /// it changes.
    pub map: Option<PathBuf>,
    /// The utmp file login sessions are looked up in.
    #[default("/run/utmp".into())]
    pub utmp: PathBuf,
    /// systemd-logind's session state directory.
    #[default("/run/systemd/sessions".into())]
    pub logind_sessions: PathBuf,
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// host:port to serve GET /metrics on; empty turns it off.
    #[default("127.0.0.1:9464".into())]
    pub listen: String,
}

/// The local socket `custos status` reads.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    #[default(default_status_socket())]
    pub socket: PathBuf,
}

pub fn default_status_socket() -> PathBuf {
    "/run/custos/status.sock".into()
}

/// The on-disk spool in front of every network sink.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Each network sink spools under DIR/<sink name>.
    #[default("/var/lib/custos/spool".into())]
    pub dir: PathBuf,
    /// Bound per sink; past it the oldest events are dropped and reported by a loss event.
    #[default(256 * 1024 * 1024)]
    pub max_bytes: u64,
}

/// TLS for a network sink. Without `ca_file` the system's CA store verifies the server.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry; defaults to the address's host.
    pub server_name: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Sensors {
    #[default(true)]
    pub process: bool,
    #[default(true)]
    pub file: bool,
    #[default(true)]
    pub devices: bool,
    /// Network connections: connect, accept, listen.
    #[default(true)]
    pub network: bool,
}

/// Network connections. Reloadable with SIGHUP.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Report connections whose peer is a loopback address (127.0.0.0/8, ::1); listens on a
    /// loopback address count as such. Off: local services talking to each other are noise
    /// for most hosts, and leave nothing.
    pub loopback: bool,
    /// Addresses or networks in CIDR form (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`) of the
    /// peer (for listen and bind, the local address). The longest matching rule decides; with
    /// any include, addresses that match no rule are dropped.
    pub include_addresses: Vec<String>,
    pub exclude_addresses: Vec<String>,
    /// Remote ports (for listen and bind, the local port).
    pub include_ports: Vec<u16>,
    pub exclude_ports: Vec<u16>,
    /// User names or numeric uids (the real uid of the caller).
    pub include_users: Vec<String>,
    pub exclude_users: Vec<String>,
    /// Process names (comm, at most 15 bytes).
    pub include_comms: Vec<String>,
    pub exclude_comms: Vec<String>,
    /// Identical connects (same process, peer and outcome) within this many milliseconds of
    /// the first are counted in the kernel and reported as one summary; 0 reports every
    /// connect.
    #[default(5000)]
    pub dedup_window_ms: u64,
    /// Open TCP connections the kernel follows to their end (for duration and bytes) at most;
    /// memory is taken as connections come, about 600 bytes each. Beyond it, new connections'
    /// ends are not reported and a loss event says how many. Read at start.
    #[default(16384)]
    pub max_open_connections: u32,
}

/// Least-privilege alert rules. Reloadable with SIGHUP.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub rules: Vec<AlertRule>,
}

/// A sensitive path set, who may touch it, and when bulk reading becomes an alert.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub id: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Path prefixes of the sensitive set (end a directory with "/").
    #[serde(default)]
    pub paths: Vec<String>,
    /// Programs (absolute paths) only the allowed roles and groups may run.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Writes to removable media (watched devices) are for the allowed roles and groups only.
    #[serde(default)]
    pub removable_writes: bool,
    /// Roles (from the identity map) and Unix groups whose members may open files in the set,
    /// run the programs and write to removable media.
    #[serde(default)]
    pub allow_roles: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// Which opens count: "any", "read" or "write".
    #[serde(default)]
    pub access: AccessKind,
    /// Alert when one allowed identity opens more than this many distinct files of the set
    /// within `bulk_minutes` (identities outside the allowed roles alert on every open).
    pub bulk_files: Option<usize>,
    #[serde(default = "default_bulk_minutes")]
    pub bulk_minutes: u64,
    /// Alert when one person (the login user, or the user without a login) sends more than
    /// this many bytes over TCP connections to destinations outside `internal_networks` within
    /// `egress_minutes` (counted when each connection ends; loopback never counts).
    pub egress_bytes: Option<u64>,
    #[serde(default = "default_bulk_minutes")]
    pub egress_minutes: u64,
    /// Networks in CIDR form (`10.0.0.0/8`) whose traffic is not egress.
    #[serde(default)]
    pub internal_networks: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

fn default_severity() -> Severity {
    Severity::Medium
}

fn default_bulk_minutes() -> u64 {
    10
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    #[default]
    Any,
    Read,
    Write,
}

/// What is collected about people, and in which form.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Collect command-line arguments at all.
    #[default(true)]
    pub argv: bool,
    /// Which file events are collected: "all", "no_home" (nothing under /home/ except
    /// sensitive sets) or "sensitive_and_removable" (only the alert rules' sensitive sets and
    /// removable media). Applied in the kernel where it can be.
    pub file_events: FileEvents,
    /// Replace secrets in arguments (passwords, tokens, keys) with "[REDACTED]".
    #[default(true)]
    pub redact_secrets: bool,
    /// More secret patterns (regular expressions); the first capture group, or the whole match
    /// without one, is redacted.
    pub secret_patterns: Vec<String>,
    /// Replace user names, principals, display names and home-directory names with keyed
    /// pseudonyms (`custos reidentify` maps them back with the key).
    pub pseudonymize: bool,
    /// The pseudonymisation key (`custos privacy-key FILE` makes one).
    pub key_file: Option<PathBuf>,
    /// Sinks that get less than the above (a sink's view can only take more away).
    pub sink_views: Vec<SinkView>,
}

/// What one sink receives, beyond the [privacy] settings every sink gets.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkView {
    /// The sink's name, as logs and metrics give it (`file /var/log/custos/events.json`, or a
    /// network sink's `name`).
    pub sink: String,
    #[serde(default)]
    pub names: NameView,
    #[serde(default = "yes")]
    pub argv: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileEvents {
    #[default]
    All,
    NoHome,
    SensitiveAndRemovable,
}

/// The local live stream (`custos tail`) and who may read it with which view.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TailConfig {
    /// The Unix socket; "" turns the stream off.
    #[default("/run/custos/tail.sock".into())]
    pub socket: PathBuf,
    /// Groups whose members may read the stream, each with its view. Root always may, with
    /// real names.
    pub groups: Vec<TailGroup>,
}

/// A group allowed to read the live stream, and what its members see.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TailGroup {
    pub group: String,
    /// How people's names appear: "real", "pseudonym" (needs privacy.key_file) or "hidden".
    #[serde(default)]
    pub names: NameView,
    /// Whether command-line arguments are shown.
    #[serde(default = "yes")]
    pub argv: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NameView {
    Real,
    #[default]
    Pseudonym,
    Hidden,
}

/// Block devices: what is watched, the write summaries, and device control.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Seconds between per-identity, per-device write summaries; 0 turns them off.
    #[default(60)]
    pub summary_seconds: u64,
    /// Rules, first match wins; a device no rule matches is allowed (and reported).
    pub rules: Vec<DeviceRule>,
}

/// One device-control rule: which devices, for whom, and what to do.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    /// A name for the rule in events; `device_rules[N]` without one.
    pub name: Option<String>,
    pub action: DeviceAction,
    /// Device match (every field given must match): bus ("usb", "loop", "scsi", ...),
    /// USB "vendor:product" ids in hex, serial number.
    pub bus: Option<String>,
    pub vendor_product: Option<String>,
    pub serial: Option<String>,
    /// Identity match: the rule applies only to members of one of `groups` (when given) and to
    /// no member of `except_groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub except_groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAction {
    Allow,
    ReadOnly,
    Deny,
}

/// File-open filtering and deduplication, applied in the kernel. Reloadable with SIGHUP.
#[derive(Clone, Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileSensor {
    /// Report only opens that can modify the file (write access, O_CREAT, O_TRUNC, O_APPEND).
    pub writes_only: bool,
    /// Byte prefixes of absolute paths. The longest matching rule decides; with any include,
    /// paths that match no rule are dropped.
    pub include_paths: Vec<String>,
    pub exclude_paths: Vec<String>,
    /// Byte prefixes where read-only opens are not reported (opens that can modify a file
    /// still are): by default the dynamic loader's cache, shared libraries and locale data
    /// that every process reads. Include and exclude rules for the same prefix take precedence.
    #[default(default_exclude_read_paths())]
    pub exclude_read_paths: Vec<String>,
    /// User names or numeric uids (the real uid of the opener).
    pub include_users: Vec<String>,
    pub exclude_users: Vec<String>,
    /// Process names (comm, at most 15 bytes).
    pub include_comms: Vec<String>,
    pub exclude_comms: Vec<String>,
    /// Executable files (matched by device and inode, so renames and links still match).
    pub include_executables: Vec<PathBuf>,
    pub exclude_executables: Vec<PathBuf>,
    /// cgroup v2 paths (`/system.slice/cron.service`); exact cgroups, not their children.
    pub include_cgroups: Vec<String>,
    pub exclude_cgroups: Vec<String>,
    /// Identical opens (same process, file and access) within this many milliseconds of the
    /// first are counted in the kernel and reported as one summary; 0 reports every open.
    #[default(5000)]
    pub dedup_window_ms: u64,
    /// Each reported open says which grant let it through (owner, group, other, ACL entry,
    /// capability) and names the file's owner and group.
    #[default(true)]
    pub access_basis: bool,
}

/// What every dynamically linked program reads at start: the loader's cache, shared
/// libraries, locale and time-zone data. Its exec event already names the program.
pub fn default_exclude_read_paths() -> Vec<String> {
    [
        "/etc/ld.so.cache",
        "/lib/",
        "/lib64/",
        "/usr/lib/",
        "/usr/lib64/",
        "/usr/share/locale/",
        "/usr/share/zoneinfo/",
    ]
    .map(String::from)
    .to_vec()
}

#[derive(Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Kernel {
    #[default(8 * 1024 * 1024)]
    pub ring_buffer_bytes: u32,
    pub attach: AttachMode,
    /// Longest a record waits in the ring buffer before the daemon reads it, in milliseconds.
    /// The daemon is woken early, before a sixteenth of the ring can fill unannounced, and at
    /// once for the records it acts on (new devices and mounts, privilege changes).
    #[default(250)]
    pub max_latency_ms: u64,
}

/// How events are handed from the reader to the sinks.
#[derive(Debug, Deserialize, SmartDefault, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Longest an event read from the kernel waits for its sinks while records keep coming, in
    /// milliseconds: the sinks write (and their thread wakes) once per batch instead of once per
    /// drain. A quiet ring, an alert, a reload or a stop hands over what is held at once.
    #[default(100)]
    pub batch_ms: u64,
    /// Events that may wait for the sinks at most. When a local output stops taking them and
    /// this many wait, new events are counted as lost (and reported once the sinks move)
    /// instead of held, so the daemon's memory stays bounded.
    #[default(65_536)]
    pub queue_events: usize,
}

/// Which program types the hooks may use.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// The best the kernel accepts: tp_btf, else the classic tracepoint.
    #[default]
    Auto,
    /// Classic tracepoints only (for kernels whose tp_btf support misbehaves).
    Tracepoint,
    /// BTF-typed programs only (LSM, fentry/fexit, tp_btf): no kprobes and no per-syscall
    /// tracepoints, so every syscall's exit runs the `sys_exit` program.
    Btf,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One canonical-proto3-JSON `custos.v1.Event` per line.
    Json,
    /// Length-delimited `custos.v1.Event` messages (a varint length before each).
    Protobuf,
    /// One OCSF 1.7.0 JSON object per line (see `sinks::ocsf`).
    Ocsf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    Stdout {
        #[serde(default = "json")]
        format: Format,
    },
    File {
        path: PathBuf,
        #[serde(default = "json")]
        format: Format,
        /// Rotate when the file reaches this size: FILE becomes FILE.1, FILE.1 becomes FILE.2,
        /// and so on. Absent: never rotate.
        max_bytes: Option<u64>,
        /// Rotated files kept besides the current one.
        #[serde(default = "default_max_files")]
        max_files: u32,
    },
    /// Length-delimited protobuf over TCP (optionally TLS), through the spool.
    Tcp {
        /// host:port of the collector.
        address: String,
        /// Names the sink in logs and its spool directory; defaults to "tcp-HOST-PORT".
        name: Option<String>,
        tls: Option<TlsConfig>,
    },
    /// RFC 5424 syslog over TCP (optionally TLS), one event as JSON per message, through the
    /// spool.
    Syslog {
        /// host:port of the syslog daemon.
        address: String,
        /// Names the sink in logs and its spool directory; defaults to "syslog-HOST-PORT".
        name: Option<String>,
        /// Syslog facility (auth, authpriv, audit, daemon, user, local0..local7).
        #[serde(default = "default_facility")]
        facility: Facility,
        tls: Option<TlsConfig>,
        /// The messages' body: `json` (canonical) or `ocsf`.
        #[serde(default = "json")]
        format: Format,
    },
    /// NATS JetStream, through the spool.
    Nats(NatsSink),
}

/// A NATS JetStream sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatsSink {
    /// Names the sink in logs and its spool directory; defaults to "nats-HOST-PORT".
    pub name: Option<String>,
    /// nats://host:port (tls://host:port for TLS-only servers); for a cluster, several
    /// separated by commas, as the NATS tools take them (the client also learns the others
    /// from the server it reaches).
    pub url: String,
    /// The JetStream stream that stores the events; it must take `<subject_prefix>.>`.
    pub stream: String,
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Create the stream when it does not exist (needs the right to create streams).
    #[serde(default)]
    pub create_stream: bool,
    /// Copies of the stream a created stream keeps (3 on a cluster survives losing a server).
    #[serde(default = "one_replica")]
    pub replicas: usize,
    /// A NATS `.creds` file (JWT and NKey seed), as `nsc` writes it.
    pub credentials_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls: Option<TlsConfig>,
    /// The messages' payload: `protobuf` (one `custos.v1.Event`, what `access-report --nats`
    /// reads), `json` or `ocsf`.
    #[serde(default = "protobuf")]
    pub format: Format,
    /// Events one message carries at most. 1 (the default) sends each event as a message of
    /// its own; more puts up to that many events of one kind in a message, framed as the file
    /// sink writes them (a varint length before each protobuf event; one line per JSON or OCSF
    /// event) and marked with a `Custos-Events` header, so a server that spends most of its
    /// time per message stores many times more events.
    #[serde(default = "one_event")]
    pub events_per_message: usize,
}

fn one_replica() -> usize {
    1
}

fn one_event() -> usize {
    1
}

impl NatsSink {
    /// The server URLs the `url` setting lists.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }
}

fn default_subject_prefix() -> String {
    "custos".into()
}

fn default_facility() -> Facility {
    Facility::Authpriv
}

/// A syslog facility (RFC 5424, section 6.2.1), by the name rsyslog and syslog-ng use.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Daemon,
    Auth,
    Syslog,
    Authpriv,
    Audit,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// Its number in a message's PRI.
    pub fn number(self) -> u8 {
        match self {
            Self::Kern => 0,
            Self::User => 1,
            Self::Daemon => 3,
            Self::Auth => 4,
            Self::Syslog => 5,
            Self::Authpriv => 10,
            Self::Audit => 13,
            Self::Local0 => 16,
            Self::Local1 => 17,
            Self::Local2 => 18,
            Self::Local3 => 19,
            Self::Local4 => 20,
            Self::Local5 => 21,
            Self::Local6 => 22,
            Self::Local7 => 23,
        }
    }
}

fn default_max_files() -> u32 {
    5
}

/// The name of a NATS sink without an explicit one.
fn nats_name(nats: &NatsSink) -> String {
    format!(
        "nats-{}",
        sanitized(
            nats.urls()
                .first()
                .copied()
                .unwrap_or_default()
                .trim_start_matches("nats://")
                .trim_start_matches("tls://")
        )
    )
}

impl SinkConfig {
    /// A name unique and stable across restarts (the spool directory depends on it).
    pub fn name(&self) -> String {
        match self {
            SinkConfig::Stdout { .. } => "stdout".into(),
            SinkConfig::File { path, .. } => format!("file {}", path.display()),
            SinkConfig::Tcp {
                name: Some(name), ..
            }
            | SinkConfig::Syslog {
                name: Some(name), ..
            } => name.clone(),
            SinkConfig::Tcp { address, .. } => format!("tcp-{}", sanitized(address)),
            SinkConfig::Syslog { address, .. } => format!("syslog-{}", sanitized(address)),
            SinkConfig::Nats(nats) => nats.name.clone().unwrap_or_else(|| nats_name(nats)),
        }
    }
}

/// An address as a file-name-safe string.
fn sanitized(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn yes() -> bool {
    true
}

fn json() -> Format {
    Format::Json
}

fn protobuf() -> Format {
    Format::Protobuf
}

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: Config = toml::from_str(text)
            .map_err(|e| anyhow!("{}", one_line(&e, text)))
            .with_context(|| format!("invalid configuration in {origin}"))?;
        config
            .validate()
            .with_context(|| format!("invalid configuration in {origin}"))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        crate::files::check_trusted(path, "configuration file")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading configuration file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn embedded_default() -> Result<Self> {
        Self::parse(EMBEDDED_DEFAULT, "the embedded default configuration")
    }
}

/// A TOML error on one line ("line 3, column 1: unknown field `proces`, expected ..."), for
/// logs and terminals alike.
pub fn one_line(err: &toml::de::Error, text: &str) -> String {
    let message = err.message().trim().replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid_and_writes_json_to_stdout() {
        let config = Config::embedded_default().unwrap();
        assert!(config.sensors.process);
        assert_eq!(
            config.sinks,
            vec![SinkConfig::Stdout {
                format: Format::Json
            }]
        );
        // A file that leaves [file] out gets what the commented default spells out.
        assert_eq!(config.file, FileSensor::default());
    }

    #[test]
    fn file_sinks_parse_with_their_format() {
        let config = Config::parse(
            "[[sinks]]\ntype = \"file\"\npath = \"/tmp/x.pb\"\nformat = \"protobuf\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(
            config.sinks,
            vec![SinkConfig::File {
                path: "/tmp/x.pb".into(),
                format: Format::Protobuf,
                max_bytes: None,
                max_files: 5,
            }]
        );
    }

    #[test]
    fn a_nats_sink_takes_a_cluster_as_comma_separated_urls_and_refuses_bad_ones() {
        let parse =
            |sink: &str| Config::parse(&format!("[[sinks]]\n{sink}\nstream = \"S\"\n"), "t");
        let cluster =
            parse("type = \"nats\"\nurl = \"nats://a:4222, nats://b:4223\"\nreplicas = 3").unwrap();
        let SinkConfig::Nats(nats) = &cluster.sinks[0] else {
            panic!("a nats sink");
        };
        assert_eq!(nats.urls(), ["nats://a:4222", "nats://b:4223"]);
        assert_eq!(nats.replicas, 3);
        assert_eq!(cluster.sinks[0].name(), "nats-a-4222");
        for (url, error) in [
            ("nats://a:99999", "not a server address"),
            (" , ", "url is empty"),
            ("nats://a:4222,http://b", "not a server address"),
        ] {
            let refused = parse(&format!("type = \"nats\"\nurl = \"{url}\""));
            let message = format!("{:#}", refused.unwrap_err());
            assert!(message.contains(error), "{url}: {message}");
        }
        let replicas = parse("type = \"nats\"\nurl = \"nats://a:1\"\nreplicas = 7");
        assert!(format!("{:#}", replicas.unwrap_err()).contains("1 to 5"));
        assert_eq!(
            nats.events_per_message, 1,
            "one event per message by default"
        );
        for events in [0, 501] {
            let refused = parse(&format!(
                "type = \"nats\"\nurl = \"nats://a:1\"\nevents_per_message = {events}"
            ));
            assert!(format!("{:#}", refused.unwrap_err()).contains("at most 500"));
        }
    }

    #[test]
    fn ocsf_is_a_format_of_the_json_sinks_and_not_of_tcp_or_protobuf_syslog() {
        let parse = |sink: &str| Config::parse(&format!("[[sinks]]\n{sink}\n"), "t");
        let file = parse("type = \"file\"\npath = \"/tmp/x\"\nformat = \"ocsf\"").unwrap();
        assert!(matches!(
            file.sinks[0],
            SinkConfig::File {
                format: Format::Ocsf,
                ..
            }
        ));
        let nats = parse("type = \"nats\"\nurl = \"nats://h:4222\"\nstream = \"S\"").unwrap();
        assert!(matches!(&nats.sinks[0], SinkConfig::Nats(n) if n.format == Format::Protobuf));
        let nats =
            parse("type = \"nats\"\nurl = \"nats://h:4222\"\nstream = \"S\"\nformat = \"ocsf\"");
        assert!(matches!(&nats.unwrap().sinks[0], SinkConfig::Nats(n) if n.format == Format::Ocsf));
        let syslog = parse("type = \"syslog\"\naddress = \"h:514\"\nformat = \"protobuf\"");
        assert!(format!("{:#}", syslog.unwrap_err()).contains("\"json\" or \"ocsf\""));
        assert!(parse("type = \"tcp\"\naddress = \"h:1\"\nformat = \"ocsf\"").is_err());
    }

    #[test]
    fn syslog_facilities_are_named_and_numbered() {
        let sink = |facility: &str| {
            Config::parse(
                &format!(
                    "[[sinks]]\ntype = \"syslog\"\naddress = \"h:1\"\nfacility = \"{facility}\"\n"
                ),
                "t",
            )
        };
        let config = sink("local3").unwrap();
        let SinkConfig::Syslog { facility, .. } = &config.sinks[0] else {
            panic!("not a syslog sink");
        };
        assert_eq!(facility.number(), 19);
        let err = format!("{:#}", sink("mail2").unwrap_err());
        assert!(err.contains("mail2") && err.contains("authpriv"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key_and_line() {
        let err = Config::parse(
            "[sensors]\nproces = true\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("proces"), "{message}");
        assert!(message.contains("line 2, column 1"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn file_rules_are_validated() {
        let config = Config::parse(
            "[file]\nexclude_paths = [\"/proc/\"]\ndedup_window_ms = 0\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.file.exclude_paths, vec!["/proc/"]);
        assert_eq!(config.file.dedup_window_ms, 0);
        let err = Config::parse(
            "[file]\ninclude_paths = [\"tmp\"]\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not absolute"));
        let err = Config::parse(
            "[file]\nexclude_comms = [\"a-very-long-process-name\"]\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("1 to 15 bytes"));
    }

    #[test]
    fn sink_addresses_paths_and_tls_files_that_cannot_work_are_refused() {
        let parse = |sink: &str| Config::parse(&format!("[[sinks]]\n{sink}\n"), "t");
        let refusal = |sink: &str| format!("{:#}", parse(sink).unwrap_err());
        assert!(parse("type = \"tcp\"\naddress = \"collector.example:6514\"").is_ok());
        assert!(parse("type = \"tcp\"\naddress = \"[2001:db8::1]:6514\"").is_ok());
        assert!(refusal("type = \"tcp\"\naddress = \"127.0.0.1:99999\"").contains("1 to 65535"));
        assert!(refusal("type = \"syslog\"\naddress = \"127.0.0.1:0\"").contains("1 to 65535"));
        assert!(refusal("type = \"tcp\"\naddress = \"2001:db8::1:6514\"").contains("brackets"));
        assert!(refusal("type = \"tcp\"\naddress = \"bad host:514\"").contains("host name"));
        assert!(refusal("type = \"file\"\npath = \"/tmp/a\\u0000b\"").contains("NUL"));
        let missing_ca =
            "type = \"tcp\"\naddress = \"h:1\"\n[sinks.tls]\nca_file = \"/nonexistent/ca.pem\"";
        assert!(refusal(missing_ca).contains("/nonexistent/ca.pem"));
        // Files that exist but hold no certificate, or no key, are refused too.
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate\n").unwrap();
        let tls = |key: &str| {
            format!(
                "type = \"tcp\"\naddress = \"h:1\"\n[sinks.tls]\n{key} = \"{}\"",
                not_pem.display()
            )
        };
        assert!(refusal(&tls("ca_file")).contains("not a PEM certificate file"));
        let certified = rcgen::generate_simple_self_signed(vec!["h".into()]).unwrap();
        std::fs::write(&not_pem, certified.cert.pem()).unwrap();
        assert!(parse(&tls("ca_file")).is_ok());
        let key_error = refusal(&format!(
            "{}\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            tls("ca_file"),
            not_pem.display(),
            not_pem.display()
        ));
        assert!(key_error.contains("not a PEM private key"), "{key_error}");
        let spool = Config::parse(
            "[spool]\ndir = \"/var/lib/\\u0000x\"\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        );
        assert!(format!("{:#}", spool.unwrap_err()).contains("spool.dir"));
    }

    #[test]
    fn network_rules_and_egress_networks_are_validated() {
        let parse =
            |text: &str| Config::parse(&format!("{text}\n[[sinks]]\ntype = \"stdout\"\n"), "t");
        let config = parse("[network]\nexclude_addresses = [\"10.0.0.0/8\", \"::1\"]").unwrap();
        assert_eq!(config.network.exclude_addresses.len(), 2);
        let err = parse("[network]\ninclude_addresses = [\"10.0.0.0/40\"]").unwrap_err();
        assert!(format!("{err:#}").contains("CIDR"), "{err:#}");
        let err = parse("[network]\nexclude_ports = [0]").unwrap_err();
        assert!(format!("{err:#}").contains("1 to 65535"), "{err:#}");
        let rule = "[[alerts.rules]]\nid = \"out\"\negress_bytes = 1000\n";
        assert!(parse(&format!("{rule}internal_networks = [\"10.0.0.0/8\"]")).is_ok());
        let err = parse(&format!("{rule}internal_networks = [\"intranet\"]")).unwrap_err();
        assert!(format!("{err:#}").contains("CIDR form"), "{err:#}");
    }

    #[test]
    fn bad_values_are_explained() {
        let err = Config::parse(
            "[kernel]\nring_buffer_bytes = 1000\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("power of two"));
        let err = Config::parse(
            "[output]\nqueue_events = 10\n[[sinks]]\ntype = \"stdout\"\n",
            "t",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("between 1024 and 4194304"));
        let err = Config::parse("[[sinks]]\ntype = \"kafka\"\n", "t").unwrap_err();
        assert!(format!("{err:#}").contains("kafka"));
        let err = Config::parse("sinks = []\n", "t").unwrap_err();
        assert!(format!("{err:#}").contains("no [[sinks]]"));
    }
}
