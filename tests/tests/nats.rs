//! Forwarding to NATS JetStream, against a real nats-server (Debian) started by the tests on
//! loopback, read back by an independent consumer (nats-py and the official protobuf runtime).
use std::{ffi::OsStr, path::Path, process::Command};

use anyhow::{Context as _, Result};
use custos_tests::{
    nats::NatsServer, open_as_nobody, open_repeatedly_as_nobody, require_root, shared_file, Entry,
    Marker, Sensor, TestConfig,
};
use serde_json::Value;

const OPENER: &str = env!("CARGO_BIN_EXE_opener");
const STREAM: &str = "CUSTOS";

fn nats_sink(spool: &Path, url: &str) -> TestConfig {
    let sink = Entry::new()
        .set("type", "nats")
        .set("name", "jetstream")
        .set("url", url)
        .set("stream", STREAM)
        .set("create_stream", true);
    TestConfig::new().spool(spool).sink(sink)
}

/// What the independent consumer reads from the stream, once `expect` events match `path`.
fn consume(url: &str, path: &str, expect: u64) -> Result<Vec<Value>> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(here.join("consumer/custos_jetstream.py"))
        .arg(here.join("../proto"))
        .args([url, STREAM, path, &expect.to_string(), "60"])
        .output()
        .context("running the JetStream consumer")?;
    custos_tests::json_lines(out).context("the JetStream consumer failed")
}

#[test]
fn events_are_published_to_jetstream_by_host_and_kind() -> Result<()> {
    require_root();
    let server = NatsServer::start()?;
    let spool = tempfile::tempdir()?;
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start(&nats_sink(spool.path(), &server.url()))?;
    Command::new(marker.path_str())
        .arg("to-jetstream")
        .status()?;
    let events = consume(&server.url(), marker.path_str(), 1)?;
    sensor.stop()?;
    let exec = events
        .iter()
        .find(|e| e["exec"].is_object() && e["process"]["binary"] == marker.path_str())
        .context("the marker exec in the stream")?;
    assert_eq!(exec["process"]["args"][1], "to-jetstream");
    let host = exec["host"].as_str().unwrap_or_default().replace('.', "_");
    assert_eq!(exec["_subject"], format!("custos.{host}.exec"));
    assert_eq!(
        exec["_msg_id"],
        format!(
            "{}:{}",
            exec["runId"].as_str().unwrap_or_default(),
            exec["seq"].as_str().unwrap_or_default()
        ),
        "the message id lets JetStream drop resends"
    );
    Ok(())
}

#[test]
fn ten_thousand_events_produced_while_nats_is_down_all_arrive() -> Result<()> {
    require_root();
    let mut server = NatsServer::start()?;
    let spool = tempfile::tempdir()?;
    let (_dir, root, file) = shared_file("burst", "b")?;
    let mut sensor = Sensor::start(
        &nats_sink(spool.path(), &server.url())
            .process_sensor(false)
            .files_only_under(&root),
    )?;
    // The stream exists (created on first delivery) before the outage.
    let (_, _) = open_as_nobody(OPENER, &[OsStr::new("read"), file.as_os_str()])?;
    let path = file.to_str().unwrap_or_default().to_owned();
    consume(&server.url(), &path, 1)?;

    server.stop();
    const OPENS: u64 = 10_000;
    open_repeatedly_as_nobody(OPENER, OPENS, &file)?;
    sensor.wait_for_log("cannot deliver")?;
    server.restart()?;

    let events = consume(&server.url(), &path, OPENS + 1)?;
    sensor.stop()?;
    let mut seqs: Vec<&str> = events
        .iter()
        .filter(|e| e["fileOpen"]["path"] == path.as_str())
        .map(|e| e["seq"].as_str().unwrap_or_default())
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, OPENS + 1, "every open arrived once");
    assert!(
        !events.iter().any(|e| e["loss"].is_object()),
        "nothing was lost"
    );
    Ok(())
}
