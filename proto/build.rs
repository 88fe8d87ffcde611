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
    let event_kind = event_kind_source(&descriptors)?;
    std::fs::write(out_dir.join("event_kind.rs"), event_kind).context("writing event_kind.rs")?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        // Events move several times between the reader's stages, and while they do their process
        // and identity are held apart from them (the sensor's `SharedParts`): boxed, those two
        // empty fields take 16 bytes of each move instead of 768. A boxed body, which would be
        // allocated for every event, made the file-open path slower, not faster.
        .boxed(".custos.v1.Event.identity")
        .boxed(".custos.v1.Event.process")
        // An event is as large as its largest body, and every event moves at that size. These
        // members are rare (a device, a parent the table shares, a change's credentials) or,
        // for the access basis, larger than the rest of its body: boxed, an event takes 400
        // bytes instead of 912.
        .boxed(".custos.v1.ProcessExec.parent")
        .boxed(".custos.v1.FileOpen.device")
        .boxed(".custos.v1.FileOpen.basis")
        .boxed(".custos.v1.PrivilegeChange.before")
        .boxed(".custos.v1.PrivilegeChange.after")
        .boxed(".custos.v1.BlockDeviceChange.device")
        .boxed(".custos.v1.Mount.device")
        .boxed(".custos.v1.DeviceControl.device")
        .boxed(".custos.v1.DeviceWriteSummary.device")
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

/// `Event::kind`, generated from the kinds table of `sensor-common`: each `body` member maps to
/// the kind that names it. A member without a kind, or a kind naming no member, fails the build.
fn event_kind_source(descriptors: &prost_types::FileDescriptorSet) -> anyhow::Result<String> {
    let event = descriptors
        .file
        .iter()
        .flat_map(|file| &file.message_type)
        .find(|message| message.name() == "Event")
        .context("no Event message in the schema")?;
    let body = event
        .oneof_decl
        .iter()
        .position(|oneof| oneof.name() == "body")
        .context("Event has no body oneof")? as i32;
    let fields: Vec<(&str, i32)> = event
        .field
        .iter()
        .filter(|field| field.oneof_index == Some(body))
        .map(|field| (field.name(), field.number()))
        .collect();
    let members: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let kinds = sensor_common::kinds::EVENT_KINDS;
    let mut arms = String::new();
    let mut number_arms = String::new();
    for (member, number) in &fields {
        let kind = kinds
            .iter()
            .find(|kind| kind.body == Some(member))
            .with_context(|| {
                format!("Event.body member `{member}` has no row in sensor-common's kinds table")
            })?;
        let kind_name = camel(&kind.schema_name.to_lowercase());
        arms += &format!(
            "            Some(Body::{}(_)) => v1::EventKind::{kind_name},\n",
            camel(member)
        );
        number_arms += &format!("            {number} => v1::EventKind::{kind_name},\n");
    }
    if let Some(kind) = kinds
        .iter()
        .find(|kind| kind.body.is_some_and(|body| !members.contains(&body)))
    {
        anyhow::bail!(
            "kind {} names body member {:?}, which Event.body lacks",
            kind.schema_name,
            kind.body
        );
    }
    Ok(format!(
        "impl v1::Event {{\n    /// The kind of this event's body.\n    pub fn kind(&self) -> v1::EventKind {{\n        use v1::event::Body;\n        match self.body {{\n{arms}            None => v1::EventKind::Unspecified,\n        }}\n    }}\n\n    /// The kind of the body whose field number is `number`, for readers of the encoding\n    /// that skip the body.\n    pub fn kind_of_body_field(number: u32) -> v1::EventKind {{\n        match number {{\n{number_arms}            _ => v1::EventKind::Unspecified,\n        }}\n    }}\n}}\n"
    ))
}

/// `file_open` to `FileOpen`, as prost names oneof variants and enum values.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}
