//! The partitioned, durable, ordered log: the event log (`events.<p>`) and the rollup log
//! (`rollups.<p>`) are both a [`Log`].

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::Result;
use crate::trace::TraceContext;

pub mod embedded;
pub mod nats;

#[cfg(test)]
mod conformance;

/// Longest [`Log::identity`], bytes.
pub const MAX_IDENTITY_BYTES: usize = 128;

/// How long [`Log::read`] waits for the next stored message before it answers what it has.
const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// One message of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// Position in the log. Strictly increasing within a partition; not necessarily contiguous
    /// (JetStream numbers the whole stream).
    pub seq: u64,
    /// The message body.
    pub payload: Bytes,
    /// The trace of the work that appended it (empty in the embedded log: one process).
    pub trace: TraceContext,
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

    /// The log's identity: it changes when the log is created anew (a JetStream stream
    /// deleted and created again, a new file), never while the same log lives. Consumers
    /// record it beside their positions, which mean nothing on another log. At most
    /// [`MAX_IDENTITY_BYTES`].
    async fn identity(&self) -> Result<String>;

    /// The newest message of `partition`, if any.
    async fn last(&self, partition: u32) -> Result<Option<LogMessage>>;

    /// Every message of `partition` with a sequence greater than `after`, in order, waiting for
    /// new ones forever.
    async fn subscribe(&self, partition: u32, after: u64) -> Result<LogStream>;

    /// Appends like [`Log::append`], but only while the newest message of `partition` is
    /// `expected_last` (0: the partition is empty); otherwise [`crate::Error::Conflict`]. A
    /// writer that read the log's end can append after it without racing another writer.
    async fn append_if_last(
        &self,
        partition: u32,
        expected_last: u64,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<u64>;

    /// Removes message `seq` of `partition`; false when there was none. Sequences are never
    /// reused.
    async fn delete(&self, partition: u32, seq: u64) -> Result<bool>;

    /// Removes every message of `partition` below sequence `below` (the message at `below`
    /// stays) and records `below` as the partition's floor. Returns how many were removed.
    ///
    /// Invariant: callers trim only below the lowest position of every consumer of the
    /// partition, so nothing unprocessed is ever removed.
    async fn trim(&self, partition: u32, below: u64) -> Result<u64>;

    /// The highest `below` `partition` was trimmed at; 0 when never. A consumer that resumes
    /// after `after` with `after + 1 < floor` would miss messages: it must refuse, not skip.
    async fn floor(&self, partition: u32) -> Result<u64>;

    /// Up to `max` messages of `partition` after `after`, in order, without waiting for new ones.
    async fn read(&self, partition: u32, after: u64, max: usize) -> Result<Vec<LogMessage>> {
        let Some(newest) = self.last(partition).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if newest.seq <= after || max == 0 {
            return Ok(out);
        }
        let mut stream = self.subscribe(partition, after).await?;
        // The newest message may be deleted meanwhile: stop when nothing more arrives.
        while let Ok(Some(message)) = tokio::time::timeout(READ_IDLE, stream.next()).await {
            let message = message?;
            let seq = message.seq;
            out.push(message);
            if seq >= newest.seq || out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}
