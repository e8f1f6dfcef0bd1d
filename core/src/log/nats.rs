//! The clustered [`Log`]: one JetStream stream per log, one subject per partition.
//!
//! The log `events` is the stream `BEACON_EVENTS` with the subjects `events.*`; partition `p`
//! is the subject `events.<p>`. Sequences are the stream's, so they are strictly increasing per
//! partition but not contiguous. `msg_id` deduplication is JetStream's (`Nats-Msg-Id`, a
//! two-minute window per stream), so a `msg_id` must be unique across the partitions of a log.
//!
//! Nothing is removed by age: streams have no `max_age`, discard new messages at their byte
//! limit (the publisher is told to retry later), and lose old ones only through [`Log::trim`],
//! which records each partition's floor in the KV bucket `beacon_log_floors` first.

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    self, DiscardPolicy, LastRawMessageErrorKind, RawMessageErrorKind, StorageType,
};
use async_nats::jetstream::{self, Context, kv};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{Log, LogMessage, LogStream};
use crate::meta::nats::kv_bucket;
use crate::trace::TraceContext;
use crate::{Error, Result};

/// How long JetStream remembers a `msg_id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The KV bucket of trim floors, `<log>.<partition>` to a decimal sequence.
const FLOORS_BUCKET: &str = "beacon_log_floors";

/// A partitioned log on a JetStream stream.
pub struct NatsLog {
    js: Context,
    stream: stream::Stream,
    floors: kv::Store,
    name: String,
    stream_name: String,
    /// The stream's own identity (see [`identity_of`]): a floor recorded for an earlier stream
    /// of the same name (deleted and created again) does not apply to this one.
    identity: String,
}

impl NatsLog {
    /// Opens the log `name` (for example `events`), creating or updating its stream
    /// `BEACON_<NAME>` with `replicas` replicas; with `max_bytes`, publishes beyond it are
    /// refused until trims make room.
    pub async fn open(
        js: Context,
        name: &str,
        replicas: usize,
        max_bytes: Option<u64>,
    ) -> Result<Self> {
        validate_name(name)?;
        let stream_name = format!("BEACON_{}", name.to_uppercase());
        let config = stream::Config {
            name: stream_name.clone(),
            description: Some(format!("Beacon {name} log, one subject per partition")),
            subjects: vec![format!("{name}.*")],
            storage: StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_bytes: max_bytes.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX)),
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        let stream = open_stream(&js, config).await.map_err(|err| {
            Error::Unavailable(format!("opening JetStream stream {stream_name}: {err}"))
        })?;
        let floors = kv_bucket(
            &js,
            kv::Config {
                bucket: FLOORS_BUCKET.into(),
                description: "Beacon log trim floors, <log>.<partition>".into(),
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        tracing::info!(stream = %stream_name, replicas, ?max_bytes, "JetStream log opened");
        let identity = identity_of(stream.cached_info());
        Ok(Self {
            js,
            stream,
            floors,
            name: name.to_owned(),
            stream_name,
            identity,
        })
    }

    fn floor_key(&self, partition: u32) -> String {
        format!("{}.{partition}", self.name)
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
        PublishErrorKind::WrongLastSequence => {
            Error::Conflict(format!("{subject} moved on before the append: {err}"))
        }
        _ if err.to_string().contains("maximum") => Error::Unavailable(format!(
            "{subject} holds its limit; its consumers must catch up before it accepts more: {err}"
        )),
        _ => Error::Unavailable(format!("publishing to {subject}: {err}")),
    }
}

impl NatsLog {
    async fn publish(&self, partition: u32, message: PublishMessage) -> Result<u64> {
        let subject = self.subject(partition);
        let ack = self
            .js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|err| publish_error(&subject, err.kind(), &err))?
            .await
            .map_err(|err| publish_error(&subject, err.kind(), &err))?;
        Ok(ack.sequence)
    }
}

/// A message of `payload`, deduplicated by `msg_id` when not empty, carrying the current
/// span's trace context.
fn message(msg_id: &str, payload: Bytes) -> PublishMessage {
    let mut message = PublishMessage::build().payload(payload);
    for (name, value) in TraceContext::current().headers() {
        message = message.header(name, value);
    }
    if msg_id.is_empty() {
        message
    } else {
        message.message_id(msg_id)
    }
}

#[async_trait]
impl Log for NatsLog {
    async fn append(&self, partition: u32, msg_id: &str, payload: Bytes) -> Result<u64> {
        self.publish(partition, message(msg_id, payload)).await
    }

    async fn append_if_last(
        &self,
        partition: u32,
        expected_last: u64,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<u64> {
        let message = message(msg_id, payload).expected_last_subject_sequence(expected_last);
        self.publish(partition, message).await
    }

    async fn identity(&self) -> Result<String> {
        let info = self.stream.get_info().await.map_err(|err| {
            Error::Unavailable(format!("reading stream {}: {err}", self.stream_name))
        })?;
        Ok(format!("{}@{}", self.stream_name, identity_of(&info)))
    }

    async fn delete(&self, partition: u32, seq: u64) -> Result<bool> {
        let subject = self.subject(partition);
        match self.stream.get_raw_message(seq).await {
            Ok(message) if message.subject.as_str() == subject => {}
            Ok(_) => return Ok(false),
            Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => return Ok(false),
            Err(err) => {
                return Err(Error::Unavailable(format!(
                    "reading message {seq} of {}: {err}",
                    self.stream_name
                )));
            }
        }
        self.stream.delete_message(seq).await.map_err(|err| {
            Error::Unavailable(format!(
                "deleting message {seq} of {subject} from {}: {err}",
                self.stream_name
            ))
        })
    }

    async fn trim(&self, partition: u32, below: u64) -> Result<u64> {
        // JetStream reads a purge up to sequence 0 as a purge of the whole subject.
        if below == 0 {
            return Ok(0);
        }
        let (subject, key) = (self.subject(partition), self.floor_key(partition));
        if self.floor(partition).await? < below {
            self.floors
                .put(&key, Bytes::from(format!("{below}@{}", self.identity)))
                .await
                .map_err(|err| {
                    Error::Unavailable(format!("recording the floor {key} = {below}: {err}"))
                })?;
        }
        let purged = self
            .stream
            .purge()
            .filter(subject.clone())
            .sequence(below)
            .await
            .map_err(|err| {
                Error::Unavailable(format!(
                    "trimming {subject} of {} below {below}: {err}",
                    self.stream_name
                ))
            })?;
        Ok(purged.purged)
    }

    async fn floor(&self, partition: u32) -> Result<u64> {
        let key = self.floor_key(partition);
        let value = self
            .floors
            .get(&key)
            .await
            .map_err(|err| Error::Unavailable(format!("reading the floor {key}: {err}")))?;
        let Some(bytes) = value else {
            return Ok(0);
        };
        let text = std::str::from_utf8(&bytes).unwrap_or_default();
        let (below, created) = text.split_once('@').unwrap_or((text, &self.identity));
        let below: u64 = below
            .parse()
            .map_err(|_| Error::Corrupt(format!("floor {key} is not a sequence: {text:?}")))?;
        if created != self.identity {
            tracing::warn!(key, floor = below, stream = %self.stream_name, "the floor was recorded for an earlier stream of this name; ignoring it");
            return Ok(0);
        }
        Ok(below)
    }

    async fn last(&self, partition: u32) -> Result<Option<LogMessage>> {
        let subject = self.subject(partition);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(LogMessage {
                seq: message.sequence,
                trace: trace_of(&message.headers),
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
            let trace = message.headers.as_ref().map(trace_of).unwrap_or_default();
            return Some((
                Ok(LogMessage {
                    seq,
                    payload,
                    trace,
                }),
                self,
            ));
        }
    }
}

/// Creates the stream of `config` with a new identity, or updates the existing one keeping its
/// identity. Of processes creating it at once, one wins; the others update it and keep the
/// winner's identity.
async fn open_stream(
    js: &Context,
    mut config: stream::Config,
) -> std::result::Result<stream::Stream, async_nats::Error> {
    let new_identity = || format!("{:032x}", rand::random::<u128>());
    config.metadata = [(IDENTITY_KEY.to_owned(), new_identity())].into();
    // Refused when the stream exists: its configuration holds another identity.
    if let Ok(created) = js.create_stream(config.clone()).await {
        return Ok(created);
    }
    let existing = js.get_stream(&config.name).await?;
    let identity = existing
        .cached_info()
        .config
        .metadata
        .get(IDENTITY_KEY)
        .cloned()
        .unwrap_or_else(new_identity);
    config.metadata = [(IDENTITY_KEY.to_owned(), identity)].into();
    let name = config.name.clone();
    js.create_or_update_stream(config).await?;
    Ok(js.get_stream(&name).await?)
}

/// The stream metadata key of a stream's identity.
const IDENTITY_KEY: &str = "beacon.identity";

/// A stream's identity: the random id Beacon gave it when it created it, kept in its metadata
/// (nats-server's creation time can change without the stream being created again, see
/// nats-io/nats-server#8470); the creation time for a stream created by someone else.
fn identity_of(info: &stream::Info) -> String {
    match info.config.metadata.get(IDENTITY_KEY) {
        Some(id) => id.clone(),
        None => format!("created {}", info.created),
    }
}

/// The trace context in a message's headers.
fn trace_of(headers: &async_nats::HeaderMap) -> TraceContext {
    TraceContext::from_headers(
        ["traceparent", "tracestate"]
            .into_iter()
            .filter_map(|name| Some((name, headers.get(name)?.as_str()))),
    )
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
