//! When the events read so far go to the sinks. Each hand-over wakes the sink thread and costs
//! a write per sink whatever it carries, so while records keep coming events are held up to
//! `[output] batch_ms`; an alert is not held. Batches go at drains, so a batch goes at the last
//! drain before it would have waited longer: when the next timed drain would come too late.
use std::time::{Duration, Instant};

use crate::config::Config;

pub(super) struct BatchTimer {
    /// When the held batch's first event was emitted.
    began: Option<Instant>,
    wait: Duration,
    /// The longest time to the next drain (`[kernel] max_latency_ms`).
    drain_period: Duration,
    /// The batch holds an alert.
    urgent: bool,
}

impl BatchTimer {
    pub(super) fn new(wait: Duration, drain_period: Duration) -> Self {
        Self {
            began: None,
            wait,
            drain_period,
            urgent: false,
        }
    }

    /// The timer `[output] batch_ms` and `[kernel] max_latency_ms` ask for.
    pub(super) fn configured(config: &Config) -> Self {
        Self::new(
            Duration::from_millis(config.output.batch_ms),
            Duration::from_millis(config.kernel.max_latency_ms),
        )
    }

    /// An event joined the batch. The clock is read for a batch's first event only: this
    /// runs for every event.
    pub(super) fn pushed(&mut self, alert: bool) {
        self.pushed_at(Instant::now, alert);
    }

    /// [`Self::pushed`] with the clock given.
    fn pushed_at(&mut self, now: impl FnOnce() -> Instant, alert: bool) {
        if self.began.is_none() {
            self.began = Some(now());
        }
        self.urgent |= alert;
    }

    /// Whether the batch should go at `now`: it would have waited its time by the next drain.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.urgent
            || self
                .began
                .is_some_and(|began| now.duration_since(began) + self.drain_period >= self.wait)
    }

    /// The batch went to the sinks.
    pub(super) fn handed_over(&mut self) {
        self.began = None;
        self.urgent = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(100);
    const DRAIN: Duration = Duration::from_millis(10);

    #[test]
    fn a_batch_goes_once_its_first_event_has_waited() {
        let start = Instant::now();
        let mut timer = BatchTimer::new(WAIT, DRAIN);
        assert!(!timer.due(start + WAIT), "nothing held, nothing due");
        timer.pushed_at(|| start, false);
        timer.pushed_at(|| start + WAIT / 2, false);
        assert!(!timer.due(start + WAIT / 2));
        assert!(!timer.due(start + WAIT - DRAIN - Duration::from_millis(1)));
        assert!(
            timer.due(start + WAIT - DRAIN),
            "the first event's wait counts, not the last's; the next drain would be too late"
        );
        timer.handed_over();
        assert!(
            !timer.due(start + WAIT * 3),
            "nothing held after the hand-over"
        );
        timer.pushed_at(|| start + WAIT * 3, false);
        assert!(
            !timer.due(start + WAIT * 3),
            "a new batch starts its own clock"
        );
    }

    #[test]
    fn an_alert_sends_the_batch_at_once() {
        let start = Instant::now();
        let mut timer = BatchTimer::new(WAIT, DRAIN);
        timer.pushed_at(|| start, false);
        timer.pushed_at(|| start, true);
        assert!(timer.due(start));
        timer.handed_over();
        timer.pushed_at(|| start, false);
        assert!(!timer.due(start), "the alert went with its batch");
    }

    #[test]
    fn drains_further_apart_than_the_wait_hand_every_drain_over() {
        let start = Instant::now();
        let mut timer = BatchTimer::new(WAIT, WAIT * 2);
        timer.pushed_at(|| start, false);
        assert!(timer.due(start));
    }

    #[test]
    fn no_wait_hands_every_drain_over() {
        let start = Instant::now();
        let mut timer = BatchTimer::new(Duration::ZERO, DRAIN);
        timer.pushed_at(|| start, false);
        assert!(timer.due(start));
    }
}
