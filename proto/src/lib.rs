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
