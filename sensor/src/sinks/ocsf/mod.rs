//! Events as OCSF (Open Cybersecurity Schema Framework) 1.7.0 JSON, one object per line.
//!
//! Each family maps to the OCSF class a SIEM expects for it (see [`classes`]); the identity goes
//! into OCSF's `actor` and `user` objects, and what OCSF has no attribute for (the person, the
//! login user, the privilege chain, the access basis, the invoked path) is kept whole in
//! `unmapped`: `unmapped.identity`, `unmapped.process` and the event's own body under its
//! `custos.v1` name, so nothing the canonical JSON carries is lost.
mod classes;
mod objects;

use anyhow::{Context as _, Result};
use custos_proto::v1::Event;
use serde_json::{json, Map, Value};

/// The OCSF schema version the output follows.
pub const OCSF_VERSION: &str = "1.7.0";

/// The OCSF profiles whose attributes the output uses: `host` (actor and device on every
/// class), `linux/linux_users` (effective and audit ids, the process group) and
/// `security_control` (allowed or denied, the device-control rule).
pub const PROFILES: [&str; 3] = ["host", "linux/linux_users", "security_control"];

/// What the classes fill in for one event; the envelope around it is common.
pub(super) struct Class {
    pub uid: u32,
    pub name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
    /// OCSF severity id (1 informational .. 6 fatal).
    pub severity_id: u32,
    /// The class's own attributes.
    pub fields: Map<String, Value>,
}

/// Appends `event` as one OCSF JSON line to `out`.
pub fn encode_line(event: &Event, out: &mut Vec<u8>) -> Result<()> {
    let object = to_ocsf(event)?;
    serde_json::to_writer(&mut *out, &object).context("encoding an event as OCSF")?;
    out.push(b'\n');
    Ok(())
}

/// The OCSF object for `event`.
pub fn to_ocsf(event: &Event) -> Result<Value> {
    let canonical = serde_json::to_value(event).context("encoding an event as JSON")?;
    let mut class = classes::of(event);
    let mut object = Map::new();
    object.insert("class_uid".into(), json!(class.uid));
    object.insert("class_name".into(), json!(class.name));
    object.insert("category_uid".into(), json!(class.category_uid));
    object.insert("category_name".into(), json!(class.category_name));
    object.insert("activity_id".into(), json!(class.activity_id));
    object.insert("activity_name".into(), json!(class.activity_name));
    object.insert(
        "type_uid".into(),
        json!(u64::from(class.uid) * 100 + u64::from(class.activity_id)),
    );
    object.insert(
        "type_name".into(),
        json!(format!("{}: {}", class.name, class.activity_name)),
    );
    object.insert("severity_id".into(), json!(class.severity_id));
    object.insert("severity".into(), json!(severity_name(class.severity_id)));
    object.insert("time".into(), json!(objects::epoch_ms(event.time.as_ref())));
    object.insert("metadata".into(), metadata(event));
    object.insert("device".into(), objects::device(&event.host));
    // The identity and process acting, with what the class says of the actor on top (an
    // exec's actor process is its parent).
    let mut actor = objects::actor(event.identity.as_deref(), event.process.as_deref());
    if let Some(Value::Object(own)) = class.fields.remove("actor") {
        actor.extend(own);
    }
    if !actor.is_empty() {
        object.insert("actor".into(), Value::Object(actor));
    }
    object.extend(class.fields);
    object.insert("unmapped".into(), unmapped(canonical));
    Ok(Value::Object(object))
}

fn severity_name(id: u32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        _ => "Unknown",
    }
}

fn metadata(event: &Event) -> Value {
    json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "Custos",
            "vendor_name": "Custos",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "uid": format!("{}:{}", event.run_id, event.seq),
        "sequence": event.seq,
        "log_name": event.kind().short_name(),
        "correlation_uid": event.boot_id,
        "profiles": PROFILES,
    })
}

/// The canonical JSON's identity, process and body: what OCSF has no attribute for, kept whole.
fn unmapped(canonical: Value) -> Value {
    let Value::Object(mut fields) = canonical else {
        return json!({});
    };
    for envelope in ["seq", "runId", "bootId", "host", "time"] {
        fields.remove(envelope);
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests;
