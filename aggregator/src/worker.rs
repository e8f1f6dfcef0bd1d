//! One partition's worker: consumes the event log, publishes rollups, saves snapshots.
//!
//! Positions name single events: an event-log sequence and the event's index in that message
//! ([`Position`]). Exactly-once rests on two of them: the snapshot's C (the state after every
//! event of message C) and the last published rollup's end W. After a restart, events in
//! (C, W] are replayed silently (their rollups exist), and deltas are kept from the event after
//! W on. A rollup may end between any two events, so a message with many large events is split
//! over several rollups; a snapshot is only saved at a message boundary whose rollups are
//! published, so C <= W always holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_core::backends::Backends;
use beacon_core::consumer::{self, ChunkLimits, Halt, Lane};
use beacon_core::log::LogMessage;
use beacon_core::raw::RawStore;
use beacon_proto::pipeline::v1::{AggregatorSnapshot, RollupBatch};
use bytes::Bytes;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::AggregatorError;
use crate::processor::Processor;

mod handle;
mod hold;
mod jobs;
mod publish;
mod retention;

/// Most event-log messages handled at once (their raw events are stored in one write); a busy
/// lane waits up to 200 ms to fill a chunk (ARCHITECTURE.md, "Consumers wait to fill a chunk").
const CHUNK: ChunkLimits = ChunkLimits {
    messages: 256,
    bytes: 16 << 20,
    linger: Duration::from_millis(200),
};
/// Pending deltas are published once their encoding may exceed this, bytes. One event adds at
/// most a few KiB, so a rollup stays far below the log's 1 MiB message limit.
const FLUSH_BYTES: usize = 256 * 1024;
/// Attempts to publish the last rollup while shutting down.
const FINAL_ATTEMPTS: u32 = 5;

/// Settings of one worker.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Pending rollups are published this often.
    pub flush_interval: Duration,
    /// The state is snapshotted at most this often.
    pub snapshot_interval: Duration,
    /// The processing logic applied.
    pub logic_version: u32,
    /// Most raw events restatement jobs replay per tick.
    pub restate_events_per_tick: u64,
    /// How often raw events past their tenant's retention are deleted.
    pub retention_every: Duration,
    /// How long live events wait before they are sessionized (see [`hold`]).
    pub hold: Duration,
}

/// The name of a partition's snapshot.
pub fn snapshot_name(partition: u32) -> String {
    format!("aggregator-p{partition}")
}

/// An event's place in a partition: its message's sequence and its index in the message.
/// `index == u32::MAX` stands for "after every event of the message".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Event-log sequence.
    pub seq: u64,
    /// Index of the event in the message.
    pub index: u32,
}

impl Position {
    /// After every event of message `seq`.
    pub fn end_of(seq: u64) -> Self {
        Self {
            seq,
            index: u32::MAX,
        }
    }

    /// Whether this is a message boundary.
    pub fn is_boundary(self) -> bool {
        self.index == u32::MAX
    }
}

/// A rollup batch encoded and waiting to be published.
#[derive(Debug)]
struct Outgoing {
    first: Position,
    last: Position,
    tenants: usize,
    payload: Bytes,
}

/// The aggregator's instruments.
struct Instruments {
    /// Events by outcome: counted, duplicate (a client retry), parked.
    events: opentelemetry::metrics::Counter<u64>,
    /// Encoded size of published rollups.
    rollup_bytes: opentelemetry::metrics::Histogram<u64>,
    /// Sessions not remembered because their tenant held its cap.
    overflow: opentelemetry::metrics::Counter<u64>,
    /// The overflow already reported.
    reported_overflow: u64,
}

impl Instruments {
    fn new() -> Self {
        let meter = beacon_core::observe::meter();
        Self {
            events: meter
                .u64_counter("beacon_aggregator_events")
                .with_description("Events handled by the aggregator, by outcome")
                .build(),
            rollup_bytes: meter
                .u64_histogram("beacon_rollup_size")
                .with_description("Encoded size of each published rollup")
                .with_unit("By")
                .build(),
            overflow: meter
                .u64_counter("beacon_sessions_overflow")
                .with_description(
                    "Sessions counted but not remembered because their tenant held its cap",
                )
                .build(),
            reported_overflow: 0,
        }
    }

    /// Reports sessions that overflowed since the last call.
    fn report_overflow(&mut self, partition: u32, total: u64) {
        let new = total.saturating_sub(self.reported_overflow);
        if new > 0 {
            self.reported_overflow = total;
            self.overflow.add(new, &[]);
            tracing::warn!(
                partition,
                new,
                total,
                "tenants at their session cap: visits counted, visitors not remembered"
            );
        }
    }

    fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.events
                .add(n, &[opentelemetry::KeyValue::new("outcome", outcome)]);
        }
    }
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

/// The state of one partition's worker.
pub struct Worker {
    lane: Lane,
    timing: Settings,
    backends: Backends,
    raw: Arc<dyn RawStore>,
    processor: Processor,
    /// W: the last event covered by a published rollup.
    published: Position,
    /// The partition's newest rollup-log message as this worker knows it: its appends expect
    /// it, so that nobody else appended in between (fencing).
    rollup_last: u64,
    /// The last event folded into the processor.
    processed: Position,
    /// C: the message boundary of the last saved snapshot.
    snapshot_seq: u64,
    /// The first event whose deltas are pending.
    first_pending: Option<Position>,
    outgoing: Option<Outgoing>,
    last_snapshot: Instant,
    stats: Stats,
    instruments: Instruments,
    /// The logic version applied.
    version: u32,
    /// Open restatement jobs of the partition's tenants.
    jobs: jobs::JobRunner,
    /// When expired raw events were last deleted.
    last_sweep: Option<Instant>,
    /// The trace the next published rollup continues: the first traced message among those
    /// whose deltas are pending.
    pending_trace: beacon_core::trace::TraceContext,
    /// The identity of the event log the positions are on (`None`: not recorded yet).
    event_log: Option<String>,
    /// When the partition's lease was last renewed: no snapshot is saved while it is not
    /// recent (the process was paused, and another may own the partition by now).
    renewed: beacon_core::lease::Renewed,
    /// Live events stored but not sessionized yet.
    hold: hold::Hold,
    /// The hold's clock as last seen by [`Worker::tick_if_quiet`], and since when it stands.
    quiet: Option<(i64, Instant)>,
}

/// Runs a partition's worker until its lane's token is cancelled; then publishes, snapshots and
/// returns, unless `lost` is cancelled too (the partition's lease went to another process,
/// which must not find an older snapshot written after its own).
pub async fn run_partition(
    lane: Lane,
    timing: Settings,
    backends: Backends,
    raw: Arc<dyn RawStore>,
    lost: CancellationToken,
    renewed: beacon_core::lease::Renewed,
) -> Result<(), AggregatorError> {
    let mut worker = match Worker::start(lane, timing, backends, raw).await {
        Ok(worker) => worker,
        Err(Halt::Stopped) => return Ok(()),
        Err(Halt::Failed(err)) => return Err(err),
    };
    worker.renewed = renewed;
    if let Err(halt) = worker.load_jobs().await {
        return match halt {
            Halt::Stopped => Ok(()),
            Halt::Failed(err) => Err(err),
        };
    }
    let events = worker.backends.events.clone();
    let lane = worker.lane.clone();
    let tick = Some(worker.timing.flush_interval);
    consumer::consume(&lane, events.as_ref(), &mut worker, CHUNK, tick).await?;
    if lost.is_cancelled() {
        tracing::warn!(
            partition = lane.partition(),
            "partition lease lost; stopped without publishing or saving a snapshot"
        );
        return Ok(());
    }
    worker.finish().await
}

impl Worker {
    /// Loads the snapshot and the last published rollup.
    async fn start(
        lane: Lane,
        timing: Settings,
        backends: Backends,
        raw: Arc<dyn RawStore>,
    ) -> Result<Self, Halt<AggregatorError>> {
        let partition = lane.partition();
        let name = snapshot_name(partition);
        let snapshots = &backends.snapshots;
        let saved = lane
            .retry("loading the snapshot", || snapshots.load(&name))
            .await
            .map_err(|halt| failed(halt, format!("loading snapshot {name}")))?;
        let mut processor = Processor::with_version(timing.logic_version);
        let jobs = beacon_core::jobs::Jobs::new(backends.snapshots.clone(), backends.partitions);
        let mut hold = hold::Hold::new(timing.hold);
        let (snapshot_seq, event_log) = match saved {
            Some(bytes) => {
                restore(&mut processor, &mut hold, partition, &name, bytes).map_err(Halt::Failed)?
            }
            None => (0, None),
        };
        let rollups = &backends.rollups;
        let last = lane
            .retry("reading the last rollup", || rollups.last(partition))
            .await
            .map_err(|halt| failed(halt, format!("reading the last rollup of {partition}")))?;
        let rollup_last = last.as_ref().map_or(0, |msg| msg.seq);
        let mut event_log = event_log;
        let published = match last {
            Some(msg) => {
                let batch = decode_rollup(partition, msg).map_err(Halt::Failed)?;
                // Positions recorded by the rollups when the snapshot has none.
                if event_log.is_none() && !batch.event_log.is_empty() {
                    event_log = Some(batch.event_log.clone());
                }
                // A rollup of another event log (or label) says nothing about these positions.
                let same_log = batch.event_log.is_empty()
                    || event_log.as_ref().is_none_or(|log| *log == batch.event_log);
                if same_log {
                    end_of_rollup(&batch)
                } else {
                    Position::end_of(snapshot_seq)
                }
            }
            None => Position::default(),
        };
        // A snapshot may be ahead of the last rollup: the messages in between made no deltas.
        let processed = Position::end_of(snapshot_seq);
        tracing::info!(
            partition,
            snapshot_seq,
            published_seq = published.seq,
            published_index = published.index,
            sessions = processor.session_count(),
            held = hold.len(),
            "partition worker starting"
        );
        Ok(Self {
            lane,
            timing,
            backends,
            raw,
            processor,
            published,
            rollup_last,
            processed,
            snapshot_seq,
            first_pending: None,
            outgoing: None,
            last_snapshot: Instant::now(),
            stats: Stats::default(),
            instruments: Instruments::new(),
            version: timing.logic_version,
            jobs: jobs::JobRunner::new(jobs),
            last_sweep: None,
            pending_trace: Default::default(),
            event_log,
            renewed: beacon_core::lease::Renewed::now(),
            hold,
            quiet: None,
        })
    }

    /// Publishes what is pending (a few attempts only) and snapshots at a message boundary.
    async fn finish(mut self) -> Result<(), AggregatorError> {
        self.publish_final().await?;
        if self.processed.is_boundary() && self.processed.seq > self.snapshot_seq {
            self.save_snapshot().await?;
        }
        tracing::info!(
            partition = self.lane.partition(),
            seq = self.processed.seq,
            published_seq = self.published.seq,
            "partition worker stopped"
        );
        Ok(())
    }

    /// Records that the event at `position` is folded into the state.
    fn mark_processed(&mut self, position: Position, emit: bool) {
        self.processed = position;
        if emit && self.first_pending.is_none() {
            self.first_pending = Some(position);
        }
    }

    /// The sequence after which a subscription resumes: a message folded only in part is read
    /// again, and its folded events skipped.
    fn resume_seq(&self) -> u64 {
        if self.processed.is_boundary() {
            self.processed.seq
        } else {
            self.processed.seq.saturating_sub(1)
        }
    }
}

#[async_trait::async_trait]
impl consumer::Handler for Worker {
    type Error = AggregatorError;

    fn resume_after(&self) -> u64 {
        self.resume_seq()
    }

    fn log_identity(&self) -> Option<String> {
        self.event_log
            .as_deref()
            .and_then(|label| label.split('#').next())
            .map(str::to_owned)
    }

    async fn adopt_log(
        &mut self,
        identity: String,
        after: u64,
    ) -> Result<(), Halt<AggregatorError>> {
        let same_log = self.log_identity().as_deref() == Some(identity.as_str());
        if after == self.resume_seq() {
            if !same_log {
                self.event_log = Some(identity);
            }
            return Ok(());
        }
        // What is pending belongs to the positions before the move: published first, under
        // their label.
        self.publish_pending().await?;
        self.drop_held_of_old_log();
        // On the same log (an accepted gap or regression) sequence numbers may repeat: the
        // positions from here get a label of their own, so that neither this worker after a
        // restart nor the query replicas compare them with the ones before.
        let label = if same_log {
            format!("{identity}#{after}")
        } else {
            identity
        };
        self.event_log = Some(label);
        self.processed = Position::end_of(after);
        self.published = Position::end_of(after);
        if !self.save_snapshot().await.map_err(Halt::Failed)? {
            return Err(Halt::Failed(AggregatorError::backend(
                format!(
                    "saving the snapshot of partition {} on the accepted log",
                    self.lane.partition()
                ),
                beacon_core::Error::Unavailable("the snapshot store failed".into()),
            )));
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        _lane: &Lane,
        messages: Vec<LogMessage>,
    ) -> Result<(), Halt<AggregatorError>> {
        self.handle_chunk(messages).await
    }

    async fn tick(&mut self, _lane: &Lane) -> Result<(), Halt<AggregatorError>> {
        self.flush().await?;
        self.tick_if_quiet().await;
        self.run_jobs().await?;
        self.enforce_retention().await;
        Ok(())
    }
}

/// The last event a rollup covers. Rollups of logic version 1 ended at message boundaries.
fn end_of_rollup(batch: &RollupBatch) -> Position {
    if batch.logic_version < 2 {
        return Position::end_of(batch.last_event_seq);
    }
    Position {
        seq: batch.last_event_seq,
        index: batch.last_event_index,
    }
}

/// A failed backend call as the worker's error.
fn failed(halt: Halt<beacon_core::Error>, what: String) -> Halt<AggregatorError> {
    match halt {
        Halt::Stopped => Halt::Stopped,
        Halt::Failed(err) => Halt::Failed(AggregatorError::backend(what, err)),
    }
}

/// Restores `processor` and `hold` from a snapshot: the event-log sequence it covers, and the
/// identity of that log when recorded.
fn restore(
    processor: &mut Processor,
    hold: &mut hold::Hold,
    partition: u32,
    name: &str,
    bytes: Bytes,
) -> Result<(u64, Option<String>), AggregatorError> {
    let mut snapshot = AggregatorSnapshot::decode(bytes)
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
    let event_log = Some(snapshot.event_log.clone()).filter(|log| !log.is_empty());
    hold.restore(std::mem::take(&mut snapshot.held), snapshot.log_clock_ms);
    processor.restore(snapshot)?;
    Ok((seq, event_log))
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
