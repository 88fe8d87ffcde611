//! Entitlement usage per person: what the host grants each person the sensor sees act, and
//! which of it their actions used. Kept in a state file across restarts, bounded, and sent as
//! periodic `access_usage` summaries.
pub mod model;
pub mod observe;
pub mod state_file;
mod update;
pub mod worker;

use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use custos_proto::v1::Event;

use crate::{
    access::grants::{privileged_programs, PrivilegedProgram},
    config::{AccessConfig, AlertRule},
    sinks::SharedParts,
};
use model::{PersonUsage, UsageState};
use observe::ProgramsByPath;
use worker::{Answer, GrantsWorker, Request};

/// The state is written at most this often while it changes, and at shutdown.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// Grant lookups started per housekeeping tick at most.
const LOOKUPS_PER_TICK: usize = 16;

pub struct UsageTracker {
    path: PathBuf,
    config: AccessConfig,
    rules: Vec<AlertRule>,
    state: UsageState,
    /// Privileged programs by path: their entitlement.
    programs: ProgramsByPath,
    worker: GrantsWorker,
    /// Persons whose grants were asked for and not answered yet.
    asked: HashSet<String>,
    dirty: bool,
    last_save: Instant,
    next_summary: Instant,
    next_program_scan: Instant,
}

/// Privileged programs' entitlements by the programs' paths.
fn programs_by_path(programs: &[PrivilegedProgram]) -> ProgramsByPath {
    programs
        .iter()
        .map(|p| (p.path.clone(), (p.kind, p.name.clone())))
        .collect()
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl UsageTracker {
    /// Loads the state and starts looking up grants.
    pub fn start(config: &AccessConfig, rules: Vec<AlertRule>) -> Result<Self> {
        let path = config.state_file();
        let state = state_file::load(&path)?;
        // Scanned before the sensor is ready, so that no run of one goes unnoticed; later
        // scans run on the worker.
        let programs = privileged_programs(&config.program_dirs);
        let by_path = programs_by_path(&programs);
        let worker = GrantsWorker::spawn(config.program_dirs.clone(), programs)?;
        let now = Instant::now();
        Ok(Self {
            path,
            config: config.clone(),
            rules,
            state,
            programs: by_path,
            worker,
            asked: HashSet::new(),
            dirty: false,
            last_save: now,
            next_summary: now + Duration::from_secs(config.summary_seconds),
            next_program_scan: now + Duration::from_secs(config.refresh_seconds),
        })
    }

    /// New alert rules (on reload): role entitlements follow them at the next lookup.
    pub fn replace_rules(&mut self, rules: Vec<AlertRule>) {
        self.rules = rules;
        for person in self.state.persons.values_mut() {
            person.grants_checked = None;
        }
    }

    /// Records the person behind `event` and the entitlements it used; `shared` holds the
    /// parts it goes without.
    pub fn observe(&mut self, event: &Event, shared: &SharedParts) {
        let Some(identity) = shared.identity(event) else {
            return;
        };
        let Some(person) = observe::person_of(identity) else {
            return;
        };
        let at = event
            .time
            .as_ref()
            .map_or_else(unix_now, |t| t.seconds.max(0) as u64);
        let roles = identity.person.as_ref().map(|p| p.roles.as_slice());
        let known = self.seen(person, at, roles.unwrap_or_default());
        let uses = observe::uses_in(event, shared, &self.rules, &self.programs);
        if uses.is_empty() && known {
            return;
        }
        let limit = self.config.max_entitlements;
        if let Some(usage) = self.state.persons.get_mut(person) {
            for used in uses {
                update::record_use(usage, used, at, limit);
            }
        }
        self.dirty = true;
    }

    /// Marks `person` seen at `at`; false when they were new or their roles changed.
    fn seen(&mut self, person: &str, at: u64, roles: &[String]) -> bool {
        if let Some(usage) = self.state.persons.get_mut(person) {
            // Kept in memory; on its own it does not make the state worth writing.
            if usage.last_seen < at {
                usage.last_seen = at;
            }
            if usage.roles.as_slice() == roles {
                return true;
            }
            usage.roles = roles.to_vec();
            usage.grants_checked = None;
            return false;
        }
        update::make_room(&mut self.state, self.config.max_persons);
        let usage = PersonUsage {
            tracked_since: at,
            last_seen: at,
            roles: roles.to_vec(),
            ..PersonUsage::default()
        };
        self.state.persons.insert(person.to_owned(), usage);
        false
    }

    /// Takes the grant lookups' answers, starts the lookups due, writes the state when it
    /// changed, and returns the summaries due.
    pub fn housekeep(&mut self) -> Vec<(String, PersonUsage)> {
        let now = unix_now();
        let answers: Vec<Answer> = self.worker.answers().collect();
        for answer in answers {
            self.apply(answer, now);
        }
        self.ask_due(now);
        self.save_when_due();
        let summaries_on = self.config.summary_seconds > 0;
        if !summaries_on || Instant::now() < self.next_summary {
            return Vec::new();
        }
        self.next_summary = Instant::now() + Duration::from_secs(self.config.summary_seconds);
        self.state
            .persons
            .iter()
            .filter(|(_, usage)| usage.grants_checked.is_some())
            .map(|(name, usage)| (name.clone(), usage.clone()))
            .collect()
    }

    fn apply(&mut self, answer: Answer, now: u64) {
        match answer {
            Answer::Programs(programs) => self.programs = programs_by_path(&programs),
            Answer::Person(person, grants) => {
                self.asked.remove(&person);
                if let Some(usage) = self.state.persons.get_mut(&person) {
                    let roles = update::role_grants(&usage.roles, &self.rules);
                    update::apply_grants(usage, &grants, roles, now);
                    self.dirty = true;
                }
            }
        }
    }

    fn ask_due(&mut self, now: u64) {
        if Instant::now() >= self.next_program_scan {
            self.next_program_scan =
                Instant::now() + Duration::from_secs(self.config.refresh_seconds);
            self.worker.ask(Request::Programs);
        }
        let refresh = self.config.refresh_seconds;
        let due: Vec<String> = self
            .state
            .persons
            .iter()
            .filter(|(name, usage)| {
                !self.asked.contains(*name)
                    && usage
                        .grants_checked
                        .is_none_or(|checked| now.saturating_sub(checked) >= refresh)
            })
            .map(|(name, _)| name.clone())
            .take(LOOKUPS_PER_TICK)
            .collect();
        for person in due {
            self.asked.insert(person.clone());
            self.worker.ask(Request::Person(person));
        }
    }

    /// Writes the state if it changed and the last write is [`SAVE_EVERY`] old.
    pub fn save_when_due(&mut self) {
        if self.dirty && self.last_save.elapsed() >= SAVE_EVERY {
            self.save();
        }
    }

    /// Writes the state file; a failure is logged and retried at the next tick.
    pub fn save(&mut self) {
        self.last_save = Instant::now();
        match state_file::save(&self.path, &self.state) {
            Ok(()) => self.dirty = false,
            Err(err) => tracing::error!(
                path = %self.path.display(),
                "access usage not saved, retrying: {err:#}"
            ),
        }
    }
}
