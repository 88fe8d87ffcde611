//! Who really did it: login sessions and privilege changes, with the real programs.
use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{ensure_user, of_kind, require_root, run_after_login, seq, Marker, Sensor};
use serde_json::Value;

const ALICE: &str = "alice";

/// alice logs in (her login uid set) and, from her shell, runs a set-user-id root helper (a stand-in for sudo) that
/// makes every id root and runs a marker. The helper's exec is a privilege change alice -> root
/// that precedes the marker's exec; the marker runs as root with alice, her principal and roles,
/// her session and the chain alice -> root on it.
#[test]
fn alice_becoming_root_is_a_privilege_change_and_her_chain_follows() -> Result<()> {
    require_root();
    let alice = ensure_user(ALICE)?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let map = dir.path().join("people.csv");
    std::fs::write(
        &map,
        "user,principal,display_name,department,roles\n\
         alice,alice@example.com,Alice Example,Engineering,engineering;oncall\n",
    )?;
    let helper = dir.path().join("become-root");
    std::fs::copy(env!("CARGO_BIN_EXE_become_root"), &helper)?;
    // Owned by root (the test runs as root), set-user-id.
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o4755))?;
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start(&format!("[identity]\nmap = \"{}\"\n", map.display()))?;

    // From her shell, as sudo would be run.
    let from_shell = format!("{} {} escalated", helper.display(), marker.path_str());
    let status = run_after_login(alice, alice, "sh", &["-c", &from_shell])?;
    ensure!(status.success(), "the helper chain failed: {status}");

    let marker_path = marker.path_str().to_owned();
    let events = sensor.wait_for("the marker's exec", |events| {
        of_kind(events, "exec")
            .any(|e| e["process"]["binary"] == marker_path.as_str())
            .then(|| events.to_vec())
    })?;
    let exec = of_kind(&events, "exec")
        .find(|e| e["process"]["binary"] == marker_path.as_str())
        .unwrap();
    let identity = &exec["identity"];
    assert_eq!(
        (identity["uid"].as_u64(), identity["euid"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(identity["user"], "root");
    assert_eq!(identity["loginUser"], ALICE);
    assert_eq!(identity["loginUid"].as_u64(), Some(u64::from(alice)));
    assert_eq!(identity["person"]["principal"], "alice@example.com");
    assert_eq!(
        identity["person"]["roles"],
        serde_json::json!(["engineering", "oncall"])
    );
    let session_id = identity["sessionId"].as_u64().context("no session id")?;
    assert_eq!(identity["session"]["id"].as_u64(), Some(session_id));
    let helper_path = helper.to_str().unwrap();
    assert_eq!(
        identity["privilegeChain"],
        serde_json::json!([{
            "fromUid": alice, "fromUser": ALICE, "toUid": 0, "toUser": "root",
            "how": "exec", "program": helper_path,
            "execId": exec["process"]["execId"],
        }]),
        "the chain names alice -> root through the helper"
    );

    // The escalation itself, before the marker ran.
    let changes: Vec<&Value> = of_kind(&events, "privilegeChange")
        .filter(|e| e["process"]["pid"] == exec["process"]["pid"])
        .collect();
    let escalation = changes
        .iter()
        .find(|e| e["privilegeChange"]["how"] == "exec")
        .context("no privilege change at the helper's exec")?;
    let change = &escalation["privilegeChange"];
    assert_eq!(escalation["process"]["binary"], helper_path);
    assert_eq!(change["before"]["euser"], ALICE);
    assert_eq!(change["after"]["euser"], "root");
    assert_eq!(
        change["after"]["user"], ALICE,
        "a set-user-id exec keeps the real user"
    );
    assert_eq!(change["escalation"], true);
    let gained = change["capabilitiesGained"].as_array().unwrap();
    assert!(gained.iter().any(|c| c == "CAP_SYS_ADMIN"), "{change}");
    assert_eq!(escalation["identity"]["loginUser"], ALICE);
    assert!(
        seq(escalation) < seq(exec),
        "the change precedes the marker's exec"
    );
    // The helper's setresuid(0, 0, 0) made the real user root too.
    let setresuid = changes
        .iter()
        .find(|e| e["privilegeChange"]["how"] == "setresuid" && e["identity"]["uid"] == 0)
        .context("no setresuid change to root")?;
    assert_eq!(setresuid["privilegeChange"]["before"]["user"], ALICE);
    assert!(seq(escalation) < seq(setresuid) && seq(setresuid) < seq(exec));
    // And before all of it, setpriv (in alice's shell's process) dropped from root to alice.
    let drop = of_kind(&events, "privilegeChange")
        .filter(|e| e["identity"]["sessionId"].as_u64() == Some(session_id))
        .find(|e| e["privilegeChange"]["after"]["euser"] == ALICE)
        .context("no change from root to alice")?;
    assert_eq!(drop["privilegeChange"]["before"]["euser"], "root");
    assert_eq!(drop["privilegeChange"]["escalation"], false);
    assert!(seq(drop) < seq(escalation));
    sensor.stop()?;
    Ok(())
}

/// A failed attempt to change credentials is reported with its error.
#[test]
fn a_refused_setuid_is_reported() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start("")?;
    let helper_dir = tempfile::tempdir()?;
    std::fs::set_permissions(helper_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    // Not set-user-id this time: as nobody, setresuid(0, 0, 0) fails with EPERM.
    let helper = helper_dir.path().join("become-root");
    std::fs::copy(env!("CARGO_BIN_EXE_become_root"), &helper)?;
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&helper)
        .arg("/bin/true")
        .stderr(Stdio::null())
        .status()?;
    assert_eq!(status.code(), Some(1));
    let helper_path = helper.to_str().unwrap().to_owned();
    let attempt = sensor.wait_for("the refused setresuid", |events| {
        of_kind(events, "privilegeChange")
            .find(|e| {
                e["process"]["binary"] == helper_path.as_str()
                    && e["privilegeChange"]["how"] == "setresuid"
            })
            .cloned()
    })?;
    let change = &attempt["privilegeChange"];
    assert_eq!(change["error"], "EPERM");
    assert_eq!(change["errno"].as_u64(), Some(1));
    assert_eq!(change["escalation"], false);
    assert_eq!(change["after"]["euser"], "nobody", "nothing changed");
    sensor.stop()?;
    Ok(())
}

/// The leader of a login session is a process named `sshd` that sets the login uid and then
/// runs a marker. With the SSH client in its environment, the session resolves to an SSH login
/// from that address; it starts before the marker's exec and ends when the leader exits.
#[test]
fn an_sshd_led_session_with_the_client_in_its_environment_is_an_ssh_login() -> Result<()> {
    require_root();
    let alice = ensure_user(ALICE)?;
    let mut sensor = Sensor::start("")?;
    let marker = Marker::new("/bin/true")?;
    let sshd = fake_sshd(&marker)?;
    let leader = Command::new(&sshd)
        .arg("-c")
        .arg(session_script(alice, &marker, "env-session"))
        .env("SSH_CONNECTION", "192.0.2.7 50522 127.0.0.1 22")
        .spawn()?;
    let leader_pid = leader.id();
    let (start, exec) = session_start_and_marker(&sensor, &marker, "env-session")?;
    let session = &start["sessionStart"]["session"];
    assert_eq!(session["kind"], "SESSION_KIND_SSH");
    assert_eq!(session["remoteAddress"], "192.0.2.7");
    assert_eq!(session["remotePort"].as_u64(), Some(50522));
    assert_eq!(session["loginUser"], ALICE);
    assert_eq!(session["leaderPid"].as_u64(), Some(u64::from(leader_pid)));
    assert_eq!(session["leaderProgram"], sshd.to_str().unwrap());
    assert!(session["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "environment"));
    assert_eq!(start["sessionStart"]["beganBeforeSensor"], false);
    let reference = &exec["identity"]["session"];
    assert_eq!(reference["id"], session["id"]);
    assert_eq!(reference["kind"], "SESSION_KIND_SSH");
    assert_eq!(reference["remoteAddress"], "192.0.2.7");

    wait_leader(leader)?;
    let id = session["id"].clone();
    let end = sensor.wait_for("the session's end", |events| {
        of_kind(events, "sessionEnd")
            .find(|e| e["sessionEnd"]["session"]["id"] == id)
            .cloned()
    })?;
    assert_eq!(end["process"]["pid"].as_u64(), Some(u64::from(leader_pid)));
    assert!(seq(&end) > seq(&exec));
    sensor.stop()?;
    Ok(())
}

/// The same leader without the environment variable, but with a utmp entry written through the
/// C library (as sshd writes one) naming the client host and the terminal.
#[test]
fn an_sshd_led_session_is_resolved_through_its_utmp_entry() -> Result<()> {
    require_root();
    let alice = ensure_user(ALICE)?;
    let dir = tempfile::tempdir()?;
    let utmp = dir.path().join("utmp");
    let mut sensor = Sensor::start(&format!("[identity]\nutmp = \"{}\"\n", utmp.display()))?;
    let marker = Marker::new("/bin/true")?;
    let sshd = fake_sshd(&marker)?;
    // The leader waits for its utmp entry before it opens the session: the daemon reads utmp
    // when it sees the session's first activity.
    let script = format!(
        "while [ ! -s {} ]; do sleep 0.05; done; {}",
        utmp.display(),
        session_script(alice, &marker, "utmp-session")
    );
    let leader = Command::new(&sshd)
        .arg("-c")
        .arg(script)
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_CLIENT")
        .spawn()?;
    write_utmp_login(&utmp, leader.id(), "pts/42", ALICE, "198.51.100.23")?;
    let (start, exec) = session_start_and_marker(&sensor, &marker, "utmp-session")?;
    let session = &start["sessionStart"]["session"];
    assert_eq!(session["kind"], "SESSION_KIND_SSH");
    assert_eq!(session["remoteAddress"], "198.51.100.23");
    assert_eq!(session["tty"], "pts/42");
    assert!(session["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "utmp"));
    assert_eq!(
        exec["identity"]["session"]["remoteAddress"],
        "198.51.100.23"
    );
    wait_leader(leader)?;
    sensor.stop()?;
    Ok(())
}

/// A copy of dash named `sshd`, next to the marker.
fn fake_sshd(marker: &Marker) -> Result<std::path::PathBuf> {
    let sshd = marker.dir.path().join("sshd");
    std::fs::copy("/bin/dash", &sshd).context("copying /bin/dash")?;
    Ok(sshd)
}

/// What the fake sshd runs: it sets its own login uid (a new audit session, as pam_loginuid
/// does), then runs the marker as a child and stays alive a moment, as a session leader does.
fn session_script(login_uid: u32, marker: &Marker, arg: &str) -> String {
    format!(
        "echo {login_uid} > /proc/self/loginuid; sleep 0.3; {} {arg}; sleep 1",
        marker.path_str()
    )
}

/// The session start that precedes the marker's exec with `arg`, and that exec.
fn session_start_and_marker(sensor: &Sensor, marker: &Marker, arg: &str) -> Result<(Value, Value)> {
    let path = marker.path_str().to_owned();
    let exec = sensor.wait_for("the marker's exec", |events| {
        of_kind(events, "exec")
            .find(|e| e["process"]["binary"] == path.as_str() && e["process"]["args"][1] == arg)
            .cloned()
    })?;
    let id = exec["identity"]["sessionId"].clone();
    let start = sensor.wait_for("the session's start", |events| {
        of_kind(events, "sessionStart")
            .find(|e| e["sessionStart"]["session"]["id"] == id)
            .cloned()
    })?;
    assert!(
        seq(&start) < seq(&exec),
        "the session starts before its activity"
    );
    Ok((start, exec))
}

fn wait_leader(mut leader: std::process::Child) -> Result<()> {
    let status = leader.wait()?;
    ensure!(status.success(), "the fake sshd failed: {status}");
    Ok(())
}

/// Writes a USER_PROCESS login entry to the utmp file `path` with the C library's utmpx API.
fn write_utmp_login(path: &Path, pid: u32, line: &str, user: &str, host: &str) -> Result<()> {
    fn fill(field: &mut [libc::c_char], value: &str) {
        for (slot, byte) in field.iter_mut().zip(value.bytes()) {
            *slot = byte as libc::c_char;
        }
    }
    std::fs::write(path, b"")?;
    let name = std::ffi::CString::new(path.to_str().context("utmp path")?)?;
    // SAFETY: utmpx is plain data; the calls get valid pointers and run on this thread only.
    unsafe {
        let mut entry: libc::utmpx = std::mem::zeroed();
        entry.ut_type = libc::USER_PROCESS;
        entry.ut_pid = pid as libc::pid_t;
        fill(&mut entry.ut_line, line);
        fill(&mut entry.ut_id, &line[line.len().saturating_sub(4)..]);
        fill(&mut entry.ut_user, user);
        fill(&mut entry.ut_host, host);
        entry.ut_session = pid as _;
        ensure!(libc::utmpxname(name.as_ptr()) == 0, "utmpxname failed");
        libc::setutxent();
        let written = libc::pututxline(&entry);
        libc::endutxent();
        ensure!(
            !written.is_null(),
            "pututxline: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
