//! Process execution and exit, with the identity behind them, from the real sensor.
use std::{ffi::OsStr, os::unix::ffi::OsStrExt, process::Command};

use base64::Engine as _;

use anyhow::Result;
use custos_tests::{
    ensure_user, exec_id_of, exec_of, of_kind, require_root, run_after_login, seq, Marker, Sensor,
    TestConfig,
};
use serde_json::Value;

const LOGIN_USER: &str = "custos-login";

/// A process that logged in as LOGIN_USER becomes `nobody` and runs a marker with arguments:
/// the exec event names the marker, its arguments, user nobody, the login user behind it, the
/// session, and the parent; the exit event closes the same process. On this kernel every hook
/// takes the tp_btf path.
#[test]
fn exec_as_nobody_carries_the_login_user_session_and_parent() -> Result<()> {
    let sensor = exec_identity_scenario(TestConfig::new())?;
    assert_hook_paths(
        &sensor,
        &[
            "sched_process_exec=tp_btf",
            "sched_process_exit=tp_btf",
            "sched_process_fork=tp_btf",
        ],
    );
    Ok(())
}

/// The same through the classic tracepoints, the fallback for kernels that refuse tp_btf.
#[test]
fn classic_tracepoint_path_reports_the_same_exec_and_identity() -> Result<()> {
    let sensor = exec_identity_scenario(TestConfig::new().attach("tracepoint"))?;
    assert_hook_paths(
        &sensor,
        &[
            "sched_process_exec=tracepoint",
            "sched_process_exit=tracepoint",
            "sched_process_fork=unavailable",
        ],
    );
    Ok(())
}

/// One line of the daemon's log (its "sensor ready" line) names every hook path in `expected`.
fn assert_hook_paths(sensor: &Sensor, expected: &[&str]) {
    assert!(
        sensor
            .log
            .iter()
            .any(|line| expected.iter().all(|path| line.contains(path))),
        "hook paths {expected:?} not logged: {:?}",
        sensor.log
    );
}

fn exec_identity_scenario(config: TestConfig) -> Result<Sensor> {
    require_root();
    let login_uid = ensure_user(LOGIN_USER)?;
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start(&config)?;

    // The shell sets its own audit login uid (as pam_loginuid does at login), then becomes
    // nobody through setpriv, which execs the marker in the same process.
    let args = ["first", "second arg", "--flag=3"];
    let status = run_after_login(login_uid, 65534, marker.path_str(), &args)?;
    assert!(status.success(), "test workload failed: {status}");

    let marker_path = marker.path_str().to_owned();
    let exec = sensor.wait_for("marker exec", |events| exec_of(events, &marker_path))?;
    let process = &exec["process"];
    assert_eq!(
        process["args"],
        serde_json::json!([marker_path, "first", "second arg", "--flag=3"])
    );
    assert_eq!(process["invokedPath"], marker_path.as_str());
    let identity = &exec["identity"];
    assert_eq!(identity["uid"], 65534);
    assert_eq!(identity["user"], "nobody");
    assert_eq!(identity["euid"], 65534);
    assert_eq!(identity["euser"], "nobody");
    assert_eq!(identity["gid"], 65534);
    assert_eq!(
        identity["groups"],
        serde_json::json!([]),
        "setpriv cleared the groups"
    );
    assert_eq!(identity["loginUid"], login_uid);
    assert_eq!(identity["loginUser"], LOGIN_USER);
    let session = identity["sessionId"].as_u64().expect("a session id");
    assert_ne!(session, u64::from(u32::MAX));

    // The parent is this test process; its exec_id is derived independently from /proc.
    assert_eq!(process["ppid"], std::process::id());
    assert_eq!(process["parentExecId"], exec_id_of(std::process::id())?);
    assert_eq!(
        exec["exec"]["parent"]["execId"],
        exec_id_of(std::process::id())?
    );
    assert_eq!(process["cwd"], std::env::current_dir()?.to_str().unwrap());

    // The shell and setpriv ran in the same process: same exec_id, earlier exec events.
    let exec_id = process["execId"].as_str().expect("exec_id").to_owned();
    let events = sensor.events()?;
    let same_process: Vec<&Value> = of_kind(&events, "exec")
        .filter(|e| e["process"]["execId"] == exec_id.as_str())
        .collect();
    let binaries: Vec<&str> = same_process
        .iter()
        .map(|e| e["process"]["binary"].as_str().unwrap_or_default())
        .collect();
    assert!(
        binaries.iter().any(|b| b.ends_with("/setpriv")),
        "setpriv's exec shares the exec_id: {binaries:?}"
    );

    let exit = sensor.wait_for("marker exit", |events| {
        of_kind(events, "exit")
            .find(|e| e["process"]["execId"] == exec_id.as_str())
            .cloned()
    })?;
    assert_eq!(exit["exit"]["code"], 0);
    assert_eq!(exit["process"]["binary"], marker_path.as_str());
    assert_eq!(exit["identity"]["loginUser"], LOGIN_USER);

    sensor.stop()?;
    Ok(sensor)
}

/// Exit codes and killing signals reach the exit event.
#[test]
fn exit_events_carry_codes_and_signals() -> Result<()> {
    require_root();
    let marker = Marker::new("/bin/sh")?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let path = marker.path_str().to_owned();
    Command::new(&path).args(["-c", "exit 7"]).status()?;
    Command::new(&path).args(["-c", "kill -9 $$"]).status()?;

    let exits = sensor.wait_for("two marker exits", |events| {
        let exits: Vec<Value> = of_kind(events, "exit")
            .filter(|e| e["process"]["binary"] == path.as_str())
            .cloned()
            .collect();
        (exits.len() == 2).then_some(exits)
    })?;
    assert_eq!(exits[0]["exit"]["code"], 7);
    assert_eq!(exits[1]["exit"]["signal"], 9);
    assert!(exits[1]["exit"].get("code").is_none());
    sensor.stop()?;
    Ok(())
}

/// A program whose path and arguments are not UTF-8: its exec and exit events carry the
/// readable text (each invalid byte as `\xNN`) and the exact bytes, and a child it forks and
/// that execs names it, the same, as its parent.
#[test]
fn odd_bytes_in_a_program_and_its_arguments_are_kept_exactly() -> Result<()> {
    require_root();
    let marker = Marker::new("/bin/sh")?;
    let mut name = b"odd sh\nline".to_vec();
    name.push(0xff);
    let odd = marker.dir.path().join(OsStr::from_bytes(&name));
    std::fs::rename(&marker.path, &odd)?;
    let mut arg = b"x".to_vec();
    arg.push(0xfe);
    let mut sensor = Sensor::start(&TestConfig::new())?;
    // The shell forks for `true` (a command follows it), so the child's exec names the shell.
    let status = Command::new(&odd)
        .args([
            OsStr::new("-c"),
            OsStr::new("/bin/true; exit 3"),
            OsStr::from_bytes(&arg),
        ])
        .status()?;
    assert_eq!(status.code(), Some(3));

    let readable = format!("{}/odd sh\nline\\xff", marker.dir.path().to_str().unwrap());
    let exec = sensor.wait_for("odd shell exec", |events| exec_of(events, &readable))?;
    let process = &exec["process"];
    let exact = |field: &Value| {
        base64::engine::general_purpose::STANDARD.decode(field.as_str().unwrap_or_default())
    };
    assert_eq!(exact(&process["binaryRaw"])?, odd.as_os_str().as_bytes());
    assert_eq!(process["invokedPath"], readable.as_str());
    assert_eq!(
        exact(&process["invokedPathRaw"])?,
        odd.as_os_str().as_bytes()
    );
    assert_eq!(
        process["args"],
        serde_json::json!([readable, "-c", "/bin/true; exit 3", "x\\xfe"])
    );
    let args_raw: Vec<Vec<u8>> = process["argsRaw"]
        .as_array()
        .expect("argsRaw")
        .iter()
        .map(exact)
        .collect::<Result<_, _>>()?;
    let expected: Vec<&[u8]> = vec![
        odd.as_os_str().as_bytes(),
        b"-c",
        b"/bin/true; exit 3",
        &arg,
    ];
    assert_eq!(args_raw, expected, "argsRaw holds every argument exactly");

    let exec_id = process["execId"].as_str().expect("exec_id").to_owned();
    let (child, exit) = sensor.wait_for("the child's exec and the shell's exit", |events| {
        let child =
            of_kind(events, "exec").find(|e| e["process"]["parentExecId"] == exec_id.as_str())?;
        let exit = of_kind(events, "exit").find(|e| e["process"]["execId"] == exec_id.as_str())?;
        Some((child.clone(), exit.clone()))
    })?;
    assert_eq!(exit["exit"]["code"], 3);
    assert_eq!(
        exit["process"], *process,
        "the exit reports the same process"
    );
    let parent = &child["exec"]["parent"];
    assert_eq!(parent["execId"], exec_id.as_str());
    for field in [
        "binary",
        "binaryRaw",
        "args",
        "argsRaw",
        "invokedPath",
        "invokedPathRaw",
        "cwd",
    ] {
        assert_eq!(parent[field], process[field], "the child's parent {field}");
    }
    sensor.stop()?;
    Ok(())
}

/// Every event is written to the protobuf sink too, and `custos decode` turns that file back
/// into the same JSON, with a gap-free sequence.
#[test]
fn protobuf_output_decodes_to_the_same_events() -> Result<()> {
    require_root();
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    Command::new(marker.path_str()).arg("pb").status()?;
    let path = marker.path_str().to_owned();
    sensor.wait_for("marker exit", |events| {
        of_kind(events, "exit")
            .find(|e| e["process"]["binary"] == path.as_str())
            .map(|_| ())
    })?;
    sensor.stop()?;

    let json = sensor.events()?;
    let decoded = Command::new(custos_tests::custos_bin())
        .arg("decode")
        .arg(&sensor.protobuf_path)
        .output()?;
    let from_protobuf = custos_tests::json_lines(decoded)?;
    assert_eq!(from_protobuf, json);
    let seqs: Vec<u64> = json.iter().map(seq).collect();
    let expected: Vec<u64> = (1..=json.len() as u64).collect();
    assert_eq!(seqs, expected, "seq starts at 1 and has no gaps");
    Ok(())
}

/// Records the kernel could not queue are counted and reported in-band: with the daemon stopped
/// and a small ring, a burst of execs overflows it, and every marker exec either arrives or is
/// accounted for by a loss event.
#[test]
fn ring_buffer_overflow_is_reported_as_loss() -> Result<()> {
    require_root();
    let marker = Marker::new("/bin/true")?;
    let mut sensor = Sensor::start(&TestConfig::new().ring_buffer_bytes(65536))?;
    const BURST: usize = 600;
    custos_tests::signal(sensor.pid(), "STOP")?;
    let burst = (|| -> Result<()> {
        for _ in 0..BURST {
            Command::new(marker.path_str()).status()?;
        }
        Ok(())
    })();
    custos_tests::signal(sensor.pid(), "CONT")?;
    burst?;

    let lost = sensor.wait_for("an exec loss event", |events| {
        of_kind(events, "loss")
            .filter(|e| e["loss"]["kind"] == "EVENT_KIND_PROCESS_EXEC")
            .map(|e| {
                e["loss"]["count"]
                    .as_str()
                    .and_then(|c| c.parse::<u64>().ok())
            })
            .sum::<Option<u64>>()
            .filter(|&n| n > 0)
    })?;
    sensor.stop()?;
    let events = sensor.events()?;
    let path = marker.path_str();
    let arrived = of_kind(&events, "exec")
        .filter(|e| e["process"]["binary"] == path)
        .count();
    let loss = of_kind(&events, "loss").find(|e| e["loss"]["kind"] == "EVENT_KIND_PROCESS_EXEC");
    assert_eq!(
        loss.unwrap()["loss"]["reason"],
        "LOSS_REASON_KERNEL_BUFFER_FULL"
    );
    assert!(
        arrived < BURST,
        "the 64 KiB ring should overflow: {arrived} arrived"
    );
    assert!(
        arrived as u64 + lost >= BURST as u64,
        "{arrived} arrived + {lost} reported lost < {BURST} executed: a silent loss"
    );
    Ok(())
}

/// Without the privileges to load programs, custos says what to do in one line.
#[test]
fn missing_privileges_give_a_clear_error() -> Result<()> {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(custos_tests::custos_bin())
        .arg("run")
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error_lines.len(), 1, "one error line: {stderr}");
    assert!(error_lines[0].contains("run custos as root"), "{stderr}");
    Ok(())
}

/// Runs `marker ARG` as nobody from a shell whose audit login uid is `login_uid`.
fn run_as_nobody_after_login(login_uid: u32, marker: &Marker, arg: &str) -> Result<()> {
    let status = run_after_login(login_uid, 65534, marker.path_str(), &[arg])?;
    assert!(status.success(), "test workload failed: {status}");
    Ok(())
}

fn exec_with_arg(sensor: &Sensor, marker: &Marker, arg: &str) -> Result<Value> {
    let path = marker.path_str().to_owned();
    sensor.wait_for("the marker exec", |events| {
        of_kind(events, "exec")
            .find(|e| e["process"]["binary"] == path.as_str() && e["process"]["args"][1] == arg)
            .cloned()
    })
}

/// The identity map names the person behind the login (not the account they switched to), and
/// an edited map takes effect without a restart.
#[test]
fn the_identity_map_names_the_person_behind_the_login_and_reloads() -> Result<()> {
    require_root();
    let login_uid = ensure_user(LOGIN_USER)?;
    let dir = tempfile::tempdir()?;
    let map = dir.path().join("people.toml");
    let write_map = |principal: &str, roles: &str| {
        std::fs::write(
            &map,
            format!(
                "[[person]]\nuser = \"{LOGIN_USER}\"\nprincipal = \"{principal}\"\n\
                 display_name = \"Test Login\"\ndepartment = \"Finance\"\nroles = [{roles}]\n"
            ),
        )
    };
    write_map("login@example.com", "\"finance\"")?;
    let mut sensor = Sensor::start(&TestConfig::new().identity_map(&map))?;
    let marker = Marker::new("/bin/true")?;

    run_as_nobody_after_login(login_uid, &marker, "first")?;
    let exec = exec_with_arg(&sensor, &marker, "first")?;
    let identity = &exec["identity"];
    assert_eq!(identity["user"], "nobody");
    assert_eq!(identity["loginUser"], LOGIN_USER);
    assert_eq!(identity["person"]["principal"], "login@example.com");
    assert_eq!(identity["person"]["department"], "Finance");
    assert_eq!(identity["person"]["roles"], serde_json::json!(["finance"]));

    // Modification times can share a second with the first write on coarse filesystems.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_map("login@corp.example", "\"finance\", \"approver\"")?;
    sensor.wait_for_log("identity map reloaded")?;
    run_as_nobody_after_login(login_uid, &marker, "second")?;
    let exec = exec_with_arg(&sensor, &marker, "second")?;
    assert_eq!(
        exec["identity"]["person"]["principal"],
        "login@corp.example"
    );
    assert_eq!(
        exec["identity"]["person"]["roles"],
        serde_json::json!(["finance", "approver"])
    );
    sensor.stop()?;
    Ok(())
}

/// The cgroup v2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid systems).
fn cgroup2_mount() -> Result<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(std::path::PathBuf::from))?
        })
        .ok_or_else(|| anyhow::anyhow!("no cgroup2 mount"))
}

/// Removes a test cgroup once its processes are gone.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// A process in a systemd unit's cgroup is tagged with that unit.
#[test]
fn events_carry_the_systemd_unit_of_their_cgroup() -> Result<()> {
    require_root();
    let unit = format!("custos-test-{}.service", std::process::id());
    let cgroup = TestCgroup(cgroup2_mount()?.join(&unit));
    std::fs::create_dir(&cgroup.0)?;
    let mut sensor = Sensor::start(&TestConfig::new())?;
    let marker = Marker::new("/bin/true")?;
    // The resolver re-indexes on a miss at most once a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} in-unit",
        cgroup.0.display(),
        marker.path_str()
    );
    assert!(Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()?
        .success());
    let exec = exec_with_arg(&sensor, &marker, "in-unit")?;
    let cg = &exec["process"]["cgroup"];
    assert_eq!(cg["path"], format!("/{unit}"));
    assert_eq!(cg["unit"], unit.as_str());
    assert_eq!(cg["containerId"], "");
    sensor.stop()?;
    Ok(())
}
