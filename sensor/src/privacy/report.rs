//! `custos privacy-report`: what a configuration collects about people and where it goes, in
//! words an auditor or a works council can check against the purpose.
use std::fmt::Write as _;

use crate::config::{Config, FileEvents, NameView};

pub fn render(config: &Config) -> String {
    let names = if config.privacy.pseudonymize {
        "replaced by keyed pseudonyms (\"ps_...\"); only the holder of the key file can turn them \
         back into names"
    } else {
        "collected as they are"
    };
    let mut out = String::new();
    people(&mut out, config, names);
    let _ = writeln!(out, "\nWhich activity:");
    if config.sensors.process {
        processes(&mut out, config);
    }
    if config.sensors.file {
        files(&mut out, config);
    }
    if config.sensors.network {
        network(&mut out, config);
    }
    if config.sensors.devices {
        let _ = writeln!(
            out,
            "- drives and loop devices attached (vendor, model, serial number), who was at the \
             local seat, mounts, and every file opened for writing on removable media, with a \
             summary per person and device every {} s;",
            config.devices.summary_seconds
        );
    }
    access_usage(&mut out, config, names);
    alerts(&mut out, config);
    let _ = writeln!(out, "\nWhere it goes:");
    sinks(&mut out, config, names);
    live_stream(&mut out, config);
    out
}

/// What is known about each person: ids, names, the login behind them, directory data.
fn people(out: &mut String, config: &Config, names: &str) {
    let _ = writeln!(out, "What Custos collects with this configuration\n");
    let _ = writeln!(out, "About every person whose processes run on this host:");
    let _ = writeln!(
        out,
        "- numeric user and group ids, and user and group names ({names});"
    );
    let _ = writeln!(
        out,
        "- the user who logged in behind sudo or su, their login session (how they logged in, \
         the SSH client's address, terminal) and the chain of users they switched through;"
    );
    match &config.identity.map {
        Some(map) => {
            let _ = writeln!(
                out,
                "- from the identity map {}: principal, display name, department and roles \
                 ({names});",
                map.display()
            );
        }
        None => {
            let _ = writeln!(out, "- no directory data (no identity map is configured);");
        }
    }
}

fn processes(out: &mut String, config: &Config) {
    let p = &config.privacy;
    let argv = match (p.argv, p.redact_secrets) {
        (false, _) => "without their arguments".to_owned(),
        (true, true) => format!(
            "with their arguments, in which passwords, tokens and keys are replaced by \
             [REDACTED] before anything is stored ({} built-in patterns plus {} of your own)",
            super::redact::BUILT_IN.len(),
            p.secret_patterns.len()
        ),
        (true, false) => "with their full arguments (secrets are NOT redacted)".to_owned(),
    };
    let _ = writeln!(
        out,
        "- every program started, {argv}, its working directory, and when it ended;"
    );
    let _ = writeln!(
        out,
        "- every change of user, group or capabilities, and every refused attempt;"
    );
}

fn files(out: &mut String, config: &Config) {
    let (f, p) = (&config.file, &config.privacy);
    let _ = write!(
        out,
        "- files opened: path, access (read/write/create), result"
    );
    match p.file_events {
        FileEvents::All => {}
        FileEvents::NoHome => {
            let _ = write!(
                out,
                ", nothing under /home/ except sensitive sets and removable media"
            );
        }
        FileEvents::SensitiveAndRemovable => {
            let _ = write!(out, ", only in sensitive sets and on removable media");
        }
    }
    if f.writes_only {
        let _ = write!(out, ", only opens that can modify a file");
    }
    if !f.include_paths.is_empty() {
        let _ = write!(out, ", only under {}", f.include_paths.join(", "));
    }
    if !f.exclude_paths.is_empty() {
        let _ = write!(out, ", never under {}", f.exclude_paths.join(", "));
    }
    let _ = writeln!(
        out,
        "; refused opens are always reported{};",
        if p.pseudonymize {
            " (the name in /home/<name> paths is pseudonymised)"
        } else {
            ""
        }
    );
}

/// Entitlement usage: kept on the host, summarised to the sinks.
fn access_usage(out: &mut String, config: &Config, names: &str) {
    let a = &config.access;
    if config.sensors.file && config.file.access_basis {
        let _ = writeln!(
            out,
            "- for each file open, which grant allowed it (owner, group, others, an ACL entry, \
             a capability) and the file's owner and group ({names});"
        );
    }
    if !a.usage {
        return;
    }
    let _ = write!(
        out,
        "- per person (up to {}): their group memberships, sudo rules, roles and the \
         set-user-id programs they may run, when each was last used and how often, with the \
         last file or command as an example; kept in {} across restarts",
        a.max_persons,
        a.state_file().display()
    );
    if a.summary_seconds > 0 {
        let _ = write!(
            out,
            ", and sent to the sinks as a summary per person every {} s ({names})",
            a.summary_seconds
        );
    }
    let _ = writeln!(out, ";");
}

fn alerts(out: &mut String, config: &Config) {
    if config.alerts.rules.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nAlerts (evaluated on the host, with real names):");
    for rule in &config.alerts.rules {
        let _ = writeln!(
            out,
            "- {}: opens under [{}], runs of [{}]{} by anyone outside roles [{}] and groups [{}]{}",
            rule.id,
            rule.paths.join(", "),
            rule.programs.join(", "),
            if rule.removable_writes {
                " and writes to removable media"
            } else {
                ""
            },
            rule.allow_roles.join(", "),
            rule.allow_groups.join(", "),
            rule.bulk_files.map_or(String::new(), |n| format!(
                ", and more than {n} files within {} minutes by anyone",
                rule.bulk_minutes
            ))
        );
    }
}

fn sinks(out: &mut String, config: &Config, names: &str) {
    for sink in &config.sinks {
        let name = sink.name();
        match config.privacy.sink_views.iter().find(|v| v.sink == name) {
            Some(view) => {
                let shown = match view.names {
                    NameView::Real => names,
                    NameView::Pseudonym => "as keyed pseudonyms",
                    NameView::Hidden => "left out",
                };
                let argv = if view.argv { "" } else { ", without arguments" };
                let _ = writeln!(out, "- {name} (names {shown}{argv})");
            }
            None => {
                let _ = writeln!(out, "- {name} (names {names})");
            }
        }
    }
}

fn live_stream(out: &mut String, config: &Config) {
    if config.tail.socket.as_os_str().is_empty() {
        let _ = writeln!(out, "- no live stream");
        return;
    }
    let _ = writeln!(
        out,
        "- the live stream ({}) to root, with real names",
        config.tail.socket.display()
    );
    for view in &config.tail.groups {
        let shown = match view.names {
            NameView::Real => "real names",
            NameView::Pseudonym => "pseudonyms",
            NameView::Hidden => "no names",
        };
        let _ = writeln!(
            out,
            "- the live stream to members of group {}, with {shown}{}",
            view.group,
            if view.argv { "" } else { " and no arguments" }
        );
    }
}

/// The network family's line: what each connection event holds, and what the rules leave out.
fn network(out: &mut String, config: &Config) {
    let network = &config.network;
    let mut left_out = Vec::new();
    if !network.loopback {
        left_out.push("connections with loopback addresses".to_owned());
    }
    if !network.exclude_addresses.is_empty() || !network.include_addresses.is_empty() {
        left_out.push("the networks the address rules exclude".to_owned());
    }
    if !network.exclude_ports.is_empty() || !network.include_ports.is_empty() {
        left_out.push("the ports the port rules exclude".to_owned());
    }
    if !network.exclude_users.is_empty() || !network.include_users.is_empty() {
        left_out.push("the users the user rules exclude".to_owned());
    }
    let left_out = if left_out.is_empty() {
        String::new()
    } else {
        format!("; left out: {}", left_out.join(", "))
    };
    let _ = writeln!(
        out,
        "- network connections made, accepted and offered (connect, accept, listen, UDP bind) \
         and Unix-socket connects: both ends' IP addresses and ports as they are (addresses are \
         not pseudonymised), the Unix socket path, the protocol, the error of a failed connect, \
         and when a TCP connection ends its duration and the bytes sent and received (not their \
         content){left_out};"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_follows_the_configuration() {
        let default = render(&Config::embedded_default().unwrap());
        assert!(default.contains("collected as they are"));
        assert!(default.contains("[REDACTED]"));
        assert!(default.contains("- stdout"));
        let private = Config::parse(
            "[privacy]\nargv = false\npseudonymize = true\nkey_file = \"/k\"\n\
             [file]\nexclude_paths = [\"/home/\"]\n[[sinks]]\ntype = \"stdout\"\n",
            "test",
        )
        .unwrap();
        let report = render(&private);
        assert!(report.contains("without their arguments"));
        assert!(report.contains("keyed pseudonyms"));
        assert!(report.contains("never under /home/"));
    }
}
