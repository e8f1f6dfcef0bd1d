//! One partition's worker: consumes the event log, publishes rollups, saves snapshots.
//!
//! Exactly-once rests on two numbers: the snapshot's event sequence C (state after C) and the
//! last published rollup's `last_event_seq` W. After a restart, messages in (C, W] are replayed
//! silently (their rollups exist), and deltas are kept from W + 1 on. A snapshot is only saved
//! for a sequence whose rollups are published, so C <= W always holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_core::backends::Backends;
use beacon_core::log::{LogMessage, LogStream};
use beacon_core::raw::RawStore;
use beacon_proto::pipeline::v1::{AggregatorSnapshot, RollupBatch};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::AggregatorError;
use crate::processor::Processor;
use crate::retry::{Limit, backoff, retry};

mod handle;
mod publish;

/// Event-log messages taken from the stream at once.
const CHUNK: usize = 256;
/// Pending deltas are published early once their encoding grows past this, bytes.
const MAX_PENDING_BYTES: usize = 256 * 1024;
/// Attempts to publish the last rollup while shutting down.
const FINAL_ATTEMPTS: u32 = 5;

/// Timing of one worker.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Pending rollups are published this often.
    pub flush_interval: Duration,
    /// The state is snapshotted at most this often.
    pub snapshot_interval: Duration,
}

/// The name of a partition's snapshot.
pub fn snapshot_name(partition: u32) -> String {
    format!("aggregator-p{partition}")
}

/// A rollup batch encoded and waiting to be published.
#[derive(Debug)]
struct Outgoing {
    first_seq: u64,
    last_seq: u64,
    tenants: usize,
    payload: Bytes,
}

/// Counts since the last publish, for the logs.
#[derive(Debug, Default)]
struct Stats {
    messages: u64,
    events: u64,
    duplicates: u64,
    dead_letters: u64,
    received_ms: i64,
}

/// Whether the consume loop stops or resubscribes.
enum Flow {
    Stop,
    Resubscribe { progressed: bool },
}

/// The state of one partition's worker.
pub struct Worker {
    partition: u32,
    timing: Timing,
    backends: Backends,
    raw: Arc<dyn RawStore>,
    shutdown: CancellationToken,
    processor: Processor,
    /// W: the last event sequence covered by a published rollup.
    published_seq: u64,
    /// The last event sequence folded into the processor.
    processed_seq: u64,
    /// C: the event sequence of the last saved snapshot.
    snapshot_seq: u64,
    /// The first sequence whose deltas are pending.
    first_pending: Option<u64>,
    outgoing: Option<Outgoing>,
    last_snapshot: Instant,
    stats: Stats,
}

/// Runs a partition's worker until `shutdown` is cancelled; then publishes, snapshots and returns.
pub async fn run_partition(
    partition: u32,
    timing: Timing,
    backends: Backends,
    raw: Arc<dyn RawStore>,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    match Worker::start(partition, timing, backends, raw, shutdown).await? {
        Some(worker) => worker.run().await,
        None => Ok(()),
    }
}

impl Worker {
    /// Loads the snapshot and the last published rollup. `None` when shut down meanwhile.
    async fn start(
        partition: u32,
        timing: Timing,
        backends: Backends,
        raw: Arc<dyn RawStore>,
        shutdown: CancellationToken,
    ) -> Result<Option<Self>, AggregatorError> {
        let limit = Limit::UntilCancelled(&shutdown);
        let name = snapshot_name(partition);
        let snapshots = &backends.snapshots;
        let Some(saved) = retry(partition, "loading the snapshot", limit, || {
            snapshots.load(&name)
        })
        .await?
        else {
            return Ok(None);
        };
        let mut processor = Processor::new();
        let snapshot_seq = match saved {
            Some(bytes) => restore(&mut processor, partition, &name, bytes)?,
            None => 0,
        };
        let rollups = &backends.rollups;
        let Some(last) = retry(partition, "reading the last rollup", limit, || {
            rollups.last(partition)
        })
        .await?
        else {
            return Ok(None);
        };
        let published_seq = match last {
            Some(msg) => decode_rollup(partition, msg)?.last_event_seq,
            None => 0,
        };
        if published_seq < snapshot_seq {
            tracing::error!(
                partition,
                snapshot_seq,
                published_seq,
                "the snapshot is ahead of the rollup log: rollups of the events in between are missing"
            );
        }
        tracing::info!(
            partition,
            snapshot_seq,
            published_seq,
            sessions = processor.session_count(),
            "partition worker starting"
        );
        Ok(Some(Self {
            partition,
            timing,
            backends,
            raw,
            shutdown,
            processor,
            published_seq,
            processed_seq: snapshot_seq,
            snapshot_seq,
            first_pending: None,
            outgoing: None,
            last_snapshot: Instant::now(),
            stats: Stats::default(),
        }))
    }

    async fn run(mut self) -> Result<(), AggregatorError> {
        let mut interval = tokio::time::interval(self.timing.flush_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = backoff();
        let token = self.shutdown.clone();
        while !token.is_cancelled() {
            let (events, after, partition) =
                (&self.backends.events, self.processed_seq, self.partition);
            let subscribed = retry(
                partition,
                "subscribing to the event log",
                Limit::UntilCancelled(&token),
                || events.subscribe(partition, after),
            )
            .await?;
            let Some(stream) = subscribed else { break };
            match self.consume(stream, &mut interval).await? {
                Flow::Stop => break,
                Flow::Resubscribe { progressed } => {
                    if progressed {
                        backoff.reset();
                    }
                    if !backoff.sleep(Some(&token)).await {
                        break;
                    }
                }
            }
        }
        self.finish().await
    }

    async fn consume(
        &mut self,
        stream: LogStream,
        interval: &mut Interval,
    ) -> Result<Flow, AggregatorError> {
        let mut chunks = stream.ready_chunks(CHUNK);
        let token = self.shutdown.clone();
        let mut progressed = false;
        loop {
            tokio::select! {
                biased;
                () = token.cancelled() => return Ok(Flow::Stop),
                _ = interval.tick() => {
                    if !self.flush().await? {
                        return Ok(Flow::Stop);
                    }
                }
                chunk = chunks.next() => {
                    let Some(chunk) = chunk else {
                        tracing::warn!(partition = self.partition, seq = self.processed_seq, "event stream ended; resubscribing");
                        return Ok(Flow::Resubscribe { progressed });
                    };
                    let mut messages = Vec::with_capacity(chunk.len());
                    let mut failure = None;
                    for item in chunk {
                        match item {
                            Ok(msg) => messages.push(msg),
                            Err(err) => {
                                failure = Some(err);
                                break;
                            }
                        }
                    }
                    progressed |= !messages.is_empty();
                    if !self.handle_chunk(messages).await? {
                        return Ok(Flow::Stop);
                    }
                    if let Some(err) = failure {
                        tracing::error!(partition = self.partition, seq = self.processed_seq, error = %err, "event stream failed; resubscribing");
                        return Ok(Flow::Resubscribe { progressed });
                    }
                }
            }
        }
    }

    /// Publishes what is pending and snapshots; the rollup is retried a few times only.
    async fn finish(mut self) -> Result<(), AggregatorError> {
        self.publish(Limit::Attempts(FINAL_ATTEMPTS)).await?;
        if self.processed_seq > self.snapshot_seq {
            self.save_snapshot().await;
        }
        tracing::info!(
            partition = self.partition,
            seq = self.processed_seq,
            published_seq = self.published_seq,
            "partition worker stopped"
        );
        Ok(())
    }

    /// Records that message `seq` is folded into the state.
    fn mark_processed(&mut self, seq: u64, emit: bool) {
        self.processed_seq = seq;
        if emit && self.first_pending.is_none() {
            self.first_pending = Some(seq);
        }
        self.stats.messages += 1;
    }
}

fn restore(
    processor: &mut Processor,
    partition: u32,
    name: &str,
    bytes: Bytes,
) -> Result<u64, AggregatorError> {
    let snapshot = AggregatorSnapshot::decode(bytes)
        .map_err(|err| AggregatorError::decode(format!("snapshot {name}"), err))?;
    if snapshot.partition != partition {
        return Err(AggregatorError::CorruptSnapshot {
            partition,
            reason: format!(
                "snapshot {name} belongs to partition {}",
                snapshot.partition
            ),
        });
    }
    let seq = snapshot.event_seq;
    processor.restore(snapshot)?;
    Ok(seq)
}

fn decode_rollup(partition: u32, msg: LogMessage) -> Result<RollupBatch, AggregatorError> {
    RollupBatch::decode(msg.payload).map_err(|err| {
        AggregatorError::decode(
            format!("rollup-log message {} of partition {partition}", msg.seq),
            err,
        )
    })
}

#[cfg(test)]
mod tests;
