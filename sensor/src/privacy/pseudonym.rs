//! Keyed pseudonyms: deterministic authenticated encryption (AES-SIV) of a personal identifier.
//! The same name always gives the same pseudonym under one key, so analysis still works;
//! only the key's holder can turn a pseudonym back into the name (`custos reidentify`).
use std::path::Path;

use aes_siv::{siv::Aes256Siv, KeyInit};
use anyhow::{anyhow, bail, Context as _, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

/// Every pseudonym starts with this, so readers (and `custos reidentify`) can tell them apart.
pub const PREFIX: &str = "ps_";
/// Key bytes (AES-256-SIV takes two 256-bit keys).
const KEY_LEN: usize = 64;

#[derive(Clone)]
pub struct Pseudonymizer {
    key: [u8; KEY_LEN],
    /// Names are hidden outright instead (a view that must not even correlate people).
    hide: bool,
}

/// What a hidden name reads as.
pub const HIDDEN: &str = "[hidden]";

impl Pseudonymizer {
    /// Reads a key file: 64 bytes as 128 hex digits.
    pub fn from_key_file(path: &Path) -> Result<Self> {
        crate::files::check_trusted(path, "pseudonymisation key")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the pseudonymisation key {}", path.display()))?;
        let bytes = hex::decode(text.trim()).map_err(|e| {
            anyhow!(
                "{}: not a key ({e}); make one with `custos privacy-key {}`",
                path.display(),
                path.display()
            )
        })?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            anyhow!(
                "{}: the key has {} bytes, {KEY_LEN} are needed; make one with `custos privacy-key`",
                path.display(),
                b.len()
            )
        })?;
        Ok(Self { key, hide: false })
    }

    /// Hides every name instead of pseudonymising it.
    pub fn hiding() -> Self {
        Self {
            key: [0; KEY_LEN],
            hide: true,
        }
    }

    /// Writes a new random key to `path` (mode 0600), refusing to overwrite one.
    pub fn write_new_key(path: &Path) -> Result<()> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt};
        let mut key = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
            .context("reading /dev/urandom")?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
        writeln!(file, "{}", hex::encode(key))?;
        Ok(())
    }

    fn cipher(&self) -> Aes256Siv {
        Aes256Siv::new((&self.key).into())
    }

    /// The pseudonym of `name`; empty stays empty.
    pub fn pseudonym(&self, name: &str) -> String {
        if name.is_empty() || name.starts_with(PREFIX) || name == HIDDEN {
            return name.to_owned();
        }
        if self.hide {
            return HIDDEN.to_owned();
        }
        let sealed = self
            .cipher()
            .encrypt([b"custos-pseudonym"], name.as_bytes())
            .expect("AES-SIV encryption of a short string cannot fail");
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The name behind a pseudonym made with this key.
    pub fn reidentify(&self, pseudonym: &str) -> Result<String> {
        let Some(encoded) = pseudonym.strip_prefix(PREFIX) else {
            bail!("{pseudonym:?} is not a pseudonym (they start with {PREFIX})");
        };
        let sealed = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| anyhow!("{pseudonym:?} is damaged: {e}"))?;
        let name = self
            .cipher()
            .decrypt([b"custos-pseudonym"], &sealed)
            .map_err(|_| anyhow!("{pseudonym:?} was not made with this key"))?;
        String::from_utf8(name).map_err(|_| anyhow!("{pseudonym:?} does not hold text"))
    }

    /// `path` with the directory name right under /home replaced by its pseudonym.
    pub fn home_path(&self, path: &str) -> String {
        let Some(rest) = path.strip_prefix("/home/") else {
            return path.to_owned();
        };
        let (name, tail) = rest.split_once('/').map_or((rest, ""), |(n, t)| (n, t));
        if name.is_empty() {
            return path.to_owned();
        }
        let sep = if rest.contains('/') { "/" } else { "" };
        format!("/home/{}{sep}{tail}", self.pseudonym(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_and_reversible_only_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.key"), dir.path().join("b.key"));
        Pseudonymizer::write_new_key(&first).unwrap();
        Pseudonymizer::write_new_key(&second).unwrap();
        assert!(
            Pseudonymizer::write_new_key(&first).is_err(),
            "never overwrites a key"
        );
        let key = Pseudonymizer::from_key_file(&first).unwrap();
        let other = Pseudonymizer::from_key_file(&second).unwrap();
        let alice = key.pseudonym("alice");
        assert!(alice.starts_with(PREFIX) && !alice.contains("alice"));
        assert_eq!(alice, key.pseudonym("alice"));
        assert_ne!(alice, other.pseudonym("alice"));
        assert_eq!(key.reidentify(&alice).unwrap(), "alice");
        assert!(other.reidentify(&alice).is_err());
        assert_eq!(key.pseudonym(""), "");
        let home = key.home_path("/home/alice/notes.txt");
        assert_eq!(home, format!("/home/{alice}/notes.txt"));
        assert_eq!(key.home_path("/home/alice"), format!("/home/{alice}"));
        assert_eq!(key.home_path("/srv/alice"), "/srv/alice");
        std::fs::write(dir.path().join("bad.key"), "zz").unwrap();
        let Err(err) = Pseudonymizer::from_key_file(&dir.path().join("bad.key")) else {
            panic!("a two-digit key was accepted");
        };
        assert!(format!("{err:#}").contains("custos privacy-key"));
    }
}
