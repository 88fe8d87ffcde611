//! The organisation's view of its users: a map from user name or uid to the person's principal
//! (an email or Kerberos principal), display name, department and roles, read from a TOML or
//! CSV file the administrator maintains, and re-read when it changes.
//!
//! TOML:
//! ```toml
//! [[person]]
//! user = "alice"            # or: uid = 1001
//! principal = "alice@example.com"
//! display_name = "Alice Example"
//! department = "Finance"
//! roles = ["finance", "approver"]
//! ```
//! CSV (header required; roles separated by ';'):
//! `user,principal,display_name,department,roles`
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{anyhow, bail, Context as _, Result};
use custos_proto::v1::Person;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    person: Vec<Entry>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Entry {
    user: Option<String>,
    uid: Option<u32>,
    principal: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    department: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// People by user name and by uid.
#[derive(Debug, Default, PartialEq)]
pub struct People {
    by_name: HashMap<String, Person>,
    by_uid: HashMap<u32, Person>,
}

impl People {
    /// Parses a map; `origin` names it in errors. The format follows the file name (`.csv`),
    /// TOML otherwise. Every bad line is reported with its number.
    pub fn parse(text: &str, csv: bool, origin: &str) -> Result<Self> {
        let entries = if csv {
            parse_csv(text, origin)?
        } else {
            toml::from_str::<TomlFile>(text)
                .map_err(|e| anyhow!("{origin}: {}", crate::config::one_line(&e, text)))?
                .person
        };
        let mut people = People::default();
        for (index, entry) in entries.into_iter().enumerate() {
            let person = Person {
                principal: entry.principal.clone(),
                display_name: entry.display_name.clone(),
                department: entry.department.clone(),
                roles: entry.roles.clone(),
            };
            match (entry.user, entry.uid) {
                (Some(user), None) => {
                    people.by_name.insert(user, person);
                }
                (None, Some(uid)) => {
                    people.by_uid.insert(uid, person);
                }
                _ => bail!(
                    "{origin}: entry {}: give exactly one of user and uid",
                    index + 1
                ),
            }
        }
        Ok(people)
    }

    /// The person behind `uid` (whose NSS name is `name`, if it has one).
    pub fn lookup(&self, uid: u32, name: Option<&str>) -> Option<&Person> {
        self.by_uid
            .get(&uid)
            .or_else(|| name.and_then(|n| self.by_name.get(n)))
    }
}

fn parse_csv(text: &str, origin: &str) -> Result<Vec<Entry>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .with_context(|| format!("{origin}: reading the header line"))?
        .clone();
    let expected = ["user", "principal", "display_name", "department", "roles"];
    if headers.iter().collect::<Vec<_>>() != expected {
        bail!(
            "{origin}: line 1: the header must be {}",
            expected.join(",")
        );
    }
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                errors.push(format!("{err}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or_default().to_owned();
        let user = field(0);
        if user.is_empty() || field(1).is_empty() {
            errors.push(format!("line {line}: user and principal are required"));
            continue;
        }
        let (user, uid) = match user.parse::<u32>() {
            Ok(uid) => (None, Some(uid)),
            Err(_) => (Some(user), None),
        };
        entries.push(Entry {
            user,
            uid,
            principal: field(1),
            display_name: field(2),
            department: field(3),
            roles: field(4)
                .split(';')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
        });
    }
    if !errors.is_empty() {
        bail!("{origin}: {}", errors.join("; "));
    }
    Ok(entries)
}

/// The map file and what was last read from it; re-read when its modification time changes.
pub struct PeopleFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    pub people: People,
}

impl PeopleFile {
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = Self {
            path: path.to_path_buf(),
            modified: None,
            people: People::default(),
        };
        file.reload()?;
        Ok(file)
    }

    fn reload(&mut self) -> Result<()> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .with_context(|| format!("reading identity map {}", self.path.display()))?;
        crate::files::check_trusted(&self.path, "identity map")?;
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading identity map {}", self.path.display()))?;
        let csv = self.path.extension().is_some_and(|e| e == "csv");
        self.people = People::parse(&text, csv, &self.path.display().to_string())?;
        self.modified = Some(modified);
        Ok(())
    }

    /// Re-reads the map if it changed; a broken new version is refused and the old one kept.
    /// Returns whether the people changed.
    pub fn refresh(&mut self) -> bool {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == self.modified {
            return false;
        }
        match self.reload() {
            Ok(()) => {
                tracing::info!(map = %self.path.display(), "identity map reloaded");
                true
            }
            Err(err) => {
                // Do not retry a broken file on every tick; wait for the next change.
                self.modified = modified;
                tracing::error!(
                    "identity map not reloaded, the previous one stays in force: {err:#}"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_maps_users_by_name_or_uid() {
        let people = People::parse(
            "[[person]]\nuser = \"alice\"\nprincipal = \"alice@example.com\"\nroles = [\"finance\"]\n\
             [[person]]\nuid = 1002\nprincipal = \"bob@example.com\"\ndepartment = \"IT\"\n",
            false,
            "map.toml",
        )
        .unwrap();
        let alice = people.lookup(1001, Some("alice")).unwrap();
        assert_eq!(alice.principal, "alice@example.com");
        assert_eq!(alice.roles, vec!["finance"]);
        assert_eq!(people.lookup(1002, None).unwrap().department, "IT");
        assert!(people.lookup(7, Some("nobody")).is_none());
    }

    #[test]
    fn csv_maps_with_roles_and_comments() {
        let people = People::parse(
            "user,principal,display_name,department,roles\n# comment\nalice, alice@example.com, Alice, Finance, finance;approver\n1003,carol@example.com,,,\n",
            true,
            "map.csv",
        )
        .unwrap();
        assert_eq!(
            people.lookup(1, Some("alice")).unwrap().roles,
            vec!["finance", "approver"]
        );
        assert_eq!(
            people.lookup(1003, None).unwrap().principal,
            "carol@example.com"
        );
    }

    #[test]
    fn bad_lines_are_rejected_with_their_numbers() {
        let err = People::parse(
            "user,principal,display_name,department,roles\nalice,a@x,A,F,r\n,missing@x,,,\nbob,,,,\n",
            true,
            "map.csv",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3") && err.contains("line 4"), "{err}");
        let err = People::parse("user,principal\nalice,a@x\n", true, "map.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = People::parse(
            "[[person]]\nuser = \"a\"\nprincipl = \"x\"\n",
            false,
            "map.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3") && err.contains("principl"), "{err}");
        let err = People::parse(
            "[[person]]\nuser = \"a\"\nuid = 1\nprincipal = \"x\"\n",
            false,
            "map.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exactly one"), "{err}");
    }
}
