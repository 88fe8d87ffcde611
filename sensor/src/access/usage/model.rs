//! What is known of each person's entitlements and their use: the state the daemon keeps and
//! `custos access-report` reads.
use std::collections::BTreeMap;

use custos_proto::v1::EntitlementKind;
use serde::{Deserialize, Serialize};

use crate::access::sudo_rules::SudoRule;

/// Kinds of entitlement, as `EntitlementKind` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Group,
    Sudo,
    Role,
    Setuid,
    FileCapability,
}

impl Kind {
    pub fn schema(self) -> EntitlementKind {
        match self {
            Kind::Group => EntitlementKind::Group,
            Kind::Sudo => EntitlementKind::Sudo,
            Kind::Role => EntitlementKind::Role,
            Kind::Setuid => EntitlementKind::Setuid,
            Kind::FileCapability => EntitlementKind::FileCapability,
        }
    }

    pub fn from_schema(kind: EntitlementKind) -> Option<Self> {
        Some(match kind {
            EntitlementKind::Group => Kind::Group,
            EntitlementKind::Sudo => Kind::Sudo,
            EntitlementKind::Role => Kind::Role,
            EntitlementKind::Setuid => Kind::Setuid,
            EntitlementKind::FileCapability => Kind::FileCapability,
            EntitlementKind::Unspecified => return None,
        })
    }

    /// Its name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Group => "group",
            Kind::Sudo => "sudo",
            Kind::Role => "role",
            Kind::Setuid => "setuid",
            Kind::FileCapability => "file_capability",
        }
    }
}

/// Uses of something: how many, the last one and what it was. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uses {
    pub count: u64,
    pub last: u64,
    /// The last use: the file opened or the command run.
    pub example: String,
}

impl Uses {
    pub fn record(&mut self, at: u64, example: &str) {
        self.count += 1;
        if at >= self.last {
            self.last = at;
            example.clone_into(&mut self.example);
        }
    }

    /// Adds `other`'s uses (from another host or another sudo command).
    pub fn merge(&mut self, other: &Uses) {
        self.count += other.count;
        if other.last >= self.last {
            self.last = other.last;
            other.example.clone_into(&mut self.example);
        }
    }
}

/// One entitlement of a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    pub kind: Kind,
    pub name: String,
    /// Granted at the last check of the host.
    pub granted: bool,
    /// When the sensor first found it granted.
    pub granted_since: Option<u64>,
    #[serde(default)]
    pub uses: Option<Uses>,
    /// A sudo entitlement's rule; its uses are the person's sudo runs that it allows.
    #[serde(default)]
    pub sudo_rule: Option<SudoRule>,
}

/// Commands one person ran through sudo, by target user and command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SudoRun {
    pub target: String,
    pub binary: String,
    pub args: Vec<String>,
    pub uses: Uses,
}

/// What is known of one person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonUsage {
    /// First and last activity the sensor saw (Unix seconds).
    pub tracked_since: u64,
    pub last_seen: u64,
    /// When the host's grants were last looked up.
    pub grants_checked: Option<u64>,
    /// Identity-map roles, as the last event carried them.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Keyed by `kind:name`.
    #[serde(default)]
    pub entitlements: BTreeMap<String, Entitlement>,
    /// Keyed by "target command line".
    #[serde(default)]
    pub sudo_runs: BTreeMap<String, SudoRun>,
}

impl PersonUsage {
    /// The entitlements with their uses, sudo rules' uses taken from the runs they allow.
    /// Until the host's grants are first looked up, an entitlement used counts as granted: the
    /// use showed it was held, and nothing yet says it is gone.
    pub fn resolved(&self) -> Vec<Entitlement> {
        let unchecked = self.grants_checked.is_none();
        self.entitlements
            .values()
            .map(|entitlement| {
                let mut entitlement = entitlement.clone();
                if let Some(rule) = &entitlement.sudo_rule {
                    entitlement.uses = self.sudo_uses(rule);
                }
                entitlement.granted |= unchecked && entitlement.uses.is_some();
                entitlement
            })
            .collect()
    }

    fn sudo_uses(&self, rule: &SudoRule) -> Option<Uses> {
        let mut total: Option<Uses> = None;
        for run in self.sudo_runs.values() {
            if rule.allows(&run.target, &run.binary, &run.args) {
                total.get_or_insert_with(Uses::default).merge(&run.uses);
            }
        }
        total
    }
}

/// Every person's usage; what the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageState {
    pub version: u32,
    pub persons: BTreeMap<String, PersonUsage>,
}

pub const STATE_VERSION: u32 = 1;

/// The key of an entitlement in [`PersonUsage::entitlements`].
pub fn key(kind: Kind, name: &str) -> String {
    format!("{}:{name}", kind.label())
}
