//! The build, run, test and decode commands.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    setup,
    shell::{cargo, is_root, run as sh, run_logged_at_lowest_priority, target_dir, workspace_root},
};

pub fn build(release: bool) -> Result<()> {
    let mut command = cargo();
    command.args(["build", "--package", "custos"]);
    if release {
        command.arg("--release");
    }
    sh(&mut command)
}

pub fn run(release: bool, args: &[String]) -> Result<()> {
    setup::build_tools()?;
    build(release)?;
    require_root("the sensor loads eBPF programs")?;
    let binary = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("custos");
    sh(Command::new(binary).arg("run").args(args))
}

/// How long the test command fuzzes each target (on its seeds and corpus).
const FUZZ_SECONDS: u64 = 10;

pub fn test(filter: Option<&str>) -> Result<()> {
    setup::all()?;
    require_root("the integration tests load eBPF programs")?;
    sh(cargo().args(["fmt", "--all", "--check"]))
        .context("code is not formatted: run `cargo fmt --all`")?;
    crate::schema_doc::run(true)?;
    // No --workspace: the default members are the userspace crates; sensor-ebpf only builds
    // for the bpf target (through sensor/build.rs).
    sh(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    build(false)?;
    let binary = target_dir().join("debug/custos");
    let mut command = cargo();
    command
        // Every test binary runs, whatever an earlier one did: one run shows every failure.
        .args(["test", "--no-fail-fast"])
        .env("CUSTOS_BIN", &binary)
        .current_dir(workspace_root());
    // Compiled first, so the fuzz build in the background takes only idle time from the runs.
    sh(cargo()
        .args(["test", "--no-run"])
        .current_dir(workspace_root()))?;
    let fuzz = filter.is_none().then(crate::fuzz::QuickFuzz::start_build);
    let release = filter.is_none().then(ReleasePrebuild::start);
    command.arg("--");
    if let Some(filter) = filter {
        command.arg(filter);
    }
    // The integration tests each start a sensor; one at a time keeps their events apart.
    command.arg("--test-threads=1");
    let mut tally = run_tests(&mut command)?;
    if let Some(release) = release {
        release.wait();
    }
    if filter.is_none() {
        // The package installs, and its unit passes systemd-analyze verify.
        match crate::package::check() {
            Ok(()) => tally.passed += 1,
            Err(err) => {
                eprintln!("xtask: package check failed: {err:#}");
                tally.failed += 1;
            }
        }
        // The richer hook paths and a real USB drive, on Debian's 6.1 kernel under QEMU.
        match crate::vm::run_suite() {
            Ok(vm) => {
                tally.passed += vm.passed;
                tally.failed += vm.failed;
            }
            Err(err) => {
                eprintln!("xtask: vm-test failed: {err:#}");
                tally.failed += 1;
            }
        }
    }
    if let Some(fuzz) = fuzz {
        for (target, result) in fuzz.run(FUZZ_SECONDS) {
            match result {
                Ok(()) => tally.passed += 1,
                Err(err) => {
                    eprintln!("xtask: fuzz target {target}: {err:#}");
                    tally.failed += 1;
                }
            }
        }
    }
    // One closing line for the whole run, whatever order cargo ran the test binaries in.
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 || !tally.status_ok {
        bail!("tests failed");
    }
    if tally.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The release build the package check installs, made in the background at the lowest
/// priority while the integration tests run: the release profile links the daemon whole,
/// minutes of CPU that the tests mostly leave idle. The package check builds again, which
/// finds it done, or shows why it fails.
struct ReleasePrebuild(std::thread::JoinHandle<Result<()>>);

impl ReleasePrebuild {
    /// Starts building; the build's output goes to `target/release-build.log`.
    fn start() -> Self {
        Self(std::thread::spawn(|| {
            let mut command = cargo();
            command.args(["build", "--package", "custos", "--release"]);
            run_logged_at_lowest_priority(&command, &target_dir().join("release-build.log"))
        }))
    }

    fn wait(self) {
        if let Ok(Err(err)) = self.0.join() {
            eprintln!("xtask: background release build: {err:#}; the package check builds again");
        }
    }
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    status_ok: bool,
}

/// Runs `cargo test`, passing its output through while adding up its `test result:` lines.
fn run_tests(command: &mut Command) -> Result<Tally> {
    eprintln!("xtask: $ cargo test (see above for the arguments)");
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            tally.passed += count_before(result, " passed");
            tally.failed += count_before(result, " failed");
        }
    }
    tally.status_ok = child.wait()?.success();
    Ok(tally)
}

/// In "ok. 5 passed; 0 failed; ...", the number before `label`.
fn count_before(result: &str, label: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(label)
                .map(str::to_owned)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// What every benchmark and profile needs: root, no other sensor running, and a release
/// build of the sensor.
pub fn bench_prepare() -> Result<()> {
    require_root("benchmarks load eBPF programs")?;
    crate::bench_guard::ensure_no_sensor_running()?;
    setup::build_tools()?;
    build(true)
}

pub fn decode(file: &Path) -> Result<()> {
    let input = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    custos_proto::delimited::to_json_lines(BufReader::new(input), std::io::stdout().lock())
        .with_context(|| format!("decoding {}", file.display()))?;
    Ok(())
}

fn require_root(why: &str) -> Result<()> {
    if !is_root() {
        bail!("{why}: run this as root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn reads_counts_from_cargo_test_result_lines() {
        let ok = "ok. 30 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s";
        assert_eq!(
            (count_before(ok, " passed"), count_before(ok, " failed")),
            (30, 0)
        );
        let bad = "FAILED. 4 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(
            (count_before(bad, " passed"), count_before(bad, " failed")),
            (4, 1)
        );
    }
}
