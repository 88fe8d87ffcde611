//! Boots the guest under QEMU (TCG), follows its console, and does what the suite asks of the
//! host: plugging the USB drive in and out through QMP.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
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
    let mut child = spawn_qemu(guest)?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let lines = console_lines(stdout);
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
        match line.strip_prefix("VMTEST ") {
            Some(message) => outcome.take(message, &mut qmp, &guest.qmp_socket)?,
            None if line.contains("Kernel panic") || line.contains("BUG:") => {
                eprintln!("vm-test: guest: {line}");
            }
            None => {}
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

/// QEMU with the guest's kernel, initramfs and an xHCI controller for the USB drive, its
/// serial console on standard output.
fn spawn_qemu(guest: &Guest) -> Result<Child> {
    Command::new("qemu-system-x86_64")
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
        .context("starting qemu-system-x86_64")
}

/// The console's lines, as they come.
fn console_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl Outcome {
    /// One `VMTEST` message from the suite.
    fn take(&mut self, message: &str, qmp: &mut Option<Qmp>, socket: &Path) -> Result<()> {
        let (verb, rest) = message.split_once(' ').unwrap_or((message, ""));
        match verb {
            "kernel" => {
                self.kernel = rest.to_owned();
                println!("vm-test: guest kernel {rest}");
            }
            "hook" => {
                let (hook, path) = rest.split_once(' ').unwrap_or((rest, ""));
                println!("vm-test: hook {hook:<22} {path}");
                self.hooks.push((hook.to_owned(), path.to_owned()));
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
                self.results.push((name, ok, detail));
            }
            "host" => {
                let client = match qmp {
                    Some(client) => client,
                    None => qmp.insert(Qmp::connect(socket)?),
                };
                match client.host_request(rest) {
                    Ok(()) => println!("vm-test: host {rest} done"),
                    Err(err) => eprintln!("vm-test: host {rest} failed: {err:#}"),
                }
            }
            "done" => self.finished = true,
            _ => println!("vm-test: {message}"),
        }
        Ok(())
    }
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

    /// Plugs the USB drive in (`usb-attach`) or pulls it out (`usb-detach`).
    fn host_request(&mut self, request: &str) -> Result<()> {
        match request {
            "usb-attach" => self.execute(
                "device_add",
                json!({"driver": "usb-storage", "id": "stick0", "bus": "xhci.0",
                       "drive": "stick", "serial": USB_SERIAL, "removable": true}),
            ),
            "usb-detach" => self.execute("device_del", json!({"id": "stick0"})),
            other => Err(anyhow::anyhow!("unknown host request {other:?}")),
        }
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
