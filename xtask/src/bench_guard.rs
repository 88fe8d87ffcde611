//! Benchmarks and profiles start only on a host where no other sensor runs.
//!
//! Another instance's eBPF programs would add their run time to every exec and open measured,
//! its daemon would take CPU from the two cores the measured one runs on, and it would hold
//! the embedded default's metrics endpoint, from which the benchmarks read the eBPF figures:
//! the figures of the wrong daemon, and the measured daemons would run without the endpoint.
use std::{net::TcpStream, time::Duration};

use anyhow::{bail, Result};

use crate::bench::METRICS;

/// Fails, naming what to stop, when a sensor runs or something holds [`METRICS`].
pub fn ensure_no_sensor_running() -> Result<()> {
    let sensors = running_sensors();
    let endpoint_taken = metrics_endpoint_taken();
    if sensors.is_empty() && !endpoint_taken {
        return Ok(());
    }
    let mut found: Vec<String> = sensors
        .iter()
        .map(|(pid, command)| format!("pid {pid}: {command}"))
        .collect();
    if endpoint_taken {
        found.push(format!(
            "something listens on {METRICS}, the metrics endpoint the eBPF figures are read from"
        ));
    }
    bail!(
        "not measuring next to another sensor ({}): its eBPF programs and CPU would be \
         measured with this one's. Stop it first (`kill -TERM PID`; detaching takes about 3 s) \
         and run this again",
        found.join("; ")
    )
}

fn metrics_endpoint_taken() -> bool {
    METRICS.parse().is_ok_and(|address| {
        TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
    })
}

/// The processes whose name is a sensor's, with their command lines.
fn running_sensors() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter_map(|pid| {
            // A process may end between the listing and the read: it is then not running.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            is_sensor_name(comm.trim_end()).then(|| (pid, command_line(pid)))
        })
        .collect()
}

/// The daemon's name is its binary's file name: `custos`, or a copy such as `custos-base`
/// kept to compare builds with.
fn is_sensor_name(comm: &str) -> bool {
    comm == "custos" || comm.starts_with("custos-") || comm.starts_with("custos_")
}

fn command_line(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&byte| byte == 0)
                .filter(|arg| !arg.is_empty())
                .map(String::from_utf8_lossy)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::is_sensor_name;

    #[test]
    fn sensor_names_are_the_daemon_and_its_copies_only() {
        for name in ["custos", "custos-base", "custos_old", "custos-sinks"] {
            assert!(is_sensor_name(name), "{name}");
        }
        for name in ["xtask", "custosd2", "my-custos", "auditd", ""] {
            assert!(!is_sensor_name(name), "{name}");
        }
    }
}
