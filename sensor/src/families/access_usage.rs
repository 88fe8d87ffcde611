//! The access-usage family: a person's entitlements and their use, summarised by the daemon
//! (no kernel record).
use std::time::SystemTime;

use custos_proto::v1::{event::Body, AccessUsage, EntitlementUsage, Event};

use super::Enricher;
use crate::{
    access::usage::model::{Kind, PersonUsage},
    identity::NameSource,
    privacy::pseudonym::Pseudonymizer,
};

impl<S: NameSource> Enricher<S> {
    /// A summary of `person`'s entitlements (about a person, not one action: no process).
    pub fn access_usage(&self, person: &str, usage: &PersonUsage) -> Event {
        let body = Body::AccessUsage(access_usage_body(person, usage));
        self.host_event(SystemTime::now(), body)
    }
}

/// The schema's AccessUsage for one person.
pub fn access_usage_body(person: &str, usage: &PersonUsage) -> AccessUsage {
    let seconds = |s: u64| pbjson_types::Timestamp {
        seconds: s as i64,
        nanos: 0,
    };
    let entitlements = usage
        .resolved()
        .into_iter()
        .map(|entitlement| {
            let uses = entitlement.uses.unwrap_or_default();
            EntitlementUsage {
                kind: entitlement.kind.schema() as i32,
                name: entitlement.name,
                granted: entitlement.granted,
                granted_since: entitlement.granted_since.map(seconds),
                last_used: (uses.count > 0).then(|| seconds(uses.last)),
                uses: uses.count,
                example: uses.example,
            }
        })
        .collect();
    AccessUsage {
        person: person.to_owned(),
        tracked_since: Some(seconds(usage.tracked_since)),
        entitlements,
    }
}

/// The person, group names and home-directory paths in examples.
pub(crate) fn pseudonymise(summary: &mut AccessUsage, p: &Pseudonymizer) {
    summary.person = p.pseudonym(&summary.person);
    for entitlement in &mut summary.entitlements {
        if entitlement.kind == Kind::Group.schema() as i32 {
            entitlement.name = p.pseudonym(&entitlement.name);
        }
        entitlement.example = entitlement
            .example
            .split(' ')
            .map(|word| p.home_path(word))
            .collect::<Vec<_>>()
            .join(" ");
    }
}

/// Without arguments collected, an example command keeps only its program.
pub fn drop_arguments(summary: &mut AccessUsage) {
    for entitlement in &mut summary.entitlements {
        let runs_a_command = [Kind::Sudo, Kind::Setuid, Kind::FileCapability]
            .iter()
            .any(|k| entitlement.kind == k.schema() as i32);
        if runs_a_command {
            let program = entitlement.example.split(' ').next().unwrap_or_default();
            entitlement.example = program.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::usage::model::{Entitlement, Uses};

    #[test]
    fn summaries_hide_the_person_groups_and_homes_and_may_drop_arguments() {
        let mut usage = PersonUsage::default();
        for (kind, name, example) in [
            (Kind::Group, "alice-team", "open /home/alice/notes (r)"),
            (Kind::Sudo, "(root) ALL", "/usr/bin/id -u"),
        ] {
            let entitlement = Entitlement {
                kind,
                name: name.into(),
                granted: true,
                granted_since: Some(1),
                uses: Some(Uses {
                    count: 1,
                    last: 2,
                    example: example.into(),
                }),
                sudo_rule: None,
            };
            usage.entitlements.insert(name.into(), entitlement);
        }
        let mut summary = access_usage_body("alice", &usage);
        pseudonymise(&mut summary, &Pseudonymizer::hiding());
        drop_arguments(&mut summary);
        let text = format!("{summary:?}");
        assert!(!text.contains("alice"), "{text}");
        let sudo = &summary.entitlements[0];
        assert_eq!(
            (sudo.name.as_str(), sudo.example.as_str()),
            ("(root) ALL", "/usr/bin/id")
        );
    }
}
