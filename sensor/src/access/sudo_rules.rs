//! Sudo rights as `sudo -l -U USER` lists them, and whether a command run through sudo is one
//! of them.
use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// One command a person may run as some users.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SudoRule {
    /// Users the command may run as ("ALL" for any).
    pub runas: Vec<String>,
    /// "ALL", a program's path, a directory ending in "/", or a glob pattern.
    pub command: String,
    /// The arguments the rule fixes; `None` allows any ("" means none).
    pub args: Option<String>,
    /// The program the rule's path resolves to (sudo compares resolved files).
    pub resolved: Option<String>,
}

impl SudoRule {
    /// "(root) /usr/bin/systemctl restart nginx", as sudo lists it.
    pub fn display(&self) -> String {
        let mut text = format!("({}) {}", self.runas.join(", "), self.command);
        if let Some(args) = &self.args {
            text.push(' ');
            text.push_str(if args.is_empty() { "\"\"" } else { args });
        }
        text
    }

    /// Whether running `binary` with `args` (argv without argv[0]) as `target` is allowed by
    /// this rule.
    pub fn allows(&self, target: &str, binary: &str, args: &[String]) -> bool {
        let runs_as = self
            .runas
            .iter()
            .any(|user| user == "ALL" || user == target);
        runs_as && self.command_matches(binary) && self.args_match(args)
    }

    fn command_matches(&self, binary: &str) -> bool {
        let command = self.command.as_str();
        if command == "ALL" {
            return true;
        }
        if let Some(directory) = command.strip_suffix('/') {
            return Path::new(binary).parent() == Some(Path::new(directory));
        }
        if command.contains(['*', '?', '[']) {
            return glob::Pattern::new(command).is_ok_and(|p| p.matches(binary));
        }
        command == binary || self.resolved.as_deref() == Some(binary)
    }

    fn args_match(&self, args: &[String]) -> bool {
        match &self.args {
            None => true,
            Some(fixed) if fixed.contains(['*', '?', '[']) => {
                glob::Pattern::new(fixed).is_ok_and(|p| p.matches(&args.join(" ")))
            }
            Some(fixed) => *fixed == args.join(" "),
        }
    }
}

/// The sudo rules `user` has on this host; none when sudo is not installed.
pub fn rules_of(user: &str) -> Result<Vec<SudoRule>> {
    let output = match Command::new("sudo")
        .args(["-n", "-l", "-U", user])
        // Without a terminal sudo wraps at 80 columns.
        .env("COLUMNS", "100000")
        .env("LC_ALL", "C")
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).context("running sudo -l"),
    };
    if !output.status.success() {
        bail!(
            "sudo -l -U {user} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(parse_listing(&String::from_utf8_lossy(&output.stdout)))
}

/// The rules in `sudo -l` output: the lines after "may run the following commands", each
/// "(runas) [TAGS:] command, command", continued on lines indented further.
pub fn parse_listing(text: &str) -> Vec<SudoRule> {
    let mut entries: Vec<String> = Vec::new();
    let mut listing = false;
    for line in text.lines() {
        if line.contains("may run the following commands") {
            listing = true;
            continue;
        }
        let trimmed = line.trim();
        if !listing || trimmed.is_empty() {
            continue;
        }
        match entries.last_mut() {
            Some(last) if !trimmed.starts_with('(') && line.starts_with("        ") => {
                last.push(' ');
                last.push_str(trimmed);
            }
            _ => entries.push(trimmed.to_owned()),
        }
    }
    entries
        .iter()
        .flat_map(|entry| parse_entry(entry))
        .collect()
}

fn parse_entry(entry: &str) -> Vec<SudoRule> {
    let Some(rest) = entry.strip_prefix('(') else {
        return Vec::new();
    };
    let Some((runas, commands)) = rest.split_once(')') else {
        return Vec::new();
    };
    // "(ALL : ALL)": users before the colon; "(: wheel)" runs as the invoking user.
    let users = runas.split(':').next().unwrap_or_default();
    let runas: Vec<String> = users
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let runas = if runas.is_empty() {
        vec!["root".to_owned()]
    } else {
        runas
    };
    let commands = strip_tags(commands.trim());
    commands
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with('!'))
        .map(|c| command_rule(&runas, c))
        .collect()
}

/// Drops leading tags ("NOPASSWD: SETENV: ").
fn strip_tags(mut commands: &str) -> &str {
    while let Some((tag, rest)) = commands.split_once(':') {
        let is_tag = !tag.is_empty() && tag.chars().all(|c| c.is_ascii_uppercase() || c == '_');
        if !is_tag {
            break;
        }
        commands = rest.trim_start();
    }
    commands
}

fn command_rule(runas: &[String], command: &str) -> SudoRule {
    let (path, args) = match command.split_once(' ') {
        Some((path, args)) => {
            let args = args.trim();
            (path, Some(if args == "\"\"" { "" } else { args }))
        }
        None => (command, None),
    };
    let resolved = std::fs::canonicalize(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p != path);
    SudoRule {
        runas: runas.to_vec(),
        command: path.to_owned(),
        args: args.map(str::to_owned),
        resolved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "Matching Defaults entries for alice on vm:
    env_reset, mail_badpass, use_pty

User alice may run the following commands on vm:
    (root) /usr/bin/id, /usr/bin/whoami
    (ALL : ALL) NOPASSWD: /usr/bin/systemctl restart nginx, /usr/sbin/,
        /opt/tools/*
    (postgres) !/usr/bin/rm, ALL
";

    #[test]
    fn listings_parse_into_one_rule_per_command() {
        let rules = parse_listing(LISTING);
        let shown: Vec<String> = rules.iter().map(SudoRule::display).collect();
        assert_eq!(
            shown,
            [
                "(root) /usr/bin/id",
                "(root) /usr/bin/whoami",
                "(ALL) /usr/bin/systemctl restart nginx",
                "(ALL) /usr/sbin/",
                "(ALL) /opt/tools/*",
                "(postgres) ALL",
            ]
        );
        assert!(parse_listing("User bob is not allowed to run sudo on vm.\n").is_empty());
    }

    #[test]
    fn commands_match_by_target_path_and_arguments() {
        let rules = parse_listing(LISTING);
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(rules[0].allows("root", "/usr/bin/id", &args(&["-u"])));
        assert!(!rules[0].allows("postgres", "/usr/bin/id", &[]));
        assert!(rules[2].allows("www", "/usr/bin/systemctl", &args(&["restart", "nginx"])));
        assert!(!rules[2].allows("root", "/usr/bin/systemctl", &args(&["stop", "nginx"])));
        assert!(rules[3].allows("root", "/usr/sbin/useradd", &[]));
        assert!(!rules[3].allows("root", "/usr/sbin/x/y", &[]));
        assert!(rules[4].allows("root", "/opt/tools/dump", &[]));
        assert!(rules[5].allows("postgres", "/usr/bin/psql", &[]));
    }
}
