//! Debian's 6.1 kernel, downloaded with apt and unpacked (not installed) under the work dir.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::shell::{output, run};

pub struct Kernel {
    /// `uname -r` of the kernel, e.g. "6.1.0-56-amd64".
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package.
    pub modules: PathBuf,
}

/// The newest `linux-image-6.1.0-N-amd64` apt knows, downloaded once and unpacked.
pub fn fetch(work: &Path) -> Result<Kernel> {
    let package = match newest_package()? {
        Some(package) => package,
        None => {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            newest_package()?.context(
                "apt knows no linux-image-6.1.0-*-amd64: add Debian bookworm (or its security \
                 suite) to the apt sources",
            )?
        }
    };
    let release = package.trim_start_matches("linux-image-").to_owned();
    let dir = work.join("kernel").join(&release);
    let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.exists() {
        let downloads = work.join("kernel");
        std::fs::create_dir_all(&downloads)?;
        run(Command::new("apt-get")
            .args(["download", &package])
            .current_dir(&downloads))?;
        let deb = std::fs::read_dir(&downloads)?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {package} .deb"))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    }
    if !vmlinuz.exists() {
        bail!("{} has no {}", package, vmlinuz.display());
    }
    Ok(Kernel {
        modules: dir.join("lib/modules").join(&release),
        release,
        vmlinuz,
    })
}

/// Highest ABI number among the generic amd64 6.1 images.
fn newest_package() -> Result<Option<String>> {
    let listing = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    ]))
    .context("running apt-cache search")?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix("linux-image-6.1.0-")?
                .strip_suffix("-amd64")?
                .parse::<u32>()
                .ok()?;
            Some((abi, name.to_owned()))
        })
        .max()
        .map(|(_, name)| name))
}
