//! A TCP collector on loopback for the forwarding tests: keeps every byte it receives and
//! decodes the delimited events in it.
use std::{
    io::Read,
    net::TcpListener,
    ops::ControlFlow,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use custos_proto::v1::Event;

use crate::{
    poll::{poll, EVERY},
    PATIENCE,
};

/// A TCP collector on loopback that keeps every byte it receives.
pub struct Collector {
    pub received: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    pub fn listen(listener: TcpListener) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || collect(stream, &sink));
            }
        });
        Self { received }
    }

    pub fn events(&self) -> Result<Vec<Event>> {
        Ok(whole_events(&self.received.lock().expect("collector lock")))
    }

    pub fn wait_for(&self, what: &str, found: impl Fn(&[Event]) -> bool) -> Result<Vec<Event>> {
        poll(PATIENCE, EVERY, || {
            let events = self.events()?;
            if found(&events) {
                return Ok(ControlFlow::Break(events));
            }
            let bytes = self.received.lock().expect("collector lock").len();
            Ok(ControlFlow::Continue(format!(
                "the collector never received {what} ({} events decoded from {bytes} bytes)",
                events.len()
            )))
        })
    }
}

/// The events of a delimited stream, up to a record still in flight.
fn whole_events(bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut reader = bytes;
    while let Ok(Some(event)) = custos_proto::delimited::read_one(&mut reader) {
        events.push(event);
    }
    events
}

/// Keeps what `stream` sends until it closes.
pub fn collect(mut stream: impl Read, sink: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        sink.lock()
            .expect("collector lock")
            .extend_from_slice(&buf[..n]);
    }
}

/// The bytes one connection brought.
type Received = Arc<Mutex<Vec<u8>>>;

/// A collector on a fixed loopback address that goes down and comes back. Down, it refuses
/// connections and closes its side of those it has, as a collector shutting down does, and
/// reads each until the sensor closes it. Each connection's bytes are kept apart.
pub struct SwitchedCollector {
    pub address: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<Received>>>,
    open: Arc<Mutex<Vec<std::net::TcpStream>>>,
    accepting: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
}

impl SwitchedCollector {
    /// A collector, down, on a free loopback port.
    pub fn new() -> Result<Self> {
        let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        Ok(Self {
            address,
            connections: Arc::default(),
            open: Arc::default(),
            accepting: None,
        })
    }

    pub fn is_up(&self) -> bool {
        self.accepting.is_some()
    }

    pub fn up(&mut self) -> Result<()> {
        if self.is_up() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.address)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (connections, open, stopped) =
            (self.connections.clone(), self.open.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let received = Arc::new(Mutex::new(Vec::new()));
                connections.lock().expect("lock").push(received.clone());
                if let Ok(clone) = stream.try_clone() {
                    open.lock().expect("lock").push(clone);
                }
                std::thread::spawn(move || collect(stream, &received));
            }
        });
        self.accepting = Some((stop, accept));
        Ok(())
    }

    pub fn down(&mut self) {
        if let Some((stop, accept)) = self.accepting.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = accept.join();
        }
        for stream in self.open.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }

    /// The events each connection brought, in the order the connections came.
    pub fn events_by_connection(&self) -> Vec<Vec<Event>> {
        let connections = self.connections.lock().expect("lock").clone();
        connections
            .iter()
            .map(|received| whole_events(&received.lock().expect("collector lock")))
            .collect()
    }
}
