//! The views for people, through a pseudo-terminal as an operator sees them (util-linux's
//! `script` gives the commands a real terminal): `custos tail` in compact, coloured lines with
//! its filters, and `custos status`'s summary.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use custos_tests::{
    custos_bin, ensure_user, patience, require_root, run_after_login, Marker, Sensor, TestConfig,
};

const LOGIN_USER: &str = "custos-login";

/// `command` on a terminal of its own, its output recorded in `typescript`.
fn on_a_terminal(command: &str, typescript: &Path) -> Result<Child> {
    Command::new("script")
        .args(["--quiet", "--flush", "--command", command])
        .arg(typescript)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting script(1)")
}

/// The recording's text once `done` holds for it (or the patience ran out).
fn recorded(typescript: &Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + patience();
    loop {
        let text = std::fs::read_to_string(typescript).unwrap_or_default();
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// On a terminal, `custos tail --kind exec --user nobody` prints one coloured line for the
/// marker run as nobody after a login (time, who with the login user, the command line, host
/// and pid), and nothing for the same marker run by root or for other kinds.
#[test]
fn tail_prints_compact_coloured_filtered_lines_on_a_terminal() -> Result<()> {
    require_root();
    let login_uid = ensure_user(LOGIN_USER)?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("tail.sock");
    let mut sensor = Sensor::start(&TestConfig::new().tail_socket(&socket))?;
    let typescript = dir.path().join("tail.typescript");
    let command = format!(
        "{} tail --socket {} --kind exec --user nobody",
        custos_bin().display(),
        socket.display()
    );
    let mut tail = on_a_terminal(&command, &typescript)?;
    std::thread::sleep(Duration::from_millis(1500));
    let marker = Marker::new("/bin/true")?;
    Command::new(marker.path_str())
        .arg("run-by-root")
        .status()?;
    run_after_login(login_uid, 65534, marker.path_str(), &["run-by-nobody"])?;
    let text = recorded(&typescript, |text| text.contains("run-by-nobody"));
    let _ = tail.kill();
    let _ = tail.wait();
    sensor.stop()?;

    let line = text
        .lines()
        .find(|l| l.contains("run-by-nobody"))
        .with_context(|| format!("no line for the marker: {text:?}"))?;
    ensure!(line.contains("\u{1b}["), "coloured on a terminal: {line:?}");
    let plain = strip_colours(line);
    ensure!(plain.contains(" exec "), "{plain:?}");
    ensure!(
        plain.contains(&format!("nobody (login {LOGIN_USER}")),
        "{plain:?}"
    );
    ensure!(
        plain.contains(&format!("{} run-by-nobody", marker.path_str())),
        "{plain:?}"
    );
    ensure!(!text.contains("run-by-root"), "the user filter: {text:?}");
    ensure!(!text.contains("file_open"), "the kind filter: {text:?}");
    ensure!(!text.trim_start().starts_with('{'), "not JSON: {text:?}");
    Ok(())
}

/// On a terminal, `custos status` prints its summary: the run, memory and CPU, each hook with
/// its program type, events per kind, and the sinks.
#[test]
fn status_prints_a_summary_on_a_terminal() -> Result<()> {
    require_root();
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("status.sock");
    let mut sensor = Sensor::start(&TestConfig::new().status_socket(&socket))?;
    // An exec is counted when the reader drains it: the summary is asked for once it is written.
    let marker = Marker::new("/bin/true")?;
    Command::new(marker.path_str()).status()?;
    sensor.wait_for("the marker's exec", |events| {
        events
            .iter()
            .find(|e| e["kind"] == "exec" && e["process"]["binary"] == marker.path_str())
            .map(|_| ())
    })?;
    let typescript = dir.path().join("status.typescript");
    let command = format!(
        "{} status --socket {}",
        custos_bin().display(),
        socket.display()
    );
    on_a_terminal(&command, &typescript)?.wait()?;
    sensor.stop()?;
    let text = strip_colours(&recorded(&typescript, |text| text.contains("Sinks")));
    ensure!(text.contains("custos "), "{text}");
    ensure!(text.contains("memory "), "{text}");
    for section in ["Hooks", "Events", "eBPF programs", "Sinks"] {
        ensure!(text.contains(section), "no {section} section: {text}");
    }
    ensure!(
        text.lines()
            .any(|l| l.contains("sched_process_exec") && l.trim_end().ends_with("tp_btf")),
        "{text}"
    );
    let exec = text
        .lines()
        .find(|l| l.trim_start().starts_with("exec "))
        .with_context(|| format!("no exec row: {text}"))?;
    let emitted: u64 = exec.split_whitespace().nth(1).unwrap_or("0").parse()?;
    ensure!(emitted >= 1, "{exec}");
    ensure!(
        text.contains(&format!("file {}", sensor.json_path.display())),
        "{text}"
    );
    ensure!(!text.contains("# HELP"), "not the Prometheus text: {text}");
    Ok(())
}

/// The text without ANSI colour sequences.
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
