//! Which events `custos tail` shows: by kind, user, person and path prefix.
use custos_proto::v1::{event::Body, Event};

/// Every condition given must hold; an empty filter shows everything.
#[derive(Clone, Debug, Default)]
pub struct TailFilter {
    /// Kinds by their short name (`exec`, `file_open`); any of them.
    pub kinds: Vec<String>,
    /// A user name: the real, effective or login user.
    pub user: Option<String>,
    /// A person: the identity map's principal, or the login user.
    pub person: Option<String>,
    /// A path the event names starts with this: the file, the program, the mount point.
    pub path_prefix: Option<String>,
}

impl TailFilter {
    /// Whether no condition was given (everything is shown).
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
            && self.user.is_none()
            && self.person.is_none()
            && self.path_prefix.is_none()
    }

    pub fn shows(&self, event: &Event) -> bool {
        let kind = event.kind().short_name();
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && self
                .user
                .as_ref()
                .is_none_or(|user| self.user_matches(event, user))
            && self
                .person
                .as_ref()
                .is_none_or(|p| person_matches(event, p))
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|prefix| paths(event).iter().any(|p| p.starts_with(prefix.as_str())))
    }

    fn user_matches(&self, event: &Event, user: &str) -> bool {
        event
            .identity
            .as_ref()
            .is_some_and(|i| i.user == user || i.euser == user || i.login_user == user)
    }
}

fn person_matches(event: &Event, person: &str) -> bool {
    event.identity.as_deref().is_some_and(|identity| {
        identity
            .person
            .as_ref()
            .is_some_and(|p| p.principal == person)
            || identity.login_user == person
    }) || matches!(&event.body, Some(Body::AccessUsage(usage)) if usage.person == person)
}

/// The paths an event names.
fn paths(event: &Event) -> Vec<&str> {
    let mut paths = Vec::new();
    match &event.body {
        Some(Body::FileOpen(open)) => paths.push(open.path.as_str()),
        Some(Body::Mount(mount)) => {
            paths.extend([mount.target.as_str(), mount.source.as_str()]);
        }
        Some(Body::Network(connection)) => paths.push(connection.unix_path.as_str()),
        _ => {}
    }
    if let Some(process) = &event.process {
        paths.extend([process.binary.as_str(), process.invoked_path.as_str()]);
    }
    paths.retain(|p| !p.is_empty());
    paths
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{FileOpen, Identity, Process};

    use super::*;

    fn open(path: &str, user: &str) -> Event {
        Event {
            identity: Some(Box::new(Identity {
                user: user.into(),
                euser: user.into(),
                login_user: "alice".into(),
                ..Identity::default()
            })),
            process: Some(Box::new(Process {
                binary: "/usr/bin/cat".into(),
                ..Process::default()
            })),
            body: Some(Body::FileOpen(FileOpen {
                path: path.into(),
                ..FileOpen::default()
            })),
            ..Event::default()
        }
    }

    #[test]
    fn every_condition_given_must_hold() {
        let filter = TailFilter {
            kinds: vec!["file_open".into()],
            user: Some("root".into()),
            person: Some("alice".into()),
            path_prefix: Some("/etc/".into()),
        };
        assert!(filter.shows(&open("/etc/shadow", "root")));
        assert!(!filter.shows(&open("/home/x", "root")));
        assert!(!filter.shows(&open("/etc/shadow", "bob")));
        let programs = TailFilter {
            path_prefix: Some("/usr/bin/".into()),
            ..TailFilter::default()
        };
        assert!(programs.shows(&open("/home/x", "bob")));
        let execs = TailFilter {
            kinds: vec!["exec".into()],
            ..TailFilter::default()
        };
        assert!(!execs.shows(&open("/etc/shadow", "root")));
        assert!(TailFilter::default().shows(&open("/x", "y")));
        assert!(TailFilter::default().is_empty() && !filter.is_empty());
    }
}
