//! `custos access-report`: per person, what is granted, what was used within a period (with an
//! example) and what was not (revocation candidates), from this host's state or from the
//! fleet's summaries.
use std::collections::BTreeMap;

use serde::Serialize;

use super::usage::model::{Entitlement, Kind, Uses};
use crate::sinks::rfc3339;

/// One host's view of one person.
pub struct HostView {
    pub host: String,
    pub tracked_since: u64,
    pub entitlements: Vec<Entitlement>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Uses before this time do not count.
    pub since: String,
    /// Where the data came from.
    pub source: String,
    pub persons: Vec<PersonReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonReport {
    pub person: String,
    pub hosts: Vec<String>,
    pub tracked_since: String,
    pub used: Vec<UsedLine>,
    /// Granted, and not used within the period on any host.
    pub unused: Vec<UnusedLine>,
    /// Used within the period but no longer granted.
    pub no_longer_granted: Vec<UsedLine>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsedLine {
    pub kind: &'static str,
    pub name: String,
    /// Uses counted since the sensor first saw the entitlement, on these hosts.
    pub uses: u64,
    pub last_used: String,
    /// The last use: the file opened or the command run, and where.
    pub example: String,
    pub example_host: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnusedLine {
    pub kind: &'static str,
    pub name: String,
    pub granted_since: String,
    /// The hosts that grant it.
    pub hosts: Vec<String>,
}

/// One entitlement across hosts.
#[derive(Default)]
struct Merged {
    granted_on: Vec<String>,
    granted_since: Option<u64>,
    uses: Uses,
    example_host: String,
}

/// Unix seconds as RFC 3339.
pub fn time_text(seconds: u64) -> String {
    let mut out = Vec::new();
    let time = pbjson_types::Timestamp {
        seconds: seconds as i64,
        nanos: 0,
    };
    rfc3339::write(&time, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Builds the report for `people` (each with one view per host); `since` in Unix seconds.
pub fn build(people: BTreeMap<String, Vec<HostView>>, since: u64, source: String) -> Report {
    let persons = people
        .into_iter()
        .map(|(person, views)| person_report(person, &views, since))
        .collect();
    Report {
        since: time_text(since),
        source,
        persons,
    }
}

fn person_report(person: String, views: &[HostView], since: u64) -> PersonReport {
    let mut merged: BTreeMap<(Kind, String), Merged> = BTreeMap::new();
    for view in views {
        for entitlement in &view.entitlements {
            merge(&mut merged, view, entitlement);
        }
    }
    let mut report = PersonReport {
        person,
        hosts: views.iter().map(|v| v.host.clone()).collect(),
        tracked_since: time_text(views.iter().map(|v| v.tracked_since).min().unwrap_or(0)),
        used: Vec::new(),
        unused: Vec::new(),
        no_longer_granted: Vec::new(),
    };
    for ((kind, name), entry) in merged {
        let used_recently = entry.uses.count > 0 && entry.uses.last >= since;
        let granted = !entry.granted_on.is_empty();
        let line = || UsedLine {
            kind: kind.label(),
            name: name.clone(),
            uses: entry.uses.count,
            last_used: time_text(entry.uses.last),
            example: entry.uses.example.clone(),
            example_host: entry.example_host.clone(),
        };
        match (granted, used_recently) {
            (true, true) => report.used.push(line()),
            (false, true) => report.no_longer_granted.push(line()),
            (true, false) => report.unused.push(UnusedLine {
                kind: kind.label(),
                name: name.clone(),
                granted_since: entry.granted_since.map(time_text).unwrap_or_default(),
                hosts: entry.granted_on.clone(),
            }),
            (false, false) => {}
        }
    }
    report
}

fn merge(merged: &mut BTreeMap<(Kind, String), Merged>, view: &HostView, e: &Entitlement) {
    let entry = merged.entry((e.kind, e.name.clone())).or_default();
    if e.granted {
        entry.granted_on.push(view.host.clone());
        entry.granted_since = match (entry.granted_since, e.granted_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    if let Some(uses) = &e.uses {
        if uses.last >= entry.uses.last {
            entry.example_host.clone_from(&view.host);
        }
        entry.uses.merge(uses);
    }
}

/// The report for a person at a terminal.
pub fn render_text(report: &Report) -> String {
    let mut out = format!(
        "Entitlement usage since {} (from {})\n",
        report.since, report.source
    );
    if report.persons.is_empty() {
        out.push_str("\nNo person seen yet.\n");
    }
    for person in &report.persons {
        out.push_str(&format!(
            "\n{} (tracked since {}; hosts: {})\n",
            person.person,
            person.tracked_since,
            person.hosts.join(", ")
        ));
        section(&mut out, "used", &person.used, used_line);
        section(
            &mut out,
            "unused (revocation candidates)",
            &person.unused,
            |line| {
                format!(
                    "{:<16} {}  granted since {} on {}",
                    line.kind,
                    line.name,
                    line.granted_since,
                    line.hosts.join(", ")
                )
            },
        );
        section(
            &mut out,
            "used but no longer granted",
            &person.no_longer_granted,
            used_line,
        );
    }
    out
}

fn used_line(line: &UsedLine) -> String {
    format!(
        "{:<16} {}  {} uses, last {} on {}: {}",
        line.kind, line.name, line.uses, line.last_used, line.example_host, line.example
    )
}

fn section<T>(out: &mut String, title: &str, lines: &[T], show: impl Fn(&T) -> String) {
    if lines.is_empty() {
        return;
    }
    out.push_str(&format!("  {title}:\n"));
    for line in lines {
        out.push_str(&format!("    {}\n", show(line)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, granted: bool, last_used: Option<u64>) -> Entitlement {
        Entitlement {
            kind: Kind::Group,
            name: name.into(),
            granted,
            granted_since: granted.then_some(10),
            uses: last_used.map(|last| Uses {
                count: 2,
                last,
                example: format!("open /srv/{name}"),
            }),
            sudo_rule: None,
        }
    }

    #[test]
    fn hosts_merge_and_unused_means_unused_everywhere() {
        let view = |host: &str, entitlements| HostView {
            host: host.into(),
            tracked_since: 5,
            entitlements,
        };
        let people = BTreeMap::from([(
            "alice".to_owned(),
            vec![
                view(
                    "h1",
                    vec![group("a", true, Some(500)), group("b", true, None)],
                ),
                view(
                    "h2",
                    vec![group("a", true, None), group("b", true, Some(50))],
                ),
            ],
        )]);
        let report = build(people, 100, "test".into());
        let alice = &report.persons[0];
        assert_eq!(alice.hosts, ["h1", "h2"]);
        assert_eq!(alice.used.len(), 1);
        assert_eq!(
            (alice.used[0].uses, alice.used[0].example_host.as_str()),
            (2, "h1")
        );
        assert_eq!(alice.unused.len(), 1, "b was used only before the period");
        assert_eq!(alice.unused[0].hosts, ["h1", "h2"]);
        assert!(render_text(&report).contains("unused (revocation candidates)"));
    }
}
