//! Facts about this host and boot that every event carries.
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};

use crate::process_table::ExecId;

pub struct HostInfo {
    pub host: String,
    /// /proc/sys/kernel/random/boot_id, as written there.
    pub boot_id: String,
    /// Wall-clock time of boot: CLOCK_REALTIME - CLOCK_BOOTTIME, to turn kernel times into UTC.
    pub boot_time: SystemTime,
    /// Kernel clock ticks per second, the unit of process start times in /proc.
    pub clock_ticks_per_sec: u64,
    /// Random id of this daemon run.
    pub run_id: String,
}

impl HostInfo {
    pub fn probe() -> Result<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .context("reading /proc/sys/kernel/random/boot_id (is /proc mounted?)")?
            .trim()
            .to_owned();
        let host = nix::unistd::gethostname()
            .context("gethostname")?
            .to_string_lossy()
            .into_owned();
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let run_id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .context("reading /proc/sys/kernel/random/uuid")?
            .trim()
            .to_owned();
        Ok(Self {
            host,
            boot_id,
            boot_time: boot_time()?,
            clock_ticks_per_sec: if ticks > 0 { ticks as u64 } else { 100 },
            run_id,
        })
    }

    /// UTC time of a CLOCK_BOOTTIME instant.
    pub fn wall_time(&self, boottime_ns: u64) -> SystemTime {
        self.boot_time + Duration::from_nanos(boottime_ns)
    }

    /// A CLOCK_BOOTTIME start time in clock ticks, as the exec id has it: two processes of
    /// one pid have the same exec id exactly when these are equal.
    pub fn start_ticks(&self, start_boottime_ns: u64) -> u64 {
        start_boottime_ns / (1_000_000_000 / self.clock_ticks_per_sec)
    }

    /// Stable process id within this boot: boot id, start time in clock ticks (the resolution
    /// /proc offers, so processes found at start-up get the same id the kernel hooks compute),
    /// and pid. Put together on the stack and allocated once, in its shared form: a new process
    /// needs one.
    pub fn exec_id_from_ticks(&self, pid: u32, start_ticks: u64) -> ExecId {
        let (mut ticks, mut pid_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
        let parts = [
            self.boot_id.as_str(),
            ":",
            ticks.format(start_ticks),
            ":",
            pid_digits.format(pid),
        ];
        let mut id = [0u8; 128];
        let mut len = 0;
        for part in parts {
            let Some(room) = id.get_mut(len..len + part.len()) else {
                // A boot id longer than the kernel's 36 characters: no room on the stack.
                return parts.concat().into();
            };
            room.copy_from_slice(part.as_bytes());
            len += part.len();
        }
        // SAFETY: `id[..len]` is whole `str`s put one after another, which is valid UTF-8
        // whatever the boot id holds; checking it again would cost every new process.
        unsafe { std::str::from_utf8_unchecked(&id[..len]) }.into()
    }

    /// CLOCK_BOOTTIME nanoseconds of a start time given in clock ticks.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ticks * (1_000_000_000 / self.clock_ticks_per_sec)
    }
}

fn boot_time() -> Result<SystemTime> {
    use nix::time::{clock_gettime, ClockId};
    let boot = clock_gettime(ClockId::CLOCK_BOOTTIME).context("clock_gettime(BOOTTIME)")?;
    let since_boot = Duration::new(boot.tv_sec() as u64, boot.tv_nsec() as u32);
    Ok(SystemTime::now() - since_boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_id_is_the_same_from_kernel_nanoseconds_and_proc_ticks() {
        let host = HostInfo {
            host: "h".into(),
            boot_id: "b".into(),
            boot_time: SystemTime::UNIX_EPOCH,
            clock_ticks_per_sec: 100,
            run_id: "r".into(),
        };
        assert_eq!(&*host.exec_id_from_ticks(42, 1234), "b:1234:42");
        let long = HostInfo {
            host: "h".into(),
            boot_id: "b".repeat(200),
            boot_time: SystemTime::UNIX_EPOCH,
            clock_ticks_per_sec: 100,
            run_id: "r".into(),
        };
        assert_eq!(
            *long.exec_id_from_ticks(42, 1234),
            format!("{}:1234:42", "b".repeat(200))
        );
        let accented = HostInfo {
            boot_id: "b\u{e9}\u{1f600}".into(),
            ..long
        };
        assert_eq!(&*accented.exec_id_from_ticks(7, 9), "b\u{e9}\u{1f600}:9:7");
        // 12.345678 s after boot is tick 1234 at 100 Hz.
        let from_kernel = |pid| host.exec_id_from_ticks(pid, host.start_ticks(12_345_678_000));
        assert_eq!(from_kernel(42), host.exec_id_from_ticks(42, 1234));
        assert_ne!(from_kernel(42), from_kernel(43));
    }
}
