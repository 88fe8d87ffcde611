//! `cargo xtask fuzz`: the libFuzzer targets in `fuzz/` (cargo-fuzz, nightly), each on its
//! corpus, with its regression inputs (past crashes) replayed first.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::shell::{run, run_logged_at_lowest_priority, succeeds, workspace_root};

/// Every target, as `fuzz/Cargo.toml` names it.
const TARGETS: &[&str] = &[
    "ring_record",
    "config",
    "identity_map",
    "spool_recovery",
    "delimited",
];

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// How a target is built: the full build (`cargo xtask fuzz`: optimised, AddressSanitizer), or
/// the quick one the test command uses (unoptimised, debug assertions and overflow checks on,
/// no sanitizer; its own target directory, so neither build undoes the other).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Build {
    Full,
    Quick,
}

impl Build {
    fn args(self) -> Vec<String> {
        match self {
            Build::Full => Vec::new(),
            Build::Quick => vec![
                "--dev".into(),
                "--sanitizer".into(),
                "none".into(),
                "--target-dir".into(),
                workspace_root()
                    .join("fuzz/target/quick")
                    .display()
                    .to_string(),
            ],
        }
    }
}

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
    for target in targets {
        run(fuzz_command("build", Build::Full).arg(target))
            .with_context(|| format!("building fuzz target {target}"))?;
        fuzz_target(target, seconds, Build::Full)?;
    }
    Ok(())
}

/// Replays `target`'s past crashes, then fuzzes it for `seconds` on its corpus and seeds.
fn fuzz_target(target: &str, seconds: u64, build: Build) -> Result<()> {
    let dir = workspace_root().join("fuzz");
    replay_regressions(&dir, target, build)?;
    // New inputs go to the first directory: the corpus, which is not kept in git.
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let seeds = dir.join("seeds").join(target);
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let mut command = fuzz_command("run", build);
    command.arg(target).arg(&corpus);
    if seeds.is_dir() {
        command.arg(seeds);
    }
    run(command.arg("--").arg(format!("-max_total_time={seconds}"))).with_context(|| {
        format!("fuzz target {target} found a crash: see fuzz/artifacts/{target}/")
    })
}

/// The test command's fuzzing: the quick build of every target, made in the background at the
/// lowest priority (so it takes only what the integration tests leave idle), then each target
/// briefly.
pub struct QuickFuzz(std::thread::JoinHandle<Result<()>>);

impl QuickFuzz {
    /// Starts building; the build's output goes to `target/fuzz-build.log`.
    pub fn start_build() -> Self {
        Self(std::thread::spawn(|| {
            install_cargo_fuzz()?;
            let log = workspace_root().join("target/fuzz-build.log");
            run_logged_at_lowest_priority(&fuzz_command("build", Build::Quick), &log)
                .context("building the fuzz targets")
        }))
    }

    /// Waits for the build, then fuzzes each target for `seconds`: one result per target.
    pub fn run(self, seconds: u64) -> Vec<(&'static str, Result<()>)> {
        let built = self
            .0
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the fuzz build thread panicked")));
        if let Err(err) = built {
            return TARGETS
                .iter()
                .map(|t| (*t, Err(anyhow::anyhow!("{err:#}"))))
                .collect();
        }
        TARGETS
            .iter()
            .map(|target| (*target, fuzz_target(target, seconds, Build::Quick)))
            .collect()
    }
}

/// Past crashes, kept in `fuzz/regressions/TARGET/`, must stay fixed.
fn replay_regressions(dir: &Path, target: &str, build: Build) -> Result<()> {
    let regressions = dir.join("regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&regressions) else {
        return Ok(());
    };
    let inputs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    if inputs.is_empty() {
        return Ok(());
    }
    run(fuzz_command("run", build).arg(target).args(&inputs))
        .with_context(|| format!("a regression input of {target} fails again"))
}

/// `cargo +nightly fuzz SUBCOMMAND` with `build`'s settings, in `fuzz/`.
fn fuzz_command(subcommand: &str, build: Build) -> Command {
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz", subcommand])
        .args(build.args())
        .current_dir(workspace_root().join("fuzz"))
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
