//! Benchmark output: printed as it comes, and kept for `bench/REPORT.md`.
#[derive(Default)]
pub struct Report {
    pub text: String,
}

impl Report {
    pub fn line(&mut self, line: impl AsRef<str>) {
        println!("{}", line.as_ref());
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }
}

/// Every benchmark with its default settings; the whole output goes to `bench/REPORT.md`.
pub fn all(report: &mut Report) -> anyhow::Result<()> {
    use crate::{bench, bench_exec, bench_network, bench_sink, bench_startup, bench_throughput};
    bench::open(
        &bench::Options {
            seconds: 3,
            rounds: 3,
        },
        report,
    )?;
    bench_sink::sink(bench_sink::EVENTS_PER_ROUND, 3, report)?;
    bench_exec::exec(
        &bench_exec::Options {
            rates: vec![100, 1600, 10_000],
            seconds: 10,
            rounds: 5,
            warmup: bench_exec::STEADY_AFTER,
            argv_bytes: 0,
        },
        report,
    )?;
    // Real hosts run long command lines too (class paths, scripts given to `sh -c`).
    bench_exec::exec(
        &bench_exec::Options {
            rates: vec![1600],
            seconds: 10,
            rounds: 3,
            warmup: bench_exec::STEADY_AFTER,
            argv_bytes: bench_exec::LONG_ARGV_BYTES,
        },
        report,
    )?;
    bench_network::network(
        &bench_network::Options {
            seconds: 3,
            rounds: 3,
        },
        report,
    )?;
    bench_throughput::throughput(
        &bench_throughput::Options {
            seconds: 3,
            rounds: 3,
            exec_rate: 1000,
        },
        report,
    )?;
    bench_startup::startup(&bench_startup::Options { rounds: 5 }, report)?;
    let path = crate::shell::workspace_root().join("bench/REPORT.md");
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    std::fs::write(&path, markdown(&report.text))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// The kernel's mitigations of the speculative-execution flaws that make calls and returns
/// dearer (`/sys/devices/system/cpu/vulnerabilities`). They weigh on every eBPF program run and
/// system call, so they are one reason hosts of the same size give other figures (a shared
/// VM's load is another: one AMD EPYC VM with SRSO's "Safe RET" gave 3.9 µs per exec for the
/// eBPF programs in one run and 5.0 in the next).
fn mitigations(read: &impl Fn(&str) -> String) -> String {
    let states: Vec<String> = ["spectre_v2", "retbleed", "spec_rstack_overflow"]
        .iter()
        .filter_map(|flaw| {
            let state = read(&format!("/sys/devices/system/cpu/vulnerabilities/{flaw}"));
            let state = state.trim();
            (!state.is_empty()).then(|| format!("{flaw}: {}", state.replace('|', "/")))
        })
        .collect();
    if states.is_empty() {
        "not reported by this kernel".to_owned()
    } else {
        states.join("; ")
    }
}

fn markdown(figures: &str) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease");
    let mitigations = mitigations(&read);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "# Custos benchmark report\n\n\
         Written by `cargo xtask bench` (release build, run as root). Every figure is measured in \
         the same run as its baseline; ratios compare setups side by side, not across runs.\n\n\
         | machine | |\n| --- | --- |\n| kernel | {} |\n| CPU | {cpu} ({cores} cores) |\n\
         | mitigations | {mitigations} |\n| memory | {memory} |\n| commit | {commit} |\n\n\
         ```\n{figures}```\n",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::mitigations;

    #[test]
    fn mitigations_name_each_flaw_and_keep_the_table_whole() {
        let read = |path: &str| match path.rsplit('/').next() {
            Some("spectre_v2") => "Mitigation: Retpolines; STIBP: disabled\n".to_owned(),
            Some("spec_rstack_overflow") => "Mitigation: Safe RET | odd\n".to_owned(),
            _ => String::new(),
        };
        assert_eq!(
            mitigations(&read),
            "spectre_v2: Mitigation: Retpolines; STIBP: disabled; \
             spec_rstack_overflow: Mitigation: Safe RET / odd"
        );
    }

    #[test]
    fn a_kernel_without_the_files_says_so() {
        assert_eq!(
            mitigations(&|_: &str| String::new()),
            "not reported by this kernel"
        );
    }
}
