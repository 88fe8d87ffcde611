//! Files the daemon writes are for root (and an optional reader group) only, whatever the
//! umask; files it reads to decide what is monitored and where events go must be writable by
//! root alone, like sshd's StrictModes.
use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
    sync::OnceLock,
};

use anyhow::{bail, Context as _, Result};

/// The group given read access to what the daemon writes (`[files] group`), fixed at start.
static READER_GROUP: OnceLock<u32> = OnceLock::new();

/// Lets `gid` read what the daemon writes from now on (files 0640, directories 0750).
pub fn set_reader_group(gid: u32) {
    let _ = READER_GROUP.set(gid);
}

/// Lets the reader group into the directories systemd made for the service's logs
/// (`LogsDirectory=`, named in `$LOGS_DIRECTORY`): systemd makes them root's alone at each
/// start, and the file sinks there are for that group to read. Only a root-owned directory
/// named `custos` is changed, so that a stray variable cannot open another one.
pub fn share_logs_directories() -> Result<()> {
    let (Some(_), Some(dirs)) = (READER_GROUP.get(), std::env::var_os("LOGS_DIRECTORY")) else {
        return Ok(());
    };
    for dir in std::env::split_paths(&dirs) {
        let meta =
            fs::symlink_metadata(&dir).with_context(|| format!("reading {}", dir.display()))?;
        let ours = dir.is_absolute()
            && dir.file_name().is_some_and(|name| name == "custos")
            && meta.is_dir()
            && meta.uid() == 0;
        if !ours {
            tracing::warn!(dir = %dir.display(), "LOGS_DIRECTORY names no root-owned directory \
                called custos; its permissions are left as they are");
            continue;
        }
        give_to_reader_group(&dir, &meta)?;
        let shared = (meta.mode() & 0o7700) | 0o050;
        fs::set_permissions(&dir, fs::Permissions::from_mode(shared))
            .with_context(|| format!("letting the reader group into {}", dir.display()))?;
    }
    Ok(())
}

fn file_mode() -> u32 {
    if READER_GROUP.get().is_some() {
        0o640
    } else {
        0o600
    }
}

fn dir_mode() -> u32 {
    if READER_GROUP.get().is_some() {
        0o750
    } else {
        0o700
    }
}

/// Creates `dir` and any missing parent for the daemon alone; an existing one open to others
/// is tightened.
pub fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(dir_mode())
        .create(dir)
        .map_err(|err| with_write_hint(err, dir))
        .with_context(|| format!("creating {}", dir.display()))?;
    tighten(dir, dir_mode())
}

/// Opens (creating) `path` with `options` for the daemon alone; an existing file open to
/// others is tightened.
pub fn private_file(path: &Path, options: &mut OpenOptions) -> Result<File> {
    let file = options
        .mode(file_mode())
        .open(path)
        .map_err(|err| with_write_hint(err, path))
        .with_context(|| format!("opening {}", path.display()))?;
    tighten(path, file_mode())?;
    Ok(file)
}

/// Writes `contents` to a new private file at `path` (replacing it).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    private_file(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )?
    .write_all(contents)
    .with_context(|| format!("writing {}", path.display()))
}

/// `err`, and where `path` is on a read-only file system, where the daemon may write instead.
/// That is mostly the packaged unit's sandbox (`ProtectSystem=strict`), not a read-only disk.
fn with_write_hint(err: std::io::Error, path: &Path) -> anyhow::Error {
    if err.kind() != std::io::ErrorKind::ReadOnlyFilesystem {
        return err.into();
    }
    anyhow::Error::new(err).context(format!(
        "{} is on a read-only file system; under the packaged unit (ProtectSystem=strict) the \
         daemon may write only under /var/log/custos, /var/lib/custos and /run/custos: choose \
         a path there, or allow this one with ReadWritePaths= in a drop-in (systemctl edit \
         custos)",
        path.display()
    ))
}

/// Takes away what `mode` does not grant, and gives the reader group the file.
fn tighten(path: &Path, mode: u32) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let current = meta.mode() & 0o7777;
    if current & !mode & 0o777 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(current & mode))
            .with_context(|| format!("restricting the permissions of {}", path.display()))?;
        tracing::warn!(
            path = %path.display(),
            "was readable or writable by others (mode {current:04o}); now {:04o}",
            current & mode
        );
    }
    give_to_reader_group(path, &meta)
}

/// Gives `path` (as `meta` found it) to the reader group, when there is one.
fn give_to_reader_group(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if let Some(&gid) = READER_GROUP.get() {
        if meta.gid() != gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to the reader group", path.display()))?;
        }
    }
    Ok(())
}

/// Refuses `path` (what it is: "configuration file", "identity map") when anyone but root or
/// this daemon's user could change it: the file, or a directory above it (which could swap
/// it), owned by someone else or writable by a group or everyone. A root-owned sticky
/// directory (/tmp) is fine: nobody else can rename what is in it.
pub fn check_trusted(path: &Path, what: &str) -> Result<()> {
    let resolved =
        fs::canonicalize(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let own = nix::unistd::geteuid().as_raw();
    let mut component: Option<&Path> = Some(&resolved);
    while let Some(current) = component {
        let meta =
            fs::metadata(current).with_context(|| format!("checking {what} {}", path.display()))?;
        if let Some(reason) = untrusted(&meta, own) {
            bail!(
                "{what} {} is not safe: {} {reason} (mode {:04o}, owner uid {}), so a user \
                 other than root could change what is monitored or where events go; fix it \
                 with `chown root {1} && chmod go-w {1}`",
                path.display(),
                current.display(),
                meta.mode() & 0o7777,
                meta.uid()
            );
        }
        component = current.parent();
    }
    Ok(())
}

fn untrusted(meta: &fs::Metadata, own: u32) -> Option<&'static str> {
    let mode = meta.mode();
    let owner_ok = meta.uid() == 0 || meta.uid() == own;
    if !owner_ok {
        return Some("is owned by another user");
    }
    let sticky_root_dir = meta.is_dir() && mode & 0o1000 != 0 && meta.uid() == 0;
    if mode & 0o022 != 0 && !sticky_root_dir {
        return Some(if mode & 0o002 != 0 {
            "can be written by everyone"
        } else {
            "can be written by its group"
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_and_directories_are_private_under_any_umask() {
        let root = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o000) };
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        let file = dir.join("f");
        private_file(&file, OpenOptions::new().create(true).append(true)).unwrap();
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(root.path().join("a")).unwrap().mode() & 0o777,
            0o700
        );
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn existing_files_open_to_others_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("events.json");
        fs::write(&file, b"").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        private_file(&file, OpenOptions::new().append(true)).unwrap();
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn writable_files_and_directories_are_refused_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("custos.toml");
        fs::write(&file, b"").unwrap();
        assert!(check_trusted(&file, "configuration file").is_ok());
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let err = format!(
            "{:#}",
            check_trusted(&file, "configuration file").unwrap_err()
        );
        assert!(err.contains("can be written by everyone"), "{err}");
        assert!(err.contains(&format!(
            "chmod go-w {}",
            file.canonicalize().unwrap().display()
        )));
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o775)).unwrap();
        let err = format!(
            "{:#}",
            check_trusted(&file, "configuration file").unwrap_err()
        );
        assert!(err.contains("can be written by its group"), "{err}");
    }
}
