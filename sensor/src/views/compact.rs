//! One line per event: time, who (person, user, login, where the session came from), what,
//! and where (host, program and pid), coloured on a terminal.
use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use custos_proto::v1::{
    event::Body, AlertSeverity, BlockDeviceChange, DeviceAction, Event, FileOpen, Identity,
    MountOperation, NetworkConnection, NetworkOperation, Session, SessionKind,
};

/// Writes the compact line of `event` (with a line end) to `out`.
pub fn write_line(event: &Event, color: bool, out: &mut String) {
    let paint = |style: Style, text: &str, out: &mut String| {
        if color {
            let _ = write!(out, "{}{text}{}", style.render(), style.render_reset());
        } else {
            out.push_str(text);
        }
    };
    let dim = Style::new().dimmed();
    let bold = Style::new().bold();
    paint(dim, &time_of(event), out);
    out.push(' ');
    let (kind, kind_style) = kind_label(event);
    paint(kind_style, &format!("{kind:<16}"), out);
    out.push(' ');
    paint(
        Style::new().fg_color(Some(AnsiColor::Cyan.into())),
        &who(event.identity.as_deref()),
        out,
    );
    out.push_str("  ");
    paint(bold, &what(event), out);
    out.push_str("  ");
    paint(dim, &place(event), out);
    out.push('\n');
}

/// `HH:MM:SS.mmm` in UTC.
fn time_of(event: &Event) -> String {
    let Some(time) = &event.time else {
        return "--:--:--.---".into();
    };
    let seconds = time.seconds.rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        time.nanos / 1_000_000
    )
}

fn kind_label(event: &Event) -> (String, Style) {
    let kind = event.kind().short_name().to_owned();
    let color = match &event.body {
        Some(Body::Alert(_)) => AnsiColor::Red,
        Some(Body::Loss(_)) => AnsiColor::Red,
        Some(Body::PrivilegeChange(_)) => AnsiColor::Magenta,
        Some(Body::SessionStart(_) | Body::SessionEnd(_)) => AnsiColor::Blue,
        Some(Body::FileOpen(open)) if open.denied => AnsiColor::Yellow,
        Some(Body::BlockDevice(_) | Body::DeviceControl(_) | Body::Mount(_)) => AnsiColor::Yellow,
        _ => AnsiColor::Green,
    };
    (kind, Style::new().fg_color(Some(color.into())))
}

/// `person (user→euser, login L, ssh from A)`: who acted and the person behind it.
pub fn who(identity: Option<&Identity>) -> String {
    let Some(identity) = identity else {
        return "-".into();
    };
    let mut text = String::new();
    if let Some(person) = identity.person.as_ref().filter(|p| !p.principal.is_empty()) {
        let _ = write!(text, "{} ", person.principal);
    }
    text.push_str(&identity.user);
    if identity.euser != identity.user {
        let _ = write!(text, "→{}", identity.euser);
    }
    let mut context = Vec::new();
    if !identity.login_user.is_empty() && identity.login_user != identity.user {
        context.push(format!("login {}", identity.login_user));
    }
    if let Some(session) = &identity.session {
        let kind = session_kind(session.kind);
        if session.remote_address.is_empty() {
            context.push(format!("{kind} session {}", session.id));
        } else {
            context.push(format!("{kind} from {}", session.remote_address));
        }
    }
    if !context.is_empty() {
        let _ = write!(text, " ({})", context.join(", "));
    }
    text
}

fn session_kind(kind: i32) -> &'static str {
    match SessionKind::try_from(kind) {
        Ok(SessionKind::Ssh) => "ssh",
        Ok(SessionKind::Tty) => "tty",
        Ok(SessionKind::Graphical) => "graphical",
        Ok(SessionKind::Cron) => "cron",
        Ok(SessionKind::Service) => "service",
        Ok(SessionKind::Container) => "container",
        _ => "session",
    }
}

/// What happened, in a few words.
pub fn what(event: &Event) -> String {
    let command = || {
        event.process.as_deref().map_or_else(String::new, |p| {
            if p.args.is_empty() {
                p.binary.clone()
            } else {
                p.args.join(" ")
            }
        })
    };
    match &event.body {
        Some(Body::Exec(_)) => command(),
        Some(Body::Exit(exit)) => match (exit.code, exit.signal) {
            (Some(code), _) => format!("exit {code}: {}", command()),
            (_, Some(signal)) => format!("killed by signal {signal}: {}", command()),
            _ => format!("exit: {}", command()),
        },
        Some(Body::FileOpen(open)) => file_open(open),
        Some(Body::PrivilegeChange(change)) => {
            let user = |c: &Option<Box<custos_proto::v1::Credentials>>| {
                c.as_ref().map_or_else(String::new, |c| c.euser.clone())
            };
            format!(
                "{} {} → {}",
                change.how,
                user(&change.before),
                user(&change.after)
            )
        }
        Some(Body::SessionStart(start)) => session("logon", start.session.as_ref()),
        Some(Body::SessionEnd(end)) => session("logoff", end.session.as_ref()),
        Some(Body::Network(connection)) => network(connection),
        Some(Body::BlockDevice(change)) => block_device(change),
        Some(Body::Mount(mount)) => {
            let verb = match MountOperation::try_from(mount.operation) {
                Ok(MountOperation::Unmount) => "unmount",
                _ => "mount",
            };
            format!(
                "{verb} {} {} ({})",
                mount.source, mount.target, mount.fstype
            )
        }
        Some(Body::DeviceControl(control)) => format!(
            "{} {} by rule {}",
            control.blocked_operation,
            control.device.as_ref().map_or("", |d| d.name.as_str()),
            control.rule
        ),
        Some(Body::DeviceWriteSummary(summary)) => format!(
            "{} write opens on {}",
            summary.write_opens,
            summary.device.as_ref().map_or("", |d| d.name.as_str())
        ),
        Some(Body::Alert(alert)) => format!(
            "ALERT {} [{}] {}",
            alert.rule_id,
            AlertSeverity::try_from(alert.severity).map_or("?", |s| s.as_str_name()),
            alert.description
        ),
        Some(Body::Loss(loss)) => format!("LOST {} events ({})", loss.count, loss.sink),
        Some(Body::AccessUsage(usage)) => format!("access usage of {}", usage.person),
        None => String::new(),
    }
}

fn file_open(open: &FileOpen) -> String {
    let access = open.access.unwrap_or_default();
    let mut verbs = Vec::new();
    for (on, verb) in [
        (access.create, "create"),
        (access.read, "read"),
        (access.write, "write"),
        (access.truncate, "truncate"),
        (access.append, "append"),
    ] {
        if on {
            verbs.push(verb);
        }
    }
    let mut text = format!("{} {}", verbs.join("+"), open.path);
    if open.denied || !open.error.is_empty() {
        let _ = write!(text, " DENIED {}", open.error);
    }
    text
}

fn session(verb: &str, session: Option<&Session>) -> String {
    let Some(session) = session else {
        return verb.into();
    };
    let mut text = format!(
        "{} {verb} {}",
        session_kind(session.kind),
        session.login_user
    );
    if !session.remote_address.is_empty() {
        let _ = write!(text, " from {}", session.remote_address);
    }
    text
}

fn network(connection: &NetworkConnection) -> String {
    let verb = match NetworkOperation::try_from(connection.operation) {
        Ok(NetworkOperation::Accept) => "accept",
        Ok(NetworkOperation::Listen) => "listen",
        Ok(NetworkOperation::Close) => "close",
        _ => "connect",
    };
    let peer = if connection.unix_path.is_empty() {
        format!("{}:{}", connection.remote_address, connection.remote_port)
    } else {
        connection.unix_path.clone()
    };
    let mut text = format!("{verb} {} {peer}", connection.protocol);
    if !connection.error.is_empty() {
        let _ = write!(text, " {}", connection.error);
    }
    text
}

fn block_device(change: &BlockDeviceChange) -> String {
    let action = DeviceAction::try_from(change.action).map_or("changed", |a| match a {
        DeviceAction::Added => "added",
        DeviceAction::MediaInserted => "media inserted",
        DeviceAction::MediaRemoved => "media removed",
        DeviceAction::Removed => "removed",
        DeviceAction::ReadOnlyChanged => "read-only changed",
        DeviceAction::Unspecified => "changed",
    });
    let Some(device) = &change.device else {
        return action.into();
    };
    let mut text = format!("{action} {} ({})", device.name, device.bus);
    if !device.backing_file.is_empty() {
        let _ = write!(text, " {}", device.backing_file);
    }
    text
}

/// `host comm[pid]`.
fn place(event: &Event) -> String {
    match &event.process {
        Some(process) => format!("{} {}[{}]", event.host, process.comm, process.pid),
        None => event.host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{FileAccess, Person, SessionRef};

    use super::*;

    #[test]
    fn a_denied_read_after_sudo_names_the_person_login_and_origin() {
        let event = Event {
            host: "web-1".into(),
            time: Some(pbjson_types::Timestamp {
                seconds: 3600 + 120 + 5,
                nanos: 7_000_000,
            }),
            identity: Some(Box::new(Identity {
                user: "alice".into(),
                euser: "root".into(),
                login_user: "alice".into(),
                person: Some(Person {
                    principal: "alice@corp".into(),
                    ..Person::default()
                }),
                session: Some(SessionRef {
                    id: 4,
                    kind: SessionKind::Ssh as i32,
                    remote_address: "10.0.0.5".into(),
                    remote_port: Some(50000),
                }),
                ..Identity::default()
            })),
            body: Some(Body::FileOpen(FileOpen {
                path: "/etc/shadow".into(),
                access: Some(FileAccess {
                    read: true,
                    ..FileAccess::default()
                }),
                denied: true,
                error: "EACCES".into(),
                ..FileOpen::default()
            })),
            ..Event::default()
        };
        let mut line = String::new();
        write_line(&event, false, &mut line);
        assert_eq!(
            line,
            "01:02:05.007 file_open        alice@corp alice→root (ssh from 10.0.0.5)  \
             read /etc/shadow DENIED EACCES  web-1\n"
        );
        let mut coloured = String::new();
        write_line(&event, true, &mut coloured);
        assert!(coloured.contains("\x1b["), "{coloured:?}");
    }
}
