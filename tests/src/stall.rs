//! A local output that stops taking events, as a paused terminal does.
use std::{
    io::Read,
    process::ChildStdout,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

/// Reads the daemon's standard output, and stops reading while paused: the pipe fills and the
/// daemon's writes to it block, as on a paused terminal.
pub struct PausableReader {
    reading: Arc<AtomicBool>,
}

impl PausableReader {
    pub fn start(mut stdout: ChildStdout) -> Self {
        let reading = Arc::new(AtomicBool::new(true));
        let flag = reading.clone();
        std::thread::spawn(move || {
            let mut buffer = vec![0; 1 << 16];
            loop {
                if !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if matches!(stdout.read(&mut buffer), Ok(0) | Err(_)) {
                    break;
                }
            }
        });
        Self { reading }
    }

    pub fn pause(&self) {
        self.reading.store(false, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.reading.store(true, Ordering::SeqCst);
    }
}
