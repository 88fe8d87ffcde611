//! The guest's whole root filesystem: busybox, the kernel modules the tests need (with their
//! dependencies, in load order), `custos`, the in-guest suite and the libraries they link.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use super::kernel::Kernel;
use crate::shell::{output, run};

/// Loop devices, the USB host controller, USB storage as SCSI disks, ext4 and the checksum
/// ext4 asks for at mount.
const MODULES: &[&str] = &[
    "loop",
    "xhci_pci",
    "usb_storage",
    "sd_mod",
    "ext4",
    "crc32c_generic",
];

/// PID 1: mounts what the sensor needs, loads the modules, runs the suite, powers off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
ip link set lo up
for module in $(cat /modules/order); do
    insmod /modules/$module.ko || echo "VMTEST warning insmod $module failed"
done
echo "VMTEST kernel $(uname -r)"
echo "VMTEST lsm $(cat /sys/kernel/security/lsm 2>/dev/null || echo unknown)"
CUSTOS_BIN=/usr/bin/custos CUSTOS_TEST_PATIENCE_SECS=120 /usr/bin/vm_suite
echo "VMTEST exit $?"
poweroff -f
"#;

/// Builds `<work>/initramfs.cpio` and returns its path.
pub fn build(work: &Path, kernel: &Kernel, binaries: &[PathBuf]) -> Result<PathBuf> {
    let root = work.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for dir in [
        "bin", "usr/bin", "etc", "proc", "sys", "dev", "tmp", "run", "mnt", "modules", "root",
        "var/lib",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("copying /bin/busybox (Debian's busybox-static)")?;
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        let name = binary.file_name().context("binary without a name")?;
        run(Command::new("strip")
            .arg("-o")
            .arg(root.join("usr/bin").join(name))
            .arg(binary))?;
        libraries.extend(linked_libraries(binary)?);
    }
    for library in libraries {
        let inside = root.join(library.strip_prefix("/")?);
        fs::create_dir_all(inside.parent().context("library without a directory")?)?;
        fs::copy(&library, &inside).with_context(|| format!("copying {}", library.display()))?;
    }
    let order = modules_in_load_order(&kernel.modules, MODULES)?;
    for (name, path) in &order {
        fs::copy(path, root.join("modules").join(format!("{name}.ko")))?;
    }
    let names: Vec<&str> = order.iter().map(|(name, _)| name.as_str()).collect();
    fs::write(root.join("modules/order"), names.join("\n") + "\n")?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\n",
    )?;
    fs::write(root.join("init"), INIT)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;

    let archive = work.join("initramfs.cpio");
    run(Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet > \"$0\"")
        .arg(&archive)
        .current_dir(&root))?;
    Ok(archive)
}

/// The shared libraries (and loader) `binary` needs, from ldd.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let listing = output(Command::new("ldd").arg(binary))
        .with_context(|| format!("ldd {}", binary.display()))?;
    Ok(listing
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-... (0x...)"
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// `wanted` and everything they depend on, dependencies first, as (name, .ko path).
fn modules_in_load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut index = BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut index)?;
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(name, &index, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let name = normalized(name);
    if !seen.insert(name.clone()) {
        return Ok(());
    }
    let Some(path) = index.get(&name) else {
        // Built into the kernel, or not there at all: insmod of a dependent says which.
        return Ok(());
    };
    for dependency in dependencies(path)? {
        visit(&dependency, index, seen, order)?;
    }
    order.push((name, path.clone()));
    Ok(())
}

fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            index.insert(normalized(stem), path.clone());
        }
    }
    Ok(())
}

/// The module's `depends=` entry from its `.modinfo` section.
fn dependencies(module: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(module)?;
    let key = b"\0depends=";
    let Some(at) = bytes.windows(key.len()).position(|w| w == key) else {
        bail!("{} has no depends= entry", module.display());
    };
    let value = &bytes[at + key.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    Ok(String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Module names treat '-' and '_' alike.
fn normalized(name: &str) -> String {
    name.replace('-', "_")
}
