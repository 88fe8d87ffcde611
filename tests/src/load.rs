//! Activity that runs while a test does something else to the sensor or its receivers.
use std::process::{Child, Command};

use anyhow::{Context as _, Result};

use crate::Marker;

/// A process running in the background until the guard is dropped, then killed and reaped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Execs of a marker binary with `load` as argument, without pause, until dropped.
pub struct ExecLoad {
    _running: Background,
}

impl ExecLoad {
    pub fn start(marker: &Marker) -> Result<Self> {
        let child = Command::new("sh")
            .args(["-c", "while :; do \"$0\" load; done", marker.path_str()])
            .spawn()
            .context("starting the exec load")?;
        Ok(Self {
            _running: Background(child),
        })
    }
}

/// A process forking a child every 8 ms, until dropped: the ring is never quiet long enough for
/// the daemon to stop its drain timer (`[kernel] max_latency_ms`), so records wait for the
/// timer as on a busy host, and only what the kernel wakes the daemon for is read at once.
pub struct SteadyForks {
    _running: Background,
}

const STEADY_FORKS: &str = "import os, time\n\
while True:\n    \
    pid = os.fork()\n    \
    if pid == 0:\n        \
        os._exit(0)\n    \
    os.waitpid(pid, 0)\n    \
    time.sleep(0.008)\n";

impl SteadyForks {
    pub fn start() -> Result<Self> {
        let child = Command::new("python3")
            .args(["-c", STEADY_FORKS])
            .spawn()
            .context("starting the steady forks")?;
        // Long enough for the daemon to have seen the first records and run its timer.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(Self {
            _running: Background(child),
        })
    }
}
