//! Network helpers: a veth pair to a namespace the test makes, and picking network events.
use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::of_kind;

/// The network events of `operation` (`CONNECT`, ...) whose `network` part `matches`.
pub fn network<'a>(
    events: &'a [Value],
    operation: &str,
    matches: impl Fn(&Value) -> bool + 'a,
) -> impl Iterator<Item = &'a Value> + 'a {
    let operation = format!("NETWORK_OPERATION_{operation}");
    of_kind(events, "network")
        .filter(move |e| e["network"]["operation"] == operation.as_str())
        .filter(move |e| matches(&e["network"]))
}

/// A veth pair to a network namespace, both made by the test and removed at drop: the host end
/// has 10.77.0.1/24, the namespace end 10.77.0.2/24, and no host answers for other addresses.
pub struct VethNamespace {
    name: String,
    host_end: String,
}

/// Namespaces made by this test process so far: each gets names of its own.
static MADE: AtomicU32 = AtomicU32::new(0);

impl VethNamespace {
    pub fn create() -> Result<Self> {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("custos-net-{}-{n}", std::process::id());
        let host_end = format!("cn{}-{n}", std::process::id() % 100_000);
        let this = Self {
            name: name.clone(),
            host_end: host_end.clone(),
        };
        let ip = |args: &[&str]| -> Result<()> {
            let status = Command::new("ip").args(args).status()?;
            ensure!(status.success(), "ip {args:?} failed");
            Ok(())
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "inner", "netns", &name,
        ])?;
        ip(&["addr", "add", "10.77.0.1/24", "dev", &host_end])?;
        ip(&["link", "set", &host_end, "up"])?;
        ip(&["-n", &name, "addr", "add", "10.77.0.2/24", "dev", "inner"])?;
        ip(&["-n", &name, "link", "set", "inner", "up"])?;
        Ok(this)
    }

    /// `program` to be run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        // Deleting the host end deletes the pair at once (a namespace's devices go later).
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
