//! Builds the eBPF programs (`sensor-ebpf`) for the bpf target and leaves the object in OUT_DIR,
//! where `src/kernel/loader.rs` embeds it, without its DWARF.
use std::{
    fs::File,
    path::{Path, PathBuf},
};

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
    let out = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir,
        ..Default::default()
    };
    build_once_for_every_profile(package, &out)?;
    strip_dwarf(&out.join("sensor"))
}

/// Builds the eBPF object into `out` through one build directory shared by every profile.
/// aya-build keeps its nested build under OUT_DIR, which each profile (check, debug, test,
/// release) has its own of, so each built the same object from scratch, about a minute each;
/// pointed at one directory beside the profiles, the nested cargo finds its work done. A lock
/// keeps two outer builds at once (the test build and the background release build) from
/// copying the object while the other writes it.
fn build_once_for_every_profile(package: aya_build::Package, out: &Path) -> anyhow::Result<()> {
    let shared = shared_build_dir(out);
    std::fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
    let lock = File::create(shared.join(".lock"))
        .with_context(|| format!("creating the lock in {}", shared.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", shared.display()))?;
    // aya-build reads OUT_DIR for where to build and where to leave the object.
    std::env::set_var("OUT_DIR", &shared);
    let built = aya_build::build_ebpf([package], aya_build::Toolchain::default());
    std::env::set_var("OUT_DIR", out);
    built?;
    std::fs::copy(shared.join("sensor"), out.join("sensor"))
        .with_context(|| format!("copying the eBPF object from {}", shared.display()))?;
    Ok(())
}

/// `<target>/custos-ebpf` for an OUT_DIR of `<target>/<profile>/build/<package>-<hash>/out`;
/// OUT_DIR itself when it is laid out otherwise.
fn shared_build_dir(out: &Path) -> PathBuf {
    let mut ancestors = out.ancestors();
    match (ancestors.nth(2), ancestors.nth(1)) {
        (Some(build), Some(above_profiles)) if build.ends_with("build") => {
            above_profiles.join("custos-ebpf")
        }
        _ => out.to_path_buf(),
    }
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
