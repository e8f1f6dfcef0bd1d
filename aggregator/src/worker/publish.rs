//! Publishing rollups and saving snapshots.

use std::time::Instant;

use beacon_core::consumer::Halt;
use beacon_core::deadletter::Failure;
use beacon_core::time::now_ms;
use beacon_core::trace::TraceContext;
use beacon_proto::pipeline::v1::{AggregatorSnapshot, DeadLetterSource, RollupBatch};
use bytes::Bytes;
use prost::Message;
use tracing::Instrument;

use super::{FINAL_ATTEMPTS, Outgoing, Worker, snapshot_name};
use crate::AggregatorError;

impl Worker {
    /// Publishes pending deltas, then snapshots when the interval has passed and the state is at
    /// a message boundary.
    pub(super) async fn flush(&mut self) -> Result<(), Halt<AggregatorError>> {
        self.publish_pending().await?;
        if self.processed.is_boundary()
            && self.processed.seq > self.snapshot_seq
            && self.last_snapshot.elapsed() >= self.timing.snapshot_interval
        {
            self.save_snapshot().await.map_err(Halt::Failed)?;
        }
        Ok(())
    }

    /// Publishes the pending deltas as one rollup batch, retrying transient failures until it
    /// is durable. A batch the log refuses for good is parked (never retried forever).
    pub(super) async fn publish_pending(&mut self) -> Result<(), Halt<AggregatorError>> {
        let Some((msg_id, payload)) = self.outgoing_message() else {
            return Ok(());
        };
        let partition = self.lane.partition();
        let span = self.publish_span();
        match self
            .append_rollup("publishing a rollup", &msg_id, payload)
            .instrument(span)
            .await
        {
            Ok(()) => {}
            Err(Halt::Stopped) => return Err(Halt::Stopped),
            Err(Halt::Failed(fenced @ AggregatorError::Fenced { .. })) => {
                return Err(Halt::Failed(fenced));
            }
            Err(Halt::Failed(err)) => {
                let Some(out) = &self.outgoing else {
                    return Ok(());
                };
                let failure = Failure {
                    source: DeadLetterSource::Rollups,
                    partition,
                    seq: out.last.seq,
                    index: out.last.index,
                    cause: beacon_core::deadletter::UNPUBLISHABLE_ROLLUP,
                    reason: format!(
                        "the rollup log refused the rollup of events {:?} to {:?}: {err}",
                        out.first, out.last
                    ),
                    tenant_id: String::new(),
                    payload: out.payload.clone(),
                };
                self.lane.park(failure).await?;
            }
        }
        self.published_now();
        Ok(())
    }

    /// The span of a rollup's publication: it continues the trace of its first traced event
    /// message (see [`Worker::pending_trace`]).
    fn publish_span(&mut self) -> tracing::Span {
        let trace = std::mem::take(&mut self.pending_trace);
        let span = TraceContext::span_of("aggregator.publish", [&trace]);
        span.record("partition", self.lane.partition());
        span
    }

    /// Publishes the pending deltas with a few attempts only (shutting down).
    pub(super) async fn publish_final(&mut self) -> Result<(), AggregatorError> {
        let Some((msg_id, payload)) = self.outgoing_message() else {
            return Ok(());
        };
        let span = self.publish_span();
        let (rollups, partition) = (&self.backends.rollups, self.lane.partition());
        let expected = self.rollup_last;
        let appended = self
            .lane
            .retry_at_most("publishing the last rollup", FINAL_ATTEMPTS, || {
                rollups.append_if_last(partition, expected, &msg_id, payload.clone())
            })
            .instrument(span)
            .await;
        self.rollup_last = appended.map_err(|err| {
            fenced_or(partition, err, || {
                format!("publishing the last rollup of partition {partition}")
            })
        })?;
        self.published_now();
        Ok(())
    }

    /// Appends to the partition's rollup log, retrying transient failures, only while its
    /// newest message is the one this worker appended or read last.
    ///
    /// Invariant: a worker never appends a rollup after one it has not seen. Another writer's
    /// message (a new owner of the partition, or a dead letter published again) makes this
    /// fail with [`AggregatorError::Fenced`].
    pub(super) async fn append_rollup(
        &mut self,
        what: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<(), Halt<AggregatorError>> {
        let (rollups, partition) = (&self.backends.rollups, self.lane.partition());
        let expected = self.rollup_last;
        let appended = self
            .lane
            .retry(what, || {
                rollups.append_if_last(partition, expected, msg_id, payload.clone())
            })
            .await;
        match appended {
            Ok(seq) => {
                self.rollup_last = seq;
                Ok(())
            }
            Err(Halt::Stopped) => Err(Halt::Stopped),
            Err(Halt::Failed(err)) => Err(Halt::Failed(fenced_or(partition, err, || {
                format!("{what} to partition {partition}")
            }))),
        }
    }

    /// The message id and payload of the outgoing batch: the one that failed before, or the
    /// pending deltas encoded; `None` when nothing is pending.
    fn outgoing_message(&mut self) -> Option<(String, Bytes)> {
        if self.outgoing.is_none() {
            self.outgoing = self.encode_pending();
        }
        let out = self.outgoing.as_ref()?;
        Some((msg_id(self.lane.partition(), out), out.payload.clone()))
    }

    /// Records that the outgoing batch is durable.
    fn published_now(&mut self) {
        let Some(out) = self.outgoing.take() else {
            return;
        };
        let stats = std::mem::take(&mut self.stats);
        self.instruments
            .rollup_bytes
            .record(out.payload.len() as u64, &[]);
        self.instruments.count("counted", stats.events);
        self.instruments.count("duplicate", stats.duplicates);
        self.instruments.count("parked", stats.dead_letters);
        let overflow = self.processor.session_overflow();
        self.instruments
            .report_overflow(self.lane.partition(), overflow);
        tracing::debug!(
            partition = self.lane.partition(),
            first_seq = out.first.seq,
            last_seq = out.last.seq,
            last_index = out.last.index,
            tenants = out.tenants,
            bytes = out.payload.len(),
            messages = stats.messages,
            events = stats.events,
            duplicates = stats.duplicates,
            dead_letters = stats.dead_letters,
            lag_ms = now_ms().saturating_sub(stats.received_ms),
            "rollup published"
        );
        self.published = out.last;
    }

    fn encode_pending(&mut self) -> Option<Outgoing> {
        let first = self.first_pending.take()?;
        let last = self.processed;
        let mut tenants = self.processor.take_rollups();
        self.jobs.copy_live(&mut tenants, first);
        let batch = RollupBatch {
            partition: self.lane.partition(),
            first_event_seq: first.seq,
            last_event_seq: last.seq,
            logic_version: self.version,
            tenants,
            first_event_index: first.index,
            last_event_index: last.index,
            replay: false,
            from_dead_letter: false,
            event_log: self.event_log.clone().unwrap_or_default(),
        };
        Some(Outgoing {
            first,
            last,
            tenants: batch.tenants.len(),
            payload: Bytes::from(batch.encode_to_vec()),
        })
    }

    /// Saves the state as of the last processed message boundary, then trims the event log
    /// below it. Only called when every processed event's rollup is published. A failure is
    /// logged (the next snapshot replaces it) and returns `false`, as does a lease not renewed
    /// lately; [`AggregatorError::Fenced`] when another worker published to the partition since
    /// this one last did.
    pub(super) async fn save_snapshot(&mut self) -> Result<bool, AggregatorError> {
        self.last_snapshot = Instant::now();
        let (partition, seq) = (self.lane.partition(), self.processed.seq);
        if !self.renewed.is_fresh() {
            tracing::warn!(
                partition,
                seq,
                "the partition lease was not renewed lately (a pause?); the snapshot waits"
            );
            return Ok(false);
        }
        // Fencing: a worker whose partition's rollup log moved on without it (it lost its
        // lease while paused, and another worker published since) must not replace the new
        // owner's snapshot with an older one, nor trim.
        match self.backends.rollups.last(partition).await {
            Ok(last) if last.as_ref().map_or(0, |message| message.seq) != self.rollup_last => {
                return Err(AggregatorError::Fenced {
                    partition,
                    reason: format!(
                        "the rollup log ends at {}, not at {} where this worker left it: \
                         another worker published; the snapshot is not saved",
                        last.map_or(0, |message| message.seq),
                        self.rollup_last
                    ),
                });
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(partition, seq, error = %err, "checking the rollup log before a snapshot failed; will retry");
                return Ok(false);
            }
        }
        let event_log = self.event_log.as_deref().unwrap_or_default();
        let (mut bytes, sessions) = self.processor.encoded_snapshot(partition, seq, event_log);
        // Fields appended to an encoding merge into it when decoded.
        let held = AggregatorSnapshot {
            held: self.hold.to_proto(),
            log_clock_ms: self.hold.clock_ms(),
            ..AggregatorSnapshot::default()
        };
        bytes.extend_from_slice(&held.encode_to_vec());
        let bytes = Bytes::from(bytes);
        let size = bytes.len();
        match self
            .backends
            .snapshots
            .save(&snapshot_name(partition), bytes)
            .await
        {
            Ok(()) => {
                self.snapshot_seq = seq;
                tracing::info!(
                    partition,
                    seq,
                    sessions,
                    held = self.hold.len(),
                    bytes = size,
                    "snapshot saved"
                );
                self.trim_events(seq).await;
                Ok(true)
            }
            Err(err) => {
                tracing::warn!(partition, seq, error = %err, "saving the snapshot failed; will retry");
                Ok(false)
            }
        }
    }
}

impl Worker {
    /// Trims the event log below the snapshot: a restart resumes after `seq`, and the raw
    /// store holds every event up to it. A failure is logged; the next snapshot trims again.
    async fn trim_events(&self, seq: u64) {
        let partition = self.lane.partition();
        match self
            .backends
            .events
            .trim(partition, seq.saturating_add(1))
            .await
        {
            Ok(removed) => {
                tracing::debug!(partition, below = seq + 1, removed, "event log trimmed")
            }
            Err(err) => {
                tracing::warn!(partition, seq, error = %err, "trimming the event log failed")
            }
        }
    }
}

/// One message id per rollup end, so a resend after a failure is deduplicated by the log.
fn msg_id(partition: u32, out: &Outgoing) -> String {
    format!("rollup-{partition}-{}-{}", out.last.seq, out.last.index)
}

/// [`AggregatorError::Fenced`] for a lost conditional append (another writer appended since);
/// otherwise the backend error, saying what was being done.
fn fenced_or(
    partition: u32,
    err: beacon_core::Error,
    what: impl FnOnce() -> String,
) -> AggregatorError {
    match err {
        beacon_core::Error::Conflict(reason) => AggregatorError::Fenced { partition, reason },
        other => AggregatorError::backend(what(), other),
    }
}
