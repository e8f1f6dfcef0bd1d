//! Publishing rollups and saving snapshots.

use std::time::Instant;

use beacon_core::time::now_ms;
use beacon_proto::pipeline::v1::RollupBatch;
use bytes::Bytes;
use prost::Message;

use super::{Outgoing, Worker, snapshot_name};
use crate::retry::{Limit, retry};
use crate::{AggregatorError, LOGIC_VERSION};

impl Worker {
    /// Publishes pending deltas, then snapshots when the interval has passed. False when shut
    /// down before the rollup could be published.
    pub(super) async fn flush(&mut self) -> Result<bool, AggregatorError> {
        if self.first_pending.is_none() && self.outgoing.is_none() {
            return Ok(true);
        }
        let token = self.shutdown.clone();
        if !self.publish(Limit::UntilCancelled(&token)).await? {
            return Ok(false);
        }
        if self.last_snapshot.elapsed() >= self.timing.snapshot_interval {
            self.save_snapshot().await;
        }
        Ok(true)
    }

    /// Publishes the pending deltas as one rollup batch; false when stopped before it was durable.
    pub(super) async fn publish(&mut self, limit: Limit<'_>) -> Result<bool, AggregatorError> {
        if self.outgoing.is_none() {
            self.outgoing = self.encode_pending();
        }
        let Some(out) = &self.outgoing else {
            return Ok(true);
        };
        let (rollups, partition) = (&self.backends.rollups, self.partition);
        let msg_id = format!("rollup-{partition}-{}", out.last_seq);
        let payload = out.payload.clone();
        let published = retry(partition, "publishing a rollup", limit, || {
            rollups.append(partition, &msg_id, payload.clone())
        })
        .await?;
        if published.is_none() {
            return Ok(false);
        }
        let stats = std::mem::take(&mut self.stats);
        tracing::debug!(
            partition,
            first_seq = out.first_seq,
            last_seq = out.last_seq,
            tenants = out.tenants,
            bytes = out.payload.len(),
            messages = stats.messages,
            events = stats.events,
            duplicates = stats.duplicates,
            dead_letters = stats.dead_letters,
            lag_ms = now_ms().saturating_sub(stats.received_ms),
            "rollup published"
        );
        self.published_seq = out.last_seq;
        self.outgoing = None;
        Ok(true)
    }

    fn encode_pending(&mut self) -> Option<Outgoing> {
        let first_seq = self.first_pending.take()?;
        let batch = RollupBatch {
            partition: self.partition,
            first_event_seq: first_seq,
            last_event_seq: self.processed_seq,
            logic_version: LOGIC_VERSION,
            tenants: self.processor.take_rollups(),
        };
        Some(Outgoing {
            first_seq,
            last_seq: self.processed_seq,
            tenants: batch.tenants.len(),
            payload: Bytes::from(batch.encode_to_vec()),
        })
    }

    /// Saves the state as of the last processed message. Only called when every processed
    /// message's rollup is published. A failure is logged: the next snapshot replaces it.
    pub(super) async fn save_snapshot(&mut self) {
        self.last_snapshot = Instant::now();
        let (partition, seq) = (self.partition, self.processed_seq);
        let snapshot = self.processor.snapshot(partition, seq);
        let sessions = snapshot.sessions.len();
        let bytes = Bytes::from(snapshot.encode_to_vec());
        let size = bytes.len();
        match self
            .backends
            .snapshots
            .save(&snapshot_name(partition), bytes)
            .await
        {
            Ok(()) => {
                self.snapshot_seq = seq;
                tracing::info!(partition, seq, sessions, bytes = size, "snapshot saved");
            }
            Err(err) => {
                tracing::warn!(partition, seq, error = %err, "saving the snapshot failed; will retry")
            }
        }
    }
}
