//! The rollup consumer: applies one partition of the rollup log to the tenants' shards, in
//! order, exactly once.
//!
//! Invariants: a message is finished (every tenant part applied or parked) before progress
//! moves past it; an undecodable message or an unappliable part goes to the dead-letter log
//! with its reason, never dropped, and never stalls the partition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_core::log::{Log, LogMessage};
use beacon_core::retry::Backoff;
use beacon_proto::pipeline::v1::{DeadLetter, RollupBatch, TenantRollup};
use futures::StreamExt;
use prost::Message;
use prost::bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::QueryError;
use crate::progress::Progress;
use crate::shard::{ApplyOutcome, ShardStore};

/// Progress is saved at most this often (and after the last message before an idle pause).
const SAVE_INTERVAL: Duration = Duration::from_millis(200);
/// Tenant parts of one message applied at once (each to its own shard).
const APPLY_CONCURRENCY: usize = 8;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Applies one partition of the rollup log until shutdown.
pub struct Consumer {
    partition: u32,
    rollups: Arc<dyn Log>,
    dead_letters: Arc<dyn Log>,
    store: Arc<dyn ShardStore>,
    progress: Progress,
    shutdown: CancellationToken,
}

/// What became of one tenant part of a message.
enum Part {
    /// Applied now or before.
    Done,
    /// Can never be applied; to be parked.
    Invalid { index: u32, reason: String },
    /// Shutdown came while retrying.
    Stopped,
}

impl Consumer {
    /// A consumer of `partition` of `rollups`, parking failures in `dead_letters`.
    pub fn new(
        partition: u32,
        rollups: Arc<dyn Log>,
        dead_letters: Arc<dyn Log>,
        store: Arc<dyn ShardStore>,
        progress: Progress,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            partition,
            rollups,
            dead_letters,
            store,
            progress,
            shutdown,
        }
    }

    /// Consumes until `shutdown`: finishes the current message, saves progress, returns.
    pub async fn run(self) {
        let partition = self.partition;
        let mut done = self.progress.load().await.unwrap_or_else(|err| {
            tracing::warn!(partition, error = %err, "progress unreadable; replaying the partition");
            0
        });
        let mut saved = Saved {
            seq: done,
            at: Instant::now(),
        };
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        tracing::info!(partition, after = done, "rollup consumer started");
        'subscribe: while !self.shutdown.is_cancelled() {
            let subscribed = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                subscribed = self.rollups.subscribe(partition, done) => subscribed,
            };
            let mut stream = match subscribed {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(partition, after = done, error = %err, "subscribing to the rollup log failed; retrying");
                    if !backoff.sleep(Some(&self.shutdown)).await {
                        break;
                    }
                    continue;
                }
            };
            loop {
                let dirty = done != saved.seq;
                let next = tokio::select! {
                    biased;
                    () = self.shutdown.cancelled() => break 'subscribe,
                    () = tokio::time::sleep(SAVE_INTERVAL), if dirty => {
                        self.save(done, &mut saved).await;
                        continue;
                    }
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
                if !self.handle(&message).await {
                    break 'subscribe;
                }
                done = message.seq;
                backoff.reset();
                if saved.at.elapsed() >= SAVE_INTERVAL {
                    self.save(done, &mut saved).await;
                }
            }
        }
        if done != saved.seq {
            self.save(done, &mut saved).await;
        }
        tracing::info!(partition, seq = done, "rollup consumer stopped");
    }

    async fn save(&self, seq: u64, saved: &mut Saved) {
        match self.progress.save(seq).await {
            Ok(()) => saved.seq = seq,
            Err(err) => {
                tracing::warn!(partition = self.partition, seq, error = %err, "saving progress failed")
            }
        }
        saved.at = Instant::now();
    }

    /// Applies every tenant part of `message`; false when shutdown interrupted it.
    async fn handle(&self, message: &LogMessage) -> bool {
        let (partition, seq) = (self.partition, message.seq);
        let batch = match RollupBatch::decode(message.payload.clone()) {
            Ok(batch) => batch,
            Err(err) => {
                return self
                    .park(message, 0, format!("undecodable RollupBatch: {err}"))
                    .await;
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
        let parts: Vec<Part> = futures::stream::iter(batch.tenants.into_iter().enumerate())
            .map(|(index, part)| self.apply_part(seq, index, Arc::new(part)))
            .buffer_unordered(APPLY_CONCURRENCY)
            .collect()
            .await;
        let mut finished = true;
        for part in parts {
            match part {
                Part::Done => {}
                Part::Stopped => finished = false,
                Part::Invalid { index, reason } => {
                    finished &= self.park(message, index, reason).await
                }
            }
        }
        finished
    }

    async fn apply_part(&self, seq: u64, index: usize, part: Arc<TenantRollup>) -> Part {
        let partition = self.partition;
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        loop {
            match self.store.apply(partition, seq, part.clone()).await {
                Ok(ApplyOutcome::Applied) => {
                    tracing::debug!(partition, seq, tenant = %part.tenant_id, rows = part.rows.len(), "rollup applied");
                    return Part::Done;
                }
                Ok(ApplyOutcome::AlreadyApplied { watermark }) => {
                    tracing::debug!(partition, seq, watermark, tenant = %part.tenant_id, "rollup already applied");
                    return Part::Done;
                }
                Err(QueryError::InvalidRollup(reason)) => {
                    let index = u32::try_from(index).unwrap_or(u32::MAX);
                    return Part::Invalid { index, reason };
                }
                Err(err) => {
                    tracing::error!(partition, seq, tenant = %part.tenant_id, error = %err, "applying rollup failed; retrying");
                    if !backoff.sleep(Some(&self.shutdown)).await {
                        return Part::Stopped;
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

/// The last saved progress.
struct Saved {
    seq: u64,
    at: Instant,
}

#[cfg(test)]
mod tests;
