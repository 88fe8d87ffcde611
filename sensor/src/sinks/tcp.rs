//! Stream sinks: events from the spool to a collector over TCP, optionally TLS, either in
//! protobuf's delimited stream format (a varint byte length before each `custos.v1.Event`, as
//! `parseDelimitedFrom` and Netty's `ProtobufVarint32FrameDecoder` read it) or as syslog.
//!
//! A batch counts as taken once it was written and flushed to the connection; on any error the
//! connection is dropped and the same records are sent again on the next one (see `deliver`),
//! so a collector can see an event twice (detectable by `seq`) but never miss one the spool
//! held.
use std::{
    io::Write,
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};

use super::{deliver::Transport, syslog::SyslogFormat, tls::TlsClient};

/// How records are put on the wire.
pub enum Framing {
    /// The spooled records as they are: delimited protobuf.
    Delimited,
    /// Each record as an octet-counted RFC 5424 message with a JSON body.
    Syslog(SyslogFormat),
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP (or TLS) connection to a collector.
pub struct TcpTransport {
    name: String,
    address: String,
    tls: Option<TlsClient>,
    framing: Framing,
    connection: Option<Box<dyn Write + Send>>,
}

impl TcpTransport {
    pub fn new(name: String, address: String, tls: Option<TlsClient>, framing: Framing) -> Self {
        Self {
            name,
            address,
            tls,
            framing,
            connection: None,
        }
    }

    fn frame(&mut self, records: &[Vec<u8>]) -> Vec<u8> {
        let mut batch = Vec::with_capacity(records.iter().map(Vec::len).sum());
        for record in records {
            match &mut self.framing {
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
        batch
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

impl Transport for TcpTransport {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<()> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        let batch = self.frame(records);
        let stream = self
            .connection
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        stream.write_all(&batch).context("writing")?;
        stream.flush().context("flushing")?;
        Ok(())
    }

    fn reset(&mut self) {
        self.connection = None;
    }
}
