//! `custos tail`: the live event stream on a local Unix socket, for root and configured groups
//! only (checked with the peer's kernel credentials), each group with its own field view.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result};
use custos_proto::v1::Event;
use tokio::{
    io::AsyncWriteExt,
    net::{UnixListener, UnixStream},
    sync::broadcast,
};

use crate::{
    config::{PrivacyConfig, TailGroup},
    privacy::Privacy,
    views::filter::TailFilter,
};

/// Events waiting for a slow reader before it misses some (and is told how many).
pub const BACKLOG: usize = 4096;

/// Binds the stream's socket; anyone may connect, the daemon decides who is served.
pub fn bind(path: &Path) -> Result<UnixListener> {
    crate::metrics::bind_local_socket(path, 0o666, "the tail socket")
}

pub async fn serve(
    listener: UnixListener,
    events: broadcast::Sender<Arc<Event>>,
    groups: Vec<TailGroup>,
    privacy: PrivacyConfig,
) {
    let groups = Arc::new(groups);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let receiver = events.subscribe();
        let (groups, privacy) = (groups.clone(), privacy.clone());
        tokio::spawn(async move {
            if let Err(err) = client(stream, receiver, &groups, &privacy).await {
                tracing::debug!("tail client: {err:#}");
            }
        });
    }
}

async fn client(
    mut stream: UnixStream,
    mut events: broadcast::Receiver<Arc<Event>>,
    groups: &[TailGroup],
    privacy: &PrivacyConfig,
) -> Result<()> {
    let peer = stream.peer_cred()?;
    let Some(view) = view_for(peer.uid(), groups, privacy)? else {
        tracing::warn!(
            uid = peer.uid(),
            "custos tail refused: not root or in an allowed group"
        );
        stream
            .write_all(b"refused: only root and the groups in [tail] groups may read the stream\n")
            .await?;
        return Ok(());
    };
    tracing::info!(uid = peer.uid(), "custos tail client connected");
    loop {
        let line = match events.recv().await {
            Ok(event) => {
                let mut event = Event::clone(&event);
                view.apply(&mut event);
                serde_json::to_string(&event)? + "\n"
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                format!("{{\"tailMissed\":{missed}}}\n")
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        stream.write_all(line.as_bytes()).await?;
    }
}

/// The view `uid` gets: root sees everything; otherwise the first group of theirs listed.
fn view_for(uid: u32, groups: &[TailGroup], privacy: &PrivacyConfig) -> Result<Option<Privacy>> {
    if uid == 0 {
        return Ok(Some(Privacy::unrestricted()));
    }
    let subject = crate::identity::Subject::of(uid);
    let Some(group) = groups.iter().find(|g| subject.groups.contains(&g.group)) else {
        return Ok(None);
    };
    Privacy::for_view(group.argv, group.names, privacy).map(Some)
}

/// How `custos tail` prints events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// One line per event: time, who, what, where.
    Compact,
    /// The events as canonical JSON lines.
    Json,
}

/// `custos tail`'s options.
#[derive(Clone, Debug, clap::Args)]
pub struct TailArgs {
    #[arg(long, default_value = "/run/custos/tail.sock")]
    pub socket: PathBuf,
    /// `compact`: one line per event for people; `json`: the events as JSON lines.
    /// Default: compact on a terminal, json otherwise.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// Only events of this kind (`exec`, `file_open`, `network`, ...); repeatable.
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Only events whose real, effective or login user is USER.
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this person (identity-map principal, or login user).
    #[arg(long)]
    pub person: Option<String>,
    /// Only events naming a path (file, program, mount point) under this prefix.
    #[arg(long)]
    pub path_prefix: Option<String>,
}

/// Writes what `line` (one line of the stream) shows in `output` to `text`; false when the
/// filter leaves it out.
fn render(line: &str, output: Output, filter: &TailFilter, color: bool, text: &mut String) -> bool {
    let parse = output == Output::Compact || !filter.is_empty();
    match line.strip_prefix("{\"tailMissed\":") {
        Some(missed) if output == Output::Compact => {
            let missed = missed.trim_end_matches('}');
            text.push_str(&format!(
                "-- {missed} events missed: this reader fell behind\n"
            ));
        }
        None if parse => match serde_json::from_str::<Event>(line) {
            Ok(event) if !filter.shows(&event) => return false,
            Ok(event) if output == Output::Compact => {
                crate::views::compact::write_line(&event, color, text);
            }
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        },
        // JSON as sent: an event no filter asks about, or the note of missed events.
        _ => {
            text.push_str(line);
            text.push('\n');
        }
    }
    true
}

/// `custos tail`: the stream on standard output, filtered, as JSON lines or compact lines.
pub fn print(args: TailArgs) -> Result<()> {
    let filter = TailFilter {
        kinds: args.kinds,
        user: args.user,
        person: args.person,
        path_prefix: args.path_prefix,
    };
    let (path, output) = (args.socket.as_path(), args.output);
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to {} (is custos running?)", path.display()))?;
    let mut first = [0u8; 9];
    let n = std::io::Read::read(&mut stream, &mut first)?;
    if &first[..n] == b"refused: " {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stream, &mut rest)?;
        anyhow::bail!(
            "the daemon refused: {}",
            rest.trim_start_matches("refused: ").trim()
        );
    }
    let terminal = std::io::stdout().is_terminal();
    let output = output.unwrap_or(if terminal {
        Output::Compact
    } else {
        Output::Json
    });
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    let lines = std::io::BufReader::new(std::io::Read::chain(&first[..n], stream)).lines();
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    for line in lines {
        let line = line.context("reading the stream")?;
        text.clear();
        if !render(&line, output, &filter, color, &mut text) {
            continue;
        }
        if out
            .write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(()); // the reader went away (a closed pipe)
        }
    }
    Ok(())
}
