//! File opens from the real sensor: paths resolved in the kernel, failures, odd bytes, filters,
//! deduplication and live reload. The opens are made by the `opener` helper as uid 65534.
use std::{
    ffi::{OsStr, OsString},
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::Result;
use base64::Engine as _;
use custos_tests::{
    dirs_with_a_file, full_ring::RingFiller, of_kind, open_as_nobody, open_repeatedly_as_nobody,
    opens_of, require_root, shared_file, shared_root, Sensor, TestConfig,
};
use serde_json::Value;

const OPENER: &str = env!("CARGO_BIN_EXE_opener");

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

fn os(path: &Path) -> &OsStr {
    path.as_os_str()
}

/// Config lines limiting the sensor to `dir` and turning deduplication off.
fn only(dir: &Path) -> TestConfig {
    TestConfig::new().files_only_under(dir)
}

/// Waits for the opener process `pid` to have exited in the event stream: every open it made
/// has been reported by then (the exit is recorded after its last syscall).
fn wait_for_exit(sensor: &Sensor, pid: u32) -> Result<Vec<Value>> {
    sensor.wait_for("opener exit", |events| {
        of_kind(events, "exit")
            .any(|e| e["process"]["pid"] == pid)
            .then(|| events.to_vec())
    })
}

fn single<'a>(events: &'a [Value], path: &str, pid: u32) -> &'a Value {
    let hits: Vec<&Value> = opens_of(events, path)
        .into_iter()
        .filter(|e| e["process"]["pid"] == pid)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one open of {path} by {pid}, got {hits:#?}"
    );
    hits[0]
}

#[test]
fn opens_resolve_to_absolute_paths_with_access_and_identity() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    std::fs::create_dir(root.join("sub"))?;
    std::fs::set_permissions(root.join("sub"), std::fs::Permissions::from_mode(0o777))?;
    std::fs::write(root.join("marker.txt"), "m")?;
    std::fs::write(root.join("sub/target.txt"), "t")?;
    std::os::unix::fs::symlink("sub/target.txt", root.join("link"))?;
    let mut sensor = Sensor::start(&only(&root))?;
    // This kernel has syscall tracepoints: a program that stops verifying must not hide behind
    // the slower fallbacks.
    assert!(
        sensor
            .log
            .iter()
            .any(|l| l.contains("sys_exit=syscall_tracepoints")),
        "{:#?}",
        sensor.log
    );

    let marker = root.join("marker.txt");
    let (code, read_pid) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&marker)])?;
    assert_eq!(code, 0);
    let created = root.join("new-file");
    let (code, create_pid) = open_as_nobody(OPENER, &[OsStr::new("create"), os(&created)])?;
    assert_eq!(code, 0);
    let sub = root.join("sub");
    let (code, chdir_pid) = open_as_nobody(
        OPENER,
        &[OsStr::new("chdir"), os(&sub), OsStr::new("target.txt")],
    )?;
    assert_eq!(code, 0);
    let (code, dirfd_pid) = open_as_nobody(
        OPENER,
        &[OsStr::new("dirfd"), os(&sub), OsStr::new("../marker.txt")],
    )?;
    assert_eq!(code, 0);
    let (code, link_pid) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&root.join("link"))])?;
    assert_eq!(code, 0);
    let events = wait_for_exit(&sensor, link_pid)?;

    let read = single(&events, s(&marker), read_pid);
    let open = &read["fileOpen"];
    assert_eq!(open["access"]["read"], true);
    assert_eq!(open["access"]["write"], false);
    assert!(open["fd"].as_i64().is_some_and(|fd| fd >= 0));
    assert!(open.get("errno").is_none());
    let meta = std::fs::metadata(&marker)?;
    assert_eq!(open["inode"], meta.ino().to_string());
    assert_eq!(open["deviceMajor"], libc::major(meta.dev()));
    assert_eq!(open["deviceMinor"], libc::minor(meta.dev()));
    assert_eq!(read["identity"]["uid"], 65534);
    assert_eq!(read["identity"]["user"], "nobody");
    assert!(read["process"]["binary"]
        .as_str()
        .unwrap_or_default()
        .ends_with("/opener"));

    let create = &single(&events, s(&created), create_pid)["fileOpen"]["access"];
    assert_eq!(
        (
            create["write"].clone(),
            create["create"].clone(),
            create["truncate"].clone()
        ),
        (Value::Bool(true), Value::Bool(true), Value::Bool(true))
    );
    // Relative to the cwd, relative to a dirfd through "..", and through a symlink: the kernel
    // reports the file it actually opened.
    single(&events, s(&sub.join("target.txt")), chdir_pid);
    single(&events, s(&marker), dirfd_pid);
    single(&events, s(&sub.join("target.txt")), link_pid);

    // The sensor writes its output files all along; none of that is reported.
    let own = sensor.pid();
    assert!(of_kind(&events, "fileOpen").all(|e| e["process"]["pid"] != own));
    sensor.stop()?;
    Ok(())
}

#[test]
fn a_denied_open_is_reported_with_eacces_whatever_the_filters() -> Result<()> {
    require_root();
    let (_dir, root, secret) = shared_file("secret", "s")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    // Excluded and deduplicated: neither may hide a denied attempt.
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .exclude_paths(&[&root])
            .dedup_window_ms(60000),
    )?;
    let (code, pid) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&secret)])?;
    assert_eq!(
        code, 1,
        "nobody must not be able to read a root-only 0600 file"
    );
    let (_, pid2) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&secret)])?;
    let events = wait_for_exit(&sensor, pid2)?;
    let denied = single(&events, s(&secret), pid);
    let open = &denied["fileOpen"];
    assert_eq!(open["errno"], 13);
    assert_eq!(open["error"], "EACCES");
    assert_eq!(open["denied"], true);
    assert!(open.get("fd").is_none());
    assert_eq!(denied["identity"]["user"], "nobody");
    single(&events, s(&secret), pid2);
    sensor.stop()?;
    Ok(())
}

#[test]
fn odd_bytes_in_paths_reach_json_escaped_and_protobuf_exact() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    let mut name = b"odd name\nline".to_vec();
    name.push(0xff);
    name.extend_from_slice(b".txt");
    let odd: PathBuf = root.join(OsString::from_vec(name.clone()));
    std::fs::write(&odd, "o")?;
    std::fs::set_permissions(&odd, std::fs::Permissions::from_mode(0o644))?;
    let mut sensor = Sensor::start(&only(&root))?;
    let (code, pid) = open_as_nobody(OPENER, &[OsStr::new("read"), odd.as_os_str()])?;
    assert_eq!(code, 0);
    let events = wait_for_exit(&sensor, pid)?;
    sensor.stop()?;

    let readable = format!("{}/odd name\nline\\xff.txt", s(&root));
    let event = single(&events, &readable, pid);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(event["fileOpen"]["pathRaw"].as_str().unwrap_or_default())?;
    assert_eq!(
        raw,
        odd.as_os_str().as_bytes(),
        "pathRaw holds the exact bytes"
    );

    let protobuf = std::fs::read(&sensor.protobuf_path)?;
    let decoded = custos_proto::delimited::read_all(&protobuf[..])?;
    let exact = decoded.iter().any(|e| match &e.body {
        Some(custos_proto::v1::event::Body::FileOpen(open)) => {
            open.path_raw == odd.as_os_str().as_bytes() && open.path == readable
        }
        _ => false,
    });
    assert!(exact, "the protobuf output carries the exact path bytes");
    Ok(())
}

#[test]
fn an_excluded_prefix_is_not_reported() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    dirs_with_a_file(&root, &["excluded", "included"])?;
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .exclude_paths(&[&root.join("excluded")])
            .dedup_window_ms(0),
    )?;
    let excluded = root.join("excluded/f");
    let included = root.join("included/f");
    let (_, pid) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&excluded)])?;
    let (_, pid2) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&included)])?;
    let events = wait_for_exit(&sensor, pid2)?;
    single(&events, s(&included), pid2);
    assert!(
        opens_of(&events, s(&excluded)).is_empty(),
        "excluded path reported (opener pid {pid})"
    );
    sensor.stop()?;
    Ok(())
}

#[test]
fn reads_under_an_exclude_read_prefix_are_dropped_and_writes_kept() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    let libs = root.join("libs");
    std::fs::create_dir(&libs)?;
    let file = libs.join("libfoo.so");
    std::fs::write(&file, "elf")?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))?;
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .exclude_read_paths(&[&root.join("libs")])
            .dedup_window_ms(0),
    )?;
    let (_, reader) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&file)])?;
    let (_, writer) = open_as_nobody(OPENER, &[OsStr::new("create"), os(&file)])?;
    let events = wait_for_exit(&sensor, writer)?;
    let write = single(&events, s(&file), writer);
    assert_eq!(write["fileOpen"]["access"]["write"], true);
    assert!(
        opens_of(&events, s(&file))
            .iter()
            .all(|e| e["process"]["pid"] != reader),
        "a read under the prefix was reported"
    );
    sensor.stop()?;
    Ok(())
}

fn summaries_for(events: &[Value], path: &str, pid: u32) -> u64 {
    opens_of(events, path)
        .into_iter()
        .filter(|e| e["process"]["pid"] == pid && e["fileOpen"]["repeatSummary"] == true)
        .map(|e| {
            e["fileOpen"]["repeats"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_thousand_identical_opens_give_one_event_and_a_count_of_the_rest() -> Result<()> {
    require_root();
    let (_dir, root, file) = shared_file("hot", "h")?;
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .include_paths(&[&root])
            .dedup_window_ms(1000),
    )?;
    let pid = open_repeatedly_as_nobody(OPENER, 1000, &file)?;
    let path = s(&file).to_owned();
    let events = sensor.wait_for("a repeat summary", |events| {
        (summaries_for(events, &path, pid) > 0).then(|| events.to_vec())
    })?;
    let firsts = opens_of(&events, &path)
        .into_iter()
        .filter(|e| e["process"]["pid"] == pid && e["fileOpen"]["repeatSummary"] == false)
        .count();
    assert_eq!(firsts, 1, "only the first open is sent");
    assert_eq!(
        summaries_for(&events, &path, pid),
        999,
        "the other 999 are counted"
    );
    sensor.stop()?;
    Ok(())
}

/// An open whose record the full ring buffer refused opens no deduplication window: after the
/// daemon drained the ring, the same process opens the file again and every one of those opens
/// is reported, as an event or in a repeat summary, none folded into the lost record.
#[test]
fn an_open_the_full_ring_refused_leaves_its_repeats_reported() -> Result<()> {
    require_root();
    const AFTER: u64 = 5;
    let (_dir, root, file) = shared_file("refused", "r")?;
    let filler = RingFiller::create(&root)?;
    let mut sensor = Sensor::start(&filler.config().dedup_window_ms(60_000))?;
    filler.refuse(&sensor, || Ok(std::fs::File::open(&file).map(drop)?))?;
    for _ in 0..AFTER {
        std::fs::File::open(&file)?;
    }
    sensor.stop()?;
    let events = sensor.events()?;
    filler.was_full(&events)?;
    let (path, pid) = (s(&file).to_owned(), std::process::id());
    let firsts = opens_of(&events, &path)
        .into_iter()
        .filter(|e| e["process"]["pid"] == pid && e["fileOpen"]["repeatSummary"] == false)
        .count() as u64;
    assert_eq!(
        firsts + summaries_for(&events, &path, pid),
        AFTER,
        "each open after the drain is an event or counted in a summary ({firsts} events)"
    );
    Ok(())
}

#[test]
fn without_dedup_every_open_is_reported_and_none_is_lost() -> Result<()> {
    require_root();
    let (_dir, root, file) = shared_file("every", "e")?;
    let mut sensor = Sensor::start(&only(&root))?;
    let pid = open_repeatedly_as_nobody(OPENER, 1000, &file)?;
    let events = wait_for_exit(&sensor, pid)?;
    let reported = opens_of(&events, s(&file))
        .into_iter()
        .filter(|e| e["process"]["pid"] == pid)
        .count();
    assert_eq!(reported, 1000);
    assert_eq!(of_kind(&events, "loss").count(), 0);
    sensor.stop()?;
    Ok(())
}

#[test]
fn sighup_swaps_file_rules_and_a_broken_config_keeps_the_old_ones() -> Result<()> {
    require_root();
    let (_dir, root) = shared_root()?;
    dirs_with_a_file(&root, &["a", "b"])?;
    let (a, b) = (root.join("a/f"), root.join("b/f"));
    let mut sensor = Sensor::start(&only(&root))?;
    let (_, pid) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&a)])?;
    single(&wait_for_exit(&sensor, pid)?, s(&a), pid);

    // Exclude a/ through a reload.
    let exclude_a = only(&root).exclude_paths(&[&root.join("a")]);
    sensor.reconfigure(&exclude_a)?;
    sensor.wait_for_log("configuration reloaded")?;
    let (_, pid_a) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&a)])?;
    let (_, pid_b) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&b)])?;
    let events = wait_for_exit(&sensor, pid_b)?;
    single(&events, s(&b), pid_b);
    assert!(opens_of(&events, s(&a))
        .iter()
        .all(|e| e["process"]["pid"] != pid_a));

    // A broken file is refused with the reason; the exclusion stays in force.
    sensor.reconfigure(
        &exclude_a
            .clone()
            .set(&["file", "typo"], "writes_onlyy", true),
    )?;
    sensor.wait_for_log("configuration not reloaded")?;
    assert!(sensor
        .log
        .iter()
        .any(|l| l.contains("not reloaded") && l.contains("typo")));
    let (_, pid_a2) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&a)])?;
    let (_, pid_b2) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&b)])?;
    let events = wait_for_exit(&sensor, pid_b2)?;
    single(&events, s(&b), pid_b2);
    assert!(opens_of(&events, s(&a))
        .iter()
        .all(|e| e["process"]["pid"] != pid_a2));
    sensor.stop()?;
    Ok(())
}

#[test]
fn the_raw_tracepoint_fallback_reports_opens_too() -> Result<()> {
    fallback_reports_opens("tracepoint", "sys_exit=raw_tracepoint")
}

#[test]
fn the_every_syscall_tp_btf_fallback_reports_opens_too() -> Result<()> {
    fallback_reports_opens("btf", "sys_exit=tp_btf")
}

/// With `kernel.attach = attach`, the `sys_exit` hook takes the path `expected` names, and an
/// open through it is reported.
fn fallback_reports_opens(attach: &str, expected: &str) -> Result<()> {
    require_root();
    let (_dir, root, file) = shared_file("fallback", "r")?;
    let mut sensor = Sensor::start(&only(&root).attach(attach))?;
    assert!(
        sensor.log.iter().any(|l| l.contains(expected)),
        "{expected}: {:#?}",
        sensor.log
    );
    let (_, pid) = open_as_nobody(OPENER, &[OsStr::new("read"), os(&file)])?;
    let events = wait_for_exit(&sensor, pid)?;
    assert_eq!(single(&events, s(&file), pid)["identity"]["user"], "nobody");
    sensor.stop()?;
    Ok(())
}

#[test]
fn io_uring_opens_are_reported_like_syscalls() -> Result<()> {
    require_root();
    let (_dir, root, file) = shared_file("ring", "r")?;
    let secret = root.join("ring-secret");
    std::fs::write(&secret, "s")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let mut sensor = Sensor::start(&only(&root))?;
    assert!(sensor
        .log
        .iter()
        .any(|l| l.contains("io_uring_complete=tp_btf")));
    let (code, pid) = open_as_nobody(OPENER, &[OsStr::new("uring"), os(&file)])?;
    assert_eq!(code, 0, "the io_uring open succeeds");
    let (code, denied_pid) = open_as_nobody(OPENER, &[OsStr::new("uring"), os(&secret)])?;
    assert_eq!(code, 1);
    let events = wait_for_exit(&sensor, denied_pid)?;
    let opened = single(&events, s(&file), pid);
    assert_eq!(opened["fileOpen"]["syscall"], "io_uring_openat");
    assert_eq!(opened["identity"]["user"], "nobody");
    assert!(opened["fileOpen"]["fd"].as_i64().is_some_and(|fd| fd >= 0));
    let denied = single(&events, s(&secret), denied_pid);
    assert_eq!(denied["fileOpen"]["syscall"], "io_uring_openat");
    assert_eq!(denied["fileOpen"]["error"], "EACCES");
    assert_eq!(denied["fileOpen"]["denied"], true);
    sensor.stop()?;
    Ok(())
}
