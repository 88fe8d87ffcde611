//! A TCP collector on loopback for the forwarding tests: keeps every byte it receives and
//! decodes the delimited events in it.
use std::{
    io::Read,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use custos_proto::v1::Event;

use crate::PATIENCE;

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
        let bytes = self.received.lock().expect("collector lock").clone();
        // A record may be in flight: decode the complete ones.
        let mut events = Vec::new();
        let mut reader = &bytes[..];
        while let Ok(Some(event)) = custos_proto::delimited::read_one(&mut reader) {
            events.push(event);
        }
        Ok(events)
    }

    pub fn wait_for(&self, what: &str, found: impl Fn(&[Event]) -> bool) -> Result<Vec<Event>> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let events = self.events()?;
            if found(&events) {
                return Ok(events);
            }
            if Instant::now() > deadline {
                let bytes = self.received.lock().expect("collector lock").len();
                bail!(
                    "collector never received {what} ({} events decoded from {bytes} bytes)",
                    events.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
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
