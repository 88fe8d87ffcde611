//! Generates the Rust types for `custos/v1/*.proto` with prost, and serde impls that follow the
//! canonical proto3 JSON mapping with pbjson. protox parses the schema, so no system `protoc`.
use std::{env, path::PathBuf};

use anyhow::Context as _;

const PROTOS: &[&str] = &["custos/v1/events.proto"];

fn main() -> anyhow::Result<()> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").context("OUT_DIR not set")?);
    let descriptors = protox::compile(PROTOS, ["."]).context("parsing the .proto files")?;
    let descriptor_path = out_dir.join("custos_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )
    .context("writing the descriptor set")?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(PROTOS, &["."])
        .context("generating prost types")?;

    let descriptor_bytes = std::fs::read(&descriptor_path).context("reading the descriptor set")?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)
        .context("registering descriptors with pbjson")?
        // A root uid of 0 or an exit code of 0 must show in JSON, not vanish as a default.
        .emit_fields()
        .build(&[".custos.v1"])
        .context("generating serde impls")?;
    Ok(())
}
