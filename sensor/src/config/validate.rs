//! What a configuration must satisfy beyond its syntax, section by section, with the fix in
//! each error.
use std::collections::HashSet;

use anyhow::{anyhow, bail, Result};

use super::{Config, Format, NameView, SinkConfig};

/// Most events a NATS message may carry: five hundred JSON events of usual size stay under the
/// server's default `max_payload` of a megabyte (a message also closes before it would exceed
/// the server's own limit).
const MAX_EVENTS_PER_MESSAGE: usize = 500;

impl Config {
    pub(super) fn validate(&self) -> Result<()> {
        self.validate_kernel()?;
        if self.sinks.is_empty() {
            bail!("no [[sinks]]: add at least one, e.g. [[sinks]] type = \"stdout\"");
        }
        self.validate_alerts()?;
        self.validate_privacy()?;
        self.validate_tail()?;
        self.validate_files()?;
        self.validate_devices()?;
        self.validate_file_rules()?;
        self.validate_network()?;
        self.validate_sinks()?;
        self.validate_paths()?;
        self.validate_access()?;
        if self.spool.max_bytes < 256 * 1024 {
            bail!(
                "spool.max_bytes = {}: at least 262144 (256 KiB)",
                self.spool.max_bytes
            );
        }
        Ok(())
    }

    fn validate_access(&self) -> Result<()> {
        let access = &self.access;
        if !access.usage {
            return Ok(());
        }
        if !access.state_dir.is_absolute() {
            bail!(
                "access.state_dir = {:?}: an absolute directory (the default is /var/lib/custos)",
                access.state_dir
            );
        }
        if access.refresh_seconds == 0 {
            bail!("access.refresh_seconds = 0: at least 1 (the default is 600)");
        }
        if access.max_persons == 0 || access.max_entitlements == 0 {
            bail!("access.max_persons and access.max_entitlements: at least 1 each");
        }
        Ok(())
    }

    fn validate_kernel(&self) -> Result<()> {
        let ring = self.kernel.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 64 * 1024 {
            bail!(
                "kernel.ring_buffer_bytes = {ring}: must be a power of two of at least 65536 \
                 (for example 8388608)"
            );
        }
        if !(1..=1000).contains(&self.kernel.max_latency_ms) {
            bail!(
                "kernel.max_latency_ms = {}: must be between 1 and 1000",
                self.kernel.max_latency_ms
            );
        }
        if !(1024..=4 << 20).contains(&self.output.queue_events) {
            bail!(
                "output.queue_events = {}: must be between 1024 and 4194304 (about 1 KiB of \
                 memory each while they wait)",
                self.output.queue_events
            );
        }
        if self.output.batch_ms > 1000 {
            bail!(
                "output.batch_ms = {}: must be at most 1000 (0 hands every drain's events over at once)",
                self.output.batch_ms
            );
        }
        Ok(())
    }

    fn validate_paths(&self) -> Result<()> {
        let fixed = [
            (&self.spool.dir, "spool.dir"),
            (&self.tail.socket, "tail.socket"),
            (&self.status.socket, "status.socket"),
            (&self.identity.utmp, "identity.utmp"),
            (&self.identity.logind_sessions, "identity.logind_sessions"),
        ];
        for (path, what) in fixed {
            usable_path(path, what)?;
        }
        let optional = [
            (&self.identity.map, "identity.map"),
            (&self.privacy.key_file, "privacy.key_file"),
        ];
        for (path, what) in optional {
            if let Some(path) = path {
                usable_path(path, what)?;
            }
        }
        Ok(())
    }

    fn validate_network(&self) -> Result<()> {
        let network = &self.network;
        for rule in network
            .include_addresses
            .iter()
            .chain(&network.exclude_addresses)
        {
            crate::kernel::network_rules::address_rule(rule)?;
        }
        if let Some(port) =
            (network.include_ports.iter().chain(&network.exclude_ports)).find(|p| **p == 0)
        {
            bail!("network port rule {port}: ports are 1 to 65535");
        }
        if network.max_open_connections == 0 {
            bail!("network.max_open_connections = 0: at least 1 (the default is 16384)");
        }
        for comm in network.include_comms.iter().chain(&network.exclude_comms) {
            if comm.is_empty() || comm.len() > 15 {
                bail!("network comm rule {comm:?}: a process name (comm) has 1 to 15 bytes");
            }
        }
        Ok(())
    }

    fn validate_alerts(&self) -> Result<()> {
        let mut ids = HashSet::new();
        for (n, rule) in self.alerts.rules.iter().enumerate() {
            let at = format!("alerts.rules[{n}]");
            if rule.id.is_empty() || !ids.insert(rule.id.as_str()) {
                bail!("{at}: every alert rule needs an id of its own");
            }
            let watches_files = !rule.paths.is_empty() || !rule.programs.is_empty();
            if !watches_files && !rule.removable_writes && rule.egress_bytes.is_none() {
                bail!(
                    "{at} ({}): it watches nothing: give paths, programs, removable_writes = true \
                     or egress_bytes",
                    rule.id
                );
            }
            if rule.egress_minutes == 0 || rule.egress_bytes == Some(0) {
                bail!(
                    "{at} ({}): egress_bytes and egress_minutes must be at least 1",
                    rule.id
                );
            }
            for network in &rule.internal_networks {
                network.parse::<ipnet::IpNet>().map_err(|_| {
                    anyhow!(
                        "{at} ({}): internal network {network:?} is not in CIDR form \
                         (like 10.0.0.0/8 or fd00::/8)",
                        rule.id
                    )
                })?;
            }
            if let Some(path) = rule
                .paths
                .iter()
                .chain(&rule.programs)
                .find(|p| !p.starts_with('/'))
            {
                bail!("{at} ({}): path {path:?} is not absolute", rule.id);
            }
            if rule.bulk_files == Some(0) || rule.bulk_minutes == 0 {
                bail!(
                    "{at} ({}): bulk_files and bulk_minutes must be at least 1",
                    rule.id
                );
            }
        }
        Ok(())
    }

    fn validate_privacy(&self) -> Result<()> {
        for pattern in &self.privacy.secret_patterns {
            regex::bytes::Regex::new(pattern).map_err(|e| {
                anyhow!(
                    "privacy.secret_patterns: {pattern:?} is not a valid regular expression: {e}"
                )
            })?;
        }
        if self.privacy.pseudonymize && self.privacy.key_file.is_none() {
            bail!("privacy.pseudonymize = true needs privacy.key_file (make one with `custos privacy-key FILE`)");
        }
        for (n, view) in self.privacy.sink_views.iter().enumerate() {
            if !self.sinks.iter().any(|sink| sink.name() == view.sink) {
                let names: Vec<String> = self.sinks.iter().map(SinkConfig::name).collect();
                bail!(
                    "privacy.sink_views[{n}]: no sink is named {:?} (the sinks are: {})",
                    view.sink,
                    names.join(", ")
                );
            }
            if view.names == NameView::Pseudonym && self.privacy.key_file.is_none() {
                bail!("privacy.sink_views[{n}]: names = \"pseudonym\" needs privacy.key_file");
            }
        }
        Ok(())
    }

    fn validate_files(&self) -> Result<()> {
        match &self.files.group {
            Some(group) if !group_exists(group) => bail!(
                "files.group {group:?} does not exist on this host: create it or remove the setting"
            ),
            _ => Ok(()),
        }
    }

    fn validate_tail(&self) -> Result<()> {
        for (n, view) in self.tail.groups.iter().enumerate() {
            if !group_exists(&view.group) {
                bail!(
                    "tail.groups[{n}]: group {:?} does not exist on this host",
                    view.group
                );
            }
            if view.names == NameView::Pseudonym && self.privacy.key_file.is_none() {
                bail!(
                    "tail.groups[{n}] ({}): names = \"pseudonym\" needs privacy.key_file",
                    view.group
                );
            }
        }
        Ok(())
    }

    fn validate_devices(&self) -> Result<()> {
        for (n, rule) in self.devices.rules.iter().enumerate() {
            let at = format!("devices.rules[{n}]");
            if let Some(ids) = &rule.vendor_product {
                if !usb_ids(ids) {
                    bail!("{at}: vendor_product = {ids:?}: expected USB ids like \"0781:5581\"");
                }
            }
            for group in rule.groups.iter().chain(&rule.except_groups) {
                if !group_exists(group) {
                    bail!("{at}: group {group:?} does not exist on this host (check NSS)");
                }
            }
        }
        Ok(())
    }

    fn validate_file_rules(&self) -> Result<()> {
        let file = &self.file;
        for prefix in file.include_paths.iter().chain(&file.exclude_paths) {
            if !prefix.starts_with('/') {
                bail!("file path rule {prefix:?} is not absolute: path rules start with '/'");
            }
            if prefix.len() > sensor_common::PREFIX_MAX {
                bail!(
                    "file path rule {prefix:?} is {} bytes; the kernel compares at most {}",
                    prefix.len(),
                    sensor_common::PREFIX_MAX
                );
            }
        }
        for comm in file.include_comms.iter().chain(&file.exclude_comms) {
            if comm.is_empty() || comm.len() > 15 {
                bail!("file comm rule {comm:?}: a process name (comm) has 1 to 15 bytes");
            }
        }
        Ok(())
    }

    fn validate_sinks(&self) -> Result<()> {
        let mut names = HashSet::new();
        for sink in &self.sinks {
            validate_sink(sink)?;
            if !names.insert(sink.name()) {
                bail!(
                    "two sinks are named {:?}: give one a distinct name",
                    sink.name()
                );
            }
        }
        Ok(())
    }
}

fn validate_sink(sink: &SinkConfig) -> Result<()> {
    let name = match sink {
        SinkConfig::File { path, .. } if path.as_os_str().is_empty() => {
            bail!("a file sink has an empty path");
        }
        SinkConfig::File { path, .. } => {
            usable_path(path, "file sink path")?;
            return Ok(());
        }
        SinkConfig::Tcp {
            address, name, tls, ..
        }
        | SinkConfig::Syslog {
            address, name, tls, ..
        } => {
            if let SinkConfig::Syslog {
                format: Format::Protobuf,
                ..
            } = sink
            {
                bail!("syslog sink {address}: format = \"protobuf\" cannot be carried in syslog messages; use \"json\" or \"ocsf\"");
            }
            host_and_port(address)?;
            if let Some(tls) = tls {
                tls_files_exist(tls)?;
            }
            name
        }
        SinkConfig::Nats(nats) => {
            if let Some(tls) = &nats.tls {
                tls_files_exist(tls)?;
            }
            nats_urls(&nats.url)?;
            if !(1..=5).contains(&nats.replicas) {
                bail!(
                    "nats sink: replicas = {} (JetStream keeps 1 to 5 copies)",
                    nats.replicas
                );
            }
            if !(1..=MAX_EVENTS_PER_MESSAGE).contains(&nats.events_per_message) {
                bail!(
                    "nats sink: events_per_message = {} (1 sends each event on its own; at most \
                     {MAX_EVENTS_PER_MESSAGE})",
                    nats.events_per_message
                );
            }
            if nats.stream.is_empty() || nats.subject_prefix.is_empty() {
                bail!("nats sink: stream and subject_prefix must not be empty");
            }
            if nats.tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
                bail!("nats sink: tls.server_name is not supported (the URL's host is verified)");
            }
            &nats.name
        }
        SinkConfig::Stdout { .. } => return Ok(()),
    };
    if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.contains('/'))
    {
        bail!("sink name {name:?}: a non-empty name without '/'");
    }
    Ok(())
}

/// Each of a NATS sink's comma-separated URLs parses as a server address.
fn nats_urls(urls: &str) -> Result<()> {
    let mut any = false;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        url.parse::<async_nats::ServerAddr>().map_err(|err| {
            anyhow!(
                "nats sink: url {url:?} is not a server address ({err}); write nats://host:port, several separated by commas"
            )
        })?;
        any = true;
    }
    if !any {
        bail!("nats sink: url is empty; write nats://host:port");
    }
    Ok(())
}

/// `vvvv:pppp`: a USB vendor and product id, four hex digits each.
fn usb_ids(ids: &str) -> bool {
    ids.split_once(':').is_some_and(|(v, p)| {
        [v, p]
            .iter()
            .all(|id| id.len() == 4 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Whether NSS knows the group on this host.
fn group_exists(name: &str) -> bool {
    nix::unistd::Group::from_name(name).ok().flatten().is_some()
}

/// `host:port` with a port the network can use and a host that can be looked up: a name, an
/// IPv4 address, or an IPv6 address in brackets.
fn host_and_port(address: &str) -> Result<()> {
    let Some((host, port)) = address.rsplit_once(':') else {
        bail!("sink address {address:?} needs a port (host:port)");
    };
    if !matches!(port.parse::<u16>(), Ok(1..)) {
        bail!("sink address {address:?}: port {port:?} is not a port (1 to 65535)");
    }
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let valid_host = match bracketed {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        }
    };
    if !valid_host {
        bail!(
            "sink address {address:?}: {host:?} is not a host name or address (an IPv6 address \
             goes in brackets: [2001:db8::1]:6514)"
        );
    }
    Ok(())
}

/// A path the daemon can open: no NUL byte (the kernel would cut it there).
fn usable_path(path: &std::path::Path, what: &str) -> Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    if path.as_os_str().as_bytes().contains(&0) {
        bail!("{what} {path:?} contains a NUL byte, which no file name can hold");
    }
    Ok(())
}

/// The TLS files named exist now, rather than failing at the first connection.
fn tls_files_exist(tls: &super::TlsConfig) -> Result<()> {
    let files = [
        (&tls.ca_file, "tls.ca_file"),
        (&tls.client_cert, "tls.client_cert"),
        (&tls.client_key, "tls.client_key"),
    ];
    for (file, what) in files {
        let Some(file) = file else { continue };
        usable_path(file, what)?;
        if let Err(err) = std::fs::metadata(file) {
            bail!(
                "{what} {}: {err}: give the path of a PEM file",
                file.display()
            );
        }
        pem_parses(file, what)?;
    }
    Ok(())
}

/// The file holds what its setting needs: certificates, or a private key.
fn pem_parses(file: &std::path::Path, what: &str) -> Result<()> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let parsed = if what.ends_with("client_key") {
        PrivateKeyDer::from_pem_file(file).map(|_| ())
    } else {
        CertificateDer::pem_file_iter(file).and_then(|certs| {
            let certs: Vec<_> = certs.collect::<Result<_, _>>()?;
            if certs.is_empty() {
                Err(rustls_pki_types::pem::Error::NoItemsFound)
            } else {
                Ok(())
            }
        })
    };
    parsed.map_err(|err| {
        anyhow!(
            "{what} {}: not a PEM {} ({err})",
            file.display(),
            if what.ends_with("client_key") {
                "private key"
            } else {
                "certificate file"
            }
        )
    })
}
