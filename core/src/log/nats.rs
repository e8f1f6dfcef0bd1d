//! The clustered [`Log`]: one JetStream stream per log, one subject per partition.
//!
//! The log `events` is the stream `BEACON_EVENTS` with the subjects `events.*`; partition `p`
//! is the subject `events.<p>`. Sequences are the stream's, so they are strictly increasing per
//! partition but not contiguous. `msg_id` deduplication is JetStream's (`Nats-Msg-Id`, a
//! two-minute window per stream), so a `msg_id` must be unique across the partitions of a log.

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{Log, LogMessage, LogStream};
use crate::{Error, Result};

/// How long JetStream remembers a `msg_id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long messages are kept.
const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A partitioned log on a JetStream stream.
pub struct NatsLog {
    js: Context,
    stream: stream::Stream,
    name: String,
    stream_name: String,
}

impl NatsLog {
    /// Opens the log `name` (for example `events`), creating its stream `BEACON_<NAME>` with
    /// `replicas` replicas if it does not exist.
    pub async fn open(js: Context, name: &str, replicas: usize) -> Result<Self> {
        validate_name(name)?;
        let stream_name = format!("BEACON_{}", name.to_uppercase());
        let config = stream::Config {
            name: stream_name.clone(),
            description: Some(format!("Beacon {name} log, one subject per partition")),
            subjects: vec![format!("{name}.*")],
            storage: StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age: MAX_AGE,
            discard: DiscardPolicy::Old,
            ..Default::default()
        };
        let stream = js.get_or_create_stream(config).await.map_err(|err| {
            Error::Unavailable(format!("opening JetStream stream {stream_name}: {err}"))
        })?;
        tracing::info!(stream = %stream_name, replicas, "JetStream log opened");
        Ok(Self {
            js,
            stream,
            name: name.to_owned(),
            stream_name,
        })
    }

    fn subject(&self, partition: u32) -> String {
        format!("{}.{partition}", self.name)
    }
}

/// A log name is one lowercase subject token.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "log name {name:?} must be one or more characters of [a-z0-9_-]"
        )))
    }
}

fn publish_error(subject: &str, kind: PublishErrorKind, err: impl std::fmt::Display) -> Error {
    match kind {
        PublishErrorKind::MaxPayloadExceeded => {
            Error::InvalidArgument(format!("message for {subject} is too large: {err}"))
        }
        _ => Error::Unavailable(format!("publishing to {subject}: {err}")),
    }
}

#[async_trait]
impl Log for NatsLog {
    async fn append(&self, partition: u32, msg_id: &str, payload: Bytes) -> Result<u64> {
        let subject = self.subject(partition);
        let mut message = PublishMessage::build().payload(payload);
        if !msg_id.is_empty() {
            message = message.message_id(msg_id);
        }
        let ack = self
            .js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|err| publish_error(&subject, err.kind(), &err))?
            .await
            .map_err(|err| publish_error(&subject, err.kind(), &err))?;
        Ok(ack.sequence)
    }

    async fn last(&self, partition: u32) -> Result<Option<LogMessage>> {
        let subject = self.subject(partition);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(LogMessage {
                seq: message.sequence,
                payload: message.payload,
            })),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(Error::Unavailable(format!(
                "reading the last message of {subject} from {}: {err}",
                self.stream_name
            ))),
        }
    }

    async fn subscribe(&self, partition: u32, after: u64) -> Result<LogStream> {
        let subject = self.subject(partition);
        let deliver_policy = match after {
            0 => DeliverPolicy::All,
            _ => DeliverPolicy::ByStartSequence {
                start_sequence: after.saturating_add(1),
            },
        };
        let config = OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy,
            ..Default::default()
        };
        let consumer = self.stream.create_consumer(config).await.map_err(|err| {
            Error::Unavailable(format!("creating a consumer on {subject}: {err}"))
        })?;
        let messages = consumer
            .messages()
            .await
            .map_err(|err| Error::Unavailable(format!("reading messages of {subject}: {err}")))?;
        let state = Ordered {
            messages: Box::pin(messages),
            subject,
            after,
        };
        Ok(Box::pin(futures::stream::unfold(state, Ordered::next)))
    }
}

/// An ordered consumer of one partition and the last sequence it delivered.
struct Ordered {
    messages: std::pin::Pin<Box<jetstream::consumer::pull::Ordered>>,
    subject: String,
    after: u64,
}

impl Ordered {
    /// The next message. When the consumer is recreated before its first delivery it starts
    /// over from the beginning, so anything at or before `after` is skipped.
    async fn next(mut self) -> Option<(Result<LogMessage>, Self)> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(err) => {
                    let err = Error::Unavailable(format!("reading {}: {err}", self.subject));
                    return Some((Err(err), self));
                }
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(err) => {
                    let err = Error::Corrupt(format!(
                        "message of {} without JetStream metadata: {err}",
                        self.subject
                    ));
                    return Some((Err(err), self));
                }
            };
            if seq <= self.after {
                continue;
            }
            self.after = seq;
            let payload = message.payload.clone();
            return Some((Ok(LogMessage { seq, payload }), self));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_lowercase_tokens() {
        assert!(validate_name("events").is_ok());
        assert!(validate_name("roll-ups_2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a.b").is_err());
        assert!(validate_name("Events").is_err());
        assert!(validate_name("a*").is_err());
    }
}
