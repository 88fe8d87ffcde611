//! Least-privilege alerts: access that Unix permissions allowed but the organisation's roles do
//! not, denied attempts on sensitive files, bulk collection, and bulk egress.
//!
//! Rules are evaluated on every file-open, exec and network event with the real identity
//! (before any pseudonymisation); the sensitive paths are also kept by the kernel filters so
//! that no path rule hides them.
mod egress;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant, SystemTime},
};

use custos_proto::v1::{
    event::Body, Alert, AlertReason, AlertSeverity, Event, FileOpen, Identity, NetworkConnection,
};

use crate::{
    config::{AccessKind, AlertRule, Severity},
    families::timestamp,
};

/// Distinct (rule, identity) pairs tracked for bulk collection before the oldest state is
/// dropped.
const MAX_BULK_KEYS: usize = 10_000;
/// Paths named in a bulk-collection alert.
const MAX_ALERT_PATHS: usize = 100;

struct Bulk {
    window_start: Instant,
    files: HashSet<String>,
    fired: bool,
}

#[derive(Default)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    bulk: HashMap<(usize, u32), Bulk>,
    egress: egress::EgressCounter,
}

impl AlertEngine {
    pub fn new(rules: Vec<AlertRule>) -> Self {
        Self {
            egress: egress::EgressCounter::new(&rules),
            rules,
            bulk: HashMap::new(),
        }
    }

    /// True when `path` is in one of the rules' sensitive sets.
    pub fn in_sensitive_set(&self, path: &str) -> bool {
        self.rules.iter().any(|rule| in_set(rule, path))
    }

    /// New rules (on reload); bulk counting starts over.
    pub fn replace_rules(&mut self, rules: Vec<AlertRule>) {
        *self = Self::new(rules);
    }

    /// The alerts `event` (already numbered) raises.
    /// Whether any rule is configured (else [`Self::evaluate`] reads nothing).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    pub fn evaluate(&mut self, event: &Event) -> Vec<Event> {
        if self.rules.is_empty() {
            return Vec::new();
        }
        match &event.body {
            Some(Body::FileOpen(open)) if !open.repeat_summary => self.file_open(event, open),
            Some(Body::Exec(_)) => self.exec(event),
            Some(Body::Network(connection)) => self.network(event, connection),
            _ => Vec::new(),
        }
    }

    /// Bulk egress, counted on each connection's end.
    fn network(&mut self, event: &Event, connection: &NetworkConnection) -> Vec<Event> {
        let Some(identity) = &event.identity else {
            return Vec::new();
        };
        let mut alerts = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let Some(crossing) = self.egress.count(index, rule, identity, connection) else {
                continue;
            };
            let description = format!(
                "{} sent {} bytes to destinations outside {}'s internal networks within {} \
                 minutes (threshold {})",
                display(identity),
                crossing.bytes,
                rule.id,
                rule.egress_minutes,
                rule.egress_bytes.unwrap_or(0)
            );
            let mut raised = alert(event, rule, AlertReason::BulkEgress, description, vec![]);
            if let Some(Body::Alert(body)) = raised.body.as_mut() {
                body.destinations = crossing.destinations;
                body.bytes = crossing.bytes;
            }
            alerts.push(raised);
        }
        alerts
    }

    /// Programs reserved for some roles.
    fn exec(&mut self, event: &Event) -> Vec<Event> {
        // Exec and file events always carry one.
        let Some(identity) = &event.identity else {
            return Vec::new();
        };
        let binary = event
            .process
            .as_ref()
            .map(|p| p.binary.as_str())
            .unwrap_or_default();
        let mut alerts = Vec::new();
        for rule in &self.rules {
            if rule.programs.iter().any(|p| p == binary) && !allowed(rule, identity) {
                let description = format!(
                    "{} ran {binary}, which {} reserves for other roles",
                    display(identity),
                    rule.id
                );
                alerts.push(alert(
                    event,
                    rule,
                    AlertReason::ProgramOutsideRole,
                    description,
                    vec![binary.to_owned()],
                ));
            }
        }
        alerts
    }

    fn file_open(&mut self, event: &Event, open: &FileOpen) -> Vec<Event> {
        // Exec and file events always carry one.
        let Some(identity) = &event.identity else {
            return Vec::new();
        };
        let removable = open.device.as_ref().is_some_and(|d| d.watched);
        let mut alerts = Vec::new();
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            if rule.removable_writes
                && removable
                && open.fd.is_some()
                && access_matches(AccessKind::Write, open)
                && !allowed(rule, identity)
            {
                let device = open
                    .device
                    .as_ref()
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                let description = format!(
                    "{} wrote {} on removable device {device}, which {} reserves for other roles",
                    display(identity),
                    open.path,
                    rule.id
                );
                let paths = vec![open.path.clone()];
                alerts.push(alert(
                    event,
                    rule,
                    AlertReason::RemovableWrite,
                    description,
                    paths,
                ));
            }
            if !in_set(rule, &open.path) || !access_matches(rule.access, open) {
                continue;
            }
            let (reason, description, paths) = if open.denied {
                (
                    AlertReason::DeniedAttempt,
                    format!(
                        "{} was refused {} in {}",
                        display(identity),
                        open.path,
                        rule.id
                    ),
                    vec![open.path.clone()],
                )
            } else if open.fd.is_some() && !allowed(rule, identity) {
                (
                    AlertReason::AccessOutsideRole,
                    format!(
                        "{} opened {} in {}, which none of their roles or groups may access",
                        display(identity),
                        open.path,
                        rule.id
                    ),
                    vec![open.path.clone()],
                )
            } else if let Some(paths) = self.bulk_exceeded(index, identity, open) {
                let rule = &self.rules[index];
                (
                    AlertReason::BulkCollection,
                    format!(
                        "{} opened more than {} distinct files in {} within {} minutes",
                        display(identity),
                        rule.bulk_files.unwrap_or(0),
                        rule.id,
                        rule.bulk_minutes
                    ),
                    paths,
                )
            } else {
                continue;
            };
            alerts.push(alert(event, &self.rules[index], reason, description, paths));
        }
        alerts
    }

    /// Counts a successful open for the rule's bulk threshold; the files, the first time the
    /// identity goes over it in a window.
    fn bulk_exceeded(
        &mut self,
        rule: usize,
        identity: &Identity,
        open: &FileOpen,
    ) -> Option<Vec<String>> {
        let limit = self.rules[rule].bulk_files?;
        // Only opens that succeeded read anything.
        open.fd?;
        let window = Duration::from_secs(self.rules[rule].bulk_minutes * 60);
        if self.bulk.len() >= MAX_BULK_KEYS {
            self.bulk.clear();
        }
        let who = identity.login_uid.unwrap_or(identity.uid);
        let state = self.bulk.entry((rule, who)).or_insert_with(|| Bulk {
            window_start: Instant::now(),
            files: HashSet::new(),
            fired: false,
        });
        if state.window_start.elapsed() >= window {
            *state = Bulk {
                window_start: Instant::now(),
                files: HashSet::new(),
                fired: false,
            };
        }
        state.files.insert(open.path.clone());
        if state.files.len() > limit && !state.fired {
            state.fired = true;
            let mut paths: Vec<String> = state.files.iter().cloned().collect();
            paths.sort();
            paths.truncate(MAX_ALERT_PATHS);
            return Some(paths);
        }
        None
    }
}

/// The alert `rule` raises about `event`.
fn alert(
    event: &Event,
    rule: &AlertRule,
    reason: AlertReason,
    description: String,
    paths: Vec<String>,
) -> Event {
    Event {
        seq: 0,
        time: Some(timestamp(SystemTime::now())),
        body: Some(Body::Alert(Alert {
            rule_id: rule.id.clone(),
            severity: severity(rule.severity) as i32,
            reason: reason as i32,
            description,
            trigger_seqs: vec![event.seq],
            paths,
            ..Alert::default()
        })),
        ..event.clone()
    }
}

pub(crate) fn in_set(rule: &AlertRule, path: &str) -> bool {
    rule.paths
        .iter()
        .any(|prefix| path.starts_with(prefix.as_str()))
}

pub(crate) fn access_matches(kind: AccessKind, open: &FileOpen) -> bool {
    let access = open.access.unwrap_or_default();
    let writes = access.write || access.create || access.truncate || access.append;
    match kind {
        AccessKind::Any => true,
        AccessKind::Read => access.read,
        AccessKind::Write => writes,
    }
}

/// Whether one of the identity's roles (the person behind the login) or groups is allowed.
fn allowed(rule: &AlertRule, identity: &Identity) -> bool {
    let roles = identity
        .person
        .as_ref()
        .map(|p| p.roles.as_slice())
        .unwrap_or_default();
    if roles.iter().any(|r| rule.allow_roles.contains(r)) {
        return true;
    }
    let mut groups = identity
        .groups
        .iter()
        .map(|g| g.name.as_str())
        .chain([identity.group.as_str(), identity.egroup.as_str()]);
    groups.any(|g| !g.is_empty() && rule.allow_groups.iter().any(|a| a == g))
}

/// "alice@example.com", or "alice@example.com (as root)" after a change of user.
fn display(identity: &Identity) -> String {
    let login = match (&identity.person, identity.login_user.as_str()) {
        (Some(person), _) if !person.principal.is_empty() => person.principal.clone(),
        (_, login) if !login.is_empty() => login.to_owned(),
        _ => identity.user.clone(),
    };
    let acting_as_someone_else =
        !identity.login_user.is_empty() && identity.user != identity.login_user;
    if acting_as_someone_else {
        format!("{login} (as {})", identity.user)
    } else {
        login
    }
}

fn severity(severity: Severity) -> AlertSeverity {
    match severity {
        Severity::Low => AlertSeverity::Low,
        Severity::Medium => AlertSeverity::Medium,
        Severity::High => AlertSeverity::High,
        Severity::Critical => AlertSeverity::Critical,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use custos_proto::v1::{FileAccess, Group, Person};

    use super::*;

    /// A rule guarding /srv/finance/ and psql for the finance role and the auditors group.
    pub(crate) fn rule() -> AlertRule {
        AlertRule {
            id: "finance".into(),
            severity: Severity::High,
            paths: vec!["/srv/finance/".into()],
            programs: vec!["/usr/bin/psql".into()],
            removable_writes: true,
            allow_roles: vec!["finance".into()],
            allow_groups: vec!["auditors".into()],
            access: AccessKind::Any,
            bulk_files: Some(2),
            bulk_minutes: 10,
            egress_bytes: None,
            egress_minutes: 10,
            internal_networks: vec![],
        }
    }

    fn open(seq: u64, path: &str, roles: &[&str], denied: bool) -> Event {
        Event {
            seq,
            identity: Some(Box::new(Identity {
                user: "alice".into(),
                uid: 1000,
                login_uid: Some(1000),
                login_user: "alice".into(),
                groups: vec![Group {
                    gid: 5,
                    name: "staff".into(),
                }],
                person: Some(Person {
                    principal: "alice@example.com".into(),
                    roles: roles.iter().map(|r| r.to_string()).collect(),
                    ..Person::default()
                }),
                ..Identity::default()
            })),
            body: Some(Body::FileOpen(FileOpen {
                path: path.into(),
                access: Some(FileAccess {
                    read: true,
                    ..FileAccess::default()
                }),
                fd: (!denied).then_some(3),
                denied,
                ..FileOpen::default()
            })),
            ..Event::default()
        }
    }

    fn reasons(alerts: &[Event]) -> Vec<(AlertReason, Vec<u64>)> {
        alerts
            .iter()
            .map(|a| match &a.body {
                Some(Body::Alert(alert)) => (alert.reason(), alert.trigger_seqs.clone()),
                _ => panic!("not an alert"),
            })
            .collect()
    }

    #[test]
    fn roles_decide_and_denied_attempts_always_alert() {
        let mut engine = AlertEngine::new(vec![rule()]);
        let outside = engine.evaluate(&open(7, "/srv/finance/q3.xlsx", &["engineering"], false));
        assert_eq!(
            reasons(&outside),
            [(AlertReason::AccessOutsideRole, vec![7])]
        );
        let Some(Body::Alert(alert)) = &outside[0].body else {
            unreachable!()
        };
        assert!(alert
            .description
            .starts_with("alice@example.com opened /srv/finance/q3.xlsx"));
        assert!(engine
            .evaluate(&open(8, "/srv/finance/q3.xlsx", &["finance"], false))
            .is_empty());
        assert!(engine
            .evaluate(&open(9, "/srv/other/x", &["engineering"], false))
            .is_empty());
        let denied = engine.evaluate(&open(10, "/srv/finance/payroll", &["finance"], true));
        assert_eq!(reasons(&denied), [(AlertReason::DeniedAttempt, vec![10])]);
    }

    #[test]
    fn reserved_programs_and_removable_writes_need_the_role() {
        let mut engine = AlertEngine::new(vec![rule()]);
        let mut exec = open(20, "/x", &["engineering"], false);
        exec.body = Some(Body::Exec(Default::default()));
        exec.process = Some(Box::new(custos_proto::v1::Process {
            binary: "/usr/bin/psql".into(),
            ..Default::default()
        }));
        let alerts = engine.evaluate(&exec);
        assert_eq!(
            reasons(&alerts),
            [(AlertReason::ProgramOutsideRole, vec![20])]
        );
        let removable_write = |seq, roles: &[&str]| {
            let mut event = open(seq, "/media/usb/out.txt", roles, false);
            if let Some(Body::FileOpen(open)) = &mut event.body {
                open.access = Some(FileAccess {
                    write: true,
                    ..FileAccess::default()
                });
                open.device = Some(Box::new(custos_proto::v1::BlockDevice {
                    name: "sdb1".into(),
                    watched: true,
                    ..Default::default()
                }));
            }
            event
        };
        let alerts = engine.evaluate(&removable_write(21, &["engineering"]));
        assert_eq!(reasons(&alerts), [(AlertReason::RemovableWrite, vec![21])]);
        assert!(engine
            .evaluate(&removable_write(22, &["finance"]))
            .is_empty());
    }

    #[test]
    fn bulk_collection_fires_once_past_the_threshold() {
        let mut engine = AlertEngine::new(vec![rule()]);
        for (seq, file) in [(1, "a"), (2, "b"), (3, "b")] {
            let path = format!("/srv/finance/{file}");
            assert!(engine
                .evaluate(&open(seq, &path, &["finance"], false))
                .is_empty());
        }
        let alerts = engine.evaluate(&open(4, "/srv/finance/c", &["finance"], false));
        assert_eq!(reasons(&alerts), [(AlertReason::BulkCollection, vec![4])]);
        assert!(engine
            .evaluate(&open(5, "/srv/finance/d", &["finance"], false))
            .is_empty());
    }
}
