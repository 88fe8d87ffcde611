//! Which OCSF class each family becomes, and the class's own attributes.
//!
//! exec, exit and privilege changes: Process Activity (1007: Launch, Terminate, Set User ID);
//! file opens and mounts: File System Activity (1001); sessions: Authentication (3002: Logon,
//! Logoff); block devices, device control and device write summaries: Peripheral Activity
//! (1010); network connections: Network Activity (4001); alerts: Detection Finding (2004);
//! losses and access-usage summaries: Base Event (0), their content in `unmapped`.
use custos_proto::v1::{
    event::Body, Alert, AlertSeverity, BlockDeviceChange, DeviceAction, DeviceControl,
    DeviceControlAction, Event, FileOpen, Mount, MountOperation, NetworkConnection,
    NetworkOperation, Session, SessionKind,
};
use serde_json::{json, Map, Value};

use super::{objects, Class};

const SYSTEM: (u32, &str) = (1, "System Activity");
const FINDINGS: (u32, &str) = (2, "Findings");
const IAM: (u32, &str) = (3, "Identity & Access Management");
const NETWORK: (u32, &str) = (4, "Network Activity");

fn class(
    (uid, name): (u32, &'static str),
    (category_uid, category_name): (u32, &'static str),
    (activity_id, activity_name): (u32, &'static str),
) -> Class {
    Class {
        uid,
        name,
        category_uid,
        category_name,
        activity_id,
        activity_name,
        severity_id: 1,
        fields: Map::new(),
    }
}

const PROCESS_ACTIVITY: (u32, &str) = (1007, "Process Activity");
const FILE_ACTIVITY: (u32, &str) = (1001, "File System Activity");
const PERIPHERAL_ACTIVITY: (u32, &str) = (1010, "Peripheral Activity");

/// The class of `event`, with its attributes filled in.
pub(super) fn of(event: &Event) -> Class {
    match &event.body {
        Some(Body::Exec(exec)) => {
            let mut c = class(PROCESS_ACTIVITY, SYSTEM, (1, "Launch"));
            this_process(event, &mut c);
            if let Some(parent) = &exec.parent {
                let actor = c.fields.entry("actor").or_insert_with(|| json!({}));
                actor["process"] = objects::process(parent, None);
            }
            c
        }
        Some(Body::Exit(exit)) => {
            let mut c = class(PROCESS_ACTIVITY, SYSTEM, (2, "Terminate"));
            this_process(event, &mut c);
            let code = exit.code.or(exit.signal.map(|s| 128 + s as i32));
            if let Some(code) = code {
                c.fields.insert("exit_code".into(), json!(code));
            }
            c
        }
        Some(Body::PrivilegeChange(change)) => {
            let mut c = class(PROCESS_ACTIVITY, SYSTEM, (5, "Set User ID"));
            this_process(event, &mut c);
            status(&mut c, change.errno, &change.error);
            if change.escalation {
                c.severity_id = 3;
            }
            c
        }
        Some(Body::FileOpen(open)) => file_open(open),
        Some(Body::Mount(mount)) => self::mount(mount),
        Some(Body::SessionStart(start)) => session(start.session.as_ref(), (1, "Logon")),
        Some(Body::SessionEnd(end)) => session(end.session.as_ref(), (2, "Logoff")),
        Some(Body::BlockDevice(change)) => block_device(change),
        Some(Body::DeviceControl(control)) => device_control(control),
        Some(Body::DeviceWriteSummary(summary)) => {
            let mut c = class(PERIPHERAL_ACTIVITY, SYSTEM, (99, "Write Summary"));
            if let Some(device) = &summary.device {
                peripheral(&mut c, device);
            }
            c.fields.insert("count".into(), json!(summary.write_opens));
            let (start, end) = (summary.start.as_ref(), summary.end.as_ref());
            c.fields
                .insert("start_time".into(), json!(objects::epoch_ms(start)));
            c.fields
                .insert("end_time".into(), json!(objects::epoch_ms(end)));
            c
        }
        Some(Body::Network(connection)) => network(connection),
        Some(Body::Alert(alert)) => self::alert(event, alert),
        Some(Body::Loss(loss)) => {
            let mut c = class((0, "Base Event"), (0, "Uncategorized"), (99, "Other"));
            c.severity_id = 3;
            c.fields.insert("count".into(), json!(loss.count));
            c.fields.insert(
                "message".into(),
                json!(format!("{} events lost", loss.count)),
            );
            c
        }
        Some(Body::AccessUsage(_)) | None => {
            class((0, "Base Event"), (0, "Uncategorized"), (99, "Other"))
        }
    }
}

/// The event's process as the class's `process`, with its identity's effective ids.
fn this_process(event: &Event, c: &mut Class) {
    if let Some(process) = &event.process {
        let process = objects::process(process, event.identity.as_deref());
        c.fields.insert("process".into(), process);
    }
}

/// Success, or failure with the error's name (`EACCES`).
fn status(c: &mut Class, errno: Option<u32>, error: &str) {
    match errno {
        Some(errno) if errno != 0 => {
            c.fields.insert("status_id".into(), json!(2));
            c.fields.insert("status".into(), json!("Failure"));
            c.fields.insert("status_code".into(), json!(error));
        }
        _ => {
            c.fields.insert("status_id".into(), json!(1));
            c.fields.insert("status".into(), json!("Success"));
        }
    }
}

fn file_open(open: &FileOpen) -> Class {
    let access = open.access.unwrap_or_default();
    let activity = if access.create {
        (1, "Create")
    } else if access.write || access.truncate || access.append {
        (3, "Update")
    } else if access.read {
        (2, "Read")
    } else {
        (14, "Open")
    };
    let mut c = class(FILE_ACTIVITY, SYSTEM, activity);
    let mut file = objects::file(&open.path, 1);
    if let Some(uid) = open.owner_uid {
        file["owner"] = objects::user(uid, &open.owner, Vec::new());
    }
    if let Some(inode) = open.inode {
        file["uid"] = json!(inode.to_string());
    }
    c.fields.insert("file".into(), file);
    c.fields.insert("access_mask".into(), json!(open.flags));
    status(&mut c, open.errno, &open.error);
    if open.denied {
        c.fields.insert("action_id".into(), json!(2));
        c.fields.insert("action".into(), json!("Denied"));
    }
    c
}

fn mount(mount: &Mount) -> Class {
    let activity = match MountOperation::try_from(mount.operation) {
        Ok(MountOperation::Unmount) => (13, "Unmount"),
        _ => (12, "Mount"),
    };
    let mut c = class(FILE_ACTIVITY, SYSTEM, activity);
    c.fields
        .insert("file".into(), objects::file(&mount.target, 2));
    status(&mut c, mount.errno, &mount.error);
    c
}

fn session(session: Option<&Session>, activity: (u32, &'static str)) -> Class {
    let mut c = class((3002, "Authentication"), IAM, activity);
    let Some(session) = session else {
        c.fields.insert("user".into(), json!({}));
        return c;
    };
    let user = objects::user(session.login_uid, &session.login_user, Vec::new());
    c.fields.insert("user".into(), user);
    let mut object = Map::new();
    object.insert("uid".into(), json!(session.id.to_string()));
    objects::put(&mut object, "terminal", json!(session.tty));
    let remote = !session.remote_address.is_empty();
    object.insert("is_remote".into(), json!(remote));
    if let Some(start) = &session.start_time {
        object.insert("created_time".into(), json!(objects::epoch_ms(Some(start))));
    }
    c.fields.insert("session".into(), Value::Object(object));
    c.fields.insert("is_remote".into(), json!(remote));
    let (logon_type_id, logon_type) = match SessionKind::try_from(session.kind) {
        Ok(SessionKind::Ssh) => (10, "Remote Interactive"),
        Ok(SessionKind::Tty | SessionKind::Graphical) => (2, "Interactive"),
        Ok(SessionKind::Cron) => (4, "Batch"),
        Ok(SessionKind::Service) => (5, "OS Service"),
        _ => (0, "Unknown"),
    };
    c.fields
        .insert("logon_type_id".into(), json!(logon_type_id));
    c.fields.insert("logon_type".into(), json!(logon_type));
    let port = session.remote_port.unwrap_or(0);
    if let Some(source) = objects::endpoint(&session.remote_address, port) {
        c.fields.insert("src_endpoint".into(), source);
    }
    if !session.leader_program.is_empty() {
        c.fields.insert(
            "logon_process".into(),
            json!({ "pid": session.leader_pid, "uid": session.leader_exec_id, "file": objects::file(&session.leader_program, 1) }),
        );
    }
    status(&mut c, None, "");
    c
}

fn peripheral(c: &mut Class, device: &custos_proto::v1::BlockDevice) {
    c.fields.insert(
        "peripheral_device".into(),
        objects::peripheral_device(device),
    );
}

fn block_device(change: &BlockDeviceChange) -> Class {
    let activity = match DeviceAction::try_from(change.action) {
        Ok(DeviceAction::Added) => (1, "Connect"),
        Ok(DeviceAction::Removed) => (2, "Disconnect"),
        Ok(DeviceAction::MediaInserted) => (99, "Media Inserted"),
        Ok(DeviceAction::MediaRemoved) => (5, "Eject"),
        Ok(DeviceAction::ReadOnlyChanged) => (99, "Read-Only Changed"),
        _ => (0, "Unknown"),
    };
    let mut c = class(PERIPHERAL_ACTIVITY, SYSTEM, activity);
    if let Some(device) = &change.device {
        peripheral(&mut c, device);
    }
    c
}

fn device_control(control: &DeviceControl) -> Class {
    let (action_id, action, disposition_id, disposition) =
        match DeviceControlAction::try_from(control.action) {
            Ok(DeviceControlAction::Deny) => (2, "Denied", 2, "Blocked"),
            Ok(DeviceControlAction::ReadOnly) => (4, "Modified", 11, "Restricted"),
            _ => (1, "Allowed", 1, "Allowed"),
        };
    let activity = if control.blocked_operation.is_empty() {
        (1, "Connect")
    } else {
        (99, "Access")
    };
    let mut c = class(PERIPHERAL_ACTIVITY, SYSTEM, activity);
    if let Some(device) = &control.device {
        peripheral(&mut c, device);
    }
    c.fields.insert("action_id".into(), json!(action_id));
    c.fields.insert("action".into(), json!(action));
    c.fields
        .insert("disposition_id".into(), json!(disposition_id));
    c.fields.insert("disposition".into(), json!(disposition));
    if !control.rule.is_empty() {
        c.fields.insert(
            "policy".into(),
            json!({ "name": control.rule, "uid": control.rule }),
        );
    }
    if action_id == 2 {
        c.severity_id = 3;
    }
    c
}

fn network(connection: &NetworkConnection) -> Class {
    let operation = NetworkOperation::try_from(connection.operation);
    let refused = connection.errno == Some(libc::ECONNREFUSED as u32);
    let activity = match operation {
        _ if refused => (5, "Refuse"),
        _ if connection.errno.is_some_and(|e| e != 0) => (4, "Fail"),
        Ok(NetworkOperation::Listen) => (7, "Listen"),
        Ok(NetworkOperation::Close) => (2, "Close"),
        _ => (1, "Open"),
    };
    let mut c = class((4001, "Network Activity"), NETWORK, activity);
    let local = objects::endpoint(&connection.local_address, connection.local_port);
    let remote = objects::endpoint(&connection.remote_address, connection.remote_port);
    let (direction_id, direction, source, mut destination) = match operation {
        Ok(NetworkOperation::Accept) => (1, "Inbound", remote, local),
        Ok(NetworkOperation::Listen) => (1, "Inbound", None, local),
        _ => (2, "Outbound", local, remote),
    };
    if source.is_none() && destination.is_none() {
        // A Unix socket: the endpoint is its path (or its family when it has none).
        let name = if connection.unix_path.is_empty() {
            &connection.family
        } else {
            &connection.unix_path
        };
        destination = Some(json!({ "name": name }));
    }
    if let Some(source) = source {
        c.fields.insert("src_endpoint".into(), source);
    }
    if let Some(destination) = destination {
        c.fields.insert("dst_endpoint".into(), destination);
    }
    let mut info = Map::new();
    info.insert("direction_id".into(), json!(direction_id));
    info.insert("direction".into(), json!(direction));
    objects::put(&mut info, "protocol_name", json!(connection.protocol));
    c.fields
        .insert("connection_info".into(), Value::Object(info));
    if connection.bytes_sent != 0 || connection.bytes_received != 0 {
        c.fields.insert(
            "traffic".into(),
            json!({ "bytes_out": connection.bytes_sent, "bytes_in": connection.bytes_received }),
        );
    }
    status(&mut c, connection.errno, &connection.error);
    c
}

fn alert(event: &Event, alert: &Alert) -> Class {
    let mut c = class((2004, "Detection Finding"), FINDINGS, (1, "Create"));
    c.severity_id = match AlertSeverity::try_from(alert.severity) {
        Ok(AlertSeverity::Low) => 2,
        Ok(AlertSeverity::Medium) => 3,
        Ok(AlertSeverity::High) => 4,
        Ok(AlertSeverity::Critical) => 5,
        _ => 0,
    };
    let finding = json!({
        "uid": format!("{}:{}", event.run_id, event.seq),
        "title": alert.rule_id,
        "desc": alert.description,
        "analytic": { "name": alert.rule_id, "uid": alert.rule_id, "type_id": 1, "type": "Rule" },
    });
    c.fields.insert("finding_info".into(), finding);
    c.fields.insert("is_alert".into(), json!(true));
    c
}
