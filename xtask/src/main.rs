//! `cargo xtask`: Custos developer tooling.
//!
//! Every command first makes sure the machine has what it needs (see `setup`), so a fresh
//! machine goes from clone to running sensor or green tests with one command.
mod bench;
mod bench_basis;
mod bench_exec;
mod bench_guard;
mod bench_memory;
mod bench_network;
mod bench_pair;
mod bench_rsyslog;
mod bench_sink;
mod bench_soak;
mod bench_startup;
mod bench_threads;
mod bench_throughput;
mod bpf_jit;
mod commands;
mod fuzz;
mod package;
mod profile;
mod profile_bpf;
mod profile_daemon;
mod report;
mod schema_doc;
mod setup;
mod shell;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Custos developer tooling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need: nightly rust-src, bpf-linker (with Debian's
    /// LLVM 22), and the Debian tools the tests drive. Idempotent.
    Setup,
    /// Build the eBPF programs and the `custos` binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run the sensor (as root) on the embedded default or the given arguments.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for `custos run`, e.g. `-- --config packaging/custos.toml`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every check and test: formatting, clippy, unit tests, and the integration tests that
    /// load the real programs (as root).
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Boot Debian's 6.1 kernel under QEMU (TCG) and run the in-guest suite there: the richer
    /// hook paths (BPF LSM, fentry/fexit), and a USB drive plugged in, denied and unplugged.
    VmTest,
    /// Run the libFuzzer targets in fuzz/ (cargo-fuzz on nightly): one, or all in turn, each
    /// for SECONDS on its corpus after replaying its past crashes.
    Fuzz {
        /// ring_record, config, identity_map, spool_recovery or delimited (default: all).
        target: Option<String>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Turn a length-delimited protobuf file written by a sink back into JSON lines.
    Decode { file: PathBuf },
    /// Build the Debian package (target/debian/custos_VERSION_amd64.deb).
    Package,
    /// Write docs/schema.md from the comments in proto/custos/v1 (--check: fail if stale).
    SchemaDoc {
        #[arg(long)]
        check: bool,
    },
    /// Benchmarks that print ratios against a baseline measured in the same run (as root).
    /// Without a subcommand: all of them, written to bench/REPORT.md.
    Bench {
        #[command(subcommand)]
        which: Option<BenchCommand>,
    },
    /// Developer profiles (as root): `exec`, the daemon's instructions per exec under
    /// callgrind, by stage; `daemon`, its CPU by thread and the kernel's share; `bpf`, the eBPF
    /// programs' time by source line.
    Profile {
        #[command(subcommand)]
        which: ProfileCommand,
    },
    /// The exec storm the exec benchmark runs (internal).
    #[command(hide = true)]
    ExecLoop {
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
        /// Each exec gets `-cp` and a class path of this many bytes (0: no arguments).
        #[arg(long, default_value_t = 0)]
        argv_bytes: usize,
        program: PathBuf,
    },
    /// The open loop the open benchmark times (internal).
    #[command(hide = true)]
    OpenLoop {
        #[arg(long)]
        seconds: u64,
        /// Opens per second at most (default: as fast as it can).
        #[arg(long)]
        rate: Option<u64>,
        file: PathBuf,
    },
    /// The network benchmark's server (internal).
    #[command(hide = true)]
    AcceptLoop { address: String },
    /// The network benchmark's client (internal).
    #[command(hide = true)]
    ConnectLoop {
        #[arg(long)]
        seconds: u64,
        address: String,
    },
}

#[derive(Subcommand)]
enum ProfileCommand {
    /// The daemon on its embedded default under callgrind through an exec storm: instructions
    /// per exec, in all and by stage, and the functions that executed the most.
    Exec {
        /// The binary to profile (default: the release build, built first).
        #[arg(long)]
        custos: Option<PathBuf>,
        /// Execs per second (callgrind runs the daemon about fifty times slower).
        #[arg(long, default_value_t = 400)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds of storm before the counting starts.
        #[arg(long, default_value_t = bench_exec::STEADY_AFTER)]
        warmup: u64,
        /// Each exec gets `-cp` and a class path of this many bytes (0: no arguments).
        #[arg(long, default_value_t = 0)]
        argv_bytes: usize,
    },
    /// The daemon on its embedded default through an exec storm under perf: each thread's
    /// CPU per exec and the kernel's share of it, by the system call it entered through.
    Daemon(PerfProfile),
    /// The daemon on its embedded default through an exec storm under perf: each eBPF
    /// program's run time per exec and where its samples fall, by source line.
    Bpf(PerfProfile),
}

/// A profile under perf through an exec storm at the benchmark's rate.
#[derive(Args)]
struct PerfProfile {
    /// The binary to run (default: the release build, built first).
    #[arg(long)]
    custos: Option<PathBuf>,
    #[arg(long, default_value_t = 1600)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of storm before the sampling starts.
    #[arg(long, default_value_t = bench_exec::STEADY_AFTER)]
    warmup: u64,
    /// Each exec gets `-cp` and a class path of this many bytes (0: no arguments).
    #[arg(long, default_value_t = 0)]
    argv_bytes: usize,
}

impl PerfProfile {
    fn options(self) -> profile::Options {
        profile::Options {
            custos: self.custos,
            rate: self.rate,
            seconds: self.seconds,
            warmup: self.warmup,
            argv_bytes: self.argv_bytes,
        }
    }
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Cost per open(2): nothing attached, Custos (every open; default config), auditd.
    Open {
        /// Seconds each setup runs per round.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Rounds per setup; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Events per second through each sink type, to real receivers on loopback.
    Sink {
        #[arg(long, default_value_t = bench_sink::EVENTS_PER_ROUND)]
        events: u64,
        /// Rounds per sink, interleaved; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Exec storm at fixed rates: nothing attached, Custos (embedded default; the same with a
    /// protobuf file), auditd; or, with `--against`, this build's daemon and another's.
    Exec {
        /// Execs per second, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "100,1600,10000")]
        rates: Vec<u64>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of storm before each Custos round measures (0: from the daemon's start).
        #[arg(long, default_value_t = bench_exec::STEADY_AFTER)]
        warmup: u64,
        /// Another custos build to compare this one with instead: both daemons attached
        /// through the same storms, their CPU per exec and its ratio each round.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Each exec gets `-cp` and a class path of this many bytes (0: no arguments): the
        /// long command lines real hosts run.
        #[arg(long, default_value_t = 0)]
        argv_bytes: usize,
    },
    /// Cost per TCP connection (connect, 1 KiB each way, close) to a peer in a network
    /// namespace: nothing attached, Custos (default config).
    Network {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The highest event rate sustained with nothing lost, and the daemon's peak memory.
    Throughput {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Start-up and stop on the embedded default: time to ready, CPU, peak memory, each hook's
    /// load time and verified instructions, time to stop.
    Startup {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Sustained load at half the rate the daemon keeps up with: memory and CPU over time, so
    /// a leak shows as a slope.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// File opens per second instead of half the measured rate.
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds between samples (default: a thirtieth of the run, at least ten).
        #[arg(long)]
        sample_seconds: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::all(),
        Command::Build { release } => setup::build_tools().and_then(|()| commands::build(release)),
        Command::Run { release, args } => commands::run(release, &args),
        Command::Test { filter } => commands::test(filter.as_deref()),
        Command::VmTest => vm::run_suite().and_then(|tally| {
            if tally.failed > 0 {
                anyhow::bail!("{} vm tests failed", tally.failed);
            }
            Ok(())
        }),
        Command::Decode { file } => commands::decode(&file),
        Command::Fuzz { target, seconds } => {
            setup::build_tools().and_then(|()| fuzz::run_targets(target.as_deref(), seconds))
        }
        Command::SchemaDoc { check } => schema_doc::run(check),
        Command::Package => setup::build_tools().and_then(|()| package::build().map(|_| ())),
        Command::Bench { which } => commands::bench_prepare().and_then(|()| bench(which)),
        Command::Profile { which } => commands::bench_prepare().and_then(|()| profile(which)),
        Command::ExecLoop {
            rate,
            seconds,
            argv_bytes,
            program,
        } => bench_exec::exec_loop(&program, argv_bytes, rate, seconds),
        Command::OpenLoop {
            seconds,
            rate,
            file,
        } => bench::open_loop(&file, seconds, rate),
        Command::AcceptLoop { address } => bench_network::accept_loop(&address),
        Command::ConnectLoop { seconds, address } => bench_network::connect_loop(&address, seconds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn profile(which: ProfileCommand) -> anyhow::Result<()> {
    match which {
        ProfileCommand::Exec {
            custos,
            rate,
            seconds,
            warmup,
            argv_bytes,
        } => profile::exec(&profile::Options {
            custos,
            rate,
            seconds,
            warmup,
            argv_bytes,
        }),
        ProfileCommand::Daemon(profile) => profile_daemon::daemon(&profile.options()),
        ProfileCommand::Bpf(profile) => profile_bpf::bpf(&profile.options()),
    }
}

/// Runs one benchmark, or all of them.
fn bench(which: Option<BenchCommand>) -> anyhow::Result<()> {
    let mut report = report::Report::default();
    match which {
        Some(BenchCommand::Open { seconds, rounds }) => {
            bench::open(&bench::Options { seconds, rounds }, &mut report)
        }
        Some(BenchCommand::Sink { events, rounds }) => {
            bench_sink::sink(events, rounds, &mut report)
        }
        Some(BenchCommand::Exec {
            rates,
            seconds,
            rounds,
            warmup,
            against: Some(against),
            argv_bytes,
        }) => bench_pair::exec_pair(
            &bench_pair::Options {
                against,
                rates,
                seconds,
                rounds,
                warmup,
                argv_bytes,
            },
            &mut report,
        ),
        Some(BenchCommand::Exec {
            rates,
            seconds,
            rounds,
            warmup,
            against: None,
            argv_bytes,
        }) => bench_exec::exec(
            &bench_exec::Options {
                rates,
                seconds,
                rounds,
                warmup,
                argv_bytes,
            },
            &mut report,
        ),
        Some(BenchCommand::Network { seconds, rounds }) => {
            bench_network::network(&bench_network::Options { seconds, rounds }, &mut report)
        }
        Some(BenchCommand::Throughput { seconds, rounds }) => bench_throughput::throughput(
            &bench_throughput::Options {
                seconds,
                rounds,
                exec_rate: 1000,
            },
            &mut report,
        ),
        Some(BenchCommand::Startup { rounds }) => {
            bench_startup::startup(&bench_startup::Options { rounds }, &mut report)
        }
        Some(BenchCommand::Soak {
            minutes,
            rate,
            sample_seconds,
        }) => bench_soak::soak(
            &bench_soak::Options {
                minutes,
                rate,
                sample_seconds,
            },
            &mut report,
        ),
        None => report::all(&mut report),
    }
}
