//! `cargo xtask fuzz`: the libFuzzer targets in `fuzz/` (cargo-fuzz, nightly), each on its
//! corpus, with its regression inputs (past crashes) replayed first.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::shell::{run, succeeds, workspace_root};

/// Every target, as `fuzz/Cargo.toml` names it.
const TARGETS: &[&str] = &[
    "ring_record",
    "config",
    "identity_map",
    "spool_recovery",
    "delimited",
];

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Runs `target` (or all) for `seconds` each; fails on the first crash.
pub fn run_targets(target: Option<&str>, seconds: u64) -> Result<()> {
    let targets: Vec<&str> = match target {
        Some(name) if TARGETS.contains(&name) => vec![name],
        Some(name) => bail!(
            "no fuzz target {name:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    install_cargo_fuzz()?;
    let dir = workspace_root().join("fuzz");
    for target in targets {
        run(fuzz_command(&dir).args(["build", target]))
            .with_context(|| format!("building fuzz target {target}"))?;
        replay_regressions(&dir, target)?;
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = dir.join("seeds").join(target);
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let mut command = fuzz_command(&dir);
        command.args(["run", target]).arg(&corpus);
        if seeds.is_dir() {
            command.arg(seeds);
        }
        run(command.arg("--").arg(format!("-max_total_time={seconds}"))).with_context(|| {
            format!("fuzz target {target} found a crash: see fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

/// Past crashes, kept in `fuzz/regressions/TARGET/`, must stay fixed.
fn replay_regressions(dir: &Path, target: &str) -> Result<()> {
    let regressions = dir.join("regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&regressions) else {
        return Ok(());
    };
    let inputs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    if inputs.is_empty() {
        return Ok(());
    }
    run(fuzz_command(dir).args(["run", target]).args(&inputs))
        .with_context(|| format!("a regression input of {target} fails again"))
}

fn fuzz_command(dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .arg("fuzz")
        .current_dir(dir)
        // The daemon's library is built without its eBPF object: the targets load no programs.
        .env("AYA_BUILD_SKIP", "1");
    command
}

fn install_cargo_fuzz() -> Result<()> {
    if succeeds(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (crates.io)");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}
