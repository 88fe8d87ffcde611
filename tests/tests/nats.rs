//! Forwarding to NATS JetStream, against a real nats-server (Debian) started by the tests on
//! loopback, read back by an independent consumer (nats-py and the official protobuf runtime).
use std::{ffi::OsStr, path::Path, process::Command};

use anyhow::{Context as _, Result};
use custos_tests::{
    load::ExecLoad,
    nats::{NatsCluster, NatsServer},
    open_as_nobody, open_repeatedly_as_nobody, require_root, shared_file, Entry, Marker, Sensor,
    TestConfig,
};
use serde_json::Value;

const OPENER: &str = env!("CARGO_BIN_EXE_opener");
const STREAM: &str = "CUSTOS";

fn nats_sink(spool: &Path, url: &str) -> TestConfig {
    TestConfig::new().spool(spool).sink(nats_entry(url))
}

/// The sink's section: JetStream at `url`, creating the stream.
fn nats_entry(url: &str) -> Entry {
    Entry::new()
        .set("type", "nats")
        .set("name", "jetstream")
        .set("url", url)
        .set("stream", STREAM)
        .set("create_stream", true)
}

/// A sensor reporting only the opens under `root`, to `sink`, spooling under `spool`.
fn file_opens_sensor(spool: &Path, root: &Path, sink: Entry) -> Result<Sensor> {
    Sensor::start(
        &TestConfig::new()
            .spool(spool)
            .sink(sink)
            .process_sensor(false)
            .files_only_under(root),
    )
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

#[test]
fn events_gathered_into_messages_by_kind_all_arrive_once() -> Result<()> {
    require_root();
    let server = NatsServer::start()?;
    let spool = tempfile::tempdir()?;
    let (_dir, root, file) = shared_file("gathered", "g")?;
    let sink = nats_entry(&server.url()).set("events_per_message", 50);
    let mut sensor = file_opens_sensor(spool.path(), &root, sink)?;
    const OPENS: u64 = 2_000;
    open_repeatedly_as_nobody(OPENER, OPENS, &file)?;
    let path = file.to_str().unwrap_or_default().to_owned();
    let events = consume(&server.url(), &path, OPENS)?;
    sensor.stop()?;

    let opens: Vec<&Value> = events
        .iter()
        .filter(|e| e["fileOpen"]["path"] == path.as_str())
        .collect();
    let mut seqs: Vec<u64> = opens.iter().map(|e| seq_of(e)).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, OPENS, "every open arrived once");
    let mut largest = 0;
    for open in &opens {
        // `<run_id>:<first seq>-<last seq>`, around the event's own seq.
        let id = open["_msg_id"].as_str().unwrap_or_default();
        let range = id
            .strip_prefix(&format!("{}:", open["runId"].as_str().unwrap_or_default()))
            .and_then(|range| range.split_once('-'))
            .with_context(|| format!("message id {id:?}"))?;
        let (first, last): (u64, u64) = (range.0.parse()?, range.1.parse()?);
        assert!(
            (first..=last).contains(&seq_of(open)),
            "{id} holds {}",
            seq_of(open)
        );
        assert!(open["_subject"]
            .as_str()
            .unwrap_or_default()
            .ends_with(".file_open"));
        largest = largest.max(
            open["_events"]
                .as_str()
                .unwrap_or_default()
                .parse::<u64>()?,
        );
    }
    assert_eq!(
        largest, 50,
        "messages carried up to events_per_message events"
    );
    Ok(())
}

/// A stream that is full refuses messages (JetStream answers with an error): the sensor says
/// why, keeps the events, and once the stream has room every one of them is stored once.
#[test]
fn events_a_full_stream_refused_are_stored_once_it_has_room() -> Result<()> {
    require_root();
    let server = NatsServer::start()?;
    let url = server.url();
    cluster_tool("limit", &url, 30, &["2"], "")?;
    let spool = tempfile::tempdir()?;
    let (_dir, root, file) = shared_file("refused", "r")?;
    let sink = nats_entry(&url).set("create_stream", false);
    let mut sensor = file_opens_sensor(spool.path(), &root, sink)?;
    const OPENS: u64 = 20;
    open_repeatedly_as_nobody(OPENER, OPENS, &file)?;
    sensor.wait_for_log("maximum messages exceeded")?;

    cluster_tool("limit", &url, 30, &["-1"], "")?;
    let path = file.to_str().unwrap_or_default().to_owned();
    let events = consume(&url, &path, OPENS)?;
    let mut produced: Vec<String> = sensor
        .events()?
        .iter()
        .filter(|e| e["fileOpen"]["path"] == path.as_str())
        .map(message_id)
        .collect();
    sensor.stop()?;
    anyhow::ensure!(produced.len() as u64 == OPENS, "{} opens", produced.len());
    let mut stored: Vec<String> = events
        .iter()
        .filter(|e| e["fileOpen"]["path"] == path.as_str())
        .map(|e| e["_msg_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    stored.sort_unstable();
    let count = stored.len();
    stored.dedup();
    assert_eq!(count, stored.len(), "no open was stored twice");
    produced.sort_unstable();
    assert_eq!(
        stored, produced,
        "every open was stored once the stream had room"
    );
    Ok(())
}

fn seq_of(event: &Value) -> u64 {
    event["seq"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

/// Runs the stream helper (nats-py): `leader` (optionally with the server to lead), `ids`
/// with the expected message ids on its input, or `limit` with the stream's message limit.
fn cluster_tool(
    command: &str,
    urls: &str,
    timeout: u64,
    args: &[&str],
    expected: &str,
) -> Result<String> {
    use std::io::Write as _;
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .arg(here.join("consumer/jetstream_cluster.py"))
        .args([command, urls, STREAM, &timeout.to_string()])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running the JetStream cluster helper")?;
    child
        .stdin
        .take()
        .context("the helper's input")?
        .write_all(expected.as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(
        output.status.success(),
        "jetstream_cluster.py {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// A three-server JetStream cluster and a stream kept on all three: its leader is killed
/// while events flow, and every event the sensor produced is stored exactly once (resends
/// after the failover carry the same message id, which JetStream drops).
#[test]
fn the_stream_leader_killed_while_events_flow_every_event_is_stored_once() -> Result<()> {
    require_root();
    let mut cluster = NatsCluster::start()?;
    let spool = tempfile::tempdir()?;
    let config = TestConfig::new()
        .file_sensor(false)
        .spool(spool.path())
        .sink(
            Entry::new()
                .set("type", "nats")
                .set("name", "cluster")
                .set("url", cluster.urls())
                .set("stream", STREAM)
                .set("create_stream", true)
                .set("replicas", 3),
        );
    let mut sensor = Sensor::start(&config)?;
    let marker = Marker::new("/bin/true")?;
    // The stream exists once the sensor delivered (the helper's own exec is an event); then
    // its leader is made the server the sensor is connected to, so the kill also breaks the
    // sensor's connection. Both wait for every replica to be current, which a stream written
    // to as fast as this machine can exec may never be at the moment it is asked: the load
    // starts once the leader is in place, and runs through the kill.
    cluster_tool("leader", &cluster.urls(), 60, &[], "")?;
    let connected = cluster.server_of_client("custos")?;
    let leader = cluster_tool("leader", &cluster.urls(), 60, &[&connected], "")?;
    let load = ExecLoad::start(&marker)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    cluster.kill(&leader)?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    let reconnected = cluster.server_of_client("custos")?;
    anyhow::ensure!(reconnected != leader, "the sensor is still on {leader}");
    drop(load);
    std::thread::sleep(std::time::Duration::from_millis(500));

    let produced: Vec<String> = sensor.events()?.iter().map(message_id).collect();
    let loads = sensor
        .events()?
        .iter()
        .filter(|e| e["process"]["binary"] == marker.path_str() && e["kind"] == "exec")
        .count();
    anyhow::ensure!(loads > 100, "only {loads} execs of the load");
    let url = cluster.running_url().context("a running server")?;
    let listing: Value =
        serde_json::from_str(&cluster_tool("ids", &url, 120, &[], &produced.join("\n"))?)?;
    sensor.stop()?;
    stored_once(&listing, &produced)?;
    eprintln!(
        "{} events, {loads} load execs, all stored once after killing {leader}; the sensor \
         went on through {reconnected}",
        produced.len()
    );
    Ok(())
}

/// The JetStream message id of an event: `<run_id>:<seq>`.
fn message_id(event: &Value) -> String {
    format!(
        "{}:{}",
        event["runId"].as_str().unwrap_or_default(),
        event["seq"].as_str().unwrap_or_default()
    )
}

/// The stream holds each of `produced` once, and nothing twice.
fn stored_once(listing: &Value, produced: &[String]) -> Result<()> {
    let ids: Vec<&str> = listing["ids"]
        .as_array()
        .context("ids")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let unique: std::collections::HashSet<&str> = ids.iter().copied().collect();
    anyhow::ensure!(
        unique.len() == ids.len(),
        "{} duplicates in the stream",
        ids.len() - unique.len()
    );
    let missing: Vec<&String> = produced
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .take(10)
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "not in the stream (of {}): {missing:?}",
        produced.len()
    );
    anyhow::ensure!(
        listing["stream_messages"].as_u64() == Some(ids.len() as u64),
        "the stream holds {} messages, {} read",
        listing["stream_messages"],
        ids.len()
    );
    Ok(())
}
