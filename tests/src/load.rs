//! Activity that runs while a test does something else to the sensor or its receivers.
use std::process::{Child, Command};

use anyhow::{Context as _, Result};

use crate::Marker;

/// Execs of a marker binary with `load` as argument, without pause, until dropped.
pub struct ExecLoad(Child);

impl ExecLoad {
    pub fn start(marker: &Marker) -> Result<Self> {
        let child = Command::new("sh")
            .args(["-c", "while :; do \"$0\" load; done", marker.path_str()])
            .spawn()
            .context("starting the exec load")?;
        Ok(Self(child))
    }
}

impl Drop for ExecLoad {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
