//! Stream sinks: events from the spool to a collector over TCP, optionally TLS, either in
//! protobuf's delimited stream format (a varint byte length before each `custos.v1.Event`, as
//! `parseDelimitedFrom` and Netty's `ProtobufVarint32FrameDecoder` read it) or as syslog.
//!
//! Records leave the spool only after they were written and flushed to the connection; on any
//! error the connection is dropped and the same records are sent again on the next one, so a
//! collector can see an event twice (detectable by `seq`) but never miss one the spool held.
use std::{
    io::Write,
    net::{TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};

use super::{spool::Spool, syslog::SyslogFormat, tls::TlsClient};

/// How records are put on the wire.
pub enum Framing {
    /// The spooled records as they are: delimited protobuf.
    Delimited,
    /// Each record as an octet-counted RFC 5424 message with a JSON body.
    Syslog(SyslogFormat),
}

const BATCH: usize = 512;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct TcpSender {
    pub name: String,
    pub address: String,
    pub tls: Option<TlsClient>,
    pub framing: Framing,
    /// Counts failed delivery attempts.
    pub errors: prometheus_client::metrics::counter::Counter,
    pub spool: Arc<Spool>,
    pub stop: Arc<AtomicBool>,
    /// After stop, how long to keep delivering what is spooled before leaving it for the next
    /// start.
    pub drain_grace: Duration,
}

impl TcpSender {
    pub fn spawn(self) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("custos-{}", self.name))
            .spawn(move || self.run())
            .context("starting a sink sender thread")
    }

    fn run(self) {
        let mut connection: Option<Box<dyn Write + Send>> = None;
        let mut backoff = Duration::from_millis(100);
        let mut stopping_since: Option<Instant> = None;
        let mut failures = 0u64;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if self.spool.backlog_bytes() == 0 || since.elapsed() > self.drain_grace {
                    break;
                }
            }
            let (records, position) = match self.spool.peek(BATCH, Duration::from_millis(100)) {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::error!(sink = %self.name, "reading the spool: {err:#}");
                    std::thread::sleep(MAX_BACKOFF);
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            let sent = self.send(&mut connection, &records);
            match sent {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(sink = %self.name, "delivering again after {failures} failed attempts");
                    }
                    failures = 0;
                    backoff = Duration::from_millis(100);
                    if let Err(err) = self.spool.commit(position) {
                        tracing::error!(sink = %self.name, "committing the spool cursor: {err:#}");
                    }
                }
                Err(err) => {
                    connection = None;
                    failures += 1;
                    self.errors.inc();
                    // One line per outage, not one per retry.
                    if failures == 1 {
                        tracing::warn!(
                            sink = %self.name,
                            address = %self.address,
                            "cannot deliver, events stay in the spool and are retried: {err:#}"
                        );
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn send(
        &self,
        connection: &mut Option<Box<dyn Write + Send>>,
        records: &[Vec<u8>],
    ) -> Result<()> {
        if connection.is_none() {
            *connection = Some(self.connect()?);
        }
        let stream = connection
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        let mut batch = Vec::with_capacity(records.iter().map(Vec::len).sum());
        for record in records {
            match &self.framing {
                Framing::Delimited => batch.extend_from_slice(record),
                Framing::Syslog(format) => {
                    if let Err(err) = format.frame(record, &mut batch) {
                        // A record the spool holds but that does not decode cannot be sent as
                        // syslog; skip it rather than block the sink forever.
                        tracing::error!(sink = %self.name, "dropping an undecodable spooled record: {err:#}");
                    }
                }
            }
        }
        stream.write_all(&batch).context("writing")?;
        stream.flush().context("flushing")?;
        Ok(())
    }

    fn connect(&self) -> Result<Box<dyn Write + Send>> {
        let address = self
            .address
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.address))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", self.address))?;
        let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
            .with_context(|| format!("connecting to {address}"))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(match &self.tls {
            None => Box::new(stream),
            Some(tls) => {
                let client =
                    rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                        .context("starting TLS")?;
                let mut stream = rustls::StreamOwned::new(client, stream);
                // Complete the handshake now, so certificate errors show as connect errors.
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .context("TLS handshake")?;
                }
                Box::new(stream)
            }
        })
    }
}
