//! Stream sinks: events from the spool to a collector over TCP, optionally TLS, either in
//! protobuf's delimited stream format (a varint byte length before each `custos.v1.Event`, as
//! `parseDelimitedFrom` and Netty's `ProtobufVarint32FrameDecoder` read it) or as syslog.
//!
//! Neither format has acknowledgements, so a batch counts as taken once the collector's TCP
//! acknowledged every byte of it (the socket's unacknowledged bytes, `SIOCOUTQ`, went below
//! it). What sat in the send queue when a connection failed is sent again on the next one, so
//! a collector can see an event twice (detectable by `seq`) but a network failure loses none.
//! A collector that closes its side (a graceful shutdown) is taken as going away: the sink
//! stops writing on that connection, and the collector, reading until the sink's close, has
//! everything written. Only a collector that dies with unread bytes can lose them.
use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};

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
    connection: Option<Connection>,
}

/// One connection: the writer (TLS or the socket itself) and the socket under it.
struct Connection {
    writer: Box<dyn Write + Send>,
    socket: TcpStream,
    /// Bytes the kernel took from the writer on this connection.
    written: Arc<AtomicU64>,
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

    fn connect(&self) -> Result<Connection> {
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
        abort_when_unacknowledged_for(&stream, WRITE_TIMEOUT)?;
        let written = Arc::new(AtomicU64::new(0));
        let counted = CountedSocket {
            stream: stream.try_clone()?,
            written: written.clone(),
        };
        let writer: Box<dyn Write + Send> = match &self.tls {
            None => Box::new(counted),
            Some(tls) => {
                let client =
                    rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                        .context("starting TLS")?;
                let mut stream = rustls::StreamOwned::new(client, counted);
                // Complete the handshake now, so certificate errors show as connect errors.
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .context("TLS handshake")?;
                }
                Box::new(stream)
            }
        };
        // The handshake is not part of any batch.
        written.store(0, Ordering::Relaxed);
        Ok(Connection {
            writer,
            socket: stream,
            written,
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<u64> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        let batch = self.frame(records);
        let connection = self
            .connection
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        connection.check_open()?;
        connection.writer.write_all(&batch).context("writing")?;
        connection.writer.flush().context("flushing")?;
        Ok(connection.written.load(Ordering::Relaxed))
    }

    fn confirmed(&mut self) -> Result<u64> {
        let connection = self
            .connection
            .as_ref()
            .ok_or_else(|| anyhow!("no connection"))?;
        let unacknowledged = unacknowledged_bytes(&connection.socket)?;
        // Read after the count: a connection still open means the count was taken while it
        // was (a reset connection empties its queue).
        connection.check_open()?;
        Ok(connection
            .written
            .load(Ordering::Relaxed)
            .saturating_sub(unacknowledged))
    }

    fn reset(&mut self) {
        self.connection = None;
    }
}

impl Connection {
    /// An error once the collector closed its side, reset the connection, or it failed.
    fn check_open(&self) -> Result<()> {
        let mut poll = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and a zero timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        if ready < 0 {
            return Err(std::io::Error::last_os_error()).context("polling the connection");
        }
        if poll.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            let error = self.socket.take_error().ok().flatten();
            bail!(
                "the connection failed{}",
                error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        if poll.revents & libc::POLLRDHUP != 0 {
            bail!("the collector closed the connection");
        }
        Ok(())
    }
}

/// Bytes written to `socket` that its peer has not acknowledged yet.
fn unacknowledged_bytes(socket: &TcpStream) -> Result<u64> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) on a TCP socket writes one int.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) };
    if result < 0 {
        return Err(std::io::Error::last_os_error()).context("reading the send queue");
    }
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Makes the kernel fail the connection when written data stays unacknowledged for `limit`,
/// instead of retransmitting for many minutes.
fn abort_when_unacknowledged_for(socket: &TcpStream, limit: Duration) -> Result<()> {
    let millis = libc::c_uint::try_from(limit.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: TCP_USER_TIMEOUT takes an unsigned int, passed with its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&millis as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error()).context("setting TCP_USER_TIMEOUT");
    }
    Ok(())
}

/// The socket under the optional TLS layer, counting the bytes the kernel took.
struct CountedSocket {
    stream: TcpStream,
    written: Arc<AtomicU64>,
}

impl Read for CountedSocket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for CountedSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Shutdown, TcpListener},
        time::Instant,
    };

    use super::*;

    fn transport(listener: &TcpListener) -> TcpTransport {
        let address = listener.local_addr().unwrap().to_string();
        TcpTransport::new("test".into(), address, None, Framing::Delimited)
    }

    /// Waits until the transport confirms `mark`, or fails after a few seconds.
    fn confirms(transport: &mut TcpTransport, mark: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while transport.confirmed()? < mark {
            anyhow::ensure!(Instant::now() < deadline, "{mark} never confirmed");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    #[test]
    fn a_batch_is_confirmed_once_the_collector_has_its_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = transport(&listener);
        let first = transport.send(&[vec![3, 1, 2, 3]]).unwrap();
        assert_eq!(first, 4);
        let second = transport.send(&[vec![1, 9], vec![1, 8]]).unwrap();
        assert_eq!(second, 8);
        let (mut peer, _) = listener.accept().unwrap();
        confirms(&mut transport, second).unwrap();
        let mut received = [0u8; 8];
        peer.read_exact(&mut received).unwrap();
        assert_eq!(received, [3, 1, 2, 3, 1, 9, 1, 8]);
    }

    #[test]
    fn what_a_collector_that_stopped_reading_holds_back_is_not_confirmed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = transport(&listener);
        transport.send(&[vec![0]]).unwrap();
        let (_peer, _) = listener.accept().unwrap();
        // Once the peer's receive buffer is full, what follows stays unacknowledged.
        let record = vec![0u8; 64 << 10];
        for _ in 0..256 {
            let mark = transport.send(std::slice::from_ref(&record)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            if transport.confirmed().unwrap() < mark {
                std::thread::sleep(Duration::from_millis(300));
                assert!(transport.confirmed().unwrap() < mark);
                return;
            }
        }
        panic!("16 MiB were confirmed by a peer that reads nothing");
    }

    #[test]
    fn a_collector_closing_its_side_stops_the_sending() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = transport(&listener);
        transport.send(&[vec![1, 7]]).unwrap();
        let (peer, _) = listener.accept().unwrap();
        confirms(&mut transport, 2).unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let error = transport.send(&[vec![1, 6]]).unwrap_err();
        assert!(
            format!("{error:#}").contains("closed the connection"),
            "{error:#}"
        );
    }

    #[test]
    fn a_reset_connection_is_not_confirmed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut transport = transport(&listener);
        transport.send(&[vec![1, 7]]).unwrap();
        let (peer, _) = listener.accept().unwrap();
        // Unread bytes make the close a reset.
        drop(peer);
        std::thread::sleep(Duration::from_millis(50));
        assert!(transport.confirmed().is_err());
    }
}
