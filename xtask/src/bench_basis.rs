//! `cargo xtask bench open`, access-basis part: what the basis costs per open, with and without
//! it in the same run, at a rate the daemon keeps up with, so that nothing is dropped and both
//! sides report every open.
use std::path::Path;

use anyhow::Result;

use crate::{
    bench::{interleaved, lost_summary, median_by, with_custos, Loops, Options, Round, EVERY_OPEN},
    report::Report,
};

/// Opens per second, one loop: well within what the daemon sustains.
const RATE: u64 = 50_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Basis {
    On,
    Off,
}

impl Basis {
    fn label(self) -> &'static str {
        match self {
            Basis::On => "custos, every open, access basis",
            Basis::Off => "custos, every open, no access basis",
        }
    }

    fn config(self) -> String {
        match self {
            Basis::On => EVERY_OPEN.to_owned(),
            Basis::Off => format!("{EVERY_OPEN}access_basis = false\n"),
        }
    }
}

pub fn run(
    custos: &Path,
    workdir: &Path,
    file: &Path,
    options: &Options,
    report: &mut Report,
) -> Result<()> {
    let loops = Loops {
        seconds: options.seconds,
        count: 1,
        rate: Some(RATE),
    };
    let setups = [Basis::On, Basis::Off];
    let results = interleaved(
        "open (access basis)",
        &setups,
        options.rounds,
        Basis::label,
        |b| with_custos(custos, workdir, file, &loops, &b.config()),
    )?;
    report.line("");
    report.line(format!(
        "access basis: one loop at {RATE} opens/s, every open reported; median of {} rounds",
        options.rounds
    ));
    report.line(format!(
        "{:<38} {:>16} {:>14} {:>16} {:>10}",
        "setup", "loop CPU ns/open", "eBPF ns/open", "daemon ns/event", "lost"
    ));
    let medians: Vec<[f64; 3]> = results.iter().map(|(_, rounds)| medians(rounds)).collect();
    for ((setup, rounds), [cpu, bpf, daemon]) in results.iter().zip(&medians) {
        report.line(format!(
            "{:<38} {cpu:>16.0} {bpf:>14.0} {daemon:>16.0} {:>10}",
            setup.label(),
            lost_summary(rounds)
        ));
    }
    let ([cpu_on, bpf_on, daemon_on], [cpu_off, bpf_off, daemon_off]) = (medians[0], medians[1]);
    let change = |on: f64, off: f64| (on / off.max(1.0) - 1.0) * 100.0;
    report.line(format!(
        "the access basis adds {:+.1}% to an open's CPU (its syscall and eBPF), {:+.1}% to the \
         eBPF time, {:+.1}% to the daemon's time per event",
        change(cpu_on, cpu_off),
        change(bpf_on, bpf_off),
        change(daemon_on, daemon_off)
    ));
    Ok(())
}

/// Loop CPU per open, eBPF time per open and daemon CPU per event, each the median of rounds.
fn medians(rounds: &[Round]) -> [f64; 3] {
    let per_open = |d: std::time::Duration, r: &Round| d.as_nanos() as f64 / r.opens.max(1) as f64;
    [
        median_by(rounds, |r| per_open(r.loop_cpu, r)).1,
        median_by(rounds, |r| per_open(r.bpf.unwrap_or_default(), r)).1,
        median_by(rounds, |r| {
            r.daemon_cpu.unwrap_or_default().as_nanos() as f64 / r.daemon_events.max(1) as f64
        })
        .1,
    ]
}
