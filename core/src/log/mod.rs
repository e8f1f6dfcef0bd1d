//! The partitioned, durable, ordered log: the event log (`events.<p>`) and the rollup log
//! (`rollups.<p>`) are both a [`Log`].

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::Result;

pub mod embedded;
pub mod nats;

#[cfg(test)]
mod conformance;

/// One message of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// Position in the log. Strictly increasing within a partition; not necessarily contiguous
    /// (JetStream numbers the whole stream).
    pub seq: u64,
    /// The message body.
    pub payload: Bytes,
}

/// An endless, ordered stream of a partition's messages.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage>> + Send>>;

/// A partitioned append-only log.
///
/// Invariant: `append` returns only once the message is durable (fsync'd locally, or stored by
/// JetStream); a subscriber sees every appended message of its partition exactly in order.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    /// Appends `payload` to `partition` and returns its sequence once durable. `msg_id` lets the
    /// log drop a resend of the same message inside its duplicate window (the original sequence
    /// is returned).
    async fn append(&self, partition: u32, msg_id: &str, payload: Bytes) -> Result<u64>;

    /// The newest message of `partition`, if any.
    async fn last(&self, partition: u32) -> Result<Option<LogMessage>>;

    /// Every message of `partition` with a sequence greater than `after`, in order, waiting for
    /// new ones forever.
    async fn subscribe(&self, partition: u32, after: u64) -> Result<LogStream>;
}
