//! `cargo xtask vm-test`: the suite on Debian's 6.1 kernel (BPF LSM, fentry, kprobes) under
//! QEMU with TCG, with a USB drive plugged in and out through QMP while the sensor runs.
mod initramfs;
mod kernel;
mod qemu;

use std::{fs, process::Command};

use anyhow::{bail, Result};

use crate::shell::{cargo, run, target_dir};

/// Passed and failed tests in the guest.
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

pub fn run_suite() -> Result<Tally> {
    crate::setup::vm_tools()?;
    crate::setup::build_tools()?;
    run(cargo().args([
        "build",
        "--package",
        "custos",
        "--package",
        "custos-tests",
        "--bins",
    ]))?;
    let work = target_dir().join("vm-test");
    fs::create_dir_all(&work)?;
    let kernel = kernel::fetch(&work)?;
    let binaries = [
        target_dir().join("debug/custos"),
        target_dir().join("debug/vm_suite"),
    ];
    let initramfs = initramfs::build(&work, &kernel, &binaries)?;
    let usb_image = work.join("usb-stick.img");
    fs::File::create(&usb_image)?.set_len(32 << 20)?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "CUSTOS-USB", "-O", "^metadata_csum"])
        .arg(&usb_image))?;

    println!("vm-test: booting {} under QEMU (TCG)", kernel.release);
    let outcome = qemu::boot(&qemu::Guest {
        vmlinuz: &kernel.vmlinuz,
        initramfs: &initramfs,
        usb_image: &usb_image,
        qmp_socket: work.join("qmp.sock"),
        console_log: work.join("console.log"),
    })?;
    let passed = outcome.results.iter().filter(|(_, ok, _)| *ok).count() as u64;
    let failed = outcome.results.len() as u64 - passed;
    println!(
        "vm-test: kernel {}: {passed} passed, {failed} failed (console: {})",
        outcome.kernel,
        work.join("console.log").display()
    );
    if !outcome.finished {
        bail!(
            "the guest suite did not finish; see {}",
            work.join("console.log").display()
        );
    }
    Ok(Tally { passed, failed })
}
