//! `cargo xtask package`: the Debian package (binary, systemd unit, commented default config,
//! state directory), built with dpkg-deb from a staged tree.
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::shell::{run as sh, target_dir, workspace_root};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the package and returns its path.
pub fn build() -> Result<PathBuf> {
    crate::commands::build(true)?;
    let out = target_dir().join("debian");
    let stage = out.join(format!("custos_{VERSION}_amd64"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    stage_files(&stage)?;
    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    write_control(&debian)?;
    write_scripts(&debian)?;
    let deb = out.join(format!("custos_{VERSION}_amd64.deb"));
    sh(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb))?;
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}

/// The package's files under `stage`, each with its mode, and the state directory.
fn stage_files(stage: &Path) -> Result<()> {
    let root = workspace_root();
    let install = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().context("no parent")?)?;
        fs::copy(from, &dest).with_context(|| format!("staging {}", from.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    // (source, place in the package, mode)
    let files = [
        (target_dir().join("release/custos"), "usr/bin/custos", 0o755),
        (
            root.join("packaging/custos.service"),
            "lib/systemd/system/custos.service",
            0o644,
        ),
        (
            root.join("packaging/custos.toml"),
            "etc/custos/custos.toml",
            0o640,
        ),
        (
            root.join("README.md"),
            "usr/share/doc/custos/README.md",
            0o644,
        ),
        (
            root.join("docs/schema.md"),
            "usr/share/doc/custos/schema.md",
            0o644,
        ),
        (
            root.join("proto/custos/v1/events.proto"),
            "usr/share/custos/proto/custos/v1/events.proto",
            0o644,
        ),
    ];
    for (from, to, mode) in &files {
        install(from, to, *mode)?;
    }
    fs::create_dir_all(stage.join("var/lib/custos"))?;
    fs::set_permissions(
        stage.join("var/lib/custos"),
        fs::Permissions::from_mode(0o700),
    )?;
    Ok(())
}

fn write_control(debian: &Path) -> Result<()> {
    fs::write(
        debian.join("control"),
        format!(
            "Package: custos\nVersion: {VERSION}\nArchitecture: amd64\nSection: admin\nPriority: optional\n\
             Maintainer: Custos developers <custos@localhost>\nDepends: libc6 (>= 2.34)\n\
             Description: eBPF sensor: who ran what, as whom, from which login\n \
             Custos records program runs, file opens, privilege changes, block devices and\n \
             network connections on a Linux host, each tagged with the identity behind it\n \
             (user, groups, the login user behind sudo and su, session, tty, cgroup), and\n \
             forwards protobuf events to SIEM pipelines.\n"
        ),
    )?;
    fs::write(debian.join("conffiles"), "/etc/custos/custos.toml\n")?;
    Ok(())
}

/// Maintainer scripts that only talk to systemd where it runs (not in chroots and containers).
fn write_scripts(debian: &Path) -> Result<()> {
    let script = |name: &str, body: &str| -> Result<()> {
        let path = debian.join(name);
        fs::write(&path, format!("#!/bin/sh\nset -e\n{body}"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    script(
        "postinst",
        "if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\n  systemctl enable custos.service || true\nfi\n",
    )?;
    script(
        "prerm",
        "if [ -d /run/systemd/system ]; then\n  systemctl stop custos.service || true\n  systemctl disable custos.service || true\nfi\n",
    )?;
    script(
        "postrm",
        "if [ -d /run/systemd/system ]; then\n  systemctl daemon-reload || true\nfi\n\
         if [ \"$1\" = purge ]; then\n  rm -rf /var/lib/custos\nfi\n",
    )
}

/// Installs the package, checks the installed unit with systemd-analyze, prints its exposure
/// score, and removes the package again.
pub fn check() -> Result<()> {
    let deb = build()?;
    sh(Command::new("dpkg").arg("-i").arg(&deb))?;
    let checked = (|| -> Result<()> {
        sh(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/custos.service"]))
            .context("the installed unit does not pass systemd-analyze verify")?;
        sh(Command::new("custos").args(["check-config", "/etc/custos/custos.toml"]))?;
        let security = Command::new("systemd-analyze")
            .args([
                "security",
                "--offline=true",
                "/lib/systemd/system/custos.service",
            ])
            .output()?;
        let report = String::from_utf8_lossy(&security.stdout);
        if let Some(line) = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
        {
            println!(
                "systemd-analyze security: {}",
                line.trim().trim_start_matches("→ ")
            );
        }
        Ok(())
    })();
    sh(Command::new("dpkg").args(["--purge", "custos"]))?;
    checked
}
