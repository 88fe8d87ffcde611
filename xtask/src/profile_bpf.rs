//! `cargo xtask profile bpf`: where each eBPF program's time goes, by source line.
//!
//! The exec benchmark gives each program's run time per exec from the kernel's counters; this
//! says which of its lines that time is spent on. The daemon runs on its embedded default
//! through an exec storm while `perf` samples every CPU; each sample in a program's machine
//! code is traced back, through the kernel's line records of the JIT (see `bpf_jit`), to the
//! instruction it came from and the nearest line of `sensor-ebpf` above it in the program as
//! the verifier left it (`bpftool prog dump xlated linum`). A sample lands on the instruction
//! after the one that stalled, so a line's share is that of the line or the one before it.
use std::{collections::HashMap, path::Path, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    bench::{bpf_by_program, bpf_since, METRICS},
    bench_exec::{marker_in, storm_execs},
    bpf_jit::{boottime_ns, program_code, program_ids, ProgramCode},
    profile::{output_dir, perf_script, storm_under_perf, with_daemon, Options},
    shell::output,
};

/// Samples a second on each CPU: enough for a few hundred in a program that takes a
/// microsecond per exec over ten seconds.
const FREQUENCY: u32 = 25_000;

/// Lines printed per program.
const LINES_SHOWN: usize = 8;

/// A program seen in the samples: its code, name and instructions' source lines.
struct Profiled {
    name: String,
    code: ProgramCode,
    /// For each instruction index, the nearest `sensor-ebpf` source line at or above it.
    sources: Vec<Option<String>>,
}

pub fn bpf(options: &Options) -> Result<()> {
    crate::setup::bpf_profile_tools()?;
    let work = tempfile::tempdir()?;
    let marker = marker_in(work.path(), "profile-bpf")?;
    let samples_file = output_dir()?.join("bpf.perf.data");
    let custos = options.binary();
    // Programs loaded before this (another sensor's, say) are not this daemon's.
    let started_ns = boottime_ns()?;
    // Read while the daemon holds its programs: their code is gone once it stops.
    let (spawned, run_seconds, samples, programs) = with_daemon(&custos, work.path(), |_| {
        measure(options, &marker, &samples_file, started_ns)
    })?;
    print_header(options, &custos, spawned, samples.len());
    print_programs(&programs, &samples, &run_seconds, spawned);
    println!(
        "the samples: {} (perf report -i FILE)",
        samples_file.display()
    );
    Ok(())
}

type Measured = (u64, Vec<(String, f64)>, Vec<u64>, Vec<Profiled>);

/// The storm under `perf`: execs spawned, each program's run seconds, the sampled addresses in
/// eBPF programs, and the programs they fall in.
fn measure(
    options: &Options,
    marker: &Path,
    samples_file: &Path,
    started_ns: u64,
) -> Result<Measured> {
    storm_execs(marker, options.argv_bytes, options.rate, options.warmup)?;
    let before = bpf_by_program(METRICS)?;
    let frequency = FREQUENCY.to_string();
    let perf_args = ["-a", "-F", frequency.as_str()];
    let spawned = storm_under_perf(options, marker, &perf_args, samples_file)?;
    let run_seconds = bpf_since(METRICS, &before)?;
    let samples = sampled_addresses(samples_file)?;
    let mut programs = Vec::new();
    for id in program_ids()? {
        let Some(code) = program_code(id)? else {
            continue;
        };
        let ours = code.loaded_at_ns >= started_ns;
        if ours && samples.iter().any(|&address| code.holds(address)) {
            programs.push(profiled(code)?);
        }
    }
    Ok((spawned, run_seconds, samples, programs))
}

/// The addresses of the samples that fell in eBPF programs' code.
fn sampled_addresses(samples_file: &Path) -> Result<Vec<u64>> {
    let script = perf_script(samples_file, "ip,sym")?;
    Ok(script.lines().filter_map(bpf_sample).collect())
}

/// The address of one `perf script -F ip,sym` line when its symbol is an eBPF program's.
fn bpf_sample(line: &str) -> Option<u64> {
    let (address, symbol) = line.trim().split_once(' ')?;
    if !symbol.trim_start().starts_with("bpf_prog_") {
        return None;
    }
    u64::from_str_radix(address, 16).ok()
}

/// A sampled program with its name and source lines, from bpftool.
fn profiled(code: ProgramCode) -> Result<Profiled> {
    let id = code.id.to_string();
    let shown = output(Command::new("bpftool").args(["prog", "show", "id", &id, "-j"]))
        .context("bpftool prog show failed")?;
    let name = serde_json::from_str::<serde_json::Value>(&shown)?["name"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let xlated =
        output(Command::new("bpftool").args(["prog", "dump", "xlated", "id", &id, "linum"]))
            .context("bpftool prog dump xlated failed")?;
    Ok(Profiled {
        name,
        code,
        sources: source_lines(&xlated),
    })
}

/// For each instruction of a `bpftool prog dump xlated linum` listing, the nearest line of
/// `sensor-ebpf` at or above it, as `file.rs:line  text`. Lines of the libraries and of the
/// kernel-read helpers (`kread.rs`) are passed over: the line worth naming is the one that
/// asked for the read.
pub(crate) fn source_lines(xlated: &str) -> Vec<Option<String>> {
    let mut sources = Vec::new();
    let mut current: Option<String> = None;
    for line in xlated.lines() {
        if let Some(comment) = line.strip_prefix("; ") {
            if let Some(source) = own_source(comment) {
                current = Some(source);
            }
            continue;
        }
        let Some((index, _)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        if sources.len() <= index {
            sources.resize(index + 1, None);
        }
        sources[index] = current.clone();
    }
    sources
}

/// `file.rs:line  text` of a line-info comment from `sensor-ebpf`'s own code.
fn own_source(comment: &str) -> Option<String> {
    let (text, info) = comment.rsplit_once(" [file:")?;
    let (path, rest) = info.split_once(" line_num:")?;
    let file = path.split("/sensor-ebpf/src/").nth(1)?;
    if file == "kread.rs" {
        return None;
    }
    let line = rest.split_once(' ').map_or(rest, |(n, _)| n);
    Some(format!("{file}:{line}  {}", text.trim()))
}

fn print_header(options: &Options, custos: &Path, spawned: u64, samples: usize) {
    println!(
        "eBPF programs through an exec storm: a copy of /bin/true{} at {}/s for {} s ({spawned} \
         execs) after {} s of the same; the daemon ({}) on its embedded default; perf at {} \
         Hz on every CPU, {samples} samples in eBPF programs",
        crate::bench_exec::with_argument(options.argv_bytes),
        options.rate,
        options.seconds,
        options.warmup,
        custos.display(),
        FREQUENCY
    );
    println!(
        "each program: its run time per exec (the kernel's counters), then the share of its \
         samples on each source line and that share of its time; a sample falls just after the \
         instruction that stalled"
    );
}

fn print_programs(
    programs: &[Profiled],
    samples: &[u64],
    run_seconds: &[(String, f64)],
    spawned: u64,
) {
    let mut by_samples: Vec<(&Profiled, Vec<u64>)> = programs
        .iter()
        .map(|p| {
            let own = samples.iter().copied().filter(|&a| p.code.holds(a));
            (p, own.collect())
        })
        .collect();
    by_samples.sort_by_key(|(_, own)| std::cmp::Reverse(own.len()));
    for (program, own) in by_samples {
        let us_per_exec = run_seconds
            .iter()
            .find(|(name, _)| *name == program.name)
            .map(|(_, seconds)| seconds * 1e6 / spawned.max(1) as f64);
        println!();
        match us_per_exec {
            Some(us) => println!(
                "{}: {us:.2} µs per exec, {} samples",
                program.name,
                own.len()
            ),
            None => println!("{}: {} samples", program.name, own.len()),
        }
        for (source, count) in by_line(program, &own).into_iter().take(LINES_SHOWN) {
            let share = count as f64 / own.len().max(1) as f64;
            let time = us_per_exec.map_or(String::new(), |us| format!("{:.2} µs", us * share));
            println!("  {:>5.1}% {time:>8}  {source}", share * 100.0);
        }
    }
}

/// A program's samples counted by source line, most first.
fn by_line(program: &Profiled, addresses: &[u64]) -> Vec<(String, usize)> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for &address in addresses {
        let source = program
            .code
            .instruction_at(address)
            .and_then(|index| program.sources.get(index as usize).cloned().flatten())
            .unwrap_or_else(|| "(its entry, before any line of its own)".to_owned());
        *counts.entry(source).or_default() += 1;
    }
    let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const XLATED: &str = "\
int sched_process_exit_btf(void * ctx):
; T::from_register(unsafe { *ptr as u64 }) [file:/root/.cargo/registry/src/x/aya-ebpf-0.2.0/src/args.rs line_num:52 line_col:31]
   0: (79) r9 = *(u64 *)(r1 +0)
; if task.is_null() || is_self::<M>(task) { [file:/work/main/sensor-ebpf/src/process.rs line_num:145 line_col:8]
   1: (15) if r9 == 0x0 goto pc+491
; intrinsics::volatile_load(src) [file:/root/.rustup/toolchains/x/lib/rustlib/src/rust/library/core/src/ptr/mod.rs line_num:2107 line_col:9]
   2: (18) r1 = map[id:103707][0]+0
   4: (61) r2 = *(u32 *)(r1 +0)
; if base.is_null() || offset == MISSING { [file:/work/main/sensor-ebpf/src/kread.rs line_num:78 line_col:12]
   5: (15) if r2 == 0x0 goto pc+8
; info.ppid = M::read::<u32>(parent, off!(task_tgid)).unwrap_or(0); [file:/work/main/sensor-ebpf/src/task.rs line_num:25 line_col:13]
   6: (61) r3 = *(u32 *)(r1 +12)
";

    #[test]
    fn each_instruction_is_named_by_the_nearest_line_of_the_sensors_own_code() {
        let sources = source_lines(XLATED);
        let exit_line = "process.rs:145  if task.is_null() || is_self::<M>(task) {";
        assert_eq!(sources[0], None);
        assert_eq!(sources[1].as_deref(), Some(exit_line));
        // A library's line and the read helper's are passed over.
        assert_eq!(sources[2].as_deref(), Some(exit_line));
        assert_eq!(sources[3], None, "the second half of a wide instruction");
        assert_eq!(sources[5].as_deref(), Some(exit_line));
        assert_eq!(
            sources[6].as_deref(),
            Some("task.rs:25  info.ppid = M::read::<u32>(parent, off!(task_tgid)).unwrap_or(0);")
        );
    }

    #[test]
    fn only_samples_in_ebpf_programs_are_kept() {
        assert_eq!(
            bpf_sample(" ffffffffc000204b bpf_prog_079b3c81da6d3257_sched_process_exec_btf"),
            Some(0xffff_ffff_c000_204b)
        );
        assert_eq!(
            bpf_sample(" ffffffff813aecd3 finish_task_switch.isra.0"),
            None
        );
        assert_eq!(
            bpf_sample("     7fb29faa38b9 __GI___pthread_disable_asynccancel"),
            None
        );
    }

    #[test]
    fn samples_are_counted_by_line_and_the_entry_has_a_name_of_its_own() {
        let program = Profiled {
            name: "p".into(),
            code: ProgramCode {
                id: 1,
                loaded_at_ns: 0,
                functions: vec![(100, 50)],
                lines: vec![(100, 0), (110, 1), (130, 6)],
            },
            sources: source_lines(XLATED),
        };
        let counts = by_line(&program, &[101, 111, 112, 131, 140, 149]);
        let expected: Vec<(String, usize)> = vec![
            (
                "task.rs:25  info.ppid = M::read::<u32>(parent, off!(task_tgid)).unwrap_or(0);"
                    .into(),
                3,
            ),
            (
                "process.rs:145  if task.is_null() || is_self::<M>(task) {".into(),
                2,
            ),
            ("(its entry, before any line of its own)".into(), 1),
        ];
        assert_eq!(counts, expected);
    }
}
