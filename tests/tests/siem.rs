//! Output a SIEM already understands, checked with tools from outside this repository: Sigma
//! rules converted through this repository's pySigma pipeline by pySigma's SQLite backend and
//! run over the sensor's JSON, and OCSF output validated against the OCSF schemas.
use std::{collections::BTreeMap, ffi::OsStr, net::TcpListener, path::Path, process::Command};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    free_port,
    loop_device::LoopDevice,
    read_json_lines, require_root, run, seq,
    siem::{install_sigma_pipeline, run_tool, test_file},
    Entry, Sensor, TestConfig,
};
use serde_json::Value;

/// A base64 payload that decodes to `echo custos-sigma`.
const PAYLOAD: &str = "ZWNobyBjdXN0b3Mtc2lnbWEK";
const AWK_MARK: &str = "custos-sigma-awk";
const NETWORK_MARK: &str = "custos-sigma-net";

/// Which events each test rule must fire on (and only on).
fn expected(rule: &str, event: &Value, cron_file: &str) -> bool {
    let process = &event["process"];
    let binary = process["binary"].as_str().unwrap_or_default();
    let args = process["args"].to_string();
    match rule {
        "base64_pipe_to_shell" => {
            binary.ends_with("/base64")
                && event["exec"]["parent"]["args"]
                    .to_string()
                    .contains(PAYLOAD)
        }
        "cron_file_created" => {
            event["fileOpen"]["path"] == cron_file && event["fileOpen"]["access"]["create"] == true
        }
        "setuid_chmod" => binary.ends_with("/chmod") && args.contains("u+s"),
        // Only the invoked path says awk: the resolved binary is mawk.
        "awk_shell_escape" => {
            args.contains(AWK_MARK)
                && binary.ends_with("/mawk")
                && process["invokedPath"] == "/usr/bin/awk"
        }
        "reverse_shell_port" => {
            event["network"]["remotePort"] == 4444
                && event["network"]["operation"] == "NETWORK_OPERATION_CONNECT"
                && args.contains(NETWORK_MARK)
        }
        other => panic!("no expectation for rule {other}"),
    }
}

/// Each test rule fires on the real activity it describes, and on nothing else the sensor saw,
/// including look-alike activity next to it (an encoding base64, a read in /etc/cron.d, a
/// chmod without the bit, mawk run by its own name, a connection to another port).
#[test]
fn sigma_rules_fire_on_their_activity_and_not_on_the_rest() -> Result<()> {
    require_root();
    install_sigma_pipeline()?;
    let work = tempfile::tempdir()?;
    let mut sensor = Sensor::start(&TestConfig::new().network_loopback(true))?;
    let cron_file = cause_activity(work.path())?;
    sensor.wait_for("the activity's last events", |events| {
        let seen = |rule| events.iter().any(|e| expected(rule, e, &cron_file));
        (seen("reverse_shell_port") && seen("cron_file_created")).then_some(())
    })?;
    sensor.stop()?;
    let _ = std::fs::remove_file(&cron_file);

    let matches = run_rules(&sensor.json_path, work.path())?;
    let events: BTreeMap<u64, Value> = read_json_lines(&sensor.json_path)?
        .into_iter()
        .map(|e| (seq(&e), e))
        .collect();
    for (rule, seqs) in &matches {
        ensure!(!seqs.is_empty(), "rule {rule} did not fire");
        for number in seqs {
            let event = &events[number];
            ensure!(
                expected(rule, event, &cron_file),
                "rule {rule} fired on an event of other activity: {event}"
            );
        }
    }
    ensure!(matches.len() == 5, "five rules ran: {matches:?}");
    Ok(())
}

/// The attacker techniques the rules describe, each beside a look-alike that must not match.
/// Returns the cron file created.
fn cause_activity(work: &Path) -> Result<String> {
    run("sh", &["-c", &format!("echo {PAYLOAD} | base64 -d | sh")])?;
    run("sh", &["-c", "base64 /etc/hostname > /dev/null"])?;

    std::fs::create_dir_all("/etc/cron.d")?;
    let cron_file = format!("/etc/cron.d/custos-sigma-{}", std::process::id());
    run("sh", &["-c", &format!("echo '# test' > {cron_file}")])?;
    run("cat", &[&cron_file])?;

    let tool = work.join("tool");
    std::fs::copy("/bin/true", &tool)?;
    let tool = tool.to_str().context("a UTF-8 path")?;
    run("chmod", &["755", tool])?;
    run("chmod", &["u+s", tool])?;

    run("awk", &[&format!("BEGIN {{system(\"true {AWK_MARK}\")}}")])?;
    run("mawk", &["BEGIN {system(\"true\")}"])?;

    let reverse_shell = TcpListener::bind("127.0.0.1:4444").context("port 4444 for the test")?;
    let other = free_port()?;
    let _other_listener = TcpListener::bind(("127.0.0.1", other))?;
    for port in [4444, other] {
        run(
            "python3",
            &[
                "-c",
                "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()",
                &port.to_string(),
                NETWORK_MARK,
            ],
        )?;
    }
    drop(reverse_shell);
    Ok(cron_file)
}

/// Converts each test rule with sigma-cli (`-p custos`, found by pySigma's plugin discovery)
/// and runs the queries over the events; the matching `seq`s per rule.
fn run_rules(events: &Path, work: &Path) -> Result<BTreeMap<String, Vec<u64>>> {
    let mut queries = serde_json::Map::new();
    for entry in std::fs::read_dir(test_file("sigma/rules"))? {
        let rule = entry?.path();
        let converted = run_tool(
            "sigma",
            &[
                "convert".as_ref(),
                "-t".as_ref(),
                "sqlite".as_ref(),
                "-p".as_ref(),
                "custos".as_ref(),
                "-p".as_ref(),
                test_file("sigma/sqlite.yml").as_os_str(),
                rule.as_os_str(),
            ],
        )?;
        let query = converted
            .lines()
            .find(|line| line.starts_with("SELECT"))
            .with_context(|| format!("no query for {}: {converted}", rule.display()))?;
        let name = rule
            .file_stem()
            .and_then(OsStr::to_str)
            .context("rule name")?;
        queries.insert(name.to_owned(), query.into());
    }
    let queries_path = work.join("queries.json");
    std::fs::write(&queries_path, serde_json::to_vec(&queries)?)?;
    let output = run_tool(
        "python",
        &[
            test_file("sigma/run_rules.py").as_os_str(),
            events.as_os_str(),
            queries_path.as_os_str(),
        ],
    )?;
    let matches: BTreeMap<String, Vec<String>> = serde_json::from_str(&output)?;
    Ok(matches
        .into_iter()
        .map(|(rule, seqs)| (rule, seqs.iter().filter_map(|s| s.parse().ok()).collect()))
        .collect())
}

/// A rule on a field Custos does not have is refused by the pipeline, not silently dropped.
#[test]
fn the_pipeline_refuses_fields_custos_does_not_have() -> Result<()> {
    install_sigma_pipeline()?;
    let dir = tempfile::tempdir()?;
    let rule = dir.path().join("hashes.yml");
    std::fs::write(
        &rule,
        "title: t\nlogsource:\n  category: process_creation\n  product: linux\n\
         detection:\n  selection:\n    Hashes: 'MD5=0'\n  condition: selection\n",
    )?;
    let output = Command::new(custos_tests::siem::tool("sigma"))
        .args(["convert", "-t", "sqlite", "-p", "custos"])
        .arg(&rule)
        .output()?;
    let text = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    ensure!(!output.status.success(), "converted: {text}");
    ensure!(text.contains("Custos has no field"), "{text}");
    Ok(())
}

/// With `format = "ocsf"`, every event the sensor wrote while real programs ran (execs and
/// exits, reads, creates, a denied read, su's privilege change, loopback connections, a loop
/// device with its mount) validates against the OCSF 1.7.0 schema of its class, and the
/// classes are those the families map to.
#[test]
fn ocsf_output_validates_against_the_ocsf_schema() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let ocsf = dir.path().join("events.ocsf");
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .network_loopback(true)
            .sink(Entry::file_sink(&ocsf, "ocsf")),
    )?;
    run(
        "sh",
        &[
            "-c",
            "cat /etc/hostname > /dev/null; date > /tmp/custos-ocsf-created",
        ],
    )?;
    let _ = Command::new("su")
        .args(["nobody", "-s", "/bin/sh", "-c", "cat /etc/shadow"])
        .output()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port().to_string();
    run(
        "python3",
        &[
            "-c",
            "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1]))).close()",
            &port,
        ],
    )?;
    loop_device_with_a_mount()?;
    sensor.wait_for("a loop device's removal", |events| {
        events
            .iter()
            .any(|e| e["blockDevice"]["action"] == "DEVICE_ACTION_REMOVED")
            .then_some(())
    })?;
    sensor.stop()?;
    let _ = std::fs::remove_file("/tmp/custos-ocsf-created");

    let report = run_tool(
        "python",
        &[test_file("ocsf/validate.py").as_os_str(), ocsf.as_os_str()],
    )?;
    let report: Value = serde_json::from_str(&report)?;
    ensure!(report["invalid"] == serde_json::json!([]), "{report}");
    let classes = report["classes"].as_object().context("classes")?;
    for class in [
        "1007:1", "1007:2", "1007:5", "1001:1", "1001:2", "4001:1", "1010:1", "1010:2", "1001:12",
        "1001:13",
    ] {
        ensure!(
            classes.contains_key(class),
            "no OCSF {class} event: {report}"
        );
    }
    let json_events = read_json_lines(&sensor.json_path)?;
    let ocsf_events = read_json_lines(&ocsf)?;
    ensure!(
        json_events.len() == ocsf_events.len(),
        "one OCSF event per event"
    );
    check_an_exec(&json_events, &ocsf_events)
}

/// The same exec in both forms: the identity in actor.user, the program in process.file, the
/// Custos-only fields in unmapped.
fn check_an_exec(json_events: &[Value], ocsf_events: &[Value]) -> Result<()> {
    let exec = json_events
        .iter()
        .find(|e| {
            e["kind"] == "exec"
                && e["process"]["binary"]
                    .as_str()
                    .is_some_and(|b| b.ends_with("/su"))
        })
        .context("su's exec")?;
    let uid = format!(
        "{}:{}",
        exec["runId"].as_str().unwrap_or_default(),
        seq(exec)
    );
    let ocsf = ocsf_events
        .iter()
        .find(|e| e["metadata"]["uid"] == uid.as_str())
        .context("su's exec in OCSF")?;
    ensure!(
        ocsf["class_uid"] == 1007 && ocsf["activity_id"] == 1,
        "{ocsf}"
    );
    ensure!(
        ocsf["process"]["file"]["path"] == exec["process"]["binary"],
        "{ocsf}"
    );
    ensure!(ocsf["process"]["pid"] == exec["process"]["pid"], "{ocsf}");
    ensure!(
        ocsf["actor"]["user"]["name"] == exec["identity"]["user"],
        "{ocsf}"
    );
    ensure!(ocsf["unmapped"]["identity"] == exec["identity"], "{ocsf}");
    ensure!(
        ocsf["unmapped"]["process"]["invokedPath"] == exec["process"]["invokedPath"],
        "{ocsf}"
    );
    Ok(())
}

/// A new loop device over an image, mounted, unmounted, detached and removed: Peripheral
/// Activity (Connect, Eject, Disconnect) and File System Activity (Mount, Unmount) events.
fn loop_device_with_a_mount() -> Result<()> {
    let device = LoopDevice::create()?;
    device.attach()?;
    device.mount()?;
    run(
        "umount",
        &[device.mount_point.to_str().context("a UTF-8 path")?],
    )?;
    run("losetup", &["-d", &device.node()])?;
    Ok(())
}
