//! A real nats-server (Debian's) with JetStream, on a loopback port, for the forwarding tests.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use anyhow::{Context as _, Result};

use crate::PATIENCE;

/// nats-server with JetStream, storing under a directory that outlives restarts.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Result<Self> {
        let port = crate::free_port()?;
        let mut server = Self {
            child: None,
            port,
            store: tempfile::tempdir()?,
        };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) -> Result<()> {
        let child = nats_server(self.port, self.store.path())
            .spawn()
            .context("starting nats-server (Debian package nats-server)")?;
        self.child = Some(child);
        crate::wait_listening(&format!("127.0.0.1:{}", self.port), PATIENCE).with_context(|| {
            format!(
                "nats-server did not start; its log:\n{}",
                log_tail(self.store.path())
            )
        })
    }

    pub fn stop(&mut self) {
        let _ = kill(&mut self.child);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three nats-server processes on loopback, routed into one JetStream cluster.
pub struct NatsCluster {
    servers: Vec<ClusterMember>,
}

struct ClusterMember {
    name: String,
    port: u16,
    /// nats-server's monitoring HTTP port.
    monitor: u16,
    child: Option<Child>,
    store: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start() -> Result<Self> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| {
                Ok((
                    crate::free_port()?,
                    crate::free_port()?,
                    crate::free_port()?,
                ))
            })
            .collect::<Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats://127.0.0.1:{cluster}"))
            .collect();
        let mut servers = Vec::new();
        for (n, (port, cluster, monitor)) in ports.iter().enumerate() {
            let name = format!("custos-test-{n}");
            let store = tempfile::tempdir()?;
            let others: Vec<&str> = routes
                .iter()
                .enumerate()
                .filter(|(m, _)| *m != n)
                .map(|(_, r)| r.as_str())
                .collect();
            let child = nats_server(*port, store.path())
                .args(["-n", &name])
                .args(["-m", &monitor.to_string(), "--cluster_name", "custos-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["--routes", &others.join(",")])
                .spawn()
                .context("starting nats-server (Debian package nats-server)")?;
            servers.push(ClusterMember {
                name,
                port: *port,
                monitor: *monitor,
                child: Some(child),
                store,
            });
        }
        for server in &servers {
            crate::wait_listening(&format!("127.0.0.1:{}", server.port), PATIENCE).with_context(
                || {
                    let log = log_tail(server.store.path());
                    format!("{} did not start; its log:\n{log}", server.name)
                },
            )?;
        }
        Ok(Self { servers })
    }

    /// Every server's URL, comma-separated as a NATS client takes a cluster.
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A server still running, for clients that take one URL.
    pub fn running_url(&self) -> Option<String> {
        self.servers
            .iter()
            .find(|s| s.child.is_some())
            .map(|s| format!("nats://127.0.0.1:{}", s.port))
    }

    /// The name of the running server that has a client connection named `client`, by each
    /// server's own monitoring endpoint (`/connz`).
    pub fn server_of_client(&self, client: &str) -> Result<String> {
        for server in self.servers.iter().filter(|s| s.child.is_some()) {
            let connz = http_get_json(server.monitor, "/connz")?;
            let connections = connz["connections"].as_array().cloned().unwrap_or_default();
            if connections.iter().any(|c| c["name"] == client) {
                return Ok(server.name.clone());
            }
        }
        anyhow::bail!("no server has a client named {client}")
    }

    /// Kills the server named `name` with SIGKILL.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.name == name)
            .with_context(|| format!("no cluster member {name}"))?;
        kill(&mut server.child)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = kill(&mut server.child);
        }
    }
}

/// nats-server with JetStream on loopback port `port`, storing in `store` and logging there
/// (see [`log_tail`]); a cluster member adds its name and routes.
fn nats_server(port: u16, store: &Path) -> Command {
    let mut command = Command::new("nats-server");
    command
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .arg("-l")
        .arg(log_path(store))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

fn log_path(store: &Path) -> PathBuf {
    store.join("nats-server.log")
}

/// The last lines of the log of the server storing in `store`: why it did not start.
fn log_tail(store: &Path) -> String {
    match std::fs::read_to_string(log_path(store)) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(err) => format!("(no log: {err})"),
    }
}

/// Kills a server with SIGKILL and reaps it, if it runs.
fn kill(child: &mut Option<Child>) -> Result<()> {
    if let Some(mut child) = child.take() {
        child.kill()?;
        child.wait()?;
    }
    Ok(())
}

/// The JSON body of `GET path` on a loopback HTTP port.
fn http_get_json(port: u16, path: &str) -> Result<serde_json::Value> {
    let body = crate::http_get(&format!("127.0.0.1:{port}"), path)?;
    serde_json::from_str(&body).with_context(|| format!("the JSON of {path}"))
}
