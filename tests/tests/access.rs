//! What access is used: the grant behind each open, and per person the entitlements used and
//! unused, caused by real programs (su, sudo, cat, setfacl, capsh) and read back through
//! `custos access-report`, from this host's state or from two sensors' summaries in a real
//! nats-server.
use std::{
    ops::ControlFlow,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    custos, ensure_member, ensure_user,
    nats::NatsServer,
    opens_of,
    poll::poll,
    require_root, run, shared_root,
    stall::{stuck_sensor, unmade},
    Entry, Sensor, TestConfig, PATIENCE,
};
use serde_json::Value;

const READER: &str = "custos-acc-reader";
const STRANGER: &str = "custos-acc-stranger";
const GROUP_A: &str = "custos-acc-a";
const GROUP_B: &str = "custos-acc-b";
const SUDOERS: &str = "/etc/sudoers.d/custos-access-test";

/// READER in groups A and B (supplementary), STRANGER in neither.
fn people() -> Result<(u32, u32)> {
    ensure_member(READER, GROUP_A)?;
    let reader = ensure_member(READER, GROUP_B)?;
    Ok((reader, ensure_user(STRANGER)?))
}

/// Runs `command` with sh as `user`, through su, in a new login session of that user (its
/// audit login uid set as pam_loginuid would).
fn as_login(uid: u32, user: &str, command: &str) -> Result<std::process::Output> {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo {uid} > /proc/self/loginuid && exec su -s /bin/sh -c \"$0\" {user}"
        ))
        .arg(command)
        .output()
        .context("running su")
}

fn file(root: &Path, name: &str, owner: &str, mode: u32) -> Result<PathBuf> {
    let path = root.join(name);
    std::fs::write(&path, name)?;
    run("chown", &[owner, path.to_str().unwrap_or_default()])?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    Ok(path)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

/// The basis of the open of `path` whose opener's user is `user` (and that `pick` accepts).
fn basis_of(
    sensor: &Sensor,
    path: &Path,
    user: &str,
    pick: impl Fn(&Value) -> bool,
) -> Result<Value> {
    sensor.wait_for(&format!("{user}'s open of {}", path.display()), |events| {
        events
            .iter()
            .filter(|e| e["fileOpen"]["path"] == s(path) && e["identity"]["user"] == user)
            .find(|e| pick(e))
            .cloned()
    })
}

#[test]
fn every_open_says_which_grant_let_it_through() -> Result<()> {
    require_root();
    let (reader, stranger) = people()?;
    let (_dir, root) = shared_root()?;
    let group_file = file(&root, "group.txt", &format!("root:{GROUP_A}"), 0o640)?;
    let own = file(&root, "own.txt", &format!("{READER}:"), 0o600)?;
    let world = file(&root, "world.txt", "root:root", 0o644)?;
    let private = file(&root, "private.txt", &format!("{READER}:"), 0o600)?;
    let acl = file(&root, "acl.txt", "root:root", 0o600)?;
    run("setfacl", &["-m", &format!("u:{STRANGER}:r"), s(&acl)])?;
    let refused = file(&root, "refused.txt", "root:root", 0o600)?;
    let created = root.join("created.txt");
    let sensor = Sensor::start(&TestConfig::new().files_only_under(&root))?;

    as_login(
        reader,
        READER,
        &format!("cat {} {}", s(&group_file), s(&own)),
    )?;
    let stranger_reads = [&world, &acl, &refused].map(|f| format!("cat {}", s(f)));
    let stranger_acts = format!("{}; echo x > {}", stranger_reads.join("; "), s(&created));
    as_login(stranger, STRANGER, &stranger_acts)?;
    root_reads(&private)?;

    let group = basis_of(&sensor, &group_file, READER, |_| true)?;
    let basis = &group["fileOpen"]["basis"];
    assert_eq!(basis["grant"], "ACCESS_GRANT_GROUP", "{group:#}");
    assert_eq!(basis["group"]["name"], GROUP_A);
    assert_eq!(basis["supplementary"], true);
    assert_eq!(basis["requested"], "r");
    assert_eq!(group["fileOpen"]["ownerGroup"], GROUP_A);
    assert_eq!(group["fileOpen"]["owner"], "root");
    assert_eq!(group["fileOpen"]["mode"], 0o100640);

    let owner = basis_of(&sensor, &own, READER, |_| true)?;
    assert_eq!(owner["fileOpen"]["basis"]["grant"], "ACCESS_GRANT_OWNER");
    assert_eq!(owner["fileOpen"]["owner"], READER);
    let other = basis_of(&sensor, &world, STRANGER, |_| true)?;
    assert_eq!(other["fileOpen"]["basis"]["grant"], "ACCESS_GRANT_OTHER");

    let by_acl = basis_of(&sensor, &acl, STRANGER, |_| true)?;
    let basis = &by_acl["fileOpen"]["basis"];
    assert_eq!(basis["grant"], "ACCESS_GRANT_ACL", "{by_acl:#}");
    assert_eq!(basis["aclEntry"]["tag"], "user");
    assert_eq!(basis["aclEntry"]["name"], STRANGER);
    assert_eq!(basis["aclEntry"]["perm"], "r--");

    let denied = basis_of(&sensor, &refused, STRANGER, |_| true)?;
    let basis = &denied["fileOpen"]["basis"];
    assert_eq!(denied["fileOpen"]["denied"], true);
    assert_eq!(basis["grant"], "ACCESS_GRANT_DENIED", "{denied:#}");
    assert_eq!(basis["missing"], "r");
    assert_eq!(basis["permissionClass"], "other");
    assert_eq!(basis["afterTheFact"], true);

    let create = basis_of(&sensor, &created, STRANGER, |_| true)?;
    let basis = &create["fileOpen"]["basis"];
    assert_eq!(basis["object"], "directory", "{create:#}");
    assert_eq!(basis["objectPath"], s(&root));
    assert_eq!(basis["requested"], "wx");
    assert_eq!(basis["grant"], "ACCESS_GRANT_OTHER");

    // Root reading someone's 0600 file: the kernel tries CAP_DAC_READ_SEARCH first for a
    // read, and CAP_DAC_OVERRIDE when that capability is gone.
    let found = root_read_capabilities(&sensor, &private)?;
    assert_eq!(found, ["CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE"]);
    Ok(())
}

/// The capabilities the bases of root's two reads of `private` name, once both are seen.
fn root_read_capabilities(sensor: &Sensor, private: &Path) -> Result<Vec<String>> {
    let capabilities = |events: &[Value]| -> Option<Vec<String>> {
        let found: Vec<String> = events
            .iter()
            .filter(|e| e["fileOpen"]["path"] == s(private) && e["identity"]["user"] == "root")
            .map(|e| {
                e["fileOpen"]["basis"]["capability"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        (found.len() == 2).then_some(found)
    };
    sensor.wait_for("root's two reads of the private file", capabilities)
}

/// Root reads `private` twice: as it is, then without CAP_DAC_READ_SEARCH.
fn root_reads(private: &Path) -> Result<()> {
    run("cat", &[s(private)])?;
    let cat = format!("cat {}", s(private));
    run("capsh", &["--drop=cap_dac_read_search", "--", "-c", &cat])
}

/// Removes the test's sudoers file, whatever happens.
struct SudoRules;

impl SudoRules {
    fn grant(rules: &str) -> Result<Self> {
        std::fs::write(SUDOERS, rules)?;
        std::fs::set_permissions(SUDOERS, std::fs::Permissions::from_mode(0o440))?;
        run("visudo", &["-c", "-f", SUDOERS])?;
        Ok(Self)
    }
}

impl Drop for SudoRules {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(SUDOERS);
    }
}

/// Entitlement usage kept in `state`, summarised every second.
fn usage_config(root: &Path, state: &Path) -> TestConfig {
    TestConfig::new()
        .files_only_under(root)
        .set(&["access"], "state_dir", s(state))
        .set(&["access"], "summary_seconds", 1)
        .set(&["access"], "refresh_seconds", 1)
}

/// `custos access-report ARGS --format json`, once `ready` accepts it.
fn report_until(args: &[&str], what: &str, ready: impl Fn(&Value) -> bool) -> Result<Value> {
    let full: Vec<&std::ffi::OsStr> = ["access-report"]
        .iter()
        .chain(args)
        .chain(&["--format", "json"])
        .map(std::ffi::OsStr::new)
        .collect();
    poll(PATIENCE * 2, Duration::from_millis(250), || {
        let last = match custos(&full) {
            Ok(text) => {
                let report: Value = serde_json::from_str(&text)?;
                if ready(&report) {
                    return Ok(ControlFlow::Break(report));
                }
                text
            }
            Err(err) => format!("{err:#}"),
        };
        Ok(ControlFlow::Continue(format!(
            "no report with {what}; last:\n{last}"
        )))
    })
}

/// Group A is among the person's used entitlements, its example the open of `file`.
fn ensure_group_a_used_on(person: &Value, file: &Path) -> Result<()> {
    let group_a = line(person, "used", "group", GROUP_A).context("group A used")?;
    let example = group_a["example"].as_str().unwrap_or_default();
    ensure!(example.contains(s(file)), "{group_a:#}");
    Ok(())
}

fn person<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["persons"]
        .as_array()?
        .iter()
        .find(|p| p["person"] == name)
}

/// Whether the report shows `group` among the reader's used entitlements.
fn reader_used_group(report: &Value, group: &str) -> bool {
    person(report, READER).is_some_and(|p| line(p, "used", "group", group).is_some())
}

fn line<'a>(person: &'a Value, section: &str, kind: &str, name: &str) -> Option<&'a Value> {
    person[section]
        .as_array()?
        .iter()
        .find(|l| l["kind"] == kind && l["name"] == name)
}

/// The reader's grants, used and unused, in the report. The report is read once the sudo
/// rule's use shows, which needs the grants looked up (as group B's unused line does).
#[test]
fn unused_groups_and_sudo_rules_are_reported_and_usage_survives_a_restart() -> Result<()> {
    require_root();
    let (reader, stranger) = people()?;
    let _sudo = SudoRules::grant(&format!(
        "{READER} ALL=(root) NOPASSWD: /usr/bin/id, /usr/bin/whoami\n"
    ))?;
    let (_dir, root) = shared_root()?;
    let group_file = file(&root, "group.txt", &format!("root:{GROUP_A}"), 0o640)?;
    let state = tempfile::tempdir()?;
    let config = usage_config(&root, state.path());
    let mut sensor = Sensor::start(&config)?;
    let commands = format!("cat {}; sudo -n /usr/bin/id -u", s(&group_file));
    let out = as_login(reader, READER, &commands)?;
    ensure!(out.status.success(), "{out:?}");

    let config_path = sensor.config_path.clone();
    let config_arg = s(&config_path).to_owned();
    let args = ["--config", &config_arg, "--person", READER];
    let used = |report: &Value| {
        person(report, READER).is_some_and(|p| {
            line(p, "used", "group", GROUP_A).is_some()
                && line(p, "used", "sudo", "(root) /usr/bin/id").is_some()
        })
    };
    let report = report_until(&args, "group A and the id rule used", used)?;
    let reader_report = person(&report, READER).context("the reader")?;
    ensure_group_a_used_on(reader_report, &group_file)?;
    let id_rule = line(reader_report, "used", "sudo", "(root) /usr/bin/id").context("id")?;
    assert_eq!(id_rule["example"], "/usr/bin/id -u");
    assert!(
        line(reader_report, "unused", "group", GROUP_B).is_some(),
        "{report:#}"
    );
    assert!(line(reader_report, "unused", "sudo", "(root) /usr/bin/whoami").is_some());
    assert!(line(reader_report, "used", "group", GROUP_B).is_none());
    // sudo itself is a set-user-id program the reader ran.
    let sudo = line(reader_report, "used", "setuid", "/usr/bin/sudo").context("sudo")?;
    assert!(
        sudo["example"].as_str().unwrap_or("").starts_with("sudo"),
        "{sudo:#}"
    );

    // The summaries went to the sinks too.
    sensor.wait_for("the reader's access_usage summary", |events| {
        events
            .iter()
            .find(|e| e["accessUsage"]["person"] == READER)
            .cloned()
    })?;
    sensor.stop()?;

    // A new daemon on the same state: new activity makes it save, the old usage is kept.
    let mut restarted = Sensor::start(&config)?;
    as_login(stranger, STRANGER, "true")?;
    let restarted_config = s(&restarted.config_path).to_owned();
    let all = ["--config", restarted_config.as_str()];
    let kept = report_until(&all, "the stranger beside the reader's old usage", |r| {
        person(r, STRANGER).is_some() && reader_used_group(r, GROUP_A)
    })?;
    assert!(person(&kept, READER).is_some());
    let text = custos(&[
        "access-report".as_ref(),
        "--config".as_ref(),
        restarted.config_path.as_os_str(),
        "--person".as_ref(),
        READER.as_ref(),
    ])?;
    assert!(text.contains("unused (revocation candidates)"), "{text}");
    assert!(text.contains(GROUP_B), "{text}");
    restarted.stop()?;
    Ok(())
}

/// The reader uses group A while the daemon's standard output (a pipe) goes unread and its
/// queue is full: the open is not made (it comes as a loss once the output moves), yet the
/// usage report, read from the state on disk while the output is still stuck, shows group A
/// used by that very read.
#[test]
fn access_used_while_the_output_is_stuck_still_counts() -> Result<()> {
    require_root();
    let (reader, _) = people()?;
    let (_dir, root) = shared_root()?;
    let group_file = file(
        &root,
        "during-the-stall.txt",
        &format!("root:{GROUP_A}"),
        0o640,
    )?;
    let state = tempfile::tempdir()?;
    let (mut sensor, output) = stuck_sensor(usage_config(&root, state.path()))?;
    let out = as_login(reader, READER, &format!("cat {}", s(&group_file)))?;
    ensure!(out.status.success(), "{out:?}");
    // The state on disk shows the use while the output is still stuck.
    let config_arg = s(&sensor.config_path).to_owned();
    let args = ["--config", config_arg.as_str(), "--person", READER];
    let report = report_until(&args, "group A used during the stall", |r| {
        reader_used_group(r, GROUP_A)
    })?;
    output.resume();
    sensor.wait_for_log("the sinks are taking events again")?;
    let reader_report = person(&report, READER).context("the reader")?;
    ensure_group_a_used_on(reader_report, &group_file)?;
    sensor.wait_for("a loss of the opens not made in the stall", |events| {
        unmade(events, "EVENT_KIND_FILE_OPEN").then_some(())
    })?;
    let events = sensor.events()?;
    assert!(
        opens_of(&events, s(&group_file)).is_empty(),
        "the open was made while the output was stuck"
    );
    sensor.stop()?;
    Ok(())
}

/// Usage seen in the seconds before a stop, which the periodic save (at most every 5 s) has
/// not written yet, is on disk once the daemon has stopped: the stop saves it.
#[test]
fn usage_seen_just_before_a_stop_is_saved_by_the_stop() -> Result<()> {
    require_root();
    let (reader, _) = people()?;
    let (_dir, root) = shared_root()?;
    let group_a = file(&root, "a.txt", &format!("root:{GROUP_A}"), 0o640)?;
    let group_b = file(&root, "b.txt", &format!("root:{GROUP_B}"), 0o640)?;
    let state = tempfile::tempdir()?;
    let mut sensor = Sensor::start(&usage_config(&root, state.path()))?;
    let config_arg = s(&sensor.config_path).to_owned();
    let args = ["--config", config_arg.as_str(), "--person", READER];
    // A first use and its periodic save: the next save is due 5 s after it.
    let out = as_login(reader, READER, &format!("cat {}", s(&group_a)))?;
    ensure!(out.status.success(), "{out:?}");
    report_until(&args, "group A used", |r| reader_used_group(r, GROUP_A))?;
    // A second use, accepted (its event written) and not saved yet.
    let out = as_login(reader, READER, &format!("cat {}", s(&group_b)))?;
    ensure!(out.status.success(), "{out:?}");
    basis_of(&sensor, &group_b, READER, |_| true)?;
    let before_stop = report_until(&args, "the reader's usage", |_| true)?;
    ensure!(
        !reader_used_group(&before_stop, GROUP_B),
        "group B's use was saved before the stop (more than 5 s after group A's save): this \
         run does not show the stop's save"
    );
    sensor.stop()?;
    let after_stop = report_until(&args, "the reader's usage", |_| true)?;
    ensure!(
        reader_used_group(&after_stop, GROUP_B),
        "group B's use, seen before the stop, is not in the state the stop left: {after_stop:#}"
    );
    Ok(())
}

/// A sensor publishing to NATS, with up to `events_per_message` events in a message.
fn nats_config(root: &Path, state: &Path, url: &str, events_per_message: i64) -> TestConfig {
    let sink = Entry::new()
        .set("type", "nats")
        .set("url", url)
        .set("stream", "CUSTOS")
        .set("create_stream", true)
        .set("events_per_message", events_per_message);
    usage_config(root, state)
        .spool(&state.join("spool"))
        .sink(sink)
}

#[test]
fn two_hosts_summaries_in_nats_merge_into_one_fleet_report() -> Result<()> {
    require_root();
    let (reader, _) = people()?;
    let server = NatsServer::start()?;
    let (_dir, root) = shared_root()?;
    let group_file = file(&root, "group.txt", &format!("root:{GROUP_A}"), 0o640)?;
    let this_host = host_name()?;
    let (state_a, state_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut first = Sensor::start(&nats_config(&root, state_a.path(), &server.url(), 1))?;
    as_login(reader, READER, &format!("cat {}", s(&group_file)))?;
    let url = server.url();
    let args = ["--nats", url.as_str(), "--person", READER];
    report_until(&args, "the first host's summary", |r| {
        reader_used_group(r, GROUP_A)
    })?;

    // The second host sees the reader act, without using group A; its sensor gathers events
    // into messages, which the report reads as well.
    let config_b = nats_config(&root, state_b.path(), &server.url(), 20);
    let mut second = Sensor::start_as_host(&config_b, "custos-fleet-b")?;
    as_login(reader, READER, "true")?;
    let both = report_until(&args, "both hosts", |r| {
        person(r, READER).is_some_and(|p| p["hosts"].as_array().is_some_and(|h| h.len() == 2))
    })?;
    let reader_report = person(&both, READER).context("the reader")?;
    let mut hosts: Vec<&str> = reader_report["hosts"]
        .as_array()
        .context("hosts")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    hosts.sort_unstable();
    let mut expected = vec!["custos-fleet-b", this_host.as_str()];
    expected.sort_unstable();
    assert_eq!(hosts, expected);
    let group_a = line(reader_report, "used", "group", GROUP_A).context("group A used")?;
    assert_eq!(group_a["exampleHost"], this_host.as_str(), "{group_a:#}");
    let group_b = line(reader_report, "unused", "group", GROUP_B).context("group B unused")?;
    assert_eq!(
        group_b["hosts"].as_array().map(Vec::len),
        Some(2),
        "granted on both, used on neither: {group_b:#}"
    );
    second.stop()?;
    first.stop()?;
    Ok(())
}

fn host_name() -> Result<String> {
    let out = Command::new("hostname").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}
