//! Boots the guest under QEMU (TCG), follows its console, and does what the suite asks of the
//! host: plugging the USB drive in and out through QMP.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

/// The serial number of the USB drive (the suite's deny rule names it).
const USB_SERIAL: &str = "CUSTOS-USB-0001";
/// Far more than a run takes (about two minutes); a hung guest must not hang CI.
const GUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);

pub struct Guest<'a> {
    pub vmlinuz: &'a Path,
    pub initramfs: &'a Path,
    pub usb_image: &'a Path,
    pub qmp_socket: PathBuf,
    pub console_log: PathBuf,
}

/// What the guest reported.
#[derive(Default)]
pub struct Outcome {
    pub kernel: String,
    pub hooks: Vec<(String, String)>,
    pub results: Vec<(String, bool, String)>,
    pub finished: bool,
}

pub fn boot(guest: &Guest) -> Result<Outcome> {
    let _ = std::fs::remove_file(&guest.qmp_socket);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "2048"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .arg("-kernel")
        .arg(guest.vmlinuz)
        .arg("-initrd")
        .arg(guest.initramfs)
        .args([
            "-append",
            "console=ttyS0 rdinit=/init panic=-1 quiet lsm=lockdown,capability,bpf",
        ])
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            guest.qmp_socket.display()
        ))
        .args(["-device", "qemu-xhci,id=xhci"])
        .arg("-drive")
        .arg(format!(
            "if=none,id=stick,format=raw,file={}",
            guest.usb_image.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = std::fs::File::create(&guest.console_log)?;
    let mut qmp = None;
    let mut outcome = Outcome::default();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(anyhow::anyhow!(
                    "the guest did not finish within {GUEST_TIMEOUT:?}"
                ))
            }
        };
        writeln!(log, "{line}")?;
        let line = line.trim_end_matches('\r');
        let Some(message) = line.strip_prefix("VMTEST ") else {
            if line.contains("Kernel panic") || line.contains("BUG:") {
                eprintln!("vm-test: guest: {line}");
            }
            continue;
        };
        let (verb, rest) = message.split_once(' ').unwrap_or((message, ""));
        match verb {
            "kernel" => {
                outcome.kernel = rest.to_owned();
                println!("vm-test: guest kernel {rest}");
            }
            "hook" => {
                let (hook, path) = rest.split_once(' ').unwrap_or((rest, ""));
                println!("vm-test: hook {hook:<22} {path}");
                outcome.hooks.push((hook.to_owned(), path.to_owned()));
            }
            "result" => {
                let mut parts = rest.splitn(3, ' ');
                let name = parts.next().unwrap_or_default().to_owned();
                let ok = parts.next() == Some("ok");
                let detail = parts.next().unwrap_or_default().to_owned();
                println!(
                    "vm-test: {} {name} {detail}",
                    if ok { "ok  " } else { "FAIL" }
                );
                outcome.results.push((name, ok, detail));
            }
            "host" => {
                let client = match &mut qmp {
                    Some(client) => client,
                    None => qmp.insert(Qmp::connect(&guest.qmp_socket)?),
                };
                let done = match rest {
                    "usb-attach" => client.execute(
                        "device_add",
                        json!({"driver": "usb-storage", "id": "stick0", "bus": "xhci.0",
                               "drive": "stick", "serial": USB_SERIAL, "removable": true}),
                    ),
                    "usb-detach" => client.execute("device_del", json!({"id": "stick0"})),
                    other => Err(anyhow::anyhow!("unknown host request {other:?}")),
                };
                match done {
                    Ok(()) => println!("vm-test: host {rest} done"),
                    Err(err) => eprintln!("vm-test: host {rest} failed: {err:#}"),
                }
            }
            "done" => outcome.finished = true,
            _ => println!("vm-test: {message}"),
        }
    };
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    result?;
    if !status.success() {
        bail!(
            "qemu exited with {status}; console in {}",
            guest.console_log.display()
        );
    }
    Ok(outcome)
}

/// A QMP connection, past the capabilities handshake.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QMP at {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        qmp.read_reply(true)?;
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn execute(&mut self, command: &str, arguments: Value) -> Result<()> {
        let request = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{request}")?;
        self.read_reply(false)
            .with_context(|| format!("QMP {command}"))
    }

    /// Skips asynchronous events up to the greeting or the command's reply.
    fn read_reply(&mut self, greeting: bool) -> Result<()> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("QMP closed the connection");
            }
            let reply: Value = serde_json::from_str(&line)?;
            if greeting && reply.get("QMP").is_some() || reply.get("return").is_some() {
                return Ok(());
            }
            if let Some(error) = reply.get("error") {
                bail!("{error}");
            }
        }
    }
}
