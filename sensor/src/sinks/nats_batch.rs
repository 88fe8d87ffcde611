//! Several events in one JetStream message (`events_per_message` above 1). A server spends
//! most of its work per message (storing it, its acknowledgement, the duplicate window's
//! entry), so a message of many events stores many times more events for the same work.
//!
//! A message holds events of one kind, in order, so that subjects still name the kind. Its id
//! is `<run_id>:<first seq>-<last seq>`: the spool resends a contiguous run of records, and the
//! events of one kind between two seqs of that run are always the same ones, so a resend
//! gathered the same way carries the same id and JetStream stores it once.
use custos_proto::v1::EventKind;

/// The header that marks a message of framed events, with their count.
pub const EVENTS_HEADER: &str = "Custos-Events";

/// One message to publish: the events it carries, framed, and what names it.
#[derive(Debug, PartialEq)]
pub struct Gathered {
    pub kind: EventKind,
    pub msg_id: String,
    pub events: usize,
    pub payload: Vec<u8>,
}

/// A message still taking events.
struct Open {
    kind: EventKind,
    /// The place of its first event among those added.
    first_index: usize,
    first_seq: u64,
    last_seq: u64,
    events: usize,
    payload: Vec<u8>,
}

/// Gathers one batch of spooled records into messages.
pub struct Gatherer {
    per_message: usize,
    max_bytes: usize,
    run_id: String,
    added: usize,
    open: Vec<Open>,
    /// Closed messages with their first event's place, to put them back in the events' order.
    closed: Vec<(usize, Gathered)>,
}

impl Gatherer {
    /// Messages of at most `per_message` events and, unless one event alone is larger, at
    /// most `max_bytes` of payload.
    pub fn new(per_message: usize, max_bytes: usize) -> Self {
        Self {
            per_message: per_message.max(1),
            max_bytes,
            run_id: String::new(),
            added: 0,
            open: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// Adds the event `seq` of run `run_id`, of `kind`, already framed.
    pub fn add(&mut self, run_id: &str, seq: u64, kind: EventKind, framed: &[u8]) {
        if run_id != self.run_id {
            // Ids name one run: a message never spans two.
            self.close_all();
            self.run_id = run_id.to_owned();
        }
        let index = match self.open.iter().position(|open| open.kind == kind) {
            Some(index) if self.open[index].payload.len() + framed.len() > self.max_bytes => {
                self.close(index);
                None
            }
            found => found,
        };
        let index = index.unwrap_or_else(|| {
            self.open.push(Open {
                kind,
                first_index: self.added,
                first_seq: seq,
                last_seq: seq,
                events: 0,
                payload: Vec::with_capacity(framed.len() * self.per_message.min(64)),
            });
            self.open.len() - 1
        });
        let open = &mut self.open[index];
        open.payload.extend_from_slice(framed);
        open.last_seq = seq;
        open.events += 1;
        self.added += 1;
        if open.events == self.per_message {
            self.close(index);
        }
    }

    /// Every message, in the order of their first events.
    pub fn finish(mut self) -> Vec<Gathered> {
        self.close_all();
        self.closed.sort_by_key(|(first_index, _)| *first_index);
        self.closed
            .into_iter()
            .map(|(_, message)| message)
            .collect()
    }

    fn close_all(&mut self) {
        while !self.open.is_empty() {
            self.close(0);
        }
    }

    fn close(&mut self, index: usize) {
        let open = self.open.remove(index);
        let msg_id = format!("{}:{}-{}", self.run_id, open.first_seq, open.last_seq);
        self.closed.push((
            open.first_index,
            Gathered {
                kind: open.kind,
                msg_id,
                events: open.events,
                payload: open.payload,
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(
        per_message: usize,
        max_bytes: usize,
        events: &[(&str, u64, EventKind)],
    ) -> Vec<Gathered> {
        let mut gatherer = Gatherer::new(per_message, max_bytes);
        for (run_id, seq, kind) in events {
            gatherer.add(run_id, *seq, *kind, format!("{seq};").as_bytes());
        }
        gatherer.finish()
    }

    fn summary(messages: &[Gathered]) -> Vec<(String, usize, String)> {
        messages
            .iter()
            .map(|m| {
                (
                    m.msg_id.clone(),
                    m.events,
                    String::from_utf8(m.payload.clone()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_message_holds_one_kind_in_order_up_to_its_count() {
        use EventKind::{ProcessExec as Exec, ProcessExit as Exit};
        let events = [
            ("r", 1, Exec),
            ("r", 2, Exit),
            ("r", 3, Exec),
            ("r", 4, Exit),
            ("r", 5, Exec),
        ];
        assert_eq!(
            summary(&gathered(2, 1 << 20, &events)),
            [
                ("r:1-3".to_owned(), 2, "1;3;".to_owned()),
                ("r:2-4".to_owned(), 2, "2;4;".to_owned()),
                ("r:5-5".to_owned(), 1, "5;".to_owned()),
            ]
        );
    }

    #[test]
    fn a_message_closes_before_its_byte_limit_and_never_spans_two_runs() {
        use EventKind::ProcessExec as Exec;
        // Each framed event is two bytes ("1;"): five bytes hold two.
        let events = [
            ("a", 1, Exec),
            ("a", 2, Exec),
            ("a", 3, Exec),
            ("b", 1, Exec),
        ];
        assert_eq!(
            summary(&gathered(10, 5, &events)),
            [
                ("a:1-2".to_owned(), 2, "1;2;".to_owned()),
                ("a:3-3".to_owned(), 1, "3;".to_owned()),
                ("b:1-1".to_owned(), 1, "1;".to_owned()),
            ]
        );
        // One event larger than the limit still goes, alone.
        assert_eq!(summary(&gathered(10, 1, &[("a", 7, Exec)]))[0].1, 1);
    }

    #[test]
    fn a_resend_from_a_later_record_names_its_messages_by_what_they_hold() {
        use EventKind::{ProcessExec as Exec, ProcessExit as Exit};
        let run = [
            ("r", 1, Exec),
            ("r", 2, Exit),
            ("r", 3, Exec),
            ("r", 4, Exit),
        ];
        let first = gathered(2, 1 << 20, &run);
        let again = gathered(2, 1 << 20, &run[1..]);
        // The exits (2 and 4) make the same message both times, under the same id.
        assert!(first.iter().any(|m| m.msg_id == "r:2-4"));
        assert!(again
            .iter()
            .any(|m| m.msg_id == "r:2-4" && m.payload == b"2;4;"));
        // The exec message differs, and so does its id: never two contents under one id.
        assert!(again.iter().any(|m| m.msg_id == "r:3-3"));
    }
}
