//! The kernel keeps the paths it lately resolved for execs (the executable and the working
//! directory), so that an exec storm of the same programs does not walk the same dentry chains
//! again. These tests show that a kept path never names an exec once its name means another
//! path: after the program's directory and the working directory are renamed by `mv`, through
//! a bind mount of the renamed directory, and for a path too long to keep.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{of_kind, require_root, shared_root, BindMount, Sensor, TestConfig};
use serde_json::Value;

/// Where a program was run from, and the pid of each run.
struct Runs {
    program: PathBuf,
    cwd: PathBuf,
    pids: Vec<u32>,
}

/// Runs `program` three times to completion in `cwd` (the first run's paths are kept, the next
/// ones meet them).
fn run_thrice(program: &Path, cwd: &Path) -> Result<Runs> {
    let mut pids = Vec::new();
    for _ in 0..3 {
        let mut child = Command::new(program)
            .current_dir(cwd)
            .spawn()
            .with_context(|| format!("running {}", program.display()))?;
        pids.push(child.id());
        let status = child.wait()?;
        ensure!(status.success(), "{} failed: {status}", program.display());
    }
    Ok(Runs {
        program: program.to_owned(),
        cwd: cwd.to_owned(),
        pids,
    })
}

/// Runs a command that must succeed (`mv`).
fn must(program: &str, args: &[&Path]) -> Result<()> {
    let status = Command::new(program).args(args).status()?;
    ensure!(status.success(), "{program} {args:?} failed: {status}");
    Ok(())
}

/// A directory chain under `root` whose path is longer than the kernel keeps (255 bytes).
fn deep_dir(root: &Path) -> Result<PathBuf> {
    let mut dir = root.to_owned();
    for level in 0..6 {
        dir = dir.join(format!("{level}-{}", "d".repeat(50)));
    }
    std::fs::create_dir_all(&dir)?;
    ensure!(dir.as_os_str().len() > 255, "{} is short", dir.display());
    Ok(dir)
}

/// Every run's exec event names the program and working directory it ran with.
fn assert_reported(sensor: &Sensor, all_runs: &[Runs]) -> Result<()> {
    let last = *all_runs.last().and_then(|r| r.pids.last()).expect("runs");
    let events: Vec<Value> = sensor.wait_for("the last run's exit", |events| {
        of_kind(events, "exit")
            .any(|e| e["process"]["pid"] == last)
            .then(|| events.to_vec())
    })?;
    for runs in all_runs {
        for &pid in &runs.pids {
            let exec = of_kind(&events, "exec")
                .find(|e| e["process"]["pid"] == pid)
                .with_context(|| format!("no exec event for pid {pid}"))?;
            assert_eq!(
                exec["process"]["binary"],
                runs.program.to_str().expect("utf-8 test path"),
                "binary of pid {pid}"
            );
            assert_eq!(
                exec["process"]["cwd"],
                runs.cwd.to_str().expect("utf-8 test path"),
                "working directory of pid {pid}"
            );
        }
    }
    Ok(())
}

fn kept_paths_follow_renames_and_mounts(config: TestConfig) -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    let (bin, work, mounted) = (root.join("bin"), root.join("work"), root.join("mounted"));
    for dir in [&bin, &work, &mounted] {
        std::fs::create_dir(dir)?;
    }
    std::fs::copy("/usr/bin/true", bin.join("tool"))?;
    let mut sensor = Sensor::start(&config)?;

    let mut all_runs = vec![run_thrice(&bin.join("tool"), &work)?];
    // Both directories are renamed: the program's and the working directory's own names and
    // parents are unchanged.
    let (bin_renamed, work_renamed) = (root.join("bin-renamed"), root.join("work-renamed"));
    must("mv", &[&bin, &bin_renamed])?;
    must("mv", &[&work, &work_renamed])?;
    all_runs.push(run_thrice(&bin_renamed.join("tool"), &work_renamed)?);
    // The same directory seen through another mount.
    let _bind = BindMount::new(&bin_renamed, &mounted)?;
    all_runs.push(run_thrice(&mounted.join("tool"), &mounted)?);
    // Too long to keep: walked every time.
    let deep = deep_dir(&root)?;
    std::fs::copy("/usr/bin/true", deep.join("tool"))?;
    all_runs.push(run_thrice(&deep.join("tool"), &deep)?);

    assert_reported(&sensor, &all_runs)?;
    sensor.stop()
}

#[test]
fn kept_exec_paths_follow_renames_and_mounts() -> Result<()> {
    kept_paths_follow_renames_and_mounts(TestConfig::new())
}

/// The same through the classic tracepoint, whose reads are probe reads.
#[test]
fn kept_exec_paths_follow_renames_and_mounts_on_the_classic_tracepoint() -> Result<()> {
    kept_paths_follow_renames_and_mounts(TestConfig::new().attach("tracepoint"))
}
