//! Idempotent machine setup: each step checks first and says what it installs.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::shell::{have, is_root, output, run, succeeds};

/// Debian's LLVM that bpf-linker links against; rustc's own LLVM is 22 too, so they match.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const BPF_LINKER_VERSION: &str = "^0.13";
/// Programs the integration tests drive, and the Debian package of each.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("setpriv", "util-linux"),
    ("useradd", "passwd"),
    ("kill", "procps"),
    ("rsyslogd", "rsyslog"),
    ("nats-server", "nats-server"),
    ("losetup", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("dash", "dash"),
    ("groupadd", "passwd"),
    ("usermod", "passwd"),
    ("getent", "libc-bin"),
    // The access-basis tests: ACL entries, dropping a capability, a second host name.
    ("setfacl", "acl"),
    ("capsh", "libcap2-bin"),
    ("unshare", "util-linux"),
    ("hostname", "hostname"),
    // The real logins of the identity tests.
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("sudo", "sudo"),
    ("visudo", "sudo"),
    ("su", "util-linux"),
    ("runuser", "util-linux"),
    ("cron", "cron"),
    ("crontab", "cron"),
    // The SIEM tests: a terminal for the views, awk behind Debian's alternatives symlink.
    ("script", "bsdutils"),
    ("mawk", "mawk"),
    // The packaged service's events in journald.
    ("systemd-cat", "systemd"),
    ("journalctl", "systemd"),
    // The network tests' client and server.
    ("curl", "curl"),
    ("python3", "python3"),
    ("ip", "iproute2"),
];

/// What `vm-test` needs: QEMU, a static busybox for the guest, cpio for its initramfs,
/// mkfs.ext4 for the USB drive's filesystem, strip and ldd for the binaries.
const VM_TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("cpio", "cpio"),
    ("mkfs.ext4", "e2fsprogs"),
    ("strip", "binutils"),
    ("ldd", "libc-bin"),
];

/// QEMU and the pieces of the guest's root filesystem.
pub fn vm_tools() -> Result<()> {
    let mut missing = missing_packages(VM_TOOLS);
    // busybox-static, not the dynamically linked busybox: the guest has no libraries for it.
    if !succeeds(Command::new("dpkg").args(["-s", "busybox-static"])) {
        missing.push("busybox-static");
    }
    apt_install(&missing)
}

/// Valgrind, for `cargo xtask profile`.
pub fn profile_tools() -> Result<()> {
    let present = ["valgrind", "callgrind_control", "callgrind_annotate"]
        .into_iter()
        .all(have);
    if present {
        return Ok(());
    }
    apt_install(&["valgrind"])
}

/// perf and bpftool, for `cargo xtask profile bpf`.
pub fn bpf_profile_tools() -> Result<()> {
    apt_install(&missing_packages(&[
        ("perf", "linux-perf"),
        ("bpftool", "bpftool"),
    ]))
}

pub fn all() -> Result<()> {
    build_tools()?;
    test_tools()
}

/// What building the eBPF programs needs.
pub fn build_tools() -> Result<()> {
    rust_src()?;
    bpf_linker()
}

/// What the integration tests need besides the build.
pub fn test_tools() -> Result<()> {
    apt_install(&missing_packages(TEST_TOOLS))?;
    python_consumer()?;
    siem_tools()
}

/// The SIEM tests' independent tools, from PyPI, in a virtual environment of their own (pySigma
/// pins its dependencies): sigma-cli with pySigma's SQLite backend, and the OCSF schemas with a
/// JSON Schema validator. The tests install this repository's Sigma pipeline into it.
const SIEM_TOOLS: &[&str] = &[
    "sigma-cli==3.1.0",
    "pysigma==1.5.1",
    "pysigma-backend-sqlite==1.2.4",
    "ocsf-json-schema==1.2.0",
    "jsonschema==4.26.0",
];

/// Where the SIEM tools' virtual environment lives.
fn siem_venv() -> std::path::PathBuf {
    crate::shell::workspace_root().join("target/siem-python")
}

fn siem_tools() -> Result<()> {
    let venv = siem_venv();
    let python = venv.join("bin/python");
    let present = python.exists()
        && succeeds(Command::new(&python).args([
            "-c",
            "import sigma.backends.sqlite, sigma.cli, ocsf_json_schema, jsonschema",
        ]));
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the SIEM tests' tools in {} (PyPI: {})",
        venv.display(),
        SIEM_TOOLS.join(" ")
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(SIEM_TOOLS))
}

/// The independent consumers of the forwarding tests: Python's official protobuf runtime and
/// compiler and the nats-py client, from PyPI.
fn python_consumer() -> Result<()> {
    let present =
        succeeds(Command::new("python3").args(["-c", "import google.protobuf, grpc_tools, nats"]));
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the test consumers' Python packages (PyPI: protobuf, grpcio-tools, nats-py)"
    );
    run(Command::new("python3").args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--root-user-action=ignore",
        "protobuf",
        "grpcio-tools",
        "nats-py",
    ]))
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    if installed
        .as_deref()
        .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")))
    {
        return Ok(());
    }
    if installed.is_none() {
        eprintln!("xtask: installing the nightly toolchain (the eBPF target is built with it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    eprintln!("xtask: adding rust-src to nightly (core is rebuilt for the bpf target)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("rustup could not add rust-src; without it the eBPF programs cannot be built")
}

fn bpf_linker() -> Result<()> {
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").exists() {
        eprintln!("xtask: installing Debian's LLVM 22 for bpf-linker");
        apt_install(LLVM_PACKAGES)?;
    }
    eprintln!("xtask: building bpf-linker against {LLVM_PREFIX} (about a minute)");
    run(crate::shell::cargo()
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"]))
}

/// The packages of the `(program, package)` pairs whose program is not installed.
fn missing_packages<'a>(tools: &[(&str, &'a str)]) -> Vec<&'a str> {
    tools
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect()
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run as root, or install them with apt-get",
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing Debian packages: {}", packages.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
