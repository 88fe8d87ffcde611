//! The pseudo filesystems the classic tracepoint path needs.
use std::path::Path;

use anyhow::{Context as _, Result};
use nix::mount::{mount, MsFlags};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing unless it (or debugfs' copy) is already there: aya
/// resolves classic tracepoint ids through it.
pub fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(());
    }
    tracing::info!("mounting tracefs at {TRACEFS} for the classic tracepoints");
    mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs at {TRACEFS} (needs root)"))
}
