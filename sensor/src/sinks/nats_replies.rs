//! JetStream's replies to the NATS sink's messages, taken from one subscription and counted
//! per send.
//!
//! Every message of a send names `<inbox>.<send>` as its reply subject, and JetStream answers
//! each stored message there. A send is acknowledged once every one of its messages was
//! stored; the first refusal fails it. This takes the place of a request per message (its own
//! inbox, channel, timer and entry in the client's table), a quarter of the sink's CPU per
//! event.
use std::{
    borrow::Cow,
    collections::{hash_map::Entry, HashMap},
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::{Client, Message, StatusCode, Subject, Subscriber};
use futures_util::StreamExt as _;
use serde::{de::IgnoredAny, Deserialize};
use tokio::{sync::oneshot, task::JoinHandle};

/// How long a send's messages may go unanswered.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The sends whose replies are due, by number.
type DueSends = Arc<Mutex<HashMap<u64, Due>>>;

/// A send's replies still due, and where its outcome goes.
struct Due {
    remaining: usize,
    outcome: oneshot::Sender<Result<()>>,
}

/// The subscription to this connection's replies and the sends that await them.
pub struct Replies {
    inbox: String,
    next_send: u64,
    due: DueSends,
    listener: JoinHandle<()>,
}

impl Replies {
    /// Subscribes to the replies on a fresh inbox of `client`; must run on its runtime.
    pub async fn listen(client: &Client) -> Result<Self> {
        let inbox = client.new_inbox();
        let subscriber = client
            .subscribe(format!("{inbox}.*"))
            .await
            .context("subscribing to JetStream's acknowledgements")?;
        let due = DueSends::default();
        let listener = tokio::spawn(count_replies(subscriber, due.clone()));
        Ok(Self {
            inbox,
            next_send: 0,
            due,
            listener,
        })
    }

    /// The reply subject for a send of `messages` messages, and what resolves once JetStream
    /// stored all of them, or with the first refusal or a silence of [`ACK_TIMEOUT`]. Called
    /// before the send is published, so that no reply comes before it is expected.
    pub fn expect(
        &mut self,
        messages: usize,
    ) -> (Subject, impl Future<Output = Result<()>> + Send + 'static) {
        self.next_send += 1;
        let subject = Subject::from(format!("{}.{}", self.inbox, self.next_send));
        let (outcome, answered) = oneshot::channel();
        if messages == 0 {
            let _ = outcome.send(Ok(()));
        } else {
            self.due
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    self.next_send,
                    Due {
                        remaining: messages,
                        outcome,
                    },
                );
        }
        let stored = async move {
            tokio::time::timeout(ACK_TIMEOUT, answered)
                .await
                .map_err(|_| anyhow!("no JetStream acknowledgement within {ACK_TIMEOUT:?}"))?
                .map_err(|_| anyhow!("the connection to NATS closed before JetStream answered"))?
        };
        (subject, stored)
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Counts each reply against its send until the subscription ends, then fails what is left.
async fn count_replies(mut subscriber: Subscriber, due: DueSends) {
    while let Some(reply) = subscriber.next().await {
        let Some(send) = send_of(&reply.subject) else {
            continue;
        };
        let outcome = stored(&reply);
        let mut due = due.lock().unwrap_or_else(PoisonError::into_inner);
        let Entry::Occupied(mut entry) = due.entry(send) else {
            continue;
        };
        let finished = match outcome {
            Ok(()) => {
                entry.get_mut().remaining -= 1;
                (entry.get().remaining == 0).then_some(Ok(()))
            }
            Err(err) => Some(Err(err)),
        };
        if let Some(outcome) = finished {
            let _ = entry.remove().outcome.send(outcome);
        }
    }
    let left = std::mem::take(&mut *due.lock().unwrap_or_else(PoisonError::into_inner));
    for (_, send) in left {
        let _ = send.outcome.send(Err(anyhow!(
            "the subscription to JetStream's acknowledgements ended"
        )));
    }
}

/// The send a reply subject (`<inbox>.<send>`) names.
fn send_of(subject: &str) -> Option<u64> {
    subject.rsplit_once('.')?.1.parse().ok()
}

/// What JetStream answers a published message: the stream that stored it, or an error.
#[derive(Deserialize)]
struct PublishReply<'a> {
    stream: Option<IgnoredAny>,
    #[serde(borrow)]
    error: Option<ReplyError<'a>>,
}

#[derive(Deserialize)]
struct ReplyError<'a> {
    #[serde(default)]
    err_code: u32,
    #[serde(borrow, default)]
    description: Cow<'a, str>,
}

/// Whether `reply` says the message was stored (a duplicate was stored before).
fn stored(reply: &Message) -> Result<()> {
    if reply.status == Some(StatusCode::NO_RESPONDERS) {
        bail!("no JetStream stream takes the message's subject");
    }
    let answer: PublishReply = serde_json::from_slice(&reply.payload).with_context(|| {
        format!(
            "an unreadable JetStream acknowledgement {:?}",
            reply.payload
        )
    })?;
    match answer {
        PublishReply {
            error: Some(error), ..
        } => bail!(
            "JetStream refused a message: {} (error {})",
            error.description,
            error.err_code
        ),
        PublishReply {
            stream: Some(_), ..
        } => Ok(()),
        _ => bail!(
            "a JetStream acknowledgement without a stream: {:?}",
            reply.payload
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(payload: &str, status: Option<StatusCode>) -> Message {
        Message {
            subject: "_INBOX.x.3".into(),
            reply: None,
            payload: payload.to_owned().into(),
            headers: None,
            status,
            description: None,
            length: payload.len(),
        }
    }

    #[test]
    fn a_reply_names_its_send() {
        assert_eq!(send_of("_INBOX.abc.17"), Some(17));
        assert_eq!(send_of("_INBOX.abc.x"), None);
        assert_eq!(send_of("nodots"), None);
    }

    #[test]
    fn acknowledgements_and_refusals_are_told_apart() {
        assert!(stored(&reply(r#"{"stream":"S","seq":4}"#, None)).is_ok());
        assert!(stored(&reply(r#"{"stream":"S","seq":4,"duplicate":true}"#, None)).is_ok());
        let refused = r#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S"}"#;
        let err = stored(&reply(refused, None)).unwrap_err().to_string();
        assert!(
            err.contains("maximum messages exceeded") && err.contains("10077"),
            "{err}"
        );
        assert!(stored(&reply("", Some(StatusCode::NO_RESPONDERS))).is_err());
        assert!(stored(&reply("{}", None)).is_err());
        assert!(stored(&reply("not json", None)).is_err());
    }
}
