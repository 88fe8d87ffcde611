//! Size-based rotation for file sinks: FILE -> FILE.1 -> ... -> FILE.N, the oldest removed.
use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

pub struct Rotation {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    size: u64,
}

impl Rotation {
    /// Rotation for `path`, whose current size is that of `current`.
    pub fn new(path: &Path, max_bytes: u64, max_files: u32, current: &File) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            max_files,
            size: current.metadata().map(|m| m.len()).unwrap_or(0),
        })
    }

    /// Whether a record of `len` bytes must start a new file (a file always takes at least
    /// one record, however large).
    pub fn due(&self, len: usize) -> bool {
        self.size > 0 && self.size + len as u64 > self.max_bytes
    }

    pub fn written(&mut self, len: usize) {
        self.size += len as u64;
    }

    /// Shifts the rotated files and opens a fresh current file.
    pub fn rotate(&mut self) -> Result<File> {
        let numbered = |n: u32| -> PathBuf {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            name.into()
        };
        if self.max_files == 0 {
            std::fs::remove_file(&self.path).ok();
        } else {
            std::fs::remove_file(numbered(self.max_files)).ok();
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))
                        .with_context(|| format!("renaming {}", from.display()))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))
                .with_context(|| format!("renaming {}", self.path.display()))?;
        }
        self.size = 0;
        open_append(&self.path)
    }
}

/// Opens a sink file for appending, creating it and its directory.
pub fn open_append(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            crate::files::private_dir(dir).with_context(|| {
                format!("creating the directory of file sink {}", path.display())
            })?;
        }
    }
    crate::files::private_file(path, OpenOptions::new().create(true).append(true))
        .with_context(|| format!("opening file sink {} for appending", path.display()))
}
