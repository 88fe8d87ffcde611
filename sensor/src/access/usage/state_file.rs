//! The usage state on disk, written so that a crash leaves the old or the new version whole:
//! a temporary file, flushed to disk, renamed over the old one, and the directory flushed.
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::Path,
};

use anyhow::{Context as _, Result};

use super::model::{UsageState, STATE_VERSION};

/// Reads the state; a missing file is an empty state. A file that does not parse is moved
/// aside (and said so) rather than overwritten.
pub fn load(path: &Path) -> Result<UsageState> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(UsageState {
                version: STATE_VERSION,
                ..UsageState::default()
            })
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    match serde_json::from_str::<UsageState>(&text) {
        Ok(state) => Ok(state),
        Err(err) => {
            let aside = path.with_extension("json.unreadable");
            std::fs::rename(path, &aside)
                .with_context(|| format!("moving the unreadable {} aside", path.display()))?;
            tracing::error!(
                path = %path.display(),
                kept_as = %aside.display(),
                "access usage state does not parse ({err}); starting a new one, the old one is kept"
            );
            Ok(UsageState {
                version: STATE_VERSION,
                ..UsageState::default()
            })
        }
    }
}

/// Reads the state for a report: a missing or broken file is an error that says why.
pub fn read(path: &Path) -> Result<UsageState> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (is [access] usage on, and state_dir the daemon's?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Replaces the file with `state`, crash-safely, readable by root only.
pub fn save(path: &Path, state: &UsageState) -> Result<()> {
    let directory = path.parent().context("the state file has no directory")?;
    crate::files::private_dir(directory)?;
    let temporary = path.with_extension("json.tmp");
    let mut file = crate::files::private_file(
        &temporary,
        OpenOptions::new().write(true).create(true).truncate(true),
    )?;
    let bytes = serde_json::to_vec(state).context("encoding the usage state")?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    File::open(directory)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("flushing {}", directory.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::usage::model::PersonUsage;

    #[test]
    fn saved_state_reads_back_and_a_broken_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/access-usage.json");
        let mut state = load(&path).unwrap();
        state.persons.insert(
            "alice".into(),
            PersonUsage {
                tracked_since: 5,
                ..PersonUsage::default()
            },
        );
        save(&path, &state).unwrap();
        assert_eq!(read(&path).unwrap(), state);
        std::fs::write(&path, "{ not json").unwrap();
        assert!(load(&path).unwrap().persons.is_empty());
        assert!(path.with_extension("json.unreadable").exists());
    }
}
