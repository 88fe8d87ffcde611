//! Which entitlement an event used.
use std::collections::HashMap;

use custos_proto::v1::{event::Body, AccessGrant, Event, FileOpen, Identity};

use super::model::Kind;
use crate::{
    alert::{access_matches, in_set},
    config::{AccessKind, AlertRule},
};

/// One use seen in an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Used {
    Entitlement {
        kind: Kind,
        name: String,
        example: String,
    },
    /// A command run through sudo; which rule allowed it is decided against the rules.
    SudoRun {
        target: String,
        binary: String,
        args: Vec<String>,
    },
}

/// Programs that switch a person to another user.
const USER_SWITCHERS: &[&str] = &["sudo", "su", "doas", "run0", "pkexec", "runuser"];

/// The person an identity stands for: the login user; without a login, the user who switched
/// through sudo or su (the first such hop of the privilege chain); else the user.
pub fn person_of(identity: &Identity) -> Option<&str> {
    let switched_from = identity
        .privilege_chain
        .iter()
        .find(|hop| {
            let program = hop.program.rsplit('/').next().unwrap_or_default();
            USER_SWITCHERS.contains(&program)
        })
        .map(|hop| hop.from_user.as_str());
    [identity.login_user.as_str()]
        .into_iter()
        .chain(switched_from)
        .chain([identity.user.as_str()])
        .find(|name| !name.is_empty())
}

/// Role entitlements' names: "ROLE (rule ID)".
pub fn role_entitlement(role: &str, rule: &AlertRule) -> String {
    format!("{role} (rule {})", rule.id)
}

/// The uses in `event`. `programs` maps privileged programs' paths to their entitlements.
pub fn uses_in(
    event: &Event,
    rules: &[AlertRule],
    programs: &HashMap<String, (Kind, String)>,
) -> Vec<Used> {
    let Some(identity) = &event.identity else {
        return Vec::new();
    };
    match &event.body {
        Some(Body::FileOpen(open)) if !open.repeat_summary && open.fd.is_some() => {
            let mut uses = group_use(identity, open).into_iter().collect::<Vec<_>>();
            uses.extend(role_uses_of_open(identity, open, rules));
            uses
        }
        Some(Body::Exec(exec)) => {
            let Some(process) = &event.process else {
                return Vec::new();
            };
            let mut uses = Vec::new();
            let command = process.args.join(" ");
            let by_sudo = exec
                .parent
                .as_ref()
                .is_some_and(|parent| parent.binary.ends_with("/sudo"));
            if by_sudo {
                uses.push(Used::SudoRun {
                    target: identity.user.clone(),
                    binary: process.binary.clone(),
                    args: process.args.iter().skip(1).cloned().collect(),
                });
            }
            if let Some((kind, name)) = programs.get(&process.binary) {
                uses.push(entitlement(*kind, name, &command));
            }
            for rule in rules
                .iter()
                .filter(|r| r.programs.contains(&process.binary))
            {
                uses.extend(role_uses(identity, rule, &format!("ran {command}")));
            }
            uses
        }
        _ => Vec::new(),
    }
}

/// A group grant made under the person's own account: the membership was used.
fn group_use(identity: &Identity, open: &FileOpen) -> Option<Used> {
    let basis = open.basis.as_ref()?;
    let own_account = person_of(identity) == Some(identity.user.as_str());
    let group_grant = basis.grant == AccessGrant::Group as i32
        || (basis.grant == AccessGrant::Acl as i32 && basis.group.is_some());
    if !own_account || !group_grant {
        return None;
    }
    let group = basis.group.as_ref()?;
    if group.name.is_empty() {
        return None;
    }
    let example = format!("open {} ({})", open.path, basis.requested);
    Some(entitlement(Kind::Group, &group.name, &example))
}

fn role_uses_of_open(identity: &Identity, open: &FileOpen, rules: &[AlertRule]) -> Vec<Used> {
    let removable = open.device.as_ref().is_some_and(|d| d.watched);
    let example = format!("open {}", open.path);
    rules
        .iter()
        .filter(|rule| {
            (in_set(rule, &open.path) && access_matches(rule.access, open))
                || (rule.removable_writes && removable && access_matches(AccessKind::Write, open))
        })
        .flat_map(|rule| role_uses(identity, rule, &example))
        .collect()
}

fn role_uses(identity: &Identity, rule: &AlertRule, example: &str) -> Vec<Used> {
    let roles = identity
        .person
        .as_ref()
        .map(|p| p.roles.as_slice())
        .unwrap_or_default();
    roles
        .iter()
        .filter(|role| rule.allow_roles.contains(role))
        .map(|role| entitlement(Kind::Role, &role_entitlement(role, rule), example))
        .collect()
}

fn entitlement(kind: Kind, name: &str, example: &str) -> Used {
    Used::Entitlement {
        kind,
        name: name.to_owned(),
        example: example.to_owned(),
    }
}
