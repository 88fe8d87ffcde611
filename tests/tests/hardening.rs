//! Files and local users: what the daemon writes is root's alone whatever the umask, and what
//! decides what it monitors must be writable by root alone.
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    custos_bin, free_port, poll::wait_until, require_root, Entry, Marker, Sensor, TestConfig,
    PATIENCE,
};

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .mode()
        & 0o7777)
}

/// `custos` with `args`: its exit status and standard error.
fn custos_fails(args: &[&std::ffi::OsStr]) -> Result<String> {
    let output = Command::new(custos_bin()).args(args).output()?;
    ensure!(!output.status.success(), "custos {args:?} was accepted");
    Ok(String::from_utf8(output.stderr)?)
}

/// A configuration and an identity map anyone may write are refused, by the daemon and by
/// check-config, with the path and the fix; at 0644 they are accepted.
#[test]
fn a_world_writable_configuration_or_identity_map_is_refused() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("custos.toml");
    std::fs::write(
        &config,
        TestConfig::new().to_toml() + "[[sinks]]\ntype = \"stdout\"\n",
    )?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666))?;
    for command in ["run", "check-config"] {
        let mut args: Vec<&std::ffi::OsStr> = vec![command.as_ref()];
        if command == "run" {
            args.push("--config".as_ref());
        }
        args.push(config.as_os_str());
        let error = custos_fails(&args)?;
        ensure!(error.contains(&config.display().to_string()), "{error}");
        ensure!(error.contains("can be written by everyone"), "{error}");
        ensure!(error.contains("chmod go-w"), "{error}");
    }

    let map = dir.path().join("people.toml");
    std::fs::write(
        &map,
        "[[person]]\nuser = \"root\"\nprincipal = \"a@corp\"\n",
    )?;
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o666))?;
    std::fs::write(
        &config,
        TestConfig::new().identity_map(&map).to_toml() + "[[sinks]]\ntype = \"stdout\"\n",
    )?;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644))?;
    let error = custos_fails(&["run".as_ref(), "--config".as_ref(), config.as_os_str()])?;
    ensure!(error.contains("identity map"), "{error}");
    ensure!(error.contains(&map.display().to_string()), "{error}");
    Ok(())
}

/// A file sink on a read-only file system stops the start with its path and where the daemon
/// may write instead: under the packaged unit's sandbox most of the system is read-only.
#[test]
fn a_file_sink_on_a_read_only_file_system_is_refused_with_what_to_do() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let (read_only, unmount) = tmpfs_in(dir.path(), "read-only", "ro,size=64k")?;
    let config = dir.path().join("custos.toml");
    // The file itself, and a directory the daemon would have to make for it.
    for sink in [
        read_only.join("events.jsonl"),
        read_only.join("custos/events.jsonl"),
    ] {
        let text = TestConfig::new()
            .sink(Entry::file_sink(&sink, "json"))
            .to_toml();
        std::fs::write(&config, text)?;
        let error = custos_fails(&["run".as_ref(), "--config".as_ref(), config.as_os_str()])?;
        ensure!(error.contains(&sink.display().to_string()), "{error}");
        ensure!(error.contains("read-only file system"), "{error}");
        ensure!(
            error.contains("/var/log/custos") && error.contains("ReadWritePaths="),
            "{error}"
        );
    }
    drop(unmount);
    Ok(())
}

/// With a reader group, the directory systemd makes for file sinks (`LogsDirectory=`, root's
/// alone, named in `$LOGS_DIRECTORY`) is opened to the group at start, so that a member reads
/// the events there; without one it stays root's alone.
#[test]
fn the_reader_group_is_let_into_the_logs_directory_systemd_made() -> Result<()> {
    require_root();
    let group = "custos-readers";
    custos_tests::ensure_member("custos-reader", group)?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for reader_group in [None, Some(group)] {
        let logs = dir.path().join("custos");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir(&logs)?;
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700))?;
        let events = logs.join("events.jsonl");
        let mut config = TestConfig::new().sink(Entry::file_sink(&events, "json"));
        if let Some(group) = reader_group {
            config = config.set(&["files"], "group", group);
        }
        let env = [("LOGS_DIRECTORY", logs.as_os_str())];
        let mut sensor = Sensor::start_with_env(&config, &env)?;
        let marker = Marker::new("/bin/true")?;
        run_marker(&marker, "read-by-the-group", 1)?;
        let path = marker.path_str().to_owned();
        sensor.wait_for("the marker", |events| custos_tests::exec_of(events, &path))?;
        sensor.stop()?;
        let read = Command::new("runuser")
            .args([
                "-u",
                "custos-reader",
                "--",
                "grep",
                "-c",
                "read-by-the-group",
            ])
            .arg(&events)
            .output()?;
        let expected_mode = if reader_group.is_some() { 0o750 } else { 0o700 };
        let logs_mode = mode(&logs)?;
        ensure!(
            logs_mode == expected_mode,
            "group {reader_group:?}: the logs directory is {logs_mode:o}"
        );
        ensure!(
            read.status.success() == reader_group.is_some(),
            "group {reader_group:?}: {}",
            String::from_utf8_lossy(&read.stderr)
        );
    }
    Ok(())
}

/// Under umask 022 the spool (directory and segments), a file sink in a new directory and an
/// existing file sink left 0644 are all root's alone.
#[test]
fn what_the_daemon_writes_is_private_under_umask_022() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let spool = dir.path().join("spool");
    let new_dir_sink = dir.path().join("logs/events.json");
    let existing = dir.path().join("existing.json");
    std::fs::write(&existing, b"")?;
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644))?;
    // Nobody listens there: every event stays in the spool.
    let collector = format!("127.0.0.1:{}", free_port()?);
    let mut sensor = Sensor::start_with_umask(
        &TestConfig::new()
            .spool(&spool)
            .sink(Entry::tcp_sink("down", &collector))
            .sink(Entry::file_sink(&new_dir_sink, "json"))
            .sink(Entry::file_sink(&existing, "json")),
        "022",
    )?;
    let marker = Marker::new("/bin/true")?;
    Command::new(marker.path_str()).status()?;
    let path = marker.path_str().to_owned();
    sensor.wait_for("the marker's exec", |events| {
        events
            .iter()
            .any(|e| e["process"]["binary"] == path.as_str())
            .then_some(())
    })?;
    sensor.stop()?;
    ensure!(
        mode(&spool)? == 0o700,
        "spool directory {:o}",
        mode(&spool)?
    );
    let sink_spool = spool.join("down");
    ensure!(mode(&sink_spool)? == 0o700, "{:o}", mode(&sink_spool)?);
    let segment = first_segment(&sink_spool)?;
    ensure!(
        std::fs::metadata(&segment)?.len() > 0,
        "events were spooled"
    );
    ensure!(mode(&segment)? == 0o600, "segment {:o}", mode(&segment)?);
    ensure!(
        mode(new_dir_sink.parent().unwrap())? == 0o700,
        "file sink directory"
    );
    ensure!(
        mode(&new_dir_sink)? == 0o600,
        "new file sink {:o}",
        mode(&new_dir_sink)?
    );
    ensure!(
        mode(&existing)? == 0o600,
        "tightened {:o}",
        mode(&existing)?
    );
    ensure!(mode(&sensor.json_path)? == 0o600, "the harness's sink");
    Ok(())
}

/// Runs `/bin/true` through a marker copy `times` times, each with `tag` as its argument.
fn run_marker(marker: &Marker, tag: &str, times: u32) -> Result<()> {
    let script = format!("i=0; while [ $i -lt {times} ]; do \"$0\" {tag}; i=$((i+1)); done");
    let status = Command::new("sh")
        .args(["-c", &script, marker.path_str()])
        .status()?;
    ensure!(status.success(), "the marker loop failed");
    Ok(())
}

fn is_exec_of(event: &custos_proto::v1::Event, marker: &str, tag: &str) -> bool {
    matches!(event.body, Some(custos_proto::v1::event::Body::Exec(_)))
        && event
            .process
            .as_ref()
            .is_some_and(|p| p.binary == marker && p.args.iter().any(|a| a == tag))
}

/// The spool's filesystem fills while the collector is down: the daemon keeps running and
/// writing its other sinks, reports what it could not spool as losses of that sink, and spools
/// again once the collector drained the spool and freed the space.
#[test]
fn a_full_spool_filesystem_is_reported_and_spooling_resumes() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let (small, unmount) = tmpfs_in(dir.path(), "small", "size=256k")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    drop(listener); // down, for now
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .file_sensor(false)
            .spool(&small.join("spool"))
            .spool_max_bytes(64 << 20)
            .sink(Entry::tcp_sink("collector", &address)),
    )?;
    let marker = Marker::new("/bin/true")?;
    // About 2 KiB of spooled protobuf per run (exec and exit): several times the filesystem.
    run_marker(&marker, "filling", 600)?;
    run_marker(&marker, "after-full", 1)?;
    let path = marker.path_str().to_owned();
    let loss = sensor.wait_for("a loss for the unwritable spool", |events| {
        events
            .iter()
            .find(|e| {
                e["loss"]["reason"] == "LOSS_REASON_SPOOL_WRITE_FAILED"
                    && e["loss"]["sink"] == "collector"
            })
            .cloned()
    })?;
    ensure!(custos_tests::uint64(&loss["loss"]["count"]) > 0, "{loss}");
    sensor.wait_for("the daemon still writes its file sink", |events| {
        events
            .iter()
            .any(|e| {
                e["process"]["binary"] == path.as_str() && e["process"]["args"][1] == "after-full"
            })
            .then_some(())
    })?;

    let first = first_segment(&small.join("spool/collector"))?;
    let collector =
        custos_tests::collector::Collector::listen(std::net::TcpListener::bind(&address)?);
    collector.wait_for("the spooled events", |events| {
        events.iter().any(|e| is_exec_of(e, &path, "filling"))
    })?;
    // Once the collector confirmed the whole segment, writing goes on in a new one and the
    // sent one is deleted: the space is free again, and new events are spooled and delivered.
    wait_until("the sent segment's removal", PATIENCE, || {
        Ok(!first.exists())
    })?;
    run_marker(&marker, "after-drain", 1)?;
    collector.wait_for("an event spooled after the drain", |events| {
        events.iter().any(|e| is_exec_of(e, &path, "after-drain"))
    })?;
    sensor.stop()?;
    drop(unmount);
    Ok(())
}

/// Unmounts a test's filesystem whatever happened.
struct Unmount(std::path::PathBuf);

/// A tmpfs mounted with `options` on a new directory `name` in `dir`, unmounted with the guard.
fn tmpfs_in(dir: &Path, name: &str, options: &str) -> Result<(std::path::PathBuf, Unmount)> {
    let mount_point = dir.join(name);
    std::fs::create_dir(&mount_point)?;
    let target = mount_point.to_str().context("a UTF-8 path")?;
    custos_tests::run("mount", &["-t", "tmpfs", "-o", options, "tmpfs", target])?;
    Ok((mount_point.clone(), Unmount(mount_point)))
}

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A spool segment cut in the middle of a record, as a power cut leaves it: after a restart,
/// every whole record before the cut is delivered in order, and the daemon runs on.
#[test]
fn a_segment_torn_mid_record_is_recovered_up_to_the_last_whole_record() -> Result<()> {
    require_root();
    let spool = tempfile::tempdir()?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let config = TestConfig::new()
        .file_sensor(false)
        .spool(spool.path())
        .sink(Entry::tcp_sink("collector", &address));
    let mut sensor = Sensor::start(&config)?;
    let marker = Marker::new("/bin/true")?;
    run_marker(&marker, "before-the-cut", 20)?;
    let path = marker.path_str().to_owned();
    sensor.wait_for("the twentieth run", |events| {
        (events
            .iter()
            .filter(|e| e["process"]["binary"] == path.as_str() && e["kind"] == "exec")
            .count()
            == 20)
            .then_some(())
    })?;
    std::thread::sleep(std::time::Duration::from_millis(500)); // the spool's flush
    custos_tests::signal(sensor.pid(), "KILL")?;
    let _ = sensor.stop();
    let segment = first_segment(&spool.path().join("collector"))?;
    let whole = std::fs::read(&segment)?;
    let records = complete_records(&whole)?;
    ensure!(records.len() > 40, "{} records spooled", records.len());
    // Cut the second-to-last record in half (the last one goes with it).
    let torn = records[records.len() - 2];
    let torn_end = records[records.len() - 1].1;
    let cut = torn.1 + (torn_end - torn.1) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)?
        .set_len(cut as u64)?;

    let collector =
        custos_tests::collector::Collector::listen(std::net::TcpListener::bind(&address)?);
    let mut sensor = Sensor::start(&config)?;
    let expected: Vec<u64> = records[..records.len() - 2].iter().map(|r| r.0).collect();
    let first_run = collector.wait_for("every whole record", |events| {
        events.iter().filter(|e| !e.run_id.is_empty()).count() >= expected.len()
    })?;
    sensor.stop()?;
    let run_id = &first_run[0].run_id;
    let delivered: Vec<u64> = first_run
        .iter()
        .filter(|e| &e.run_id == run_id)
        .map(|e| e.seq)
        .collect();
    ensure!(
        delivered.starts_with(&expected),
        "the whole records in order: expected {expected:?}, got {delivered:?}"
    );
    ensure!(
        !delivered.contains(&torn.0),
        "the torn record is not delivered: {delivered:?}"
    );
    Ok(())
}

/// The spool's first segment file.
fn first_segment(dir: &Path) -> Result<std::path::PathBuf> {
    custos_tests::spool_segments(dir)?
        .into_iter()
        .next()
        .with_context(|| format!("no segment in {}", dir.display()))
}

/// The `seq` and start offset of every whole record in a segment.
fn complete_records(bytes: &[u8]) -> Result<Vec<(u64, usize)>> {
    let mut records = Vec::new();
    let mut reader = bytes;
    loop {
        let start = bytes.len() - reader.len();
        match custos_proto::delimited::read_one(&mut reader) {
            Ok(Some(event)) => records.push((event.seq, start)),
            _ => return Ok(records),
        }
    }
}
