//! `custos access-report`: where its data comes from and how it is printed.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result};

use super::{
    fleet::{self, FleetSource},
    report::{build, render_text, HostView},
    usage::{state_file, unix_now},
};
use crate::config::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub struct ReportRequest {
    /// The daemon's configuration (for its state directory); the embedded default without.
    pub config: Option<PathBuf>,
    /// "30d", "12h": uses older than this do not count.
    pub since: String,
    pub person: Option<String>,
    pub format: Format,
    /// Build the fleet's report from this NATS server's stream instead of this host's state.
    pub nats: Option<FleetSource>,
}

/// The report, ready to print.
pub fn run(request: &ReportRequest) -> Result<String> {
    let period = humantime::parse_duration(&request.since).with_context(|| {
        format!(
            "--since {:?}: use a duration such as 30d or 12h",
            request.since
        )
    })?;
    let since = unix_now().saturating_sub(period.as_secs());
    let (mut people, source) = match &request.nats {
        Some(fleet) => (
            fleet_views(fleet)?,
            format!("{} stream {}", fleet.url, fleet.stream),
        ),
        None => local_views(request.config.as_ref())?,
    };
    if let Some(person) = &request.person {
        people.retain(|name, _| name == person);
    }
    let report = build(people, since, source);
    Ok(match request.format {
        Format::Text => render_text(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
    })
}

fn local_views(config: Option<&PathBuf>) -> Result<(BTreeMap<String, Vec<HostView>>, String)> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default()?,
    };
    let path = config.access.state_file();
    let state = state_file::read(&path)?;
    let host = nix::unistd::gethostname()
        .context("gethostname")?
        .to_string_lossy()
        .into_owned();
    let people = state
        .persons
        .into_iter()
        .map(|(person, usage)| {
            let view = HostView {
                host: host.clone(),
                tracked_since: usage.tracked_since,
                entitlements: usage.resolved(),
            };
            (person, vec![view])
        })
        .collect();
    Ok((people, path.display().to_string()))
}

fn fleet_views(source: &FleetSource) -> Result<BTreeMap<String, Vec<HostView>>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(fleet::read(source))
}
