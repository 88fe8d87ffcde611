//! Where events go: standard output or files, as JSON lines or length-delimited protobuf.
//!
//! The sinks run on their own thread behind a channel, so a slow disk or a blocked terminal never
//! stalls the ring-buffer reader. Each event is encoded once per format, into reused buffers.
use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use custos_proto::v1::Event;
use prost::Message as _;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::config::{Format, SinkConfig};

struct Output {
    name: String,
    format: Format,
    writer: Box<dyn Write + Send>,
}

pub struct Sinks {
    outputs: Vec<Output>,
    json: Vec<u8>,
    protobuf: Vec<u8>,
}

impl Sinks {
    /// Opens every sink up front, so a bad path fails at start-up, not at the first event.
    pub fn open(configs: &[SinkConfig]) -> Result<Self> {
        let outputs = configs.iter().map(open_one).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            outputs,
            json: Vec::with_capacity(4096),
            protobuf: Vec::with_capacity(4096),
        })
    }

    pub fn write(&mut self, event: &Event) -> Result<()> {
        self.json.clear();
        self.protobuf.clear();
        let wants = |f| self.outputs.iter().any(|o| o.format == f);
        if wants(Format::Json) {
            serde_json::to_writer(&mut self.json, event).context("encoding an event as JSON")?;
            self.json.push(b'\n');
        }
        if wants(Format::Protobuf) {
            event
                .encode_length_delimited(&mut self.protobuf)
                .context("encoding an event as protobuf")?;
        }
        for output in &mut self.outputs {
            let bytes = match output.format {
                Format::Json => &self.json,
                Format::Protobuf => &self.protobuf,
            };
            output
                .writer
                .write_all(bytes)
                .with_context(|| format!("writing to sink {}", output.name))?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        for output in &mut self.outputs {
            output
                .writer
                .flush()
                .with_context(|| format!("flushing sink {}", output.name))?;
        }
        Ok(())
    }

    /// Writes events until the channel closes, flushing whenever it runs dry so output is
    /// prompt under light load and batched under heavy load.
    pub fn run(mut self, mut events: UnboundedReceiver<Event>) -> Result<()> {
        while let Some(event) = events.blocking_recv() {
            self.write(&event)?;
            while let Ok(event) = events.try_recv() {
                self.write(&event)?;
            }
            self.flush()?;
        }
        self.flush()
    }
}

fn open_one(config: &SinkConfig) -> Result<Output> {
    Ok(match config {
        SinkConfig::Stdout { format } => Output {
            name: "stdout".into(),
            format: *format,
            writer: Box::new(BufWriter::with_capacity(64 * 1024, io::stdout())),
        },
        SinkConfig::File { path, format } => Output {
            name: format!("file {}", path.display()),
            format: *format,
            writer: Box::new(BufWriter::with_capacity(256 * 1024, open_file(path)?)),
        },
    })
}

fn open_file(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory of file sink {}", path.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening file sink {} for appending", path.display()))
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{event::Body, EventLoss};

    use super::*;

    fn event(seq: u64) -> Event {
        Event {
            seq,
            host: "h".into(),
            body: Some(Body::Loss(EventLoss {
                kind: 1,
                count: 2,
                reason: 1,
            })),
            ..Event::default()
        }
    }

    #[test]
    fn file_sinks_write_json_lines_and_delimited_protobuf() {
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("sub/events.json");
        let pb_path = dir.path().join("events.pb");
        let mut sinks = Sinks::open(&[
            SinkConfig::File {
                path: json_path.clone(),
                format: Format::Json,
            },
            SinkConfig::File {
                path: pb_path.clone(),
                format: Format::Protobuf,
            },
        ])
        .unwrap();
        sinks.write(&event(1)).unwrap();
        sinks.write(&event(2)).unwrap();
        sinks.flush().unwrap();

        let json = std::fs::read_to_string(&json_path).unwrap();
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["seq"], "2", "uint64 is a string in proto3 JSON");
        assert_eq!(lines[0]["loss"]["reason"], "LOSS_REASON_KERNEL_BUFFER_FULL");

        let pb = std::fs::read(&pb_path).unwrap();
        let decoded: Vec<Event> = custos_proto::delimited::read_all(&pb[..]).unwrap();
        assert_eq!(decoded, vec![event(1), event(2)]);
    }

    #[test]
    fn an_unwritable_path_fails_at_open_with_the_path_named() {
        let err = Sinks::open(&[SinkConfig::File {
            path: "/proc/custos-cannot-exist/x".into(),
            format: Format::Json,
        }])
        .err()
        .unwrap();
        assert!(format!("{err:#}").contains("/proc/custos-cannot-exist/x"));
    }
}
