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
    pub const OF_BODIES: [v1::EventKind; 12] = [
        v1::EventKind::ProcessExec,
        v1::EventKind::ProcessExit,
        v1::EventKind::FileOpen,
        v1::EventKind::Loss,
        v1::EventKind::PrivilegeChange,
        v1::EventKind::SessionStart,
        v1::EventKind::SessionEnd,
        v1::EventKind::BlockDevice,
        v1::EventKind::Mount,
        v1::EventKind::DeviceControl,
        v1::EventKind::DeviceWriteSummary,
        v1::EventKind::Alert,
    ];

    /// The short name used in metrics labels, syslog MSGIDs and NATS subjects (`file_open`).
    pub fn short_name(self) -> &'static str {
        match self {
            v1::EventKind::Unspecified => "none",
            v1::EventKind::ProcessExec => "exec",
            v1::EventKind::ProcessExit => "exit",
            v1::EventKind::ProcessFork => "fork",
            v1::EventKind::FileOpen => "file_open",
            v1::EventKind::Loss => "loss",
            v1::EventKind::PrivilegeChange => "privilege_change",
            v1::EventKind::SessionStart => "session_start",
            v1::EventKind::SessionEnd => "session_end",
            v1::EventKind::BlockDevice => "block_device",
            v1::EventKind::Mount => "mount",
            v1::EventKind::DeviceControl => "device_control",
            v1::EventKind::DeviceWriteSummary => "device_write_summary",
            v1::EventKind::Alert => "alert",
        }
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
