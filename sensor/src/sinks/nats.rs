//! The NATS JetStream sink: each event published to `<prefix>.<host>.<kind>` on a configured
//! stream, with acknowledgements.
//!
//! A batch leaves the spool only once JetStream acknowledged every message in it, so delivery
//! is at least once; each message carries `Nats-Msg-Id: <run_id>:<seq>`, so a resend inside the
//! stream's duplicate window is stored once.
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::{jetstream, ConnectOptions, HeaderMap};
use custos_proto::v1::Event;
use prost::Message as _;

use super::deliver::Transport;
use crate::config::NatsSink;

const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A JetStream connection, driven from the delivery thread through its own small runtime.
pub struct NatsTransport {
    config: NatsSink,
    /// This host's name as a subject token.
    host_token: String,
    runtime: Option<tokio::runtime::Runtime>,
    context: Option<jetstream::Context>,
}

/// A host name as one subject token: NATS separates tokens with '.', and '*', '>' and
/// whitespace are not allowed in them.
pub fn subject_token(host: &str) -> String {
    let token: String = host
        .chars()
        .map(|c| match c {
            '.' => '_',
            c if c.is_whitespace() || c == '*' || c == '>' => '_',
            c => c,
        })
        .collect();
    if token.is_empty() {
        "unknown".into()
    } else {
        token
    }
}

impl Transport for NatsTransport {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<()> {
        if self.runtime.is_none() {
            self.runtime = Some(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("an async runtime for NATS")?,
            );
        }
        let runtime = self.runtime.as_ref().ok_or_else(|| anyhow!("no runtime"))?;
        let context = match self.context.take() {
            Some(context) => context,
            None => runtime.block_on(self.connect())?,
        };
        let result = runtime.block_on(self.publish(&context, records));
        self.context = Some(context);
        result
    }

    fn reset(&mut self) {
        self.context = None;
    }
}

impl NatsTransport {
    pub fn new(config: NatsSink, host_token: String) -> Self {
        Self {
            config,
            host_token,
            runtime: None,
            context: None,
        }
    }

    async fn connect(&self) -> Result<jetstream::Context> {
        let c = &self.config;
        let mut options = ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("custos");
        if let Some(path) = &c.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .with_context(|| format!("reading NATS credentials {}", path.display()))?;
        }
        if let (Some(user), Some(password)) = (&c.user, &c.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &c.token {
            options = options.token(token.clone());
        }
        if let Some(tls) = &c.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        let client = options
            .connect(c.url.as_str())
            .await
            .with_context(|| format!("connecting to {}", c.url))?;
        let js = jetstream::new(client);
        match js.get_stream(&c.stream).await {
            Ok(_) => {}
            Err(_) if c.create_stream => {
                js.create_stream(jetstream::stream::Config {
                    name: c.stream.clone(),
                    subjects: vec![format!("{}.>", c.subject_prefix)],
                    ..Default::default()
                })
                .await
                .with_context(|| format!("creating JetStream stream {}", c.stream))?;
                tracing::info!(stream = %c.stream, "created the JetStream stream");
            }
            Err(err) => bail!(
                "JetStream stream {} is not available ({err}); create it for subjects {}.> or set create_stream = true",
                c.stream,
                c.subject_prefix
            ),
        }
        Ok(js)
    }

    async fn publish(&self, js: &jetstream::Context, records: &[Vec<u8>]) -> Result<()> {
        let mut acks = Vec::with_capacity(records.len());
        for record in records {
            let event =
                Event::decode_length_delimited(&record[..]).context("decoding a spooled record")?;
            let subject = format!(
                "{}.{}.{}",
                self.config.subject_prefix,
                self.host_token,
                event.kind().short_name()
            );
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:{}", event.run_id, event.seq).as_str(),
            );
            let payload = bytes::Bytes::from(event.encode_to_vec());
            let ack = js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| anyhow!("publishing: {e}"))?;
            acks.push(ack);
        }
        for ack in acks {
            tokio::time::timeout(ACK_TIMEOUT, ack)
                .await
                .map_err(|_| anyhow!("no JetStream acknowledgement within {ACK_TIMEOUT:?}"))?
                .map_err(|e| anyhow!("JetStream refused a message: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::subject_token;

    #[test]
    fn host_names_become_single_subject_tokens() {
        assert_eq!(subject_token("web-1.example.com"), "web-1_example_com");
        assert_eq!(subject_token("a b*>"), "a_b__");
        assert_eq!(subject_token(""), "unknown");
    }
}
