//! The fleet's access usage, from the `access_usage` summaries the sensors publish to NATS
//! JetStream: the latest summary of each person from each host.
use std::{collections::BTreeMap, time::Duration};

use anyhow::{anyhow, Context as _, Result};
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use custos_proto::v1::{event::Body, AccessUsage, Event};
use futures_util::StreamExt as _;
use prost::Message as _;

use crate::sinks::nats::EVENTS_HEADER;

use super::{
    report::HostView,
    usage::model::{Entitlement, Kind, Uses},
};

/// Waiting longer than this for the next message means the stream has no more.
const QUIET: Duration = Duration::from_secs(3);

/// Where the summaries are.
pub struct FleetSource {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
}

/// Every person's latest summary per host.
pub async fn read(source: &FleetSource) -> Result<BTreeMap<String, Vec<HostView>>> {
    let client = async_nats::connect(&source.url)
        .await
        .with_context(|| format!("connecting to {}", source.url))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(&source.stream)
        .await
        .map_err(|e| anyhow!("JetStream stream {}: {e}", source.stream))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}.*.access_usage", source.subject_prefix),
            deliver_policy: DeliverPolicy::All,
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| anyhow!("reading stream {}: {e}", source.stream))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow!("reading stream {}: {e}", source.stream))?;
    // (person, host) -> (time, summary): the latest wins.
    let mut latest: BTreeMap<(String, String), (i64, AccessUsage)> = BTreeMap::new();
    while let Ok(Some(message)) = tokio::time::timeout(QUIET, messages.next()).await {
        let message = message.map_err(|e| anyhow!("reading a message: {e}"))?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        for event in events_of(&message) {
            keep_latest(&mut latest, event);
        }
        if pending == 0 {
            break;
        }
    }
    Ok(views(latest))
}

/// The protobuf events a message carries: itself one, or several each with its varint length
/// before it when the sink gathered them (`events_per_message`, marked by the
/// [`EVENTS_HEADER`] header). What does not decode is left out, as messages of another format.
fn events_of(message: &async_nats::Message) -> Vec<Event> {
    let framed = message
        .headers
        .as_ref()
        .is_some_and(|headers| headers.get(EVENTS_HEADER).is_some());
    let mut payload = message.payload.as_ref();
    if !framed {
        return Event::decode(payload).into_iter().collect();
    }
    std::iter::from_fn(|| {
        (!payload.is_empty())
            .then(|| Event::decode_length_delimited(&mut payload).ok())
            .flatten()
    })
    .collect()
}

fn keep_latest(latest: &mut BTreeMap<(String, String), (i64, AccessUsage)>, event: Event) {
    let Some(Body::AccessUsage(summary)) = event.body else {
        return;
    };
    let at = event.time.map_or(0, |t| t.seconds);
    let key = (summary.person.clone(), event.host);
    match latest.get(&key) {
        Some((seen, _)) if *seen > at => {}
        _ => {
            latest.insert(key, (at, summary));
        }
    }
}

fn views(
    latest: BTreeMap<(String, String), (i64, AccessUsage)>,
) -> BTreeMap<String, Vec<HostView>> {
    let mut people: BTreeMap<String, Vec<HostView>> = BTreeMap::new();
    for ((person, host), (_, summary)) in latest {
        let seconds = |t: Option<pbjson_types::Timestamp>| t.map(|t| t.seconds.max(0) as u64);
        let entitlements = summary
            .entitlements
            .into_iter()
            .filter_map(|e| {
                let kind = Kind::from_schema(e.kind())?;
                Some(Entitlement {
                    kind,
                    name: e.name,
                    granted: e.granted,
                    granted_since: seconds(e.granted_since),
                    uses: (e.uses > 0).then(|| Uses {
                        count: e.uses,
                        last: seconds(e.last_used).unwrap_or(0),
                        example: e.example,
                    }),
                    sudo_rule: None,
                })
            })
            .collect();
        people.entry(person).or_default().push(HostView {
            host,
            tracked_since: seconds(summary.tracked_since).unwrap_or(0),
            entitlements,
        });
    }
    people
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::ProcessExit;

    use super::*;

    fn message(payload: Vec<u8>, events: Option<usize>) -> async_nats::Message {
        let headers = events.map(|n| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(EVENTS_HEADER, n.to_string().as_str());
            headers
        });
        async_nats::Message {
            subject: "custos.h.access_usage".into(),
            reply: None,
            length: payload.len(),
            payload: payload.into(),
            headers,
            status: None,
            description: None,
        }
    }

    #[test]
    fn a_message_of_one_event_or_of_several_framed_gives_them_all() {
        let event = |seq| Event {
            seq,
            body: Some(Body::Exit(ProcessExit::default())),
            ..Event::default()
        };
        let seqs = |events: Vec<Event>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(
            seqs(events_of(&message(event(7).encode_to_vec(), None))),
            [7]
        );
        let mut framed = event(8).encode_length_delimited_to_vec();
        framed.extend(event(9).encode_length_delimited_to_vec());
        assert_eq!(seqs(events_of(&message(framed, Some(2)))), [8, 9]);
        assert!(events_of(&message(b"{\"seq\":\"1\"}".to_vec(), Some(1))).is_empty());
    }
}
