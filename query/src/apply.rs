//! The rollup consumer: applies one partition of the rollup log to the partition's shard, in
//! order, exactly once, several ready messages per transaction, on the shared partition-consumer
//! skeleton ([`beacon_core::consumer`]).
//!
//! Invariants: the consumer resumes after the shard's own watermark, so the shard decides what
//! is applied. What can never be applied goes to the dead-letter log with its reason, never
//! dropped, and never stalls the partition: an undecodable message whole, an invalid tenant part
//! alone. A run that fails to apply is retried, then split in halves down to the failing
//! message, whose failing tenant parts (found by applying each alone and rolling back) are
//! parked while the rest is applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_core::consumer::{self, ChunkLimits, Halt, Lane};
use beacon_core::deadletter::Failure;
use beacon_core::log::{Log, LogMessage};
use beacon_core::meta::SnapshotStore;
use beacon_core::trace::TraceContext;
use beacon_proto::pipeline::v1::{DeadLetterSource, RollupBatch, VersionReport};
use prost::Message;
use prost::bytes::Bytes;

use self::retention::Marks;
use crate::QueryError;
use crate::shard::{Applied, Covered, EventPosition, Refused, RollupMessage, ShardStore};

mod rebuild;
mod retention;

pub use self::rebuild::Rebuild;

/// Most messages and bytes applied in one shard transaction; a busy lane waits up to 500 ms to
/// fill one (ARCHITECTURE.md, "Consumers wait to fill a chunk").
const CHUNK: ChunkLimits = ChunkLimits {
    messages: 256,
    bytes: 8 << 20,
    linger: Duration::from_millis(500),
};
/// Attempts at applying a run before it is split to find what fails.
const ATTEMPTS: u32 = 3;
/// How often a replica reports the logic versions of its shards.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Applies one partition of the rollup log until shutdown.
pub struct Consumer {
    lane: Lane,
    rollups: Arc<dyn Log>,
    store: Arc<dyn ShardStore>,
    /// The last rollup-log sequence applied (the shard's watermark).
    done: u64,
    /// The last event covered by the live batches validated so far.
    covered: Option<Covered>,
    /// Time to apply one run of messages.
    apply_time: opentelemetry::metrics::Histogram<f64>,
    /// This replica's position, for trimming the rollup log.
    marks: Marks,
    /// Where the totals of swapped generations are recorded.
    snapshots: Arc<dyn SnapshotStore>,
    /// How to ask for a rebuild when the shard was lost; never when `None`.
    rebuild: Option<Rebuild>,
    /// This replica's name.
    replica: String,
    /// When the logic versions of the shard were last reported.
    reported: Option<Instant>,
    /// The identity of the rollup log `done` is on (`None`: not recorded yet).
    log: Option<String>,
}

impl Consumer {
    /// A consumer of `lane`'s partition of `rollups` into `store`; as replica `replica` it
    /// records its position in `marks` and trims `rollups` below every replica's.
    pub fn new(
        lane: Lane,
        rollups: Arc<dyn Log>,
        store: Arc<dyn ShardStore>,
        marks: Arc<dyn SnapshotStore>,
        replica: &str,
    ) -> Self {
        let snapshots = marks.clone();
        let marks = Marks::new(marks, replica, lane.partition());
        let apply_time = beacon_core::observe::meter()
            .f64_histogram("beacon_rollup_apply_duration")
            .with_description("Time to apply one run of rollup messages to a shard")
            .with_unit("s")
            .build();
        Self {
            lane,
            rollups,
            store,
            done: 0,
            covered: None,
            apply_time,
            marks,
            snapshots,
            rebuild: None,
            replica: replica.to_owned(),
            reported: None,
            log: None,
        }
    }

    /// Records which logic versions made the partition's live rows, per tenant, at most every
    /// [`REPORT_EVERY`] (`beacon reprocess --stale` reads it). Failures are logged.
    async fn report_versions(&mut self) {
        if self.reported.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        self.reported = Some(Instant::now());
        let partition = self.lane.partition();
        let tenants = match self.store.versions(partition).await {
            Ok(tenants) => tenants,
            Err(err) => {
                tracing::warn!(partition, error = %err, "listing the shard's logic versions failed");
                return;
            }
        };
        let report = VersionReport {
            tenants,
            reported_ms: beacon_core::time::now_ms(),
        };
        let name = format!("versions.p{partition}.{}", self.replica);
        if let Err(err) = self
            .snapshots
            .save(&name, Bytes::from(report.encode_to_vec()))
            .await
        {
            tracing::warn!(partition, error = %err, "recording the shard's logic versions failed");
        }
    }

    /// Rebuilds a lost shard from the raw store (see [`Rebuild`]) instead of refusing the gap.
    pub fn with_rebuild(mut self, rebuild: Rebuild) -> Self {
        self.rebuild = Some(rebuild);
        self
    }

    /// When the shard has nothing of a partition whose log was trimmed: asks for the rebuild
    /// and returns the sequence to resume after (just below the floor).
    async fn rebuild_if_lost(
        &self,
        watermark: Option<u64>,
    ) -> Result<Option<u64>, Halt<QueryError>> {
        let (Some(rebuild), None) = (&self.rebuild, watermark) else {
            return Ok(None);
        };
        let (partition, rollups) = (self.lane.partition(), &self.rollups);
        let floor = self
            .lane
            .retry("reading the rollup log's floor", || {
                rollups.floor(partition)
            })
            .await
            .map_err(into_query)?;
        if floor <= 1 {
            return Ok(None);
        }
        let asked = self
            .lane
            .retry("asking for a shard rebuild", || rebuild.request(partition))
            .await
            .map_err(into_query)?;
        tracing::warn!(
            partition,
            floor,
            tenants = asked,
            "the shard holds nothing of a trimmed partition: rebuilding it from the raw store; \
             its numbers are partial until every tenant's job has swapped"
        );
        Ok(Some(floor - 1))
    }

    /// Records the totals of the generations a run swapped in, for the jobs' reports. A failure
    /// is logged: the numbers themselves are applied.
    async fn record_swaps(&self, applied: &Applied) {
        for (job, totals) in &applied.swaps {
            let name = beacon_core::jobs::totals_key(job);
            let bytes = Bytes::from(totals.encode_to_vec());
            if let Err(err) = self.snapshots.save(&name, bytes).await {
                tracing::warn!(job, error = %err, "recording the totals of a swap failed");
            }
        }
    }

    /// Consumes until shutdown; finishes the current run first.
    pub async fn run(mut self) {
        let partition = self.lane.partition();
        let store = self.store.clone();
        let lane = self.lane.clone();
        let position = lane
            .retry("reading the shard's position", || async {
                store.position(partition).await.map_err(transient)
            })
            .await;
        let Ok(position) = position else {
            return;
        };
        let watermark = position.watermark;
        self.covered = position.covered;
        self.log = position.log;
        self.done = match self.rebuild_if_lost(watermark).await {
            Ok(Some(resume)) => resume,
            Ok(None) => watermark.unwrap_or(0),
            Err(_) => return,
        };
        tracing::info!(partition, after = self.done, "rollup consumer started");
        self.report_versions().await;
        let rollups = self.rollups.clone();
        self.mark_at_start().await;
        if let Err(err) = consumer::consume(&lane, rollups.as_ref(), &mut self, CHUNK, None).await {
            tracing::error!(partition, error = %err, "rollup consumer failed");
        }
        tracing::info!(partition, seq = self.done, "rollup consumer stopped");
    }

    /// Records the position the shard holds as this replica's mark before anything is
    /// applied, so that a replica restarted before its first rollup holds trimming back too;
    /// only when the position is on the log as it is now (a consumer that will refuse a log
    /// created anew or gone back must not trim it).
    async fn mark_at_start(&mut self) {
        let (rollups, partition) = (self.rollups.clone(), self.lane.partition());
        let on_this_log = async {
            let identity = rollups.identity().await?;
            let end = rollups
                .last(partition)
                .await?
                .map_or(0, |message| message.seq);
            Ok::<bool, beacon_core::Error>(
                self.log.as_ref().is_none_or(|log| *log == identity) && self.done <= end,
            )
        };
        match on_this_log.await {
            Ok(true) => self.marks.record(rollups.as_ref(), self.done).await,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(partition, error = %err, "reading the rollup log failed; the mark waits for the first rollup");
            }
        }
    }

    /// The valid tenant parts of `message`; the rest are parked first. A live batch that does
    /// not continue after the events already covered is parked whole.
    async fn validate(&mut self, message: &LogMessage) -> Result<RollupMessage, Halt<QueryError>> {
        let (partition, seq) = (self.lane.partition(), message.seq);
        let mut valid = RollupMessage {
            seq,
            logic_version: 0,
            tenants: Vec::new(),
            from_dead_letter: false,
            covered: None,
        };
        let batch = match RollupBatch::decode(message.payload.clone()) {
            Ok(batch) => batch,
            Err(err) => {
                let reason = format!("undecodable RollupBatch: {err}");
                let failure = failure(
                    partition,
                    seq,
                    0,
                    beacon_core::deadletter::UNDECODABLE_BATCH,
                    reason,
                    String::new(),
                    message.payload.clone(),
                );
                self.lane.park(failure).await?;
                return Ok(valid);
            }
        };
        valid.logic_version = batch.logic_version;
        valid.from_dead_letter = batch.from_dead_letter;
        let covered = match self.advance(&batch) {
            Ok(covered) => covered,
            Err(reason) => {
                tracing::error!(partition, seq, %reason, "refusing a rollup batch");
                let failure = failure(
                    partition,
                    seq,
                    0,
                    beacon_core::deadletter::OVERLAPPING_BATCH,
                    reason,
                    String::new(),
                    message.payload.clone(),
                );
                self.lane.park(failure).await?;
                return Ok(valid);
            }
        };
        valid.covered = covered;
        if batch.partition != partition {
            tracing::warn!(
                partition,
                seq,
                batch_partition = batch.partition,
                "rollup batch names another partition"
            );
        }
        for (index, part) in batch.tenants.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            match self.store.validate(partition, part) {
                Ok(mut part) => {
                    part.index = index;
                    valid.tenants.push(part);
                }
                Err(refused) => {
                    let Refused { error, rollup } = *refused;
                    let reason = match error {
                        QueryError::InvalidRollup(reason) => reason,
                        other => other.to_string(),
                    };
                    let bytes = Bytes::from(rollup.encode_to_vec());
                    let failure = failure(
                        partition,
                        seq,
                        index,
                        "invalid_rollup",
                        reason,
                        rollup.tenant_id,
                        bytes,
                    );
                    self.lane.park(failure).await?;
                }
            }
        }
        Ok(valid)
    }

    /// Moves the covered position past a live `batch` and returns it (`None` for a batch that
    /// covers no events of its own), or says why `batch` cannot be applied after the batches
    /// before it: a live batch must cover events after the last one covered so far (it
    /// overlaps them when published by two aggregators, or again after the log's duplicate
    /// window).
    ///
    /// Invariant: no event's deltas are applied twice, whoever published them.
    fn advance(&mut self, batch: &RollupBatch) -> Result<Option<Covered>, String> {
        if !is_live(batch) {
            return Ok(None);
        }
        let log = Some(batch.event_log.clone()).filter(|log| !log.is_empty());
        if let (Some(theirs), Some(ours)) =
            (&log, self.covered.as_ref().and_then(|c| c.log.as_ref()))
            && theirs != ours
        {
            // Only an operator's acceptance moves an aggregator to another event log.
            tracing::warn!(partition = self.lane.partition(), from = %ours, to = %theirs, "the rollups are on another event log now: a new range of covered events begins");
            self.covered = None;
        }
        let first = EventPosition {
            seq: batch.first_event_seq,
            index: batch.first_event_index,
        };
        let last = EventPosition {
            seq: batch.last_event_seq,
            index: batch.last_event_index,
        };
        if let Some(covered) = self
            .covered
            .as_ref()
            .map(|c| c.to)
            .filter(|&covered| first <= covered)
        {
            return Err(format!(
                "the batch covers events {}.{} to {}.{}, but events up to {}.{} were applied \
                 already: it does not continue the previous batch",
                first.seq, first.index, last.seq, last.index, covered.seq, covered.index
            ));
        }
        let log = log.or_else(|| self.covered.as_ref().and_then(|c| c.log.clone()));
        self.covered = Some(Covered {
            to: last.max(first),
            log,
        });
        Ok(self.covered.clone())
    }

    /// Applies `run`; on repeated failure splits it to the failing message and parks only the
    /// failing tenant parts.
    async fn apply_run(&self, run: Vec<RollupMessage>) -> Result<(), Halt<QueryError>> {
        // Shared with the blocking apply, not copied: a run holds up to 8 MiB of rows.
        let run: Arc<[RollupMessage]> = run.into();
        let Some(err) = self.try_apply(&run).await else {
            return Ok(());
        };
        let run = run.to_vec();
        if run.len() > 1 {
            let mut first = run;
            let second = first.split_off(first.len() / 2);
            tracing::warn!(partition = self.lane.partition(), first = first[0].seq, error = %err, "applying a run failed; splitting it");
            Box::pin(self.apply_run(first)).await?;
            return Box::pin(self.apply_run(second)).await;
        }
        let Some(message) = run.into_iter().next() else {
            return Ok(());
        };
        let message = self.drop_failing_parts(message, &err).await?;
        self.apply_until_done(message).await
    }

    /// Applies `run`, retrying a failing shard up to [`ATTEMPTS`] times; the last error when it
    /// never succeeded.
    async fn try_apply(&self, messages: &Arc<[RollupMessage]>) -> Option<beacon_core::Error> {
        let (partition, store) = (self.lane.partition(), &self.store);
        let applied = self
            .lane
            .retry_at_most("applying rollups", ATTEMPTS, || async {
                let started = std::time::Instant::now();
                let applied = store.apply(partition, messages.clone()).await;
                self.apply_time.record(started.elapsed().as_secs_f64(), &[]);
                applied.map_err(transient)
            })
            .await;
        match applied {
            Ok(applied) => {
                tracing::debug!(
                    partition,
                    applied = applied.messages,
                    watermark = applied.watermark,
                    "rollups applied"
                );
                self.record_swaps(&applied).await;
                None
            }
            Err(err) => Some(err),
        }
    }

    /// `message` without the tenant parts that fail when applied alone, which are parked. A
    /// part is at fault when it is invalid, or when it fails while others of the message apply;
    /// when every part fails for another reason the shard is at fault, and nothing is parked.
    async fn drop_failing_parts(
        &self,
        message: RollupMessage,
        err: &beacon_core::Error,
    ) -> Result<RollupMessage, Halt<QueryError>> {
        let partition = self.lane.partition();
        let mut kept = Vec::new();
        let mut failing = Vec::new();
        for part in message.tenants {
            match self.store.probe(partition, part.clone()).await {
                Ok(()) => kept.push(part),
                Err(why) => failing.push((part, why)),
            }
        }
        let invalid = |why: &QueryError| {
            matches!(
                why,
                QueryError::InvalidRollup(_)
                    | QueryError::Core(beacon_core::Error::InvalidArgument(_))
            )
        };
        if kept.is_empty() && !failing.iter().all(|(_, why)| invalid(why)) {
            tracing::error!(partition, seq = message.seq, error = %err, "the shard fails; retrying the message");
            let tenants = failing.into_iter().map(|(part, _)| part).collect();
            return Ok(RollupMessage {
                seq: message.seq,
                logic_version: message.logic_version,
                tenants,
                from_dead_letter: message.from_dead_letter,
                covered: message.covered.clone(),
            });
        }
        for (part, why) in failing {
            let (tenant, bytes) = (
                part.tenant_id().to_owned(),
                Bytes::from(part.rollup.encode_to_vec()),
            );
            let failure = failure(
                partition,
                message.seq,
                part.index,
                "unappliable_rollup",
                why.to_string(),
                tenant,
                bytes,
            );
            self.lane.park(failure).await?;
        }
        Ok(RollupMessage {
            seq: message.seq,
            logic_version: message.logic_version,
            tenants: kept,
            from_dead_letter: message.from_dead_letter,
            covered: message.covered.clone(),
        })
    }

    /// Applies one message, retrying with backoff until it succeeds (every error counts as the
    /// shard's: its parts were checked); meanwhile the lane reports its backend as failing.
    async fn apply_until_done(&self, message: RollupMessage) -> Result<(), Halt<QueryError>> {
        let (partition, store) = (self.lane.partition(), &self.store);
        let messages: Arc<[RollupMessage]> = vec![message].into();
        let applied = self
            .lane
            .retry("applying a rollup", || async {
                store
                    .apply(partition, messages.clone())
                    .await
                    .map_err(|err| beacon_core::Error::Unavailable(err.to_string()))
            })
            .await
            .map_err(into_query)?;
        self.record_swaps(&applied).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl consumer::Handler for Consumer {
    type Error = QueryError;

    fn resume_after(&self) -> u64 {
        self.done
    }

    fn log_identity(&self) -> Option<String> {
        self.log.clone()
    }

    async fn adopt_log(&mut self, identity: String, after: u64) -> Result<(), Halt<QueryError>> {
        let moved = (after != self.done).then_some(after);
        let (store, partition) = (self.store.clone(), self.lane.partition());
        let adopted = identity.clone();
        self.lane
            .retry("recording the rollup log's identity", || {
                let (store, identity) = (store.clone(), adopted.clone());
                async move {
                    store
                        .adopt_log(partition, identity, moved)
                        .await
                        .map_err(transient)
                }
            })
            .await
            .map_err(into_query)?;
        self.log = Some(identity);
        if let Some(after) = moved {
            self.done = after;
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        _lane: &Lane,
        messages: Vec<LogMessage>,
    ) -> Result<(), Halt<QueryError>> {
        // An error ends this consumer: the next one starts from the shard's own position.
        let mut run = Vec::with_capacity(messages.len());
        let (done, mut last) = (self.done, self.done);
        for message in messages.iter().filter(|m| m.seq > done) {
            if message.seq <= last {
                continue;
            }
            last = message.seq;
            run.push(self.validate(message).await?);
        }
        if run.is_empty() {
            return Ok(());
        }
        // Applied in one transaction: one span per traced message, each the child of the
        // aggregator's publication.
        let spans: Vec<tracing::Span> = messages
            .iter()
            .filter(|m| m.seq > done && m.seq <= last && !m.trace.is_empty())
            .map(|message| {
                let span = TraceContext::span_of("query.apply", [&message.trace]);
                span.record("partition", self.lane.partition());
                span.record("seq", message.seq);
                span
            })
            .collect();
        // The run holds what the encoded messages did, decoded.
        drop(messages);
        self.apply_run(run).await?;
        drop(spans);
        self.done = last;
        let rollups = self.rollups.clone();
        self.marks.record(rollups.as_ref(), last).await;
        self.report_versions().await;
        Ok(())
    }
}

/// A halted backend call as the consumer's halt.
fn into_query(halt: Halt<beacon_core::Error>) -> Halt<QueryError> {
    match halt {
        Halt::Stopped => Halt::Stopped,
        Halt::Failed(err) => Halt::Failed(err.into()),
    }
}

/// Whether `batch` covers events of its own (not a job's part or a dead letter published
/// again) with event positions (logic version 2 and later).
fn is_live(batch: &RollupBatch) -> bool {
    !batch.replay && !batch.from_dead_letter && batch.logic_version >= 2
}

/// A shard error is worth retrying; anything else keeps its class.
fn transient(err: QueryError) -> beacon_core::Error {
    match err {
        QueryError::Core(err) => err,
        other => beacon_core::Error::Unavailable(other.to_string()),
    }
}

/// A failed item of the rollup log.
fn failure(
    partition: u32,
    seq: u64,
    index: u32,
    cause: &'static str,
    reason: String,
    tenant_id: String,
    payload: Bytes,
) -> Failure {
    Failure {
        source: DeadLetterSource::Rollups,
        partition,
        seq,
        index,
        cause,
        reason,
        tenant_id,
        payload,
    }
}

#[cfg(test)]
mod tests;
