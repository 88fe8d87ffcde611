//! Which entitlement an event used.

use custos_proto::v1::{event::Body, AccessBasis, AccessGrant, Event, FileOpen, Identity, Process};

use super::model::Kind;
use crate::{
    alert::{access_matches, in_set},
    config::{AccessKind, AlertRule},
    sinks::SharedParts,
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

/// Privileged programs by path: their entitlement's kind and name. Looked up for every exec;
/// hashed with foldhash, since the paths held are the sensor's own scan of root's program
/// directories, which an exec's path cannot add to.
pub type ProgramsByPath = foldhash::HashMap<String, (Kind, String)>;

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

/// The uses in `event`, whose parts held apart are `shared`. `programs` maps privileged
/// programs' paths to their entitlements.
pub fn uses_in(
    event: &Event,
    shared: &SharedParts,
    rules: &[AlertRule],
    programs: &ProgramsByPath,
) -> Vec<Used> {
    let Some(identity) = shared.identity(event) else {
        return Vec::new();
    };
    match &event.body {
        Some(Body::FileOpen(open)) if !open.repeat_summary && open.fd.is_some() => {
            let basis = shared.basis(event);
            let mut uses = group_use(identity, open, basis)
                .into_iter()
                .collect::<Vec<_>>();
            uses.extend(role_uses_of_open(identity, open, rules));
            uses
        }
        Some(Body::Exec(_)) => match shared.process(event) {
            Some(process) => {
                let parent = shared.parent(event);
                exec_uses(identity, parent, process, rules, programs)
            }
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// A command run through sudo, a privileged program run, a reserved program run by a role.
fn exec_uses(
    identity: &Identity,
    parent: Option<&Process>,
    process: &Process,
    rules: &[AlertRule],
    programs: &ProgramsByPath,
) -> Vec<Used> {
    let mut uses = Vec::new();
    let by_sudo = parent.is_some_and(|parent| parent.binary.ends_with("/sudo"));
    if by_sudo {
        uses.push(Used::SudoRun {
            target: identity.user.clone(),
            binary: process.binary.clone(),
            args: process.args.iter().skip(1).cloned().collect(),
        });
    }
    let command = || process.args.join(" ");
    if let Some((kind, name)) = programs.get(&process.binary) {
        uses.push(entitlement(*kind, name, &command()));
    }
    for rule in rules
        .iter()
        .filter(|r| r.programs.contains(&process.binary))
    {
        uses.extend(role_uses(identity, rule, &format!("ran {}", command())));
    }
    uses
}

/// A group grant made under the person's own account: the membership was used. `basis` is
/// the open's, held apart or not.
fn group_use(identity: &Identity, open: &FileOpen, basis: Option<&AccessBasis>) -> Option<Used> {
    let basis = basis?;
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
    rules
        .iter()
        .filter(|rule| {
            (in_set(rule, &open.path) && access_matches(rule.access, open))
                || (rule.removable_writes && removable && access_matches(AccessKind::Write, open))
        })
        .flat_map(|rule| role_uses(identity, rule, &format!("open {}", open.path)))
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

#[cfg(test)]
mod tests {
    use custos_proto::v1::{AccessBasis, Group, Person, PrivilegeHop, Process, ProcessExec};

    use super::*;

    /// The alert tests' finance rule, for the analyst role only.
    fn rule() -> AlertRule {
        AlertRule {
            removable_writes: false,
            allow_roles: vec!["analyst".into()],
            allow_groups: vec![],
            bulk_files: None,
            ..crate::alert::tests::rule()
        }
    }

    fn identity(user: &str, login: &str, roles: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            login_user: login.into(),
            person: Some(Person {
                roles: roles.iter().map(|r| r.to_string()).collect(),
                ..Person::default()
            }),
            ..Identity::default()
        }
    }

    fn group_open(identity: Identity, path: &str) -> Event {
        Event {
            identity: Some(Box::new(identity)),
            body: Some(Body::FileOpen(FileOpen {
                path: path.into(),
                fd: Some(3),
                basis: Some(Box::new(AccessBasis {
                    grant: AccessGrant::Group as i32,
                    group: Some(Group {
                        gid: 50,
                        name: "staff".into(),
                    }),
                    requested: "r".into(),
                    ..AccessBasis::default()
                })),
                ..FileOpen::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn group_and_role_uses_count_for_the_person_acting_as_themselves() {
        let rules = [rule()];
        let event = group_open(identity("alice", "alice", &["analyst"]), "/srv/finance/q3");
        let uses = uses_in(
            &event,
            &SharedParts::default(),
            &rules,
            &ProgramsByPath::default(),
        );
        let names: Vec<String> = uses
            .iter()
            .map(|u| match u {
                Used::Entitlement { kind, name, .. } => format!("{}:{name}", kind.label()),
                Used::SudoRun { .. } => "sudo".into(),
            })
            .collect();
        assert_eq!(names, ["group:staff", "role:analyst (rule finance)"]);
        // After sudo to root, root's groups are not alice's memberships.
        let as_root = group_open(identity("root", "alice", &["analyst"]), "/tmp/x");
        assert!(uses_in(
            &as_root,
            &SharedParts::default(),
            &rules,
            &ProgramsByPath::default()
        )
        .is_empty());
    }

    #[test]
    fn a_command_under_sudo_and_a_privileged_program_are_uses() {
        let exec = Event {
            identity: Some(Box::new(identity("root", "", &[]))),
            process: Some(Box::new(Process {
                binary: "/usr/bin/psql".into(),
                args: vec!["psql".into(), "-l".into()],
                ..Process::default()
            })),
            body: Some(Body::Exec(ProcessExec {
                parent: Some(Box::new(Process {
                    binary: "/usr/bin/sudo".into(),
                    ..Process::default()
                })),
            })),
            ..Event::default()
        };
        let programs: ProgramsByPath = [(
            "/usr/bin/psql".to_owned(),
            (Kind::FileCapability, "/usr/bin/psql (cap_x)".to_owned()),
        )]
        .into_iter()
        .collect();
        let uses = uses_in(&exec, &SharedParts::default(), &[], &programs);
        assert_eq!(
            uses[0],
            Used::SudoRun {
                target: "root".into(),
                binary: "/usr/bin/psql".into(),
                args: vec!["-l".into()],
            }
        );
        assert!(matches!(
            &uses[1],
            Used::Entitlement {
                kind: Kind::FileCapability,
                ..
            }
        ));
    }

    #[test]
    fn the_person_is_the_login_then_who_switched_then_the_user() {
        let mut id = identity("root", "", &[]);
        assert_eq!(person_of(&id), Some("root"));
        id.privilege_chain.push(PrivilegeHop {
            from_user: "bob".into(),
            to_user: "root".into(),
            program: "/usr/bin/sudo".into(),
            ..PrivilegeHop::default()
        });
        assert_eq!(person_of(&id), Some("bob"));
        id.login_user = "alice".into();
        assert_eq!(person_of(&id), Some("alice"));
    }
}
