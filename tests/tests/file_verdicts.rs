//! The kernel remembers which names a path rule excluded, so that the dynamic loader's reads of
//! the same libraries are dropped without resolving their paths again. These tests show that a
//! remembered exclusion never hides a read once the name means another path: after the file is
//! renamed out of the excluded directory by `mv`, after the directory itself is renamed, and
//! through a bind mount of it.
use std::{path::Path, process::Command};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{of_kind, opens_of, require_root, shared_root, BindMount, Sensor, TestConfig};
use serde_json::Value;

/// Runs `program` with `args` to completion; its pid.
fn run(program: &str, args: &[&Path]) -> Result<u32> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    let pid = child.id();
    let status = child.wait()?;
    ensure!(status.success(), "{program} {args:?} failed: {status}");
    Ok(pid)
}

/// Has `cat` read `file` three times (the first read's verdict is remembered, the next ones
/// meet it); the pids.
fn read_thrice(file: &Path) -> Result<Vec<u32>> {
    (0..3).map(|_| run("cat", &[file])).collect()
}

/// Every event up to the exit of process `pid`.
fn until_exit(sensor: &Sensor, pid: u32) -> Result<Vec<Value>> {
    sensor.wait_for("the last reader's exit", |events| {
        of_kind(events, "exit")
            .any(|e| e["process"]["pid"] == pid)
            .then(|| events.to_vec())
    })
}

/// The pids of the processes whose open of `path` was reported.
fn readers(events: &[Value], path: &Path) -> Vec<u32> {
    opens_of(events, path.to_str().expect("utf-8 test path"))
        .into_iter()
        .filter_map(|e| e["process"]["pid"].as_u64())
        .map(|pid| pid as u32)
        .collect()
}

#[test]
fn a_remembered_exclusion_never_hides_a_read_once_the_name_moves() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    let libs = root.join("libs");
    let outside = root.join("outside");
    let mounted = root.join("mounted");
    for dir in [&libs, &outside, &mounted] {
        std::fs::create_dir(dir)?;
    }
    for name in ["moved.so", "stays.so", "bound.so"] {
        std::fs::write(libs.join(name), name)?;
    }
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .exclude_read_paths(&[&libs])
            .dedup_window_ms(0),
    )?;
    let mut excluded = read_thrice(&libs.join("moved.so"))?;
    excluded.extend(read_thrice(&libs.join("stays.so"))?);
    excluded.extend(read_thrice(&libs.join("bound.so"))?);

    // The file leaves the excluded directory.
    run("mv", &[&libs.join("moved.so"), &outside.join("moved.so")])?;
    let after_file_move = read_thrice(&outside.join("moved.so"))?;
    // The directory itself is renamed: the file's own name and parent are unchanged.
    let renamed = root.join("renamed");
    run("mv", &[&libs, &renamed])?;
    let after_dir_move = read_thrice(&renamed.join("stays.so"))?;
    // The same directory seen through another mount.
    let _bind = BindMount::new(&renamed, &mounted)?;
    let through_mount = read_thrice(&mounted.join("bound.so"))?;

    let events = until_exit(&sensor, *through_mount.last().expect("three reads"))?;
    for (path, pids) in [
        (outside.join("moved.so"), &after_file_move),
        (renamed.join("stays.so"), &after_dir_move),
        (mounted.join("bound.so"), &through_mount),
    ] {
        assert_eq!(
            &readers(&events, &path),
            pids,
            "every read of {} is reported",
            path.display()
        );
    }
    for name in ["moved.so", "stays.so", "bound.so"] {
        let reported = readers(&events, &libs.join(name));
        assert!(
            reported.iter().all(|pid| !excluded.contains(pid)),
            "a read under the excluded directory was reported: {name} by {reported:?}"
        );
    }
    sensor.stop()?;
    Ok(())
}
