//! Telling the operator when the sinks stop taking events, and when they take them again.
use std::time::{Duration, Instant};

/// How long the sinks may be behind before it is logged: longer than a busy disk's pause.
const STALL_WARNING: Duration = Duration::from_secs(5);

/// Whether the sinks are stuck, seen at each housekeeping tick.
#[derive(Default)]
pub(super) struct SinkStall {
    /// Since when they have been behind, and whether that was logged.
    behind_since: Option<(Instant, bool)>,
}

impl SinkStall {
    /// Takes whether the sinks are behind now; logs a stall once it lasts, and its end.
    pub(super) fn observe(&mut self, behind: bool) {
        self.observe_at(behind, Instant::now());
    }

    /// [`Self::observe`] at `now`; says what it logged.
    fn observe_at(&mut self, behind: bool, now: Instant) -> Option<&'static str> {
        match (behind, &mut self.behind_since) {
            (true, None) => {
                self.behind_since = Some((now, false));
                None
            }
            (true, Some((since, logged))) if !*logged && now - *since >= STALL_WARNING => {
                *logged = true;
                tracing::warn!(
                    seconds = (now - *since).as_secs(),
                    "the sinks have taken no events for a while: is an output blocked (a paused \
                     terminal, a pipe nobody reads, a stalled disk)? [output] queue_events \
                     wait; new events are counted as lost until the sinks take events again"
                );
                Some("stalled")
            }
            (false, Some((since, logged))) => {
                let logged = *logged;
                let seconds = (now - *since).as_secs();
                self.behind_since = None;
                logged.then(|| {
                    tracing::info!(seconds, "the sinks are taking events again");
                    "resumed"
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_logged_once_when_it_lasts_and_its_end_only_then() {
        let mut stall = SinkStall::default();
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(stall.observe_at(true, at(0)), None);
        assert_eq!(
            stall.observe_at(true, at(3)),
            None,
            "a short pause is not a stall"
        );
        assert_eq!(stall.observe_at(true, at(6)), Some("stalled"));
        assert_eq!(stall.observe_at(true, at(20)), None, "logged once");
        assert_eq!(stall.observe_at(false, at(21)), Some("resumed"));
        assert_eq!(stall.observe_at(true, at(22)), None);
        assert_eq!(
            stall.observe_at(false, at(23)),
            None,
            "a short pause ends unlogged"
        );
    }
}
