//! A real nats-server (Debian's) with JetStream, on a loopback port, for the forwarding tests.
use std::process::{Child, Command};

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
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting nats-server (Debian package nats-server)")?;
        self.child = Some(child);
        crate::wait_listening(&format!("127.0.0.1:{}", self.port), PATIENCE)
            .context("nats-server did not start")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
