//! Insider-risk alerts and privacy, with the real programs: access outside one's role, denied
//! attempts and bulk collection on a sensitive set; pseudonymised names that only the key maps
//! back; secrets that never leave the host.
use std::{os::unix::fs::PermissionsExt, process::Command};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    custos, custos_bin, ensure_member, ensure_user, exec_of, of_kind, opens_of, require_root,
    run_after_login, shared_dir,
    stall::{resume_and_wait_for_events, stuck_sensor},
    Entry, Marker, Sensor, TestConfig,
};
use serde_json::Value;

const ENGINEER: &str = "alice";
const FINANCE: &str = "custos-fin";

/// Runs the `opener` helper as `user` after a login as that user (login uid set), with no
/// supplementary groups.
fn open_as(user: &str, args: &[&str]) -> Result<i32> {
    let uid = ensure_user(user)?;
    let status = run_after_login(uid, uid, env!("CARGO_BIN_EXE_opener"), args)?;
    Ok(status.code().unwrap_or(-1))
}

/// A new pseudonymisation key, made by `custos privacy-key`, in `dir`.
fn privacy_key(dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
    let key = dir.join(name);
    custos(&["privacy-key".as_ref(), key.as_ref()])?;
    Ok(key)
}

fn identity_map(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let map = dir.join("people.csv");
    std::fs::write(
        &map,
        format!(
            "user,principal,display_name,department,roles\n\
             {ENGINEER},alice@example.com,Alice Example,Engineering,engineering\n\
             {FINANCE},fin@example.com,Finn Ance,Finance,finance\n"
        ),
    )?;
    Ok(map)
}

fn alerts<'a>(events: &'a [Value], reason: &str, login_user: &str) -> Vec<&'a Value> {
    of_kind(events, "alert")
        .filter(|e| e["alert"]["reason"] == reason && e["identity"]["loginUser"] == login_user)
        .collect()
}

/// Waits for the first alert for `reason` about `login_user`.
fn wait_for_alert(sensor: &Sensor, what: &str, reason: &str, login_user: &str) -> Result<Value> {
    sensor.wait_for(what, |events| {
        alerts(events, reason, login_user)
            .first()
            .map(|e| (*e).clone())
    })
}

/// The scenario: an engineer reading a finance file raises an alert naming the rule,
/// a finance user reading it does not; a denied open on the set alerts; reading more distinct
/// files than the threshold is bulk collection.
#[test]
fn sensitive_sets_alert_on_access_outside_role_denials_and_bulk_reads() -> Result<()> {
    require_root();
    ensure_user(ENGINEER)?;
    ensure_user(FINANCE)?;
    let shared = shared_dir()?;
    let (finance, payroll) = finance_share(shared.path())?;
    // The identity map may not sit where others can write (the daemon refuses it).
    let private = tempfile::tempdir()?;
    let map = identity_map(private.path())?;
    let set = format!("{}/", finance.display()); // a path prefix
                                                 // The set is even excluded from file events: the policy keeps it in the kernel.
    let rule = Entry::new()
        .set("id", "finance-data")
        .set("severity", "high")
        .set("paths", vec![set.as_str()])
        .set("allow_roles", vec!["finance"])
        .set("bulk_files", 3)
        .set("bulk_minutes", 10);
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .identity_map(&map)
            .exclude_paths(&[shared.path()])
            .alert_rule(rule),
    )?;
    let q1 = finance.join("q1.xlsx");
    let q1 = q1.to_str().unwrap();

    assert_eq!(
        open_as(ENGINEER, &["read", q1])?,
        0,
        "Unix permissions allow it"
    );
    check_outside_role_alert(&sensor, q1)?;

    assert_eq!(open_as(FINANCE, &["read", q1])?, 0);
    assert_eq!(
        open_as(FINANCE, &["read", payroll.to_str().unwrap()])?,
        1,
        "0600 root file"
    );
    let denied = wait_for_alert(
        &sensor,
        "the denied attempt's alert",
        "ALERT_REASON_DENIED_ATTEMPT",
        FINANCE,
    )?;
    assert_eq!(denied["alert"]["paths"][0], payroll.to_str().unwrap());
    for name in ["q2.xlsx", "q3.xlsx", "q4.xlsx"] {
        open_as(FINANCE, &["read", finance.join(name).to_str().unwrap()])?;
    }
    let bulk = finance_bulk_alert(&sensor)?;
    assert_eq!(bulk["alert"]["paths"].as_array().unwrap().len(), 4);
    let events = sensor.events()?;
    assert!(
        alerts(&events, "ALERT_REASON_ACCESS_OUTSIDE_ROLE", FINANCE).is_empty(),
        "the finance user's reads are within their role"
    );
    sensor.stop()?;
    Ok(())
}

/// The finance user reads two reports while the daemon's standard output (a pipe) goes unread
/// and its queue is full, then two more once it moves: the reads of the stall were not made,
/// but the bulk-collection rule counted them, and its alert names all four files.
#[test]
fn reads_while_the_output_is_stuck_count_towards_bulk_collection() -> Result<()> {
    require_root();
    ensure_user(FINANCE)?;
    let shared = shared_dir()?;
    let (finance, _) = finance_share(shared.path())?;
    let private = tempfile::tempdir()?;
    let map = identity_map(private.path())?;
    let set = format!("{}/", finance.display());
    let rule = Entry::new()
        .set("id", "finance-data")
        .set("paths", vec![set.as_str()])
        .set("allow_roles", vec!["finance"])
        .set("bulk_files", 3)
        .set("bulk_minutes", 10);
    let config = TestConfig::new()
        .identity_map(&map)
        .exclude_paths(&[shared.path()])
        .alert_rule(rule);
    let (mut sensor, output) = stuck_sensor(config)?;
    let report = |name: &str| finance.join(name).to_str().unwrap_or_default().to_owned();
    for name in ["q1.xlsx", "q2.xlsx"] {
        assert_eq!(open_as(FINANCE, &["read", &report(name)])?, 0);
    }
    // Time for the daemon to read the opens' records while the output is still stuck.
    std::thread::sleep(std::time::Duration::from_secs(1));
    resume_and_wait_for_events(&mut sensor, &output)?;
    for name in ["q3.xlsx", "q4.xlsx"] {
        assert_eq!(open_as(FINANCE, &["read", &report(name)])?, 0);
    }
    let bulk = finance_bulk_alert(&sensor).with_context(|| losses(&sensor))?;
    let mut paths: Vec<&str> = bulk["alert"]["paths"]
        .as_array()
        .context("the alert's paths")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    paths.sort_unstable();
    let names = ["q1.xlsx", "q2.xlsx", "q3.xlsx", "q4.xlsx"];
    assert_eq!(paths, names.map(report));
    let events = sensor.events()?;
    let made = |name: &str| !opens_of(&events, &report(name)).is_empty();
    ensure!(
        !made("q1.xlsx") && !made("q2.xlsx") && made("q3.xlsx"),
        "only the reads after the stall are events"
    );
    sensor.stop()?;
    Ok(())
}

/// The losses the daemon reported: what a missing alert may be down to.
fn losses(sensor: &Sensor) -> String {
    let events = sensor.events().unwrap_or_default();
    let losses: Vec<String> = of_kind(&events, "loss")
        .map(|e| e["loss"].to_string())
        .collect();
    format!("losses reported: [{}]", losses.join(", "))
}

/// The finance user's bulk-collection alert.
fn finance_bulk_alert(sensor: &Sensor) -> Result<Value> {
    let reason = "ALERT_REASON_BULK_COLLECTION";
    wait_for_alert(sensor, "the bulk-collection alert", reason, FINANCE)
}

/// A share with four readable reports and a root-only payroll file; the share and payroll.
fn finance_share(shared: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let finance = shared.join("finance");
    std::fs::create_dir(&finance)?;
    std::fs::set_permissions(&finance, std::fs::Permissions::from_mode(0o755))?;
    for name in ["q1.xlsx", "q2.xlsx", "q3.xlsx", "q4.xlsx"] {
        std::fs::write(finance.join(name), name)?;
        std::fs::set_permissions(finance.join(name), std::fs::Permissions::from_mode(0o644))?;
    }
    let payroll = finance.join("payroll.csv");
    std::fs::write(&payroll, "secret")?;
    std::fs::set_permissions(&payroll, std::fs::Permissions::from_mode(0o600))?;
    Ok((finance, payroll))
}

/// The engineer's read of `q1`: an alert naming the rule, the file and the engineer's roles,
/// pointing at the open that triggered it.
fn check_outside_role_alert(sensor: &Sensor, q1: &str) -> Result<()> {
    let alert = wait_for_alert(
        sensor,
        "the engineer's alert",
        "ALERT_REASON_ACCESS_OUTSIDE_ROLE",
        ENGINEER,
    )?;
    assert_eq!(alert["alert"]["ruleId"], "finance-data");
    assert_eq!(alert["alert"]["severity"], "ALERT_SEVERITY_HIGH");
    assert_eq!(alert["alert"]["paths"], serde_json::json!([q1]));
    assert_eq!(
        alert["identity"]["person"]["roles"],
        serde_json::json!(["engineering"])
    );
    let trigger: u64 = alert["alert"]["triggerSeqs"][0].as_str().unwrap().parse()?;
    let events = sensor.events()?;
    let open = events
        .iter()
        .find(|e| e["seq"].as_str() == Some(&trigger.to_string()))
        .context("the triggering event")?;
    assert_eq!(open["fileOpen"]["path"], q1);

    Ok(())
}

/// With pseudonymisation on, the engineer's name appears nowhere in the output (JSON and
/// protobuf), `custos reidentify` maps the pseudonym back with the key; a password in argv
/// never reaches the output, in a short argument or at the end of a long one (a class path).
#[test]
fn pseudonyms_hide_names_and_secrets_never_leave() -> Result<()> {
    require_root();
    let uid = ensure_user(ENGINEER)?;
    let dir = tempfile::tempdir()?;
    let key = privacy_key(dir.path(), "pseudonym.key")?;
    let map = identity_map(dir.path())?;
    let mut sensor = Sensor::start(&TestConfig::new().identity_map(&map).pseudonyms(&key))?;
    let marker = Marker::new("/bin/true")?;
    // Longer than the redactor's single pass takes: its patterns are tried one by one.
    let class_path = "/opt/service/lib/library.jar:".repeat(8);
    let long = format!("{class_path} --db-password=hunter3");
    let secrets = [
        "--password=hunter2",
        "--token",
        "s3cr3t-t0ken",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI",
        long.as_str(),
    ];
    let status = run_after_login(uid, uid, marker.path_str(), &secrets)?;
    ensure!(status.success());
    let path = marker.path_str().to_owned();
    let exec = sensor.wait_for("the marker's exec", |events| exec_of(events, &path))?;
    assert_eq!(
        exec["process"]["args"],
        serde_json::json!([
            path,
            "--password=[REDACTED]",
            "--token",
            "[REDACTED]",
            "AWS_SECRET_ACCESS_KEY=[REDACTED]",
            format!("{class_path} --db-password=[REDACTED]")
        ])
    );
    let pseudonym = exec["identity"]["loginUser"].as_str().unwrap().to_owned();
    assert!(pseudonym.starts_with("ps_"), "{pseudonym}");
    assert_eq!(exec["identity"]["user"], pseudonym.as_str());
    assert_ne!(exec["identity"]["person"]["principal"], "alice@example.com");
    sensor.stop()?;

    let json = std::fs::read_to_string(&sensor.json_path)?;
    let protobuf = std::fs::read(&sensor.protobuf_path)?;
    for needle in [
        ENGINEER,
        "alice@example.com",
        "Alice Example",
        "hunter2",
        "hunter3",
        "s3cr3t-t0ken",
        "wJalrXUtnFEMI",
    ] {
        assert!(!json.contains(needle), "{needle:?} is in the JSON output");
        assert!(
            !protobuf
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "{needle:?} is in the protobuf output"
        );
    }
    let back = custos(&[
        "reidentify".as_ref(),
        "--key".as_ref(),
        key.as_ref(),
        pseudonym.as_ref(),
    ])?;
    assert_eq!(back.trim(), format!("{pseudonym} {ENGINEER}"));
    // Another key cannot.
    let other = privacy_key(dir.path(), "other.key")?;
    let refused = Command::new(custos_bin())
        .args(["reidentify", "--key"])
        .arg(&other)
        .arg(&pseudonym)
        .output()?;
    assert!(!refused.status.success());
    Ok(())
}

/// `custos tail` serves only root and the configured groups: a member of the analysts' group
/// gets the stream with pseudonyms (its view) while the sinks keep real names, except a sink
/// with a view of its own (names hidden); a user outside the group is refused.
#[test]
fn the_live_stream_is_for_allowed_groups_each_with_its_view() -> Result<()> {
    require_root();
    let group = "custos-analysts";
    let analyst_uid = ensure_member("custos-analyst", group)?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let key = privacy_key(dir.path(), "pseudonym.key")?;
    let socket = dir.path().join("tail.sock");
    // A sink for an outside party: its view hides names and arguments.
    let outsourced = dir.path().join("outsourced.json");
    let tail_group = Entry::new()
        .set("group", group)
        .set("names", "pseudonym")
        .set("argv", false);
    let view = Entry::new()
        .set("sink", format!("file {}", outsourced.display()))
        .set("names", "hidden")
        .set("argv", false);
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .privacy_key(&key)
            .tail_socket(&socket)
            .tail_group(tail_group)
            .sink_view(view)
            .sink(Entry::file_sink(&outsourced, "json")),
    )?;

    let refused = tail_as(&socket, 65534)?.wait_with_output()?;
    assert!(!refused.status.success(), "nobody was served");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"));
    let marker = Marker::new("/bin/true")?;
    let streamed = first_streamed_exec(tail_as(&socket, analyst_uid)?, marker.path_str())?;
    let user = streamed["identity"]["user"].as_str().unwrap();
    assert!(
        user.starts_with("ps_"),
        "the analysts' view has pseudonyms: {user}"
    );
    assert_eq!(
        streamed["process"]["args"],
        serde_json::json!([]),
        "and no arguments"
    );
    let path = marker.path_str().to_owned();
    let sink = sensor.wait_for("the marker in the sink", |events| exec_of(events, &path))?;
    assert_eq!(
        sink["identity"]["user"], "root",
        "the sinks' view is unchanged"
    );
    assert_eq!(sink["process"]["args"][1], "seen-by-the-analyst");
    sensor.stop()?;
    let outside = custos_tests::read_json_lines(&outsourced)?;
    let exec = of_kind(&outside, "exec")
        .find(|e| e["process"]["binary"] == path.as_str())
        .context("the marker in the outsourced sink")?;
    assert_eq!(exec["identity"]["user"], "[hidden]");
    assert_eq!(exec["process"]["args"], serde_json::json!([]));
    Ok(())
}

/// `custos tail` on `socket` as `uid` with its supplementary groups.
fn tail_as(socket: &std::path::Path, uid: u32) -> std::io::Result<std::process::Child> {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--init-groups",
        ])
        .arg(custos_bin())
        .args(["tail", "--socket"])
        .arg(socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
}

/// Runs `marker` once `reader` (a `custos tail`) is connected, and returns the first exec of
/// it the stream shows.
fn first_streamed_exec(mut reader: std::process::Child, marker: &str) -> Result<Value> {
    let stdout = reader.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    Command::new(marker).arg("seen-by-the-analyst").status()?;
    let deadline = std::time::Instant::now() + custos_tests::PATIENCE;
    let streamed = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .context("the analyst's stream did not show the marker")?;
        let event: Value = serde_json::from_str(&line)?;
        if event["exec"].is_object() && event["process"]["binary"] == marker {
            break event;
        }
    };
    let _ = reader.kill();
    let _ = reader.wait();
    Ok(streamed)
}

/// Proportionate collection: with file_events = "sensitive_and_removable" only the sensitive
/// set's opens are collected; and a program reserved for a role alerts when someone else runs
/// it.
#[test]
fn only_sensitive_file_events_are_collected_and_reserved_programs_alert() -> Result<()> {
    require_root();
    ensure_user(ENGINEER)?;
    let shared = shared_dir()?;
    let (set, elsewhere) = (shared.path().join("hr"), shared.path().join("public"));
    for dir in [&set, &elsewhere] {
        std::fs::create_dir(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::write(dir.join("file.txt"), "x")?;
        std::fs::set_permissions(dir.join("file.txt"), std::fs::Permissions::from_mode(0o644))?;
    }
    let marker = Marker::new("/bin/true")?;
    let private = tempfile::tempdir()?;
    let map = identity_map(private.path())?;
    let rule = Entry::new()
        .set("id", "hr-data")
        .prefix("paths", &[&set])
        .set("programs", vec![marker.path_str()])
        .set("allow_roles", vec!["hr"]);
    let mut sensor = Sensor::start(
        &TestConfig::new()
            .identity_map(&map)
            .file_events("sensitive_and_removable")
            .alert_rule(rule),
    )?;
    let outside = elsewhere.join("file.txt");
    let inside = set.join("file.txt");
    open_as(ENGINEER, &["read", outside.to_str().unwrap()])?;
    open_as(ENGINEER, &["read", inside.to_str().unwrap()])?;
    let uid = ensure_user(ENGINEER)?;
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(marker.path_str())
        .status()?;
    let path = marker.path_str().to_owned();
    let program = sensor.wait_for("the reserved program's alert", |events| {
        of_kind(events, "alert")
            .find(|e| e["alert"]["reason"] == "ALERT_REASON_PROGRAM_OUTSIDE_ROLE")
            .cloned()
    })?;
    assert_eq!(program["alert"]["ruleId"], "hr-data");
    assert_eq!(program["process"]["binary"], path.as_str());
    let events = sensor.events()?;
    let inside = inside.to_str().unwrap();
    assert!(of_kind(&events, "fileOpen").any(|e| e["fileOpen"]["path"] == inside));
    assert!(
        !of_kind(&events, "fileOpen").any(|e| e["fileOpen"]["path"]
            .as_str()
            .is_some_and(|p| !p.starts_with(inside))),
        "only the sensitive set's file events are collected"
    );
    sensor.stop()?;
    Ok(())
}
