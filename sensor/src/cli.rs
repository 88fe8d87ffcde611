//! The `custos` command line: its subcommands and what each runs.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::{access, allocator, config, metrics, pipeline, privacy, tail};

#[derive(Parser)]
#[command(
    name = "custos",
    version,
    about = "eBPF sensor: who ran what, as whom, from which login"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the kernel programs and stream events to the configured sinks until SIGINT/SIGTERM.
    Run {
        /// TOML configuration; without it, the embedded default (JSON lines on stdout).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit.
    CheckConfig { file: PathBuf },
    /// Print the embedded default configuration.
    DefaultConfig,
    /// Show the running daemon's hooks, events and drops per kind, sinks and their backlog,
    /// memory and CPU (from its status socket).
    Status {
        #[arg(long, default_value_os_t = config::default_status_socket())]
        socket: PathBuf,
        /// Print the metrics as Prometheus text instead of the summary.
        #[arg(long)]
        prometheus: bool,
    },
    /// Follow the live event stream (root, or a member of a group in [tail] groups, which
    /// decides what is shown).
    Tail(tail::TailArgs),
    /// Turn a length-delimited protobuf file into JSON lines on stdout.
    Decode { file: PathBuf },
    /// Say in plain words what a configuration collects about people and where it goes
    /// (without --config: the embedded default).
    PrivacyReport {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a new pseudonymisation key to FILE (which must not exist yet), readable by root only.
    PrivacyKey { file: PathBuf },
    /// Per person: the entitlements granted, which were used within the period (with an
    /// example) and which were not (revocation candidates); this host's, or with --nats the
    /// fleet's from the sensors' access_usage summaries.
    AccessReport {
        /// The daemon's configuration, for its state directory (default: the embedded one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Uses older than this do not count ("30d", "12h").
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only this person.
        #[arg(long)]
        person: Option<String>,
        #[arg(long, value_enum, default_value_t = access::command::Format::Text)]
        format: access::command::Format,
        /// A NATS server whose JetStream stream holds the sensors' events.
        #[arg(long)]
        nats: Option<String>,
        #[arg(long, default_value = "CUSTOS")]
        stream: String,
        #[arg(long, default_value = "custos")]
        subject_prefix: String,
    },
    /// Print the name behind each pseudonym (`ps_...`), given the key that made them.
    Reidentify {
        #[arg(long)]
        key: PathBuf,
        #[arg(required = true)]
        pseudonyms: Vec<String>,
    },
}

/// Runs the command line: parses the arguments, runs the command, reports an error in one
/// line.
pub fn main() -> ExitCode {
    allocator::tune();
    // Colours only for a person at a terminal, never into journald or a log file.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("custos: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config } => {
            let loaded = match &config {
                Some(path) => config::Config::load(path)?,
                None => config::Config::embedded_default()?,
            };
            // One task drives the ring buffer; the sinks have their own thread.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(pipeline::run(loaded, config))
        }
        Command::CheckConfig { file } => {
            config::Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Status { socket, prometheus } => metrics::print_status(&socket, prometheus),
        Command::DefaultConfig => {
            print!("{}", config::EMBEDDED_DEFAULT);
            Ok(())
        }
        Command::Decode { file } => decode_file(&file),
        Command::Tail(args) => tail::print(args),
        Command::PrivacyReport { config } => {
            let loaded = match &config {
                Some(path) => config::Config::load(path)?,
                None => config::Config::embedded_default()?,
            };
            print!("{}", privacy::report::render(&loaded));
            Ok(())
        }
        Command::PrivacyKey { file } => {
            privacy::pseudonym::Pseudonymizer::write_new_key(&file)?;
            println!("{}: new key written", file.display());
            Ok(())
        }
        Command::AccessReport {
            config,
            since,
            person,
            format,
            nats,
            stream,
            subject_prefix,
        } => {
            let nats = nats.map(|url| access::fleet::FleetSource {
                url,
                stream,
                subject_prefix,
            });
            let request = access::command::ReportRequest {
                config,
                since,
                person,
                format,
                nats,
            };
            print!("{}", access::command::run(&request)?);
            Ok(())
        }
        Command::Reidentify { key, pseudonyms } => {
            let key = privacy::pseudonym::Pseudonymizer::from_key_file(&key)?;
            for pseudonym in pseudonyms {
                println!("{pseudonym} {}", key.reidentify(&pseudonym)?);
            }
            Ok(())
        }
    }
}

fn decode_file(path: &PathBuf) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    custos_proto::delimited::to_json_lines(std::io::BufReader::new(file), std::io::stdout().lock())
        .with_context(|| format!("decoding {}", path.display()))?;
    Ok(())
}
