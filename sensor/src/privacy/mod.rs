//! Privacy by design: what leaves the host about people, and in which form.
//!
//! Applied to every event after the alert rules saw it (they need the real identity) and
//! before any sink or stream gets it.
pub mod pseudonym;
pub mod redact;
pub mod report;

use anyhow::Result;
use custos_proto::v1::{event::Body, Event, Identity, Process};

use crate::config::{NameView, PrivacyConfig};
use pseudonym::Pseudonymizer;

pub struct Privacy {
    argv: bool,
    pseudonyms: Option<Pseudonymizer>,
}

impl Privacy {
    /// What the sinks get.
    pub fn new(config: &PrivacyConfig) -> Result<Self> {
        let pseudonyms = match (&config.key_file, config.pseudonymize) {
            (Some(key), true) => Some(Pseudonymizer::from_key_file(key)?),
            _ => None,
        };
        Ok(Self {
            argv: config.argv,
            pseudonyms,
        })
    }

    /// Real names and arguments: what root sees on the live stream.
    pub fn unrestricted() -> Self {
        Self {
            argv: true,
            pseudonyms: None,
        }
    }

    /// A view (a sink's, a group's on the live stream) with its own name handling.
    pub fn for_view(argv: bool, names: NameView, config: &PrivacyConfig) -> Result<Self> {
        let pseudonyms = match (names, &config.key_file) {
            (NameView::Real, _) => None,
            (NameView::Pseudonym, Some(key)) => Some(Pseudonymizer::from_key_file(key)?),
            (NameView::Pseudonym, None) => anyhow::bail!("pseudonyms need privacy.key_file"),
            (NameView::Hidden, _) => Some(Pseudonymizer::hiding()),
        };
        Ok(Self { argv, pseudonyms })
    }

    /// Whether [`Self::apply`] may change the parts the table shares: an event's processes
    /// (arguments, pseudonyms) or its identity (pseudonyms).
    pub fn rewrites_shared_parts(&self) -> bool {
        !self.argv || self.pseudonyms.is_some()
    }

    pub fn apply(&self, event: &mut Event) {
        if !self.argv {
            for process in processes(event) {
                process.args.clear();
                process.args_raw.clear();
                process.args_truncated = false;
            }
            if let Some(Body::AccessUsage(summary)) = &mut event.body {
                crate::families::drop_arguments(summary);
            }
        }
        let Some(p) = &self.pseudonyms else {
            return;
        };
        // Free text (alert descriptions) names people too: replace the names it may hold
        // before the identity itself is rewritten.
        let names = event.identity.as_deref().map(names_of).unwrap_or_default();
        if let Some(Body::Alert(alert)) = &mut event.body {
            for name in &names {
                alert.description = alert.description.replace(name.as_str(), &p.pseudonym(name));
            }
            for path in &mut alert.paths {
                *path = p.home_path(path);
            }
        }
        if let Some(identity) = &mut event.identity {
            pseudonymize_identity(p, identity);
        }
        for process in processes(event) {
            pseudonymize_process(p, process);
        }
        if let Some(body) = &mut event.body {
            crate::families::pseudonymise(body, p);
        }
    }
}

/// The event's process and, for an exec, its parent.
fn processes(event: &mut Event) -> Vec<&mut Process> {
    let mut out: Vec<&mut Process> = event.process.as_deref_mut().into_iter().collect();
    if let Some(Body::Exec(exec)) = &mut event.body {
        out.extend(exec.parent.as_deref_mut());
    }
    out
}

fn names_of(identity: &Identity) -> Vec<String> {
    let mut names = vec![identity.user.clone(), identity.login_user.clone()];
    if let Some(person) = &identity.person {
        names.push(person.principal.clone());
        names.push(person.display_name.clone());
    }
    names.retain(|n| !n.is_empty());
    // Longest first, so "alice@example.com" goes before "alice".
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names
}

fn pseudonymize_identity(p: &Pseudonymizer, identity: &mut Identity) {
    let name = |s: &mut String| *s = p.pseudonym(s);
    name(&mut identity.user);
    name(&mut identity.euser);
    name(&mut identity.login_user);
    name(&mut identity.group);
    name(&mut identity.egroup);
    for group in &mut identity.groups {
        name(&mut group.name);
    }
    if let Some(person) = &mut identity.person {
        name(&mut person.principal);
        name(&mut person.display_name);
    }
    for hop in &mut identity.privilege_chain {
        name(&mut hop.from_user);
        name(&mut hop.to_user);
        hop.program = p.home_path(&hop.program);
    }
}

fn pseudonymize_process(p: &Pseudonymizer, process: &mut Process) {
    process.binary = p.home_path(&process.binary);
    process.binary_raw.clear();
    process.invoked_path = p.home_path(&process.invoked_path);
    process.invoked_path_raw.clear();
    process.cwd = p.home_path(&process.cwd);
    process.cwd_raw.clear();
    for arg in &mut process.args {
        if arg.starts_with("/home/") {
            *arg = p.home_path(arg);
        }
    }
    process.args_raw.clear();
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{BlockDevice, DeviceWriteSummary};

    use super::*;

    /// Hidden names leave no home directory's owner in a device-write summary's backing file.
    #[test]
    fn device_write_summaries_lose_the_name_in_home_paths() {
        let config = crate::config::Config::embedded_default().unwrap().privacy;
        let hidden = Privacy::for_view(true, NameView::Hidden, &config).unwrap();
        let mut event = Event {
            body: Some(Body::DeviceWriteSummary(DeviceWriteSummary {
                device: Some(Box::new(BlockDevice {
                    backing_file: "/home/alice/disk.img".into(),
                    ..BlockDevice::default()
                })),
                ..DeviceWriteSummary::default()
            })),
            ..Event::default()
        };
        hidden.apply(&mut event);
        let Some(Body::DeviceWriteSummary(summary)) = &event.body else {
            panic!("body changed");
        };
        let backing = &summary.device.as_ref().unwrap().backing_file;
        assert!(!backing.contains("alice"), "{backing}");
        assert!(backing.ends_with("/disk.img"), "{backing}");
    }
}
