//! The acknowledgements JetStream owes the NATS sink, awaited in the background in the order of
//! the sends. The next batch is then read, encoded and published while the server stores the
//! one before, instead of each send waiting out a round trip.
use std::{collections::VecDeque, future::Future};

use anyhow::{Context as _, Result};
use tokio::{runtime::Runtime, task::JoinHandle};

/// Sends in flight at most: past that, a send first waits for the oldest one's
/// acknowledgements, which bounds the memory the published messages hold.
pub const MAX_SENDS_IN_FLIGHT: usize = 8;

/// Sends whose acknowledgements are awaited, and the mark every earlier send reached.
#[derive(Default)]
pub struct Acks {
    /// Oldest first: the mark a send reached and the task awaiting its acknowledgements.
    awaited: VecDeque<(u64, JoinHandle<Result<()>>)>,
    /// The mark up to which every send was acknowledged.
    confirmed: u64,
}

impl Acks {
    /// Awaits `acknowledged`, the acknowledgements of a send that reached `mark`, on `runtime`.
    pub fn expect(
        &mut self,
        runtime: &Runtime,
        mark: u64,
        acknowledged: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        self.awaited.push_back((mark, runtime.spawn(acknowledged)));
    }

    /// Waits for the oldest sends' acknowledgements until another send may be published.
    pub fn make_room(&mut self, runtime: &Runtime) -> Result<()> {
        while self.awaited.len() >= MAX_SENDS_IN_FLIGHT {
            self.settle_oldest(runtime)?;
        }
        Ok(())
    }

    /// The mark up to which every send was acknowledged, without waiting; the error of the
    /// first send that was refused or went unanswered.
    pub fn confirmed(&mut self, runtime: &Runtime) -> Result<u64> {
        while self
            .awaited
            .front()
            .is_some_and(|(_, task)| task.is_finished())
        {
            self.settle_oldest(runtime)?;
        }
        Ok(self.confirmed)
    }

    /// Forgets what is awaited: after a failure, the delivery loop sends all of it again.
    pub fn abandon(&mut self) {
        for (_, task) in self.awaited.drain(..) {
            task.abort();
        }
    }

    fn settle_oldest(&mut self, runtime: &Runtime) -> Result<()> {
        let Some((mark, task)) = self.awaited.pop_front() else {
            return Ok(());
        };
        runtime
            .block_on(task)
            .context("awaiting JetStream acknowledgements")??;
        self.confirmed = mark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use anyhow::anyhow;
    use tokio::sync::oneshot;

    use super::*;

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
    }

    /// A send's acknowledgements, answered when the returned sender is.
    fn answered_later() -> (
        oneshot::Sender<Result<()>>,
        impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let (answer, answered) = oneshot::channel();
        (answer, async move { answered.await? })
    }

    /// Two sends in flight, reaching marks 10 and 25; their answers.
    fn two_sends(runtime: &Runtime, acks: &mut Acks) -> [oneshot::Sender<Result<()>>; 2] {
        let (first, first_acked) = answered_later();
        let (second, second_acked) = answered_later();
        acks.expect(runtime, 10, first_acked);
        acks.expect(runtime, 25, second_acked);
        [first, second]
    }

    /// Waits until the sends before `mark` were settled, or fails after a while.
    fn confirmed_reaches(acks: &mut Acks, runtime: &Runtime, mark: u64) {
        for _ in 0..500 {
            if acks.confirmed(runtime).unwrap() >= mark {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("never confirmed up to {mark}");
    }

    #[test]
    fn a_later_send_acknowledged_first_is_confirmed_only_after_the_earlier_one() {
        let runtime = runtime();
        let mut acks = Acks::default();
        let [first, second] = two_sends(&runtime, &mut acks);
        second.send(Ok(())).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            acks.confirmed(&runtime).unwrap(),
            0,
            "the first is still due"
        );
        first.send(Ok(())).unwrap();
        confirmed_reaches(&mut acks, &runtime, 25);
    }

    #[test]
    fn a_refused_send_is_an_error_and_confirms_nothing_after_it() {
        let runtime = runtime();
        let mut acks = Acks::default();
        let [first, second] = two_sends(&runtime, &mut acks);
        first.send(Ok(())).unwrap();
        confirmed_reaches(&mut acks, &runtime, 10);
        second.send(Err(anyhow!("stream full"))).unwrap();
        let mut error = None;
        for _ in 0..500 {
            match acks.confirmed(&runtime) {
                Err(err) => {
                    error = Some(err);
                    break;
                }
                Ok(mark) => assert_eq!(mark, 10),
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(format!("{:#}", error.unwrap()).contains("stream full"));
    }

    #[test]
    fn a_send_past_the_limit_waits_for_the_oldest_acknowledgements() {
        let runtime = runtime();
        let mut acks = Acks::default();
        let (oldest, oldest_acked) = answered_later();
        acks.expect(&runtime, 1, oldest_acked);
        for mark in 2..=MAX_SENDS_IN_FLIGHT as u64 {
            acks.expect(&runtime, mark, async { Ok(()) });
        }
        let answering = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            oldest.send(Ok(())).unwrap();
        });
        acks.make_room(&runtime).unwrap();
        answering.join().unwrap();
        assert_eq!(acks.awaited.len(), MAX_SENDS_IN_FLIGHT - 1);
        assert_eq!(acks.confirmed, 1, "only the oldest was waited for");
    }
}
