//! Loop devices the tests create and always take down again.
use std::{fs::OpenOptions, io::Write, os::fd::AsRawFd, path::PathBuf, process::Command};

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

    /// Makes the image a partitioned disk: an MBR table with one Linux partition from 1 MiB
    /// on, which holds the ext4 filesystem.
    pub fn partition_image(&self) -> Result<()> {
        const START: u64 = 1 << 20;
        let image = self.image.to_str().unwrap();
        let size = std::fs::metadata(&self.image)?.len();
        let offset = format!("offset={START}");
        let fs_size = format!("{}k", (size - START) / 1024);
        run("mkfs.ext4", &["-q", "-F", "-E", &offset, image, &fs_size])?;
        let mut head = vec![0u8; START as usize];
        let entry = &mut head[446..462];
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&((START / 512) as u32).to_le_bytes());
        entry[12..16].copy_from_slice(&(((size - START) / 512) as u32).to_le_bytes());
        head[510..512].copy_from_slice(&[0x55, 0xAA]);
        OpenOptions::new()
            .write(true)
            .open(&self.image)?
            .write_all(&head)?;
        Ok(())
    }

    /// Tells the kernel of the attached image's partitions, as partx(8) does: the kernel
    /// makes a device of each (whether it reads partition tables itself or not).
    pub fn add_partitions(&self) -> Result<()> {
        run("partx", &["-a", &self.node()])
    }

    /// Tells the kernel the partitions are gone, as `partx -d` does.
    pub fn remove_partitions(&self) -> Result<()> {
        run("partx", &["-d", &self.node()])
    }

    /// The first partition's name (`loopNp1`).
    pub fn partition_name(&self) -> String {
        format!("{}p1", self.name())
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
