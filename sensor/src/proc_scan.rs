//! Seeds the process table from /proc with the processes that were running before the sensor.
use std::{os::unix::ffi::OsStrExt, path::Path, sync::Arc};

use sensor_common::MAX_GROUPS;

use crate::{
    credentials::Credentials,
    host::HostInfo,
    identity::UNSET_ID,
    privacy::redact::Redactor,
    privilege_chain::ChainState,
    process_table::{Image, ProcessEntry, ProcessTable, Program},
};

/// Adds every process under `proc_root` to `table`; returns how many were added.
/// Secrets in their arguments are redacted with `redactor`.
pub fn seed(
    table: &mut ProcessTable,
    host: &HostInfo,
    proc_root: &Path,
    redactor: Option<&Redactor>,
) -> usize {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return 0;
    };
    let mut added = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let base = entry.path();
        // A process can exit while we read it; skip whatever vanished.
        let Some((ppid, started)) = read_stat(&base) else {
            continue;
        };
        let parent_start = if ppid == 0 {
            None
        } else {
            start_ticks(proc_root, ppid)
        };
        let exec_id = host.exec_id_from_ticks(pid, started);
        let mut program = Program {
            binary: read_link_bytes(&base.join("exe")),
            invoked: Vec::new(),
            args: std::fs::read(base.join("cmdline"))
                .map(|argv| crate::decode::split_argv(&argv))
                .unwrap_or_default(),
            args_truncated: false,
            cwd: read_link_bytes(&base.join("cwd")),
            path_truncated: false,
        };
        if let Some(redactor) = redactor {
            redactor.redact(&mut program.args);
        }
        let image = Image::of_program(&program, exec_id.clone());
        let mut entry = ProcessEntry::new(
            pid,
            ppid,
            host.ticks_to_ns(started),
            exec_id,
            parent_start
                .map(|ticks| host.exec_id_from_ticks(ppid, ticks))
                .unwrap_or_else(|| "".into()),
            Arc::new(image),
        );
        entry.credentials = std::fs::read_to_string(base.join("status"))
            .ok()
            .and_then(|status| parse_status(&status));
        entry.session_id = read_id(&base.join("sessionid"));
        let login_uid = read_id(&base.join("loginuid"));
        if let Some(credentials) = &entry.credentials {
            entry.chain = ChainState::before_sensor(login_uid, credentials.euid);
        }
        table.upsert(entry);
        added += 1;
    }
    added
}

/// The start time, in clock ticks since boot, of the process `pid` running now under
/// `proc_root`; `None` when none runs.
pub fn start_ticks(proc_root: &Path, pid: u32) -> Option<u64> {
    read_stat(&proc_root.join(pid.to_string())).map(|(_, ticks)| ticks)
}

/// `(ppid, starttime)` from /proc/PID/stat. The command name may hold spaces and parentheses,
/// so fields are counted from the last ')'.
fn read_stat(base: &Path) -> Option<(u32, u64)> {
    let stat = std::fs::read(base.join("stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &[u8]) -> Option<(u32, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// Credentials from /proc/PID/status (`Uid:`, `Gid:`, `Groups:`, `CapEff:`, `CapPrm:`).
fn parse_status(status: &str) -> Option<Credentials> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let ids = |name: &str| -> Option<Vec<u32>> {
        field(name)?
            .split_ascii_whitespace()
            .map(|id| id.parse().ok())
            .collect()
    };
    let caps = |name: &str| u64::from_str_radix(field(name).unwrap_or("0"), 16).ok();
    let (uids, gids) = (ids("Uid")?, ids("Gid")?);
    let groups = ids("Groups").unwrap_or_default();
    if uids.len() != 4 || gids.len() != 4 {
        return None;
    }
    let mut captured = [0; MAX_GROUPS];
    for (slot, gid) in captured.iter_mut().zip(&groups) {
        *slot = *gid;
    }
    Some(Credentials {
        uid: uids[0],
        euid: uids[1],
        suid: uids[2],
        fsuid: uids[3],
        gid: gids[0],
        egid: gids[1],
        sgid: gids[2],
        fsgid: gids[3],
        cap_effective: caps("CapEff")?,
        cap_permitted: caps("CapPrm")?,
        ngroups: groups.len() as u32,
        groups: captured,
    })
}

/// A decimal id file such as /proc/PID/loginuid; unset (`u32::MAX`) when unreadable.
fn read_id(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(UNSET_ID)
}

fn read_link_bytes(path: &Path) -> Vec<u8> {
    std::fs::read_link(path)
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let stat =
            b"1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(stat), Some((77, 98765)));
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn status_gives_credentials() {
        let status = "Name:\tsudo\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n\
                      Groups:\t27 1000 \nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";
        let credentials = parse_status(status).unwrap();
        assert_eq!((credentials.uid, credentials.euid), (1000, 0));
        assert_eq!(credentials.groups(), [27, 1000]);
        assert_eq!(credentials.cap_effective, 0x1ff_ffff_ffff);
        assert_eq!(parse_status("Uid:\t1\n"), None);
    }

    #[test]
    fn seeding_finds_this_test_process_with_its_parent() {
        let host = HostInfo::probe().unwrap();
        let mut table = ProcessTable::new(std::time::Duration::from_secs(1));
        assert!(seed(&mut table, &host, Path::new("/proc"), None) > 1);
        let me = std::process::id();
        let (ppid, ticks) = read_stat(Path::new(&format!("/proc/{me}"))).unwrap();
        let entry = table.get(me, &host.exec_id_from_ticks(me, ticks)).unwrap();
        assert_eq!(entry.ppid, ppid);
        assert!(!entry.image.binary().is_empty());
        let credentials = entry.credentials.unwrap();
        assert_eq!(credentials.euid, nix::unistd::geteuid().as_raw());
    }
}
