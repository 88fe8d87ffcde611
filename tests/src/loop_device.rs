//! Loop devices the tests create and always take down again.
use std::{fs::OpenOptions, os::fd::AsRawFd, path::PathBuf, process::Command};

use anyhow::{bail, Result};

use crate::run;

const LOOP_CTL_ADD: libc::c_ulong = 0x4C80;
const LOOP_CTL_REMOVE: libc::c_ulong = 0x4C81;

/// A loop device this test created, with an ext4 image and a mount point; everything is undone
/// at drop, whatever happened in between.
pub struct LoopDevice {
    pub index: u32,
    pub image: PathBuf,
    pub mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    /// Creates `/dev/loopN` through /dev/loop-control (a new disk, not one of the boot-time
    /// loop devices) and an ext4 image for it.
    pub fn create() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let image = dir.path().join("disk.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point)?;
        std::fs::File::create(&image)?.set_len(16 << 20)?;
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()])?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        // A number no other test or boot-time device uses.
        for index in 200 + std::process::id() % 500.. {
            // SAFETY: LOOP_CTL_ADD takes the device number by value.
            let ret =
                unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_ADD, index as libc::c_ulong) };
            if ret >= 0 {
                return Ok(Self {
                    index,
                    image,
                    mount_point,
                    _dir: dir,
                });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                bail!("LOOP_CTL_ADD {index}: {err}");
            }
        }
        unreachable!()
    }

    pub fn name(&self) -> String {
        format!("loop{}", self.index)
    }

    pub fn node(&self) -> String {
        format!("/dev/loop{}", self.index)
    }

    pub fn attach(&self) -> Result<()> {
        run("losetup", &[&self.node(), self.image.to_str().unwrap()])
    }

    pub fn mount(&self) -> Result<()> {
        run("mount", &[&self.node(), self.mount_point.to_str().unwrap()])
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let quiet = |program: &str, args: &[&str]| {
            let _ = Command::new(program)
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet("umount", &[self.mount_point.to_str().unwrap_or_default()]);
        quiet("losetup", &["-d", &self.node()]);
        if let Ok(control) = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
        {
            // SAFETY: LOOP_CTL_REMOVE takes the device number by value.
            unsafe {
                libc::ioctl(
                    control.as_raw_fd(),
                    LOOP_CTL_REMOVE,
                    self.index as libc::c_ulong,
                )
            };
        }
    }
}
