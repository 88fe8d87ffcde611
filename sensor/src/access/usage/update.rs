//! Changes to one person's usage: a use, a lookup of what the host grants, the bounds.
use super::{
    model::{key, Entitlement, Kind, PersonUsage, SudoRun, UsageState, Uses},
    observe::{role_entitlement, Used},
};
use crate::{access::grants::HostGrants, access::sudo_rules::SudoRule, config::AlertRule};

/// Records one use, keeping the person within `limit` entitlements and sudo commands.
pub fn record_use(usage: &mut PersonUsage, used: Used, at: u64, limit: usize) {
    match used {
        Used::Entitlement {
            kind,
            name,
            example,
        } => {
            entitlement_of(usage, kind, name)
                .uses
                .get_or_insert_with(Uses::default)
                .record(at, &example);
        }
        Used::SudoRun {
            target,
            binary,
            args,
        } => {
            let example = std::iter::once(binary.as_str())
                .chain(args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" ");
            let run = usage
                .sudo_runs
                .entry(format!("{target} {example}"))
                .or_insert_with(|| SudoRun {
                    target,
                    binary,
                    args,
                    uses: Uses::default(),
                });
            run.uses.record(at, &example);
        }
    }
    trim(usage, limit);
}

/// The person's entitlement `kind`/`name`, added (not granted, unused) if new.
fn entitlement_of(usage: &mut PersonUsage, kind: Kind, name: String) -> &mut Entitlement {
    usage
        .entitlements
        .entry(key(kind, &name))
        .or_insert_with(|| Entitlement {
            kind,
            name,
            granted: false,
            granted_since: None,
            uses: None,
            sudo_rule: None,
        })
}

/// Drops the least recently used entries past `limit`: ungranted entitlements and sudo runs
/// first, since granted ones are what the report is about.
fn trim(usage: &mut PersonUsage, limit: usize) {
    while usage.sudo_runs.len() > limit {
        let oldest = usage
            .sudo_runs
            .iter()
            .min_by_key(|(_, run)| run.uses.last)
            .map(|(k, _)| k.clone());
        oldest.map(|k| usage.sudo_runs.remove(&k));
    }
    while usage.entitlements.len() > limit {
        let oldest = usage
            .entitlements
            .iter()
            .min_by_key(|(_, e)| (e.granted, e.uses.as_ref().map_or(0, |u| u.last)))
            .map(|(k, _)| k.clone());
        oldest.map(|k| usage.entitlements.remove(&k));
    }
}

/// Makes room for one more person within `max`: the least recently seen go.
pub fn make_room(state: &mut UsageState, max: usize) {
    while !state.persons.is_empty() && state.persons.len() >= max.max(1) {
        let oldest = state
            .persons
            .iter()
            .min_by_key(|(_, usage)| usage.last_seen)
            .map(|(name, _)| name.clone());
        oldest.map(|name| state.persons.remove(&name));
    }
}

/// The role entitlements `roles` hold under `rules`.
pub fn role_grants(roles: &[String], rules: &[AlertRule]) -> Vec<String> {
    rules
        .iter()
        .flat_map(|rule| {
            roles
                .iter()
                .filter(|role| rule.allow_roles.contains(role))
                .map(move |role| role_entitlement(role, rule))
        })
        .collect()
}

/// Brings the granted flags in line with a lookup: new grants start now, grants no longer
/// found are kept with their uses but marked not granted.
pub fn apply_grants(usage: &mut PersonUsage, grants: &HostGrants, roles: Vec<String>, now: u64) {
    let mut found: Vec<(Kind, String, Option<SudoRule>)> = Vec::new();
    found.extend(grants.groups.iter().map(|g| (Kind::Group, g.clone(), None)));
    found.extend(grants.programs.iter().map(|(k, n)| (*k, n.clone(), None)));
    found.extend(roles.into_iter().map(|r| (Kind::Role, r, None)));
    let sudo_known = grants.sudo.is_some() || !grants.known;
    for rule in grants.sudo.iter().flatten() {
        found.push((Kind::Sudo, rule.display(), Some(rule.clone())));
    }
    for entitlement in usage.entitlements.values_mut() {
        let looked_up = entitlement.kind != Kind::Sudo || sudo_known;
        let still = found
            .iter()
            .any(|(k, n, _)| *k == entitlement.kind && *n == entitlement.name);
        if looked_up && !still {
            entitlement.granted = false;
        }
    }
    for (kind, name, rule) in found {
        let entry = entitlement_of(usage, kind, name);
        if !entry.granted {
            entry.granted = true;
            entry.granted_since = Some(now);
        }
        if rule.is_some() {
            entry.sudo_rule = rule;
        }
    }
    usage.grants_checked = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(groups: &[&str]) -> HostGrants {
        HostGrants {
            known: true,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            sudo: Some(Vec::new()),
            programs: Vec::new(),
        }
    }

    fn group_a_read() -> Used {
        Used::Entitlement {
            kind: Kind::Group,
            name: "a".into(),
            example: "open /srv/a".into(),
        }
    }

    #[test]
    fn grants_start_when_found_and_end_when_gone_keeping_their_uses() {
        let mut usage = PersonUsage::default();
        record_use(&mut usage, group_a_read(), 50, 10);
        apply_grants(&mut usage, &grants(&["a", "b"]), Vec::new(), 100);
        let a = &usage.entitlements["group:a"];
        assert!(a.granted && a.granted_since == Some(100));
        assert_eq!(a.uses.as_ref().unwrap().count, 1);
        apply_grants(&mut usage, &grants(&["b"]), Vec::new(), 200);
        assert!(!usage.entitlements["group:a"].granted);
        assert_eq!(usage.entitlements["group:b"].granted_since, Some(100));
    }

    #[test]
    fn bounds_drop_the_least_recent() {
        let mut usage = PersonUsage::default();
        for (at, name) in [(3, "x"), (1, "y"), (2, "z")] {
            let used = Used::Entitlement {
                kind: Kind::Setuid,
                name: name.into(),
                example: String::new(),
            };
            record_use(&mut usage, used, at, 2);
        }
        let names: Vec<&str> = usage
            .entitlements
            .values()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["x", "z"]);
        let mut state = UsageState::default();
        for (name, seen) in [("old", 1), ("new", 2)] {
            make_room(&mut state, 2);
            let person = PersonUsage {
                last_seen: seen,
                ..PersonUsage::default()
            };
            state.persons.insert(name.into(), person);
        }
        make_room(&mut state, 2);
        assert_eq!(state.persons.keys().collect::<Vec<_>>(), ["new"]);
    }

    #[test]
    fn uses_count_as_granted_until_the_grants_are_looked_up() {
        let mut usage = PersonUsage::default();
        record_use(&mut usage, group_a_read(), 50, 10);
        let granted = |usage: &PersonUsage| usage.resolved().iter().all(|e| e.granted);
        assert!(granted(&usage), "used before any lookup");
        apply_grants(&mut usage, &grants(&["b"]), Vec::new(), 100);
        let resolved = usage.resolved();
        let a = resolved.iter().find(|e| e.name == "a").expect("group a");
        assert!(!a.granted, "a lookup without it says it is gone");
    }
}
