//! `cargo xtask profile daemon`: where the daemon's CPU per exec goes, thread by thread, and
//! how much of it is the kernel's work on the daemon's behalf (writing its output, faulting in
//! memory, waiting and waking), by the system call or trap it entered through.
//!
//! The exec benchmark gives the daemon's CPU per exec and splits it by thread; `profile exec`
//! counts its own instructions. Neither sees the kernel's share of that CPU, which for a sink
//! writing to a file can be most of it. Here `perf` samples the daemon's threads (on-CPU
//! time, kernel call chains) through an exec storm on its embedded default.
use std::{collections::BTreeMap, path::Path};

use anyhow::Result;

use crate::{
    bench_exec::{marker_in, storm_execs},
    bench_threads::{ThreadCpu, Threads},
    profile::{output_dir, perf_script, storm_under_perf, with_daemon, Options},
};

/// Samples a second of a thread's time on a CPU: a few hundred per thread and second of storm.
const FREQUENCY: u32 = 10_000;

/// Kernel entry points named per thread, the busiest first.
const ENTRY_SHOWN: usize = 5;

/// Where one sample was: user space, or the kernel entered through `entry`.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    User,
    Kernel(String),
}

/// One thread name's samples: how many, and how many in the kernel by entry point.
#[derive(Default)]
struct ThreadSamples {
    total: u64,
    kernel: BTreeMap<String, u64>,
}

pub fn daemon(options: &Options) -> Result<()> {
    crate::setup::bpf_profile_tools()?;
    let work = tempfile::tempdir()?;
    let marker = marker_in(work.path(), "profile-daemon")?;
    let samples_file = output_dir()?.join("daemon.perf.data");
    let custos = options.binary();
    let (spawned, threads) = with_daemon(&custos, work.path(), |pid| {
        measure(options, &marker, &samples_file, pid)
    })?;
    let samples = samples_by_thread(&samples_file)?;
    println!(
        "the daemon ({}) on its embedded default, its events into a file, through an exec storm: \
         a copy of /bin/true{} at {}/s for {} s ({spawned} execs) after {} s of the same; perf \
         at {FREQUENCY} Hz of each thread's time on a CPU",
        custos.display(),
        crate::bench_exec::with_argument(options.argv_bytes),
        options.rate,
        options.seconds,
        options.warmup
    );
    println!(
        "each thread: its CPU per exec (schedstat, under perf), the share of its samples in the \
         kernel, and that share by the system call or trap it entered through"
    );
    for name in threads.names() {
        let us = threads.on_cpu(&name).as_secs_f64() * 1e6 / spawned.max(1) as f64;
        if let Some(line) = thread_line(&name, us, samples.get(&name)) {
            println!("{line}");
        }
    }
    println!(
        "the samples: {} (perf report -i FILE)",
        samples_file.display()
    );
    Ok(())
}

/// The storm under `perf`: execs spawned, and the daemon's CPU by thread meanwhile.
fn measure(
    options: &Options,
    marker: &Path,
    samples_file: &Path,
    pid: u32,
) -> Result<(u64, ThreadCpu)> {
    storm_execs(marker, options.argv_bytes, options.rate, options.warmup)?;
    let before = Threads::of(pid)?;
    let (frequency, pid_arg) = (FREQUENCY.to_string(), pid.to_string());
    let perf_args = ["-e", "cpu-clock", "-g", "-F", &frequency, "-p", &pid_arg];
    let spawned = storm_under_perf(options, marker, &perf_args, samples_file)?;
    Ok((spawned, Threads::of(pid)?.since(&before)))
}

/// Each thread name's samples, from `perf script`.
fn samples_by_thread(samples_file: &Path) -> Result<BTreeMap<String, ThreadSamples>> {
    let script = perf_script(samples_file, "comm,ip,sym")?;
    let mut by_thread: BTreeMap<String, ThreadSamples> = BTreeMap::new();
    for (comm, frames) in samples(&script) {
        let counts = by_thread.entry(comm).or_default();
        counts.total += 1;
        if let Place::Kernel(entry) = place(&frames) {
            *counts.kernel.entry(entry).or_default() += 1;
        }
    }
    Ok(by_thread)
}

/// The samples of a `perf script -F comm,ip,sym` listing with call chains: each one's command
/// name and its frames (address, symbol), innermost first.
fn samples(script: &str) -> Vec<(String, Vec<(u64, &str)>)> {
    let mut all = Vec::new();
    let mut current: Option<(String, Vec<(u64, &str)>)> = None;
    for line in script.lines() {
        if line.trim().is_empty() {
            all.extend(current.take());
        } else if line.starts_with(char::is_whitespace) {
            let Some((address, symbol)) = line.trim().split_once(' ') else {
                continue;
            };
            let Ok(address) = u64::from_str_radix(address, 16) else {
                continue;
            };
            if let Some((_, frames)) = &mut current {
                frames.push((address, symbol.trim()));
            }
        } else {
            all.extend(current.take());
            current = Some((line.trim().to_owned(), Vec::new()));
        }
    }
    all.extend(current);
    all
}

/// Kernel addresses on x86_64 are in the upper half.
const KERNEL_SPACE: u64 = 0xffff_8000_0000_0000;

/// Where a sample with `frames` (innermost first) was: in user space, or in the kernel through
/// the system call, page fault or interrupt its chain came in by.
fn place(frames: &[(u64, &str)]) -> Place {
    match frames.first() {
        Some((address, _)) if *address >= KERNEL_SPACE => {}
        _ => return Place::User,
    }
    let kernel: Vec<&str> = frames
        .iter()
        .take_while(|(a, _)| *a >= KERNEL_SPACE)
        .map(|(_, symbol)| *symbol)
        .collect();
    let entry = kernel.iter().enumerate().find_map(|(at, symbol)| {
        match *symbol {
            // The dispatcher is inlined into do_syscall_64: the frame it called names the call.
            "do_syscall_64" => at.checked_sub(1).map(|inner| syscall_name(kernel[inner])),
            "exc_page_fault" => Some("page faults".to_owned()),
            s if s.starts_with("sysvec_") || s.starts_with("asm_sysvec_") => {
                Some("interrupts".to_owned())
            }
            _ => None,
        }
    });
    Place::Kernel(entry.unwrap_or_else(|| "other".to_owned()))
}

/// A system call's name from the function that implements it (`ksys_write`,
/// `__x64_sys_futex`, `__do_sys_clone3`).
fn syscall_name(function: &str) -> String {
    ["__x64_sys_", "__do_sys_", "__se_sys_", "ksys_", "do_"]
        .iter()
        .find_map(|prefix| function.strip_prefix(prefix))
        .unwrap_or(function)
        .to_owned()
}

/// One thread's line, or `None` when it used no CPU worth showing.
fn thread_line(name: &str, us_per_exec: f64, samples: Option<&ThreadSamples>) -> Option<String> {
    if us_per_exec < 0.005 {
        return None;
    }
    let Some(samples) = samples.filter(|s| s.total > 0) else {
        return Some(format!(
            "{name:<16} {us_per_exec:>6.2} µs per exec   (no samples)"
        ));
    };
    let share = |n: u64| n as f64 * 100.0 / samples.total as f64;
    let in_kernel: u64 = samples.kernel.values().sum();
    let mut entries: Vec<(&String, &u64)> = samples.kernel.iter().collect();
    entries.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    let named: Vec<String> = entries
        .iter()
        .filter(|(_, n)| share(**n) >= 0.5)
        .take(ENTRY_SHOWN)
        .map(|(entry, n)| format!("{entry} {:.0}%", share(**n)))
        .collect();
    Some(format!(
        "{name:<16} {us_per_exec:>6.2} µs per exec   {} samples, in the kernel {:.0}%: {}",
        samples.total,
        share(in_kernel),
        named.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "custos-sinks \n\
        \tffffffff81a0c0de copy_folio_from_iter_atomic\n\
        \tffffffff81a0beef generic_perform_write\n\
        \tffffffff81a0f00d ksys_write\n\
        \tffffffff81a0dcba do_syscall_64\n\
        \t          61e32a custos::sinks::Sinks::write_to\n\
        \n\
        custos \n\
        \t          47bb2f core::ptr::drop_in_place<custos_proto::v1::Process>\n\
        \t               0 [unknown]\n\
        \n\
        custos \n\
        \tffffffff81000001 clear_page_erms\n\
        \tffffffff81000002 exc_page_fault\n\
        \tffffffff81000003 asm_exc_page_fault\n\
        \t          9e5655 mi_malloc\n";

    #[test]
    fn samples_are_placed_by_the_entry_they_came_through() {
        let samples = samples(SCRIPT);
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].0, "custos-sinks");
        assert_eq!(place(&samples[0].1), Place::Kernel("write".to_owned()));
        assert_eq!(place(&samples[1].1), Place::User);
        assert_eq!(
            place(&samples[2].1),
            Place::Kernel("page faults".to_owned())
        );
    }

    #[test]
    fn a_kernel_sample_without_a_known_entry_is_other() {
        let frames = [(0xffff_ffff_8100_0001, "finish_task_switch")];
        assert_eq!(place(&frames), Place::Kernel("other".to_owned()));
        let preempted = [
            (0xffff_ffff_8100_0001, "finish_task_switch"),
            (0xffff_ffff_8100_0002, "irqentry_exit_to_user_mode"),
            (0xffff_ffff_8100_0003, "asm_sysvec_apic_timer_interrupt"),
            (0x49_bb88, "custos::sinks::json_fields::write_process"),
        ];
        assert_eq!(place(&preempted), Place::Kernel("interrupts".to_owned()));
        assert_eq!(syscall_name("__x64_sys_futex"), "futex");
    }

    #[test]
    fn the_line_gives_the_kernel_share_by_entry() {
        let samples = ThreadSamples {
            total: 10,
            kernel: BTreeMap::from([("write".to_owned(), 6), ("futex".to_owned(), 1)]),
        };
        let line = thread_line("custos-sinks", 3.2, Some(&samples)).unwrap();
        assert!(
            line.contains("in the kernel 70%: write 60%, futex 10%"),
            "{line}"
        );
        assert_eq!(thread_line("idle", 0.0, None), None);
    }
}
