//! Forwarding to a collector over TCP through the disk spool: an independent consumer decodes
//! what arrives, spooled events survive `kill -9` during an outage, and a full spool reports
//! exactly what it dropped.
use std::{
    ffi::OsStr,
    net::TcpListener,
    ops::ControlFlow,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use custos_proto::v1::{event::Body, Event};
use custos_tests::{
    collector::{collect, Collector},
    of_kind, open_repeatedly_as_nobody,
    poll::poll,
    require_root, shared_file, Entry, Marker, Sensor, TestConfig, PATIENCE,
};
use serde_json::Value;

const OPENER: &str = env!("CARGO_BIN_EXE_opener");

/// A collector over TLS, with the given server certificate and key.
fn listen_tls(listener: TcpListener, cert_pem: &str, key_pem: &str) -> Result<Collector> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes())?];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?,
    );
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (sink, config) = (sink.clone(), config.clone());
            std::thread::spawn(move || {
                let Ok(connection) = rustls::ServerConnection::new(config) else {
                    return;
                };
                collect(rustls::StreamOwned::new(connection, stream), &sink);
            });
        }
    });
    Ok(Collector { received })
}

fn exec_of(events: &[Event], binary: &str) -> bool {
    events.iter().any(|e| {
        matches!(e.body, Some(Body::Exec(_)))
            && e.process.as_ref().is_some_and(|p| p.binary == binary)
    })
}

fn tcp_sink(spool: &Path, address: &str) -> TestConfig {
    TestConfig::new()
        .spool(spool)
        .spool_max_bytes(268_435_456)
        .sink(Entry::tcp_sink("collector", address))
}

#[test]
fn a_python_protobuf_consumer_decodes_the_tcp_stream() -> Result<()> {
    require_root();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let collector = Collector::listen(listener);
    let spool = tempfile::tempdir()?;
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start(&tcp_sink(spool.path(), &address))?;
    Command::new(marker.path_str()).arg("over-tcp").status()?;
    collector.wait_for("the marker exec", |events| {
        exec_of(events, marker.path_str())
    })?;
    sensor.stop()?;

    let stream = sensor.dir.path().join("received.bin");
    std::fs::write(&stream, collector.received.lock().expect("lock").as_slice())?;
    let proto_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let consumer = Path::new(env!("CARGO_MANIFEST_DIR")).join("consumer/custos_consumer.py");
    let out = Command::new("python3")
        .arg(&consumer)
        .arg(&proto_root)
        .arg(&stream)
        .output()
        .context("running the Python consumer")?;
    let decoded = custos_tests::json_lines(out).context("the Python consumer failed")?;
    let exec = decoded
        .iter()
        .find(|e| e["exec"].is_object() && e["process"]["binary"] == marker.path_str())
        .expect("the Python consumer sees the marker exec");
    assert_eq!(exec["process"]["args"][1], "over-tcp");
    assert_eq!(exec["identity"]["user"], "root");
    // Every event the sensor wrote to its file sink reached the collector, in order.
    let local: Vec<String> = sensor
        .events()?
        .iter()
        .map(|e| e["seq"].as_str().unwrap_or_default().to_owned())
        .collect();
    let remote: Vec<String> = decoded
        .iter()
        .map(|e| e["seq"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(remote, local);
    Ok(())
}

/// A collector address nobody listens on yet, and a spool directory for the sensor.
fn collector_down() -> Result<(String, tempfile::TempDir)> {
    require_root();
    let address = format!("127.0.0.1:{}", custos_tests::free_port()?);
    Ok((address, tempfile::tempdir()?))
}

#[test]
fn events_spooled_during_an_outage_survive_kill_9_and_arrive_after_restart() -> Result<()> {
    let (address, spool) = collector_down()?;
    let marker = Marker::new("/bin/true")?;
    let config = tcp_sink(spool.path(), &address);

    let first = Sensor::start(&config)?;
    Command::new(marker.path_str())
        .arg("during-outage")
        .status()?;
    let path = marker.path_str().to_owned();
    // The file sink is written after the spool, so once it shows the exec, the spool has it.
    first.wait_for("the marker exec", |events| {
        custos_tests::exec_of(events, &path)
    })?;
    wait_for_outage_gauges()?;
    custos_tests::signal(first.pid(), "KILL")?;
    drop(first);

    let collector = Collector::listen(TcpListener::bind(&address)?);
    let mut second = Sensor::start(&config)?;
    let events = collector.wait_for("the spooled marker exec", |events| exec_of(events, &path))?;
    let exec = events
        .iter()
        .find(|e| {
            matches!(e.body, Some(Body::Exec(_)))
                && e.process.as_ref().is_some_and(|p| p.binary == path)
        })
        .expect("found above");
    let args = &exec.process.as_ref().expect("process").args;
    assert_eq!(args.get(1).map(String::as_str), Some("during-outage"));
    // It was written by the killed run, not re-observed by the new one.
    let first_run = exec.run_id.clone();
    // New activity after the restart arrives after the replayed events.
    Command::new(&path).arg("after-restart").status()?;
    let events = collector.wait_for("the second run's marker exec", |events| {
        events.iter().any(|e| {
            e.run_id != first_run
                && e.process.as_ref().is_some_and(|p| {
                    p.binary == path && p.args.get(1).map(String::as_str) == Some("after-restart")
                })
        })
    })?;
    let position = |run: &str, arg: &str| {
        events.iter().position(|e| {
            e.run_id == run
                && matches!(e.body, Some(Body::Exec(_)))
                && e.process
                    .as_ref()
                    .is_some_and(|p| p.args.get(1).map(String::as_str) == Some(arg))
        })
    };
    let second_run = events
        .iter()
        .find(|e| e.run_id != first_run)
        .map(|e| e.run_id.clone())
        .unwrap_or_default();
    assert!(position(&first_run, "during-outage") < position(&second_run, "after-restart"));
    second.stop()?;
    Ok(())
}

/// Waits until `custos status` shows the collector's outage: a spool that grows, an oldest
/// event that ages, and errors counted.
fn wait_for_outage_gauges() -> Result<()> {
    poll(PATIENCE, Duration::from_millis(200), || {
        let out = Command::new(custos_tests::custos_bin())
            .args(["status", "--prometheus"])
            .output()?;
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |series: &str| -> f64 {
            report
                .lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        if value("custos_spool_bytes{sink=\"collector\"}") > 0.0
            && value("custos_spool_oldest_age_seconds{sink=\"collector\"}") > 0.0
            && value("custos_sink_errors_total{sink=\"collector\"}") > 0.0
        {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(format!(
            "spool gauges never showed the outage:\n{report}"
        )))
    })?;
    // The summary names the sink's last error.
    let out = Command::new(custos_tests::custos_bin())
        .arg("status")
        .output()?;
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = summary
        .lines()
        .find(|l| l.trim_start().starts_with("collector"));
    ensure!(
        row.is_some_and(|row| row.contains("refused")),
        "the collector's last error: {summary}"
    );
    Ok(())
}

#[test]
fn a_full_spool_drops_the_oldest_and_reports_exactly_how_many() -> Result<()> {
    let (address, spool) = collector_down()?;
    let (_dir, root, file) = shared_file("flood", "f")?;
    // Only the opener's opens, so the count is exact.
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .process_sensor(false)
            .files_only_under(&root)
            .spool(spool.path())
            .spool_max_bytes(262_144)
            .sink(Entry::tcp_sink("collector", &address)),
    )?;
    const OPENS: u64 = 3000;
    open_repeatedly_as_nobody(OPENER, OPENS, &file)?;
    let path = file.to_str().unwrap_or_default().to_owned();
    sensor.wait_for("a spool loss event", |events| {
        of_kind(events, "loss")
            .find(|e| e["loss"]["reason"] == "LOSS_REASON_SPOOL_FULL")
            .cloned()
    })?;
    // Let the last drops be reported before stopping.
    std::thread::sleep(Duration::from_millis(2500));
    sensor.stop()?;

    let events = sensor.events()?;
    let losses: Vec<&Value> = of_kind(&events, "loss")
        .filter(|e| e["loss"]["reason"] == "LOSS_REASON_SPOOL_FULL")
        .collect();
    assert!(losses.iter().all(|e| e["loss"]["sink"] == "collector"));
    let lost_opens: u64 = losses
        .iter()
        .filter(|e| e["loss"]["kind"] == "EVENT_KIND_FILE_OPEN")
        .map(|e| {
            e["loss"]["count"]
                .as_str()
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    // Every file-open event the sensor emitted (the flood, plus denied opens elsewhere, which
    // no filter hides) went to the collector's spool: each is either still there or counted.
    let emitted = of_kind(&events, "fileOpen").count() as u64;
    let flood = of_kind(&events, "fileOpen")
        .filter(|e| e["fileOpen"]["path"] == path.as_str())
        .count() as u64;
    assert_eq!(flood, OPENS, "the file sink has every open");
    let mut spooled_opens = 0u64;
    for entry in std::fs::read_dir(spool.path().join("collector"))? {
        let entry = entry?;
        if entry.path().extension() == Some(OsStr::new("seg")) {
            let bytes = std::fs::read(entry.path())?;
            spooled_opens += custos_proto::delimited::read_all(&bytes[..])?
                .iter()
                .filter(|e| matches!(e.body, Some(Body::FileOpen(_))))
                .count() as u64;
        }
    }
    assert!(lost_opens > 0, "the 256 KiB spool overflowed");
    assert_eq!(
        spooled_opens + lost_opens,
        emitted,
        "{spooled_opens} still spooled + {lost_opens} reported lost"
    );
    Ok(())
}

fn tls_sink(spool: &Path, address: &str, ca: &Path) -> TestConfig {
    let tls = Entry::new()
        .path("ca_file", ca)
        .set("server_name", "localhost");
    TestConfig::new()
        .spool(spool)
        .sink(Entry::tcp_sink("tls-collector", address).table("tls", tls))
}

#[test]
fn tls_delivers_to_a_verified_collector_and_refuses_an_unknown_one() -> Result<()> {
    require_root();
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let collector = listen_tls(
        listener,
        &issued.cert.pem(),
        &issued.key_pair.serialize_pem(),
    )?;
    let files = tempfile::tempdir()?;
    let trusted = files.path().join("collector-ca.pem");
    std::fs::write(&trusted, issued.cert.pem())?;
    let marker = Marker::new("/bin/true")?;

    let spool = tempfile::tempdir()?;
    let mut sensor = Sensor::start(&tls_sink(spool.path(), &address, &trusted))?;
    Command::new(marker.path_str()).arg("over-tls").status()?;
    collector.wait_for("the marker exec over TLS", |events| {
        exec_of(events, marker.path_str())
    })?;
    sensor.stop()?;

    // A collector whose certificate the configured CA did not issue gets nothing: server
    // verification is on, and the events wait in the spool.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let untrusted = files.path().join("other-ca.pem");
    std::fs::write(&untrusted, stranger.cert.pem())?;
    let other_spool = tempfile::tempdir()?;
    let mut refused = Sensor::start(&tls_sink(other_spool.path(), &address, &untrusted))?;
    Command::new(marker.path_str())
        .arg("must-not-arrive")
        .status()?;
    refused.wait_for_log("cannot deliver")?;
    assert!(
        refused
            .log
            .iter()
            .any(|l| l.contains("cannot deliver") && l.contains("certificate")),
        "{:#?}",
        refused.log
    );
    refused.stop()?;
    let arrived = collector.events()?;
    assert!(!arrived.iter().any(|e| e.process.as_ref().is_some_and(|p| p
        .args
        .get(1)
        .map(String::as_str)
        == Some("must-not-arrive"))));
    let spooled = std::fs::read(
        other_spool
            .path()
            .join("tls-collector/0000000000000001.seg"),
    )?;
    assert!(
        custos_proto::delimited::read_all(&spooled[..])?
            .iter()
            .any(|e| e
                .process
                .as_ref()
                .is_some_and(|p| p.args.get(1).map(String::as_str) == Some("must-not-arrive"))),
        "the undelivered event waits in the spool"
    );
    Ok(())
}

/// A real rsyslogd on loopback, receiving syslog over TCP and writing what it got to a file.
struct Rsyslog {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    address: String,
    received: std::path::PathBuf,
}

impl Rsyslog {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = custos_tests::free_port()?;
        let received = dir.path().join("received.log");
        let config = dir.path().join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                "global(workDirectory=\"{dir}\" maxMessageSize=\"64k\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"custos\")\n\
                 ruleset(name=\"custos\") {{ action(type=\"omfile\" file=\"{file}\" \
                 template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
                dir = dir.path().display(),
                file = received.display()
            ),
        )?;
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&config)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .spawn()
            .context("starting rsyslogd (Debian package rsyslog)")?;
        let address = format!("127.0.0.1:{port}");
        custos_tests::wait_listening(&address, PATIENCE).context("rsyslogd did not start")?;
        Ok(Self {
            child,
            _dir: dir,
            address,
            received,
        })
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rsyslog_receives_rfc5424_messages_with_the_event_as_json() -> Result<()> {
    require_root();
    let rsyslog = Rsyslog::start()?;
    let spool = tempfile::tempdir()?;
    let marker = Marker::new("/bin/true")?;
    let syslog = Entry::new()
        .set("type", "syslog")
        .set("address", rsyslog.address.as_str())
        .set("facility", "authpriv");
    let mut sensor = Sensor::start(&TestConfig::new().spool(spool.path()).sink(syslog))?;
    Command::new(marker.path_str()).arg("via-syslog").status()?;
    let line = poll(PATIENCE, Duration::from_millis(100), || {
        // rsyslog passes bytes through; the file need not be UTF-8 throughout.
        let text = String::from_utf8_lossy(&std::fs::read(&rsyslog.received).unwrap_or_default())
            .into_owned();
        // A whole record only: a line read while rsyslog is still writing may lack its head.
        let marker_exec = |l: &&str| {
            l.starts_with('<') && l.contains(" exec - ") && l.contains(marker.path_str())
        };
        Ok(match text.lines().find(marker_exec) {
            Some(line) => ControlFlow::Break(line.to_owned()),
            None => ControlFlow::Continue(format!(
                "rsyslog never wrote the marker exec; it has:\n{text}"
            )),
        })
    })?;
    let pid = sensor.pid();
    sensor.stop()?;
    // <PRI>VERSION TIMESTAMP HOST APP PROCID MSGID SD MSG, as rsyslog re-emits RFC 5424.
    let fields: Vec<&str> = line.splitn(8, ' ').collect();
    assert_eq!(fields[0], "<86>1", "authpriv.info: {line}");
    assert_eq!(fields[3], "custos", "{line}");
    assert_eq!(fields[4], pid.to_string(), "{line}");
    assert_eq!(fields[5], "exec", "{line}");
    let json: Value = serde_json::from_str(fields[7].trim())?;
    assert_eq!(json["process"]["binary"], marker.path_str());
    assert_eq!(json["process"]["args"][1], "via-syslog");
    Ok(())
}
