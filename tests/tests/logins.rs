//! Who really did it: real logins (Debian's sshd with a key, sudo, su, runuser, cron) seen by
//! the real programs, with the identity, session and privilege chain on their events.
use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    load::SteadyForks,
    logins::{ensure_login_user, CronJob, SshServer, SudoRule},
    of_kind, opens_of, require_root, run_after_login, seq, Marker, Sensor, TestConfig,
};
use serde_json::{json, Value};

/// The user who logs in over SSH, and the one she becomes with su.
const ANN: &str = "custos-ann";
const BOB: &str = "custos-bob";
const SUDO: &str = "/usr/bin/sudo";

/// A logged-in user's environment for these tests: both users, the sudo rule, sshd.
struct Login {
    ann: u32,
    _sudo: SudoRule,
    ssh: SshServer,
}

impl Login {
    fn new() -> Result<Self> {
        let ann = ensure_login_user(ANN)?;
        ensure_login_user(BOB)?;
        Ok(Self {
            ann,
            _sudo: SudoRule::allow_all(ANN)?,
            ssh: SshServer::start(&[ANN])?,
        })
    }
}

/// `(fromUser, toUser, how, program)` of each hop of an event's chain.
fn hops(event: &Value) -> Vec<(String, String, String, String)> {
    event["identity"]["privilegeChain"]
        .as_array()
        .map(|chain| {
            chain
                .iter()
                .map(|hop| {
                    let field = |name: &str| hop[name].as_str().unwrap_or_default().to_owned();
                    (
                        field("fromUser"),
                        field("toUser"),
                        field("how"),
                        field("program"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn hop(from: &str, to: &str, how: &str, program: &str) -> (String, String, String, String) {
    (from.into(), to.into(), how.into(), program.into())
}

/// No event carries a hop through an identity that was only held for a moment (sudo reading
/// its policy as daemon, sshd's privilege separation user), and sshd's work before the login
/// has no login user and no chain.
fn assert_no_temporary_hops(events: &[Value]) {
    for event in events {
        for (from, to, _, _) in hops(event) {
            for transient in ["daemon", "sshd"] {
                assert!(from != transient && to != transient, "{event}");
            }
        }
        let sshd = event["process"]["binary"] == "/usr/sbin/sshd";
        if sshd && event["identity"]["loginUid"].is_null() {
            assert_eq!(hops(event), [], "sshd before the login: {event}");
        }
    }
}

/// The exec of `marker` whose first argument is `arg`.
fn marker_exec(events: &[Value], marker: &Marker, arg: &str) -> Option<Value> {
    of_kind(events, "exec")
        .find(|e| e["process"]["binary"] == marker.path_str() && e["process"]["args"][1] == arg)
        .cloned()
}

/// The client's port as sshd told the login (`$SSH_CLIENT` is `address port server-port`).
fn client_port(ssh_client: &str) -> Result<u64> {
    let mut words = ssh_client.split_whitespace();
    ensure!(words.next() == Some("127.0.0.1"), "client {ssh_client:?}");
    Ok(words.next().context("no port")?.parse()?)
}

/// The session reference of an SSH login from this machine's loopback.
fn assert_ssh_session(event: &Value, port: u64) {
    let session = &event["identity"]["session"];
    assert_eq!(session["kind"], "SESSION_KIND_SSH", "{event}");
    assert_eq!(session["remoteAddress"], "127.0.0.1", "{event}");
    assert_eq!(session["remotePort"].as_u64(), Some(port), "{event}");
}

/// `ssh host 'sudo -n cat FILE'`: the cat's open of the root-only file is root's, with the
/// person who logged in, her SSH client, and exactly one hop: her becoming root through sudo.
#[test]
fn sudo_over_ssh_carries_the_client_and_one_hop() -> Result<()> {
    require_root();
    let login = Login::new()?;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let map = dir.path().join("people.csv");
    std::fs::write(
        &map,
        format!(
            "user,principal,display_name,department,roles\n\
             {ANN},ann@example.com,Ann Example,Operations,oncall\n"
        ),
    )?;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "not for ann\n")?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    let secret = secret.to_str().unwrap().to_owned();
    let mut sensor = Sensor::start(&TestConfig::new().identity_map(&map))?;

    let out = login
        .ssh
        .run(ANN, &format!("echo \"$SSH_CLIENT\"; sudo -n cat {secret}"))?;
    let port = client_port(out.lines().next().unwrap_or_default())?;
    ensure!(out.contains("not for ann"), "cat printed {out:?}");
    let open = sensor.wait_for("cat's open of the secret", |events| {
        opens_of(events, &secret)
            .into_iter()
            .find(|e| e["process"]["binary"] == "/usr/bin/cat")
            .cloned()
    })?;
    let events = sensor.events()?;
    let identity = &open["identity"];
    assert_eq!(
        (identity["user"].as_str(), identity["euid"].as_u64()),
        (Some("root"), Some(0))
    );
    assert_eq!(identity["loginUser"], ANN);
    assert_eq!(identity["loginUid"].as_u64(), Some(u64::from(login.ann)));
    assert_eq!(identity["person"]["principal"], "ann@example.com");
    assert_ssh_session(&open, port);
    let sudo = of_kind(&events, "exec")
        .find(|e| e["process"]["binary"] == SUDO && e["process"]["args"][2] == "cat")
        .context("no exec of sudo")?;
    assert_eq!(
        identity["privilegeChain"],
        json!([{"fromUid": login.ann, "fromUser": ANN, "toUid": 0, "toUser": "root",
                "how": "exec", "program": SUDO, "execId": sudo["process"]["execId"]}]),
        "exactly ann -> root through sudo"
    );
    let cat = of_kind(&events, "exec")
        .find(|e| e["process"]["binary"] == "/usr/bin/cat" && e["process"]["args"][1] == secret)
        .context("no exec of cat")?;
    assert_eq!(
        cat["identity"]["privilegeChain"],
        identity["privilegeChain"]
    );
    assert_ssh_session(cat, port);
    assert_sudo_escalation(&events, sudo, login.ann)?;
    assert_ssh_session_start(&events, &open, port)?;
    assert_sshd_before_login(&events, login.ann)?;
    assert_no_temporary_hops(&events);
    sensor.stop()
}

/// sudo's exec is a privilege change: ann's effective user became root, with root's
/// capabilities, her real user kept; then sudo made its real user root too.
fn assert_sudo_escalation(events: &[Value], sudo: &Value, ann: u32) -> Result<()> {
    let pid = &sudo["process"]["pid"];
    let changes: Vec<&Value> = of_kind(events, "privilegeChange")
        .filter(|e| &e["process"]["pid"] == pid)
        .collect();
    let escalation = changes
        .iter()
        .find(|e| e["privilegeChange"]["how"] == "exec")
        .context("no privilege change at sudo's exec")?;
    let change = &escalation["privilegeChange"];
    assert_eq!(change["before"]["euser"], ANN);
    assert_eq!(change["after"]["euser"], "root");
    assert_eq!(
        change["after"]["user"], ANN,
        "a set-user-id exec keeps the real user"
    );
    assert_eq!(change["escalation"], true);
    let gained = change["capabilitiesGained"].as_array().unwrap();
    assert!(gained.iter().any(|c| c == "CAP_SYS_ADMIN"), "{change}");
    assert_eq!(
        escalation["identity"]["loginUid"].as_u64(),
        Some(u64::from(ann))
    );
    assert!(
        seq(escalation) < seq(sudo),
        "the change precedes sudo's exec event"
    );
    let real_root = changes
        .iter()
        .find(|e| e["privilegeChange"]["how"] == "setresuid" && e["identity"]["uid"] == 0)
        .context("no setresuid making the real user root")?;
    assert_eq!(real_root["privilegeChange"]["before"]["user"], ANN);
    // Temporary switches are still reported as the changes they were.
    assert!(
        changes
            .iter()
            .any(|e| e["privilegeChange"]["after"]["euser"] == "daemon"),
        "sudo's switch to daemon is a privilege change event"
    );
    Ok(())
}

/// The session started (before the command ran) as an SSH login from the client, led by sshd,
/// with the client's address found from sshd's own connection.
fn assert_ssh_session_start(events: &[Value], event: &Value, port: u64) -> Result<()> {
    let id = event["identity"]["sessionId"].clone();
    let start = of_kind(events, "sessionStart")
        .find(|e| e["sessionStart"]["session"]["id"] == id)
        .context("no session start")?;
    let session = &start["sessionStart"]["session"];
    assert_eq!(session["kind"], "SESSION_KIND_SSH");
    assert_eq!(session["loginUser"], ANN);
    assert_eq!(session["remoteAddress"], "127.0.0.1");
    assert_eq!(session["remotePort"].as_u64(), Some(port));
    assert_eq!(session["leaderProgram"], "/usr/sbin/sshd");
    let sources = session["sources"].as_array().unwrap();
    assert!(sources.iter().any(|s| s == "socket"), "{session}");
    assert!(
        seq(start) < seq(event),
        "the session starts before its activity"
    );
    Ok(())
}

/// sshd reading ann's authorized_keys (as ann, for a moment, before she logged in) is sshd's
/// own activity: no login user, no chain.
fn assert_sshd_before_login(events: &[Value], ann: u32) -> Result<()> {
    let keys = of_kind(events, "fileOpen")
        .find(|e| {
            e["fileOpen"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("{ANN}/.ssh/authorized_keys")))
        })
        .context("sshd never read authorized_keys")?;
    assert_eq!(keys["process"]["binary"], "/usr/sbin/sshd");
    assert_eq!(keys["identity"]["euid"].as_u64(), Some(u64::from(ann)));
    assert!(keys["identity"]["loginUid"].is_null(), "{keys}");
    assert_eq!(hops(keys), []);
    Ok(())
}

/// sudo to another user, su with and without `-`, runuser and `sudo -i`: each program run is
/// one hop, and ann's own commands have none.
#[test]
fn sudo_su_and_runuser_are_one_hop_each() -> Result<()> {
    let (login, marker, mut sensor) = login_with_a_marker()?;
    let m = marker.path_str();
    let script = format!(
        "{m} own; sudo -n -u nobody {m} nobody; sudo -n su - {BOB} -c '{m} su-login'; \
         sudo -n su {BOB} -c '{m} su'; sudo -n runuser -u {BOB} -- {m} runuser; \
         echo '{m} login-shell' | sudo -n -i"
    );
    let out = login.ssh.run(ANN, &script)?;
    let events = sensor.wait_for("the last marker", |events| {
        marker_exec(events, &marker, "login-shell").map(|_| events.to_vec())
    })?;
    let chain_of = |arg: &str| -> Result<Vec<_>> {
        let exec = marker_exec(&events, &marker, arg).with_context(|| format!("{arg}: {out}"))?;
        assert_eq!(exec["identity"]["loginUser"], ANN, "{exec}");
        assert_eq!(exec["identity"]["session"]["kind"], "SESSION_KIND_SSH");
        Ok(hops(&exec))
    };
    let su = "/usr/bin/su";
    let to_root = hop(ANN, "root", "exec", SUDO);
    assert_eq!(chain_of("own")?, []);
    assert_eq!(chain_of("nobody")?, [hop(ANN, "nobody", "exec", SUDO)]);
    assert_eq!(
        chain_of("su-login")?,
        [to_root.clone(), hop("root", BOB, "setuid", su)]
    );
    assert_eq!(
        chain_of("su")?,
        [to_root.clone(), hop("root", BOB, "setuid", su)]
    );
    let runuser = chain_of("runuser")?;
    assert_eq!(runuser.len(), 2, "{runuser:?}");
    assert_eq!(runuser[0], to_root);
    assert_eq!(
        (runuser[1].0.as_str(), runuser[1].1.as_str()),
        ("root", BOB)
    );
    assert!(runuser[1].3.ends_with("/runuser"), "{runuser:?}");
    assert_eq!(chain_of("login-shell")?, [to_root]);
    assert_no_temporary_hops(&events);
    sensor.stop()
}

/// `ssh -tt`: the session starts with its terminal and client, and a command typed in it
/// carries both.
#[test]
fn an_interactive_ssh_login_has_its_terminal_and_client() -> Result<()> {
    let (login, marker, mut sensor) = login_with_a_marker()?;
    let typed = format!("{} interactive", marker.path_str());
    let screen = login
        .ssh
        .interactive(ANN, &["echo client=$SSH_CLIENT", "tty", &typed, "exit"])?;
    let client = screen
        .lines()
        .find_map(|l| {
            let (_, client) = l.split_once("client=")?;
            Some(client.trim()).filter(|c| c.starts_with('1'))
        })
        .with_context(|| format!("no client on the screen: {screen}"))?;
    let port = client_port(client)?;
    let tty = screen
        .lines()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("/dev/")))
        .with_context(|| format!("no terminal on the screen: {screen}"))?
        .to_owned();
    assert!(tty.starts_with("pts/"), "{tty}");
    let exec = sensor.wait_for("the typed command", |events| {
        marker_exec(events, &marker, "interactive")
    })?;
    assert_eq!(exec["identity"]["tty"], tty.as_str());
    assert_ssh_session(&exec, port);
    let events = sensor.events()?;
    assert_ssh_session_start(&events, &exec, port)?;
    let id = exec["identity"]["sessionId"].clone();
    let start = of_kind(&events, "sessionStart")
        .find(|e| e["sessionStart"]["session"]["id"] == id)
        .unwrap();
    assert_eq!(start["sessionStart"]["session"]["tty"], tty.as_str());
    assert_no_temporary_hops(&events);
    sensor.stop()
}

/// On a busy host, where records wait for the daemon's drain timer, a login over within a
/// moment still has its client: sshd's change to the user wakes the daemon while sshd still
/// holds the connection the client is read from.
#[test]
fn a_brief_ssh_command_on_a_busy_host_has_its_client() -> Result<()> {
    let (login, marker, mut sensor) = login_with_a_marker()?;
    let busy = SteadyForks::start()?;
    let out = login.ssh.run(
        ANN,
        &format!("echo \"$SSH_CLIENT\"; {} brief", marker.path_str()),
    )?;
    let port = client_port(out.lines().next().unwrap_or_default())?;
    let exec = sensor.wait_for("the brief command", |events| {
        marker_exec(events, &marker, "brief")
    })?;
    drop(busy);
    assert_ssh_session(&exec, port);
    sensor.stop()
}

/// An SSH login whose connection is over before custos looks at its session still has its
/// client: custos is stopped from the moment it has seen the connection's sshd start until the
/// command has run and the connection has closed, so only what it noted when that sshd started
/// can name the client.
#[test]
fn an_ssh_login_over_before_custos_looks_still_has_its_client() -> Result<()> {
    let (login, marker, mut sensor) = login_with_a_marker()?;
    let gate = login.ssh.dir.path().join("gate");
    let client = login
        .ssh
        .client_held_until(ANN, &gate)?
        .arg(format!(
            "echo \"$SSH_CLIENT\"; {} closed",
            marker.path_str()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let listener = u64::from(login.ssh.pid());
    sensor.wait_for("the connection's sshd", |events| {
        of_kind(events, "exec")
            .find(|e| {
                e["process"]["ppid"].as_u64() == Some(listener)
                    && e["process"]["args"]
                        .as_array()
                        .is_some_and(|a| a.contains(&json!("-R")))
            })
            .cloned()
    })?;
    custos_tests::signal(sensor.pid(), "STOP")?;
    let over = login_over(client, &gate, login.ssh.port);
    custos_tests::signal(sensor.pid(), "CONT")?;
    let port = client_port(over?.lines().next().unwrap_or_default())?;
    let exec = sensor.wait_for("the command", |events| {
        marker_exec(events, &marker, "closed")
    })?;
    assert_ssh_session(&exec, port);
    sensor.stop()
}

/// Lets the held login through, waits for it to end and for sshd's end of the connection to
/// close; returns what the command printed.
fn login_over(client: std::process::Child, gate: &Path, port: u16) -> Result<String> {
    std::fs::write(gate, b"")?;
    let out = client.wait_with_output()?;
    ensure!(
        out.status.success(),
        "the held login failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let filter = format!("( sport = :{port} or dport = :{port} )");
    for _ in 0..100 {
        let ss = Command::new("ss")
            .args(["-Htn", "state", "established", &filter])
            .output()?;
        if ss.status.success() && ss.stdout.is_empty() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the SSH connection on port {port} was still open 5 s after the login")
}

/// A local login (its login uid set, no sshd) whose user sets `SSH_CONNECTION` and
/// `SSH_CLIENT` by hand is not an SSH session from that address.
#[test]
fn a_local_login_claiming_an_ssh_client_is_not_ssh() -> Result<()> {
    let (ann, marker, mut sensor) = ann_with_a_marker()?;
    let claim = format!(
        "export SSH_CONNECTION='192.0.2.7 50522 127.0.0.1 22' SSH_CLIENT='192.0.2.7 50522 22'; \
         {} local; sleep 0.2",
        marker.path_str()
    );
    let status = run_after_login(ann, ann, "sh", &["-c", &claim])?;
    ensure!(status.success(), "the local login failed: {status}");
    let exec = sensor.wait_for("the marker", |events| marker_exec(events, &marker, "local"))?;
    let session = &exec["identity"]["session"];
    assert_eq!(session["id"], exec["identity"]["sessionId"], "{exec}");
    assert_ne!(session["kind"], "SESSION_KIND_SSH");
    assert_eq!(session["remoteAddress"], "");
    assert!(session["remotePort"].is_null());
    let events = sensor.events()?;
    for start in of_kind(&events, "sessionStart") {
        assert_ne!(
            start["sessionStart"]["session"]["remoteAddress"],
            "192.0.2.7"
        );
    }
    sensor.stop()
}

/// A job that Debian's cron runs for ann is a cron session with ann as its login user.
#[test]
fn a_cron_job_is_a_cron_session_of_the_crontabs_owner() -> Result<()> {
    let (ann, marker, mut sensor) = ann_with_a_marker()?;
    let _job = CronJob::install(ANN, &format!("* * * * * {} cron-job", marker.path_str()))?;
    // cron runs jobs at the start of a minute, once it has read the new crontab.
    let exec = sensor.wait_for_within(Duration::from_secs(150), "the cron job", |events| {
        marker_exec(events, &marker, "cron-job")
    })?;
    let identity = &exec["identity"];
    assert_eq!(identity["user"], ANN);
    assert_eq!(identity["loginUid"].as_u64(), Some(u64::from(ann)));
    assert_eq!(identity["loginUser"], ANN);
    assert_eq!(identity["session"]["kind"], "SESSION_KIND_CRON");
    assert_eq!(hops(&exec), []);
    let events = sensor.events()?;
    let start = of_kind(&events, "sessionStart")
        .find(|e| e["sessionStart"]["session"]["id"] == identity["sessionId"])
        .context("no start of the cron session")?;
    let session = &start["sessionStart"]["session"];
    assert_eq!(session["kind"], "SESSION_KIND_CRON");
    assert_eq!(session["loginUser"], ANN);
    assert_eq!(session["leaderProgram"], "/usr/sbin/cron");
    assert_no_temporary_hops(&events);
    sensor.stop()
}

/// A failed attempt to change credentials is reported with its error: util-linux's setpriv,
/// run as nobody, asking to become root.
#[test]
fn a_refused_setuid_is_reported() -> Result<()> {
    require_root();
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["setpriv", "--reuid=0", "/bin/true"])
        .stderr(std::process::Stdio::null())
        .status()?;
    ensure!(!status.success(), "nobody became root");
    let attempt = sensor.wait_for("the refused setresuid", |events| {
        of_kind(events, "privilegeChange")
            .find(|e| {
                e["process"]["binary"] == "/usr/bin/setpriv"
                    && e["privilegeChange"]["errno"].as_u64().is_some()
                    && e["identity"]["uid"] == 65534
            })
            .cloned()
    })?;
    let change = &attempt["privilegeChange"];
    assert_eq!(change["error"], "EPERM");
    assert_eq!(change["errno"].as_u64(), Some(1));
    assert_eq!(change["escalation"], false);
    assert_eq!(change["after"]["euser"], "nobody", "nothing changed");
    sensor.stop()
}

/// The logins' environment, a marker program and custos on its embedded default.
fn login_with_a_marker() -> Result<(Login, Marker, Sensor)> {
    require_root();
    let login = Login::new()?;
    Ok((
        login,
        Marker::new("/bin/true")?,
        Sensor::start(&TestConfig::new())?,
    ))
}

/// ann's uid, a marker program and a sensor on the default settings.
fn ann_with_a_marker() -> Result<(u32, Marker, Sensor)> {
    require_root();
    let ann = ensure_login_user(ANN)?;
    Ok((
        ann,
        Marker::new("/bin/true")?,
        Sensor::start(&TestConfig::new())?,
    ))
}
