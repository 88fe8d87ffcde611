//! The SIEM tools the tests use, from PyPI in their own virtual environment (`cargo xtask
//! test` installs them): sigma-cli with pySigma's SQLite backend, and the OCSF schemas with a
//! JSON Schema validator.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::stdout_of;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A program of the SIEM tools' virtual environment.
pub fn tool(name: &str) -> PathBuf {
    let path = repository().join("target/siem-python/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` (or `cargo xtask setup`) installs the SIEM tools",
        path.display()
    );
    path
}

/// A file of the tests' own (`tests/sigma/...`, `tests/ocsf/...`).
pub fn test_file(relative: &str) -> PathBuf {
    repository().join("tests").join(relative)
}

/// Installs this repository's Sigma pipeline into the tools' environment, as a user would
/// with pip.
pub fn install_sigma_pipeline() -> Result<()> {
    stdout_of(
        Command::new(tool("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-deps", "--force-reinstall"])
            .arg(repository().join("integrations/sigma")),
    )
    .map(drop)
}

/// Runs a tool and returns its standard output, failing with its standard error.
pub fn run_tool(name: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    stdout_of(Command::new(tool(name)).args(args))
}
