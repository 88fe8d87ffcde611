//! OCSF objects built from the schema's parts: user, process, file, device, endpoints.
use custos_proto::v1::{BlockDevice, Identity, Process, SessionKind};
use serde_json::{json, Map, Value};

/// Milliseconds since the epoch, as OCSF's `timestamp_t`.
pub fn epoch_ms(time: Option<&pbjson_types::Timestamp>) -> i64 {
    time.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// The host the sensor runs on (device type unknown: a sensor cannot tell server from desktop).
pub fn device(host: &str) -> Value {
    json!({ "hostname": host, "name": host, "type_id": 0, "type": "Unknown", "os": { "name": "Linux", "type_id": 200, "type": "Linux" } })
}

/// Inserts `value` under `key` unless it is empty.
pub fn put(object: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        object.insert(key.to_owned(), value);
    }
}

/// An OCSF user: the uid as a string, the name, and the groups when known.
pub fn user(uid: u32, name: &str, groups: Vec<Value>) -> Value {
    let mut user = Map::new();
    user.insert("uid".into(), json!(uid.to_string()));
    put(&mut user, "name", json!(name));
    put(&mut user, "groups", Value::Array(groups));
    user.insert(
        "type_id".into(),
        json!(if uid == 0 { 2 } else { 1 }), // Admin, User
    );
    Value::Object(user)
}

fn group(gid: u32, name: &str) -> Value {
    let mut group = Map::new();
    group.insert("uid".into(), json!(gid.to_string()));
    put(&mut group, "name", json!(name));
    Value::Object(group)
}

/// The identity's user with its groups (real ids: who the kernel says is acting).
pub fn identity_user(identity: &Identity) -> Value {
    let groups = identity
        .groups
        .iter()
        .map(|g| group(g.gid, &g.name))
        .collect();
    user(identity.uid, &identity.user, groups)
}

/// The login session an identity belongs to.
pub fn identity_session(identity: &Identity) -> Option<Value> {
    let id = identity.session_id?;
    let mut session = Map::new();
    session.insert("uid".into(), json!(id.to_string()));
    put(&mut session, "terminal", json!(identity.tty));
    if let Some(origin) = &identity.session {
        session.insert(
            "is_remote".into(),
            json!(origin.kind == SessionKind::Ssh as i32 || !origin.remote_address.is_empty()),
        );
    }
    Some(Value::Object(session))
}

/// The actor: the identity's user and session, and the process that acted.
pub fn actor(identity: Option<&Identity>, process: Option<&Process>) -> Map<String, Value> {
    let mut actor = Map::new();
    if let Some(identity) = identity {
        actor.insert("user".into(), identity_user(identity));
        if let Some(session) = identity_session(identity) {
            actor.insert("session".into(), session);
        }
    }
    if let Some(process) = process {
        actor.insert("process".into(), self::process(process, identity));
    }
    actor
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// An OCSF file: `type_id` 1 regular file, 2 folder.
pub fn file(path: &str, type_id: u32) -> Value {
    let mut file = Map::new();
    file.insert("name".into(), json!(file_name(path)));
    file.insert("type_id".into(), json!(type_id));
    file.insert(
        "type".into(),
        json!(if type_id == 2 {
            "Folder"
        } else {
            "Regular File"
        }),
    );
    put(&mut file, "path", json!(path));
    if let Some((parent, _)) = path.rsplit_once('/') {
        put(
            &mut file,
            "parent_folder",
            json!(if parent.is_empty() { "/" } else { parent }),
        );
    }
    Value::Object(file)
}

/// An OCSF process; with `identity`, its effective user and group, login uid and session.
pub fn process(process: &Process, identity: Option<&Identity>) -> Value {
    let mut object = Map::new();
    object.insert("pid".into(), json!(process.pid));
    if process.tid != 0 {
        object.insert("tid".into(), json!(process.tid));
    }
    put(&mut object, "uid", json!(process.exec_id));
    let name = if process.binary.is_empty() {
        process.comm.as_str()
    } else {
        file_name(&process.binary)
    };
    put(&mut object, "name", json!(name));
    put(&mut object, "cmd_line", json!(process.args.join(" ")));
    if !process.binary.is_empty() {
        object.insert("file".into(), file(&process.binary, 1));
        object.insert("path".into(), json!(process.binary));
    }
    put(&mut object, "working_directory", json!(process.cwd));
    if let Some(start) = &process.start_time {
        object.insert("created_time".into(), json!(epoch_ms(Some(start))));
    }
    if process.ppid != 0 || !process.parent_exec_id.is_empty() {
        let mut parent = Map::new();
        parent.insert("pid".into(), json!(process.ppid));
        put(&mut parent, "uid", json!(process.parent_exec_id));
        object.insert("parent_process".into(), Value::Object(parent));
    }
    if let Some(identity) = identity {
        object.insert(
            "user".into(),
            user(identity.euid, &identity.euser, Vec::new()),
        );
        object.insert("euid".into(), json!(identity.euid));
        object.insert("egid".into(), json!(identity.egid));
        object.insert("group".into(), group(identity.gid, &identity.group));
        if let Some(login_uid) = identity.login_uid {
            object.insert("auid".into(), json!(login_uid));
        }
        if let Some(session) = identity_session(identity) {
            object.insert("session".into(), session);
        }
    }
    Value::Object(object)
}

/// A block device as an OCSF peripheral device.
pub fn peripheral_device(device: &BlockDevice) -> Value {
    let mut object = Map::new();
    object.insert("name".into(), json!(device.name));
    object.insert(
        "uid".into(),
        json!(format!("{}:{}", device.major, device.minor)),
    );
    put(
        &mut object,
        "class",
        json!(if device.bus.is_empty() {
            "block"
        } else {
            &device.bus
        }),
    );
    put(&mut object, "model", json!(device.model));
    put(&mut object, "vendor_name", json!(device.vendor));
    put(&mut object, "serial_number", json!(device.serial));
    if !device.usb_vendor_id.is_empty() {
        object.insert(
            "vendor_id_list".into(),
            json!([format!(
                "{}:{}",
                device.usb_vendor_id, device.usb_product_id
            )]),
        );
    }
    Value::Object(object)
}

/// A network endpoint; `None` without an address or port.
pub fn endpoint(address: &str, port: u32) -> Option<Value> {
    let mut object = Map::new();
    put(&mut object, "ip", json!(address));
    if port != 0 {
        object.insert("port".into(), json!(port));
    }
    (!object.is_empty()).then_some(Value::Object(object))
}
