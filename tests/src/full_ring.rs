//! A full ring buffer on demand: with the daemon stopped (SIGSTOP), opens of many distinct files
//! fill a small ring, so that the records of what a test does next are refused by the kernel.
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use serde_json::Value;

use crate::{of_kind, opens_of, signal, Sensor, TestConfig};

/// Distinct opens that overflow a 64 KiB ring several times over.
const FILLERS: usize = 3000;
/// The smallest ring the sensor takes.
const RING_BYTES: i64 = 65536;

/// Files whose opens fill the ring; made before the sensor starts, so that making them is not
/// reported.
pub struct RingFiller {
    root: PathBuf,
    files: Vec<PathBuf>,
}

impl RingFiller {
    /// Creates the files under `root`, which the sensor's file rules must include.
    pub fn create(root: &Path) -> Result<Self> {
        let files: Vec<PathBuf> = (0..FILLERS)
            .map(|i| root.join(format!("fill{i}")))
            .collect();
        for file in &files {
            std::fs::write(file, "f")?;
        }
        Ok(Self {
            root: root.to_owned(),
            files,
        })
    }

    /// A sensor configuration with the smallest ring, reporting the fillers' opens.
    pub fn config(&self) -> TestConfig {
        TestConfig::new()
            .include_paths(&[&self.root])
            .ring_buffer_bytes(RING_BYTES)
    }

    /// Stops the daemon, fills the ring, runs `refused` (whose records the kernel then refuses),
    /// resumes the daemon and waits until it has drained the ring and reported the loss.
    pub fn refuse(&self, sensor: &Sensor, refused: impl FnOnce() -> Result<()>) -> Result<()> {
        signal(sensor.pid(), "STOP")?;
        let done = self
            .files
            .iter()
            .try_for_each(|file| std::fs::File::open(file).map(drop))
            .map_err(anyhow::Error::from)
            .and_then(|()| refused());
        signal(sensor.pid(), "CONT")?;
        done?;
        sensor.wait_for("a loss event", |events| {
            of_kind(events, "loss").next().map(drop)
        })
    }

    /// Checks that the ring was full when `refused` ran: the last filler was not reported.
    pub fn was_full(&self, events: &[Value]) -> Result<()> {
        let last = self.files.last().and_then(|f| f.to_str()).unwrap_or("");
        ensure!(
            opens_of(events, last).is_empty(),
            "the ring was not full: the last filler open was reported"
        );
        Ok(())
    }
}
