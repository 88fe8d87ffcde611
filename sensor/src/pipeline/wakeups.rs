//! What wakes the reader: its own timers, and the kernel once enough was queued since the
//! reader last read the ring. Each wakeup costs the daemon more than the records it reads (its
//! code and tables are read back into a cache the host's other work has since filled), so it
//! wakes no more often than its latency bound and the ring's room ask for.
use std::{
    os::fd::{AsFd, AsRawFd, RawFd},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData};
use nix::{
    errno::Errno,
    sys::{
        time::TimeSpec,
        timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
    },
};
use tokio::io::unix::AsyncFd;

/// A timer the reader's event loop waits on, backed by a timerfd: tokio's timer wheel wakes a
/// thread twice for a timer more than 64 ms away (once to move it to a finer level of the
/// wheel), a timerfd once.
pub(super) struct Alarm {
    fd: AsyncFd<TimerHandle>,
}

/// The timerfd, as tokio registers it.
struct TimerHandle(TimerFd);

impl AsRawFd for TimerHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Alarm {
    /// An alarm that is not set.
    pub(super) fn new() -> Result<Self> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags).context("creating a timerfd")?;
        // SAFETY: the AsyncFd owns the TimerFd, which owns the fd, so the fd stays open for as
        // long as it is registered.
        let fd = unsafe { AsyncFd::register(TimerHandle(timer)) }
            .context("registering a timerfd with tokio")?;
        Ok(Self { fd })
    }

    /// Rings once, `after` from now; replaces what was set.
    pub(super) fn ring_after(&self, after: Duration) -> Result<()> {
        self.set(Expiration::OneShot(TimeSpec::from_duration(after)))
    }

    /// Rings every `period`, the first time `period` from now.
    pub(super) fn ring_every(&self, period: Duration) -> Result<()> {
        self.set(Expiration::Interval(TimeSpec::from_duration(period)))
    }

    fn set(&self, expiration: Expiration) -> Result<()> {
        self.fd
            .get_ref()
            .0
            .set(expiration, TimerSetTimeFlags::empty())
            .context("setting a timerfd")
    }

    /// Waits until the alarm rings (at once if it rang since the last call); an interval that
    /// rang several times since is one ring.
    pub(super) async fn rang(&self) -> Result<()> {
        loop {
            let mut guard = self.fd.readable().await.context("waiting on a timerfd")?;
            let mut expirations = [0u8; 8];
            let read = nix::unistd::read(guard.get_inner().as_raw_fd(), &mut expirations);
            // Read or not, the timer has nothing more until it next expires, which makes the
            // fd readable again: no read is spent finding that out.
            guard.clear_ready();
            match read {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => {}
                Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("reading a timerfd"),
            }
        }
    }
}

/// The kernel's side of the reader's wakeups while its timer is stopped (see
/// `sensor_common::READER_ASLEEP_MAP`). While the timer runs, each CPU counts on its own the
/// bytes it queued since the reader last read the ring; the daemon has no part in it.
pub(super) struct RingWakeups {
    asleep: Array<MapData, u32>,
}

impl RingWakeups {
    pub(super) fn new(asleep: Array<MapData, u32>) -> Self {
        Self { asleep }
    }

    /// The reader stops its timer: the next record wakes it.
    pub(super) fn wake_at_next_record(&mut self) -> Result<()> {
        self.asleep
            .set(0, 1, 0)
            .context("asking the kernel for a wakeup")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn an_alarm_rings_once_after_its_delay_and_an_interval_again_and_again() {
        let alarm = Alarm::new().unwrap();
        let set = Instant::now();
        alarm.ring_after(Duration::from_millis(30)).unwrap();
        alarm.rang().await.unwrap();
        assert!(
            set.elapsed() >= Duration::from_millis(30),
            "not before its time"
        );
        // A one-shot alarm does not ring again until it is set again.
        let again = tokio::time::timeout(Duration::from_millis(80), alarm.rang()).await;
        assert!(again.is_err(), "rang twice");
        alarm.ring_every(Duration::from_millis(10)).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            alarm.rang().await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
        // Setting it again replaces the interval.
        alarm.ring_after(Duration::from_secs(3600)).unwrap();
        let replaced = tokio::time::timeout(Duration::from_millis(50), alarm.rang()).await;
        assert!(replaced.is_err(), "the interval was not replaced");
    }
}
