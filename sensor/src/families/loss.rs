//! The loss family: events the sensor could not deliver, counted and reported.
use std::time::SystemTime;

use custos_proto::v1::{event::Body, Event, EventKind, EventLoss, LossReason};

use super::Enricher;
use crate::identity::NameSource;

impl<S: NameSource> Enricher<S> {
    /// A loss event (no identity or process: it is about the sensor itself).
    pub fn loss(&mut self, kind: EventKind, count: u64, reason: LossReason, sink: &str) -> Event {
        let loss = EventLoss {
            kind: kind as i32,
            count,
            reason: reason as i32,
            sink: sink.to_owned(),
        };
        self.host_event(SystemTime::now(), Body::Loss(loss))
    }
}
