//! Builds the eBPF programs (`sensor-ebpf`) for the bpf target and leaves the object in OUT_DIR,
//! where `src/kernel/loader.rs` embeds it, without its DWARF.
use std::path::Path;

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    // The fuzz targets build the daemon's library with sanitizer flags the bpf target cannot
    // take; they never load programs, so an empty object stands in.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
        std::fs::write(std::path::Path::new(&out).join("sensor"), b"")?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "sensor-ebpf")
        .ok_or_else(|| anyhow!("sensor-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("sensor-ebpf manifest has no parent directory"))?
        .as_str();
    // The daemon's release profile links it whole (`lto`, one codegen unit); the eBPF object
    // keeps the defaults it was tuned and verified with, since bpf-linker links its programs
    // whole already. The nested cargo reads these over the workspace's profile.
    std::env::set_var("CARGO_PROFILE_RELEASE_LTO", "false");
    std::env::set_var("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    let out = std::env::var("OUT_DIR").context("OUT_DIR")?;
    strip_dwarf(&Path::new(&out).join("sensor"))
}

/// Removes the DWARF sections from the eBPF object. The linker needs DWARF to emit BTF, which
/// the loader and the verifier use; nothing reads the DWARF afterwards, and it is three
/// quarters of the object, embedded in the binary and resident once the object is parsed.
fn strip_dwarf(object_path: &Path) -> anyhow::Result<()> {
    use object::build::elf::{Builder, SectionData};

    let data =
        std::fs::read(object_path).with_context(|| format!("reading {}", object_path.display()))?;
    let mut builder = Builder::read(&*data).context("parsing the eBPF object")?;
    for section in builder.sections.iter_mut() {
        let name = String::from_utf8_lossy(&section.name);
        // A relocation section goes with the section it relocates.
        let target = name
            .strip_prefix(".rela")
            .or_else(|| name.strip_prefix(".rel"))
            .unwrap_or(&name);
        if target.starts_with(".debug_") {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    // LLVM names sections from the symbol string table; the writer keeps them apart.
    let names = builder.sections.add();
    names.name = b".shstrtab"[..].into();
    names.sh_type = object::elf::SHT_STRTAB;
    names.sh_addralign = 1;
    names.data = SectionData::SectionString;
    let mut stripped = Vec::with_capacity(data.len());
    builder
        .write(&mut stripped)
        .context("writing the eBPF object without DWARF")?;
    std::fs::write(object_path, stripped)
        .with_context(|| format!("writing {}", object_path.display()))
}
