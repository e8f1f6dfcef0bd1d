//! The rollup consumer: applies one partition of the rollup log to the partition's shard, in
//! order, exactly once, several ready messages per transaction.
//!
//! Invariants: the consumer resumes after the shard's own watermark, so the shard decides what
//! is applied; an undecodable message or an unappliable part goes to the dead-letter log with
//! its reason before the message is applied, never dropped, and never stalls the partition.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use beacon_core::log::{Log, LogMessage, LogStream};
use beacon_core::retry::Backoff;
use beacon_proto::pipeline::v1::{DeadLetter, RollupBatch};
use futures::stream::Peekable;
use futures::{FutureExt, StreamExt};
use prost::Message;
use prost::bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::QueryError;
use crate::shard::{RollupMessage, ShardStore};

/// Most messages applied in one shard transaction.
const MAX_BATCH_MESSAGES: usize = 256;
/// Most payload bytes applied in one shard transaction (a larger message still goes alone).
const MAX_BATCH_BYTES: usize = 8 << 20;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Applies one partition of the rollup log until shutdown.
pub struct Consumer {
    partition: u32,
    rollups: Arc<dyn Log>,
    dead_letters: Arc<dyn Log>,
    store: Arc<dyn ShardStore>,
    shutdown: CancellationToken,
}

impl Consumer {
    /// A consumer of `partition` of `rollups`, parking failures in `dead_letters`.
    pub fn new(
        partition: u32,
        rollups: Arc<dyn Log>,
        dead_letters: Arc<dyn Log>,
        store: Arc<dyn ShardStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            partition,
            rollups,
            dead_letters,
            store,
            shutdown,
        }
    }

    /// Consumes until `shutdown`: finishes the current batch, returns.
    pub async fn run(self) {
        let partition = self.partition;
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        let mut done = loop {
            match self.store.watermark(partition).await {
                Ok(watermark) => break watermark.unwrap_or(0),
                Err(err) => {
                    tracing::error!(partition, error = %err, "reading the shard watermark failed; retrying");
                    if !backoff.sleep(Some(&self.shutdown)).await {
                        return;
                    }
                }
            }
        };
        tracing::info!(partition, after = done, "rollup consumer started");
        'subscribe: while !self.shutdown.is_cancelled() {
            let subscribed = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                subscribed = self.rollups.subscribe(partition, done) => subscribed,
            };
            let mut stream = match subscribed {
                Ok(stream) => stream.peekable(),
                Err(err) => {
                    tracing::warn!(partition, after = done, error = %err, "subscribing to the rollup log failed; retrying");
                    if !backoff.sleep(Some(&self.shutdown)).await {
                        break;
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => break 'subscribe,
                    next = stream.next() => next,
                };
                let message = match next {
                    Some(Ok(message)) => message,
                    Some(Err(err)) => {
                        tracing::warn!(partition, after = done, error = %err, "rollup stream failed; resubscribing");
                        if !backoff.sleep(Some(&self.shutdown)).await {
                            break 'subscribe;
                        }
                        continue 'subscribe;
                    }
                    None => {
                        tracing::warn!(
                            partition,
                            after = done,
                            "rollup stream ended; resubscribing"
                        );
                        if !backoff.sleep(Some(&self.shutdown)).await {
                            break 'subscribe;
                        }
                        continue 'subscribe;
                    }
                };
                if message.seq <= done {
                    continue;
                }
                let batch = gather(&mut stream, message);
                if !self.handle(&batch).await {
                    break 'subscribe;
                }
                done = batch.last().map_or(done, |m| m.seq);
                backoff.reset();
            }
        }
        tracing::info!(partition, seq = done, "rollup consumer stopped");
    }

    /// Applies `messages` in one shard transaction, after parking what can never be applied;
    /// false when shutdown interrupted it.
    async fn handle(&self, messages: &[LogMessage]) -> bool {
        let mut ready = Vec::with_capacity(messages.len());
        for message in messages {
            match self.validate(message).await {
                Some(valid) => ready.push(valid),
                None => return false,
            }
        }
        self.apply(ready.into()).await
    }

    /// The valid tenant parts of `message`; the rest are parked first. `None` when shutdown
    /// came while parking.
    async fn validate(&self, message: &LogMessage) -> Option<RollupMessage> {
        let (partition, seq) = (self.partition, message.seq);
        let mut valid = RollupMessage {
            seq,
            tenants: Vec::new(),
        };
        let batch = match RollupBatch::decode(message.payload.clone()) {
            Ok(batch) => batch,
            Err(err) => {
                let reason = format!("undecodable RollupBatch: {err}");
                return self.park(message, 0, reason).await.then_some(valid);
            }
        };
        if batch.partition != partition {
            tracing::warn!(
                partition,
                seq,
                batch_partition = batch.partition,
                "rollup batch names another partition"
            );
        }
        for (index, part) in batch.tenants.into_iter().enumerate() {
            match self.store.validate(partition, part) {
                Ok(part) => valid.tenants.push(part),
                Err(err) => {
                    let reason = match err {
                        QueryError::InvalidRollup(reason) => reason,
                        other => other.to_string(),
                    };
                    let index = u32::try_from(index).unwrap_or(u32::MAX);
                    if !self.park(message, index, reason).await {
                        return None;
                    }
                }
            }
        }
        Some(valid)
    }

    /// Applies `messages`, retrying until it succeeds; false when shutdown came first.
    async fn apply(&self, messages: Arc<[RollupMessage]>) -> bool {
        let partition = self.partition;
        let (first, last) = match (messages.first(), messages.last()) {
            (Some(first), Some(last)) => (first.seq, last.seq),
            _ => return true,
        };
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        loop {
            match self.store.apply(partition, messages.clone()).await {
                Ok(applied) => {
                    tracing::debug!(
                        partition,
                        first,
                        last,
                        applied = applied.messages,
                        watermark = applied.watermark,
                        "rollups applied"
                    );
                    return true;
                }
                Err(err) => {
                    tracing::error!(partition, first, last, error = %err, "applying rollups failed; retrying");
                    if !backoff.sleep(Some(&self.shutdown)).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Appends `message` to the dead-letter log with `reason`, retrying until it is stored;
    /// false when shutdown came first.
    async fn park(&self, message: &LogMessage, index: u32, reason: String) -> bool {
        let (partition, seq) = (self.partition, message.seq);
        tracing::warn!(partition, seq, index, reason = %reason, "parking rollup message in the dead-letter log");
        let letter = DeadLetter {
            partition,
            seq,
            index,
            reason,
            payload: message.payload.to_vec(),
        };
        let payload = Bytes::from(letter.encode_to_vec());
        let msg_id = format!("query-rollups-{partition}-{seq}-{index}");
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        loop {
            match self
                .dead_letters
                .append(partition, &msg_id, payload.clone())
                .await
            {
                Ok(_) => return true,
                Err(err) => {
                    tracing::error!(partition, seq, index, error = %err, "parking in the dead-letter log failed; retrying");
                    if !backoff.sleep(Some(&self.shutdown)).await {
                        return false;
                    }
                }
            }
        }
    }
}

/// `first` and the messages that are ready after it, up to [`MAX_BATCH_MESSAGES`] and
/// [`MAX_BATCH_BYTES`]. A failure or the end of the stream stays in the stream.
fn gather(stream: &mut Peekable<LogStream>, first: LogMessage) -> Vec<LogMessage> {
    let mut bytes = first.payload.len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH_MESSAGES {
        let Some(Some(Ok(next))) = Pin::new(&mut *stream).peek().now_or_never() else {
            break;
        };
        let increasing = batch.last().is_some_and(|last| next.seq > last.seq);
        if !increasing || bytes + next.payload.len() > MAX_BATCH_BYTES {
            break;
        }
        bytes += next.payload.len();
        match stream.next().now_or_never() {
            Some(Some(Ok(next))) => batch.push(next),
            _ => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests;
