//! The `custos.v1` schema as Rust types.
//!
//! `prost` gives the protobuf wire format; the generated serde impls follow the canonical proto3
//! JSON mapping (lowerCamelCase names, 64-bit integers as strings, enums by name).

/// Types of the `custos.v1` package.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/custos.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/custos.v1.serde.rs"));
}

/// The serialized `FileDescriptorSet` of the schema, for reflection-based consumers.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/custos_descriptor.bin"));

pub mod delimited;

impl v1::EventKind {
    /// Every kind an event body can have, in schema order.
    pub fn of_bodies() -> impl Iterator<Item = v1::EventKind> {
        sensor_common::kinds::EVENT_KINDS
            .iter()
            .filter(|k| k.reported)
            .filter_map(|k| v1::EventKind::try_from(k.number as i32).ok())
    }

    /// The short name used in metrics labels, syslog MSGIDs and NATS subjects (`file_open`),
    /// from the kinds table; "none" for an unspecified kind.
    pub fn short_name(self) -> &'static str {
        sensor_common::kinds::event_kind(self as u32).map_or("none", |k| k.short_name)
    }

    /// The kind of a kernel record kind (the numbers are the same); unspecified when unknown.
    pub fn of_record(record_kind: u32) -> v1::EventKind {
        sensor_common::kinds::event_kind(record_kind)
            .and_then(|k| v1::EventKind::try_from(k.number as i32).ok())
            .unwrap_or(v1::EventKind::Unspecified)
    }
}

impl v1::Event {
    /// The kind of this event's body.
    pub fn kind(&self) -> v1::EventKind {
        use v1::event::Body;
        match self.body {
            Some(Body::Exec(_)) => v1::EventKind::ProcessExec,
            Some(Body::Exit(_)) => v1::EventKind::ProcessExit,
            Some(Body::FileOpen(_)) => v1::EventKind::FileOpen,
            Some(Body::Loss(_)) => v1::EventKind::Loss,
            Some(Body::PrivilegeChange(_)) => v1::EventKind::PrivilegeChange,
            Some(Body::SessionStart(_)) => v1::EventKind::SessionStart,
            Some(Body::SessionEnd(_)) => v1::EventKind::SessionEnd,
            Some(Body::BlockDevice(_)) => v1::EventKind::BlockDevice,
            Some(Body::Mount(_)) => v1::EventKind::Mount,
            Some(Body::DeviceControl(_)) => v1::EventKind::DeviceControl,
            Some(Body::DeviceWriteSummary(_)) => v1::EventKind::DeviceWriteSummary,
            Some(Body::Alert(_)) => v1::EventKind::Alert,
            None => v1::EventKind::Unspecified,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::EventKind;

    /// The kinds table and the schema's enum name the same kinds with the same numbers.
    #[test]
    fn the_kinds_table_matches_the_schema() {
        for kind in sensor_common::kinds::EVENT_KINDS {
            let name = format!("EVENT_KIND_{}", kind.schema_name);
            let schema = EventKind::from_str_name(&name)
                .unwrap_or_else(|| panic!("{name} is not in events.proto"));
            assert_eq!(schema as u32, kind.number, "{name}");
        }
        let described = sensor_common::kinds::EVENT_KINDS.len() + 1; // and UNSPECIFIED
        let in_schema = (0..64).filter(|&n| EventKind::try_from(n).is_ok()).count();
        assert_eq!(described, in_schema, "every schema kind is in the table");
        assert_eq!(EventKind::FileOpen.short_name(), "file_open");
        assert_eq!(
            EventKind::of_record(sensor_common::kind::PRIVILEGE_CHANGE),
            EventKind::PrivilegeChange
        );
        assert_eq!(EventKind::of_bodies().count(), 12);
    }
}
