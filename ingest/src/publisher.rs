//! Group commit: events of one partition that arrive within a few milliseconds share one
//! event-log message. Each waiting caller is answered once that message is durable.
//!
//! Invariant: `publish` returns `Ok` only after the log acknowledged every event it was given.

use std::sync::Arc;
use std::time::Duration;

use beacon_core::log::Log;
use beacon_core::shutdown::Tasks;
use beacon_core::trace::TraceContext;
use beacon_core::{Error, Result};
use beacon_proto::pipeline::v1::{EventBatch, LoggedEvent};
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

/// Largest encoded event batch in one log message (JetStream's default limit is 1 MiB).
const MAX_MESSAGE_BYTES: usize = 768 * 1024;
/// Appends in flight per partition.
const IN_FLIGHT_PER_PARTITION: usize = 4;
/// Queued requests per partition before callers wait.
const QUEUE_PER_PARTITION: usize = 4096;

struct Pending {
    events: Vec<LoggedEvent>,
    bytes: usize,
    done: oneshot::Sender<Result<(), String>>,
    /// The caller's trace.
    trace: TraceContext,
}

/// Publishes events to the event log with per-partition group commit.
#[derive(Clone)]
pub struct Publisher {
    lanes: Arc<Vec<mpsc::Sender<Pending>>>,
    tasks: Tasks,
}

impl Publisher {
    /// Starts one lane per partition, each lingering `linger` to gather a batch.
    pub fn new(log: Arc<dyn Log>, partitions: u32, linger: Duration) -> Self {
        let tasks = Tasks::new(Default::default());
        let lanes = (0..partitions)
            .map(|partition| {
                let (tx, rx) = mpsc::channel(QUEUE_PER_PARTITION);
                let lane = Lane {
                    partition,
                    log: log.clone(),
                    linger,
                    in_flight: Arc::new(Semaphore::new(IN_FLIGHT_PER_PARTITION)),
                    tasks: tasks.clone(),
                };
                tasks.spawn(lane.run(rx));
                tx
            })
            .collect();
        Self {
            lanes: Arc::new(lanes),
            tasks,
        }
    }

    /// Appends `events` to `partition`'s log, possibly together with other callers' events, and
    /// returns once all of them are durable.
    pub async fn publish(&self, partition: u32, events: Vec<LoggedEvent>) -> Result<()> {
        let lane = self.lanes.get(partition as usize).ok_or_else(|| {
            Error::InvalidArgument(format!("partition {partition} does not exist"))
        })?;
        let mut waits = Vec::new();
        let trace = TraceContext::current();
        for chunk in chunk_by_size(events) {
            let (done, wait) = oneshot::channel();
            let bytes = chunk.iter().map(Message::encoded_len).sum::<usize>() + chunk.len() * 4;
            lane.send(Pending {
                events: chunk,
                bytes,
                done,
                trace: trace.clone(),
            })
            .await
            .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?;
            waits.push(wait);
        }
        for wait in waits {
            wait.await
                .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?
                .map_err(Error::Unavailable)?;
        }
        Ok(())
    }

    /// Stops accepting, publishes what is queued, and waits up to `timeout` for it.
    pub async fn close(&self, timeout: Duration) {
        self.tasks.token().cancel();
        if tokio::time::timeout(timeout, self.tasks.drain())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "event publishes still in flight at shutdown");
        }
    }
}

/// Splits a caller's events so that no log message exceeds [`MAX_MESSAGE_BYTES`].
fn chunk_by_size(events: Vec<LoggedEvent>) -> Vec<Vec<LoggedEvent>> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for event in events {
        let len = event.encoded_len() + 4;
        if size + len > MAX_MESSAGE_BYTES / 2 && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(last) = chunks.last_mut() {
            last.push(event);
        }
    }
    chunks
}

struct Lane {
    partition: u32,
    log: Arc<dyn Log>,
    linger: Duration,
    in_flight: Arc<Semaphore>,
    tasks: Tasks,
}

impl Lane {
    async fn run(self, mut rx: mpsc::Receiver<Pending>) {
        let stop = self.tasks.token().clone();
        loop {
            let first = tokio::select! {
                biased;
                pending = rx.recv() => match pending {
                    Some(pending) => pending,
                    None => break,
                },
                () = stop.cancelled() => {
                    rx.close();
                    match rx.recv().await {
                        Some(pending) => pending,
                        None => break,
                    }
                }
            };
            let batch = self.gather(first, &mut rx).await;
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                break;
            };
            let (log, partition) = (self.log.clone(), self.partition);
            self.tasks.spawn(async move {
                append(log.as_ref(), partition, batch).await;
                drop(permit);
            });
        }
    }

    async fn gather(&self, first: Pending, rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
        let deadline = Instant::now() + self.linger;
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while bytes < MAX_MESSAGE_BYTES / 2 {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(pending)) => {
                    bytes += pending.bytes;
                    batch.push(pending);
                }
                Ok(None) | Err(_) => break,
            }
        }
        batch
    }
}

/// Appends the events of `batch` as one message, in a span that continues the first caller's
/// trace and links the others'.
async fn append(log: &dyn Log, partition: u32, batch: Vec<Pending>) {
    let span = TraceContext::span_of("ingest.append", batch.iter().map(|pending| &pending.trace));
    let mut message = EventBatch::default();
    let mut waiters = Vec::with_capacity(batch.len());
    for pending in batch {
        message.events.extend(pending.events);
        waiters.push(pending.done);
    }
    let count = message.events.len();
    span.record("partition", partition);
    span.record("count", count);
    let msg_id = uuid::Uuid::now_v7().to_string();
    let result = log
        .append(partition, &msg_id, message.encode_to_vec().into())
        .instrument(span)
        .await
        .map(|seq| tracing::trace!(partition, seq, count, "events appended"))
        .map_err(|err| {
            tracing::warn!(partition, count, error = %err, "appending events failed");
            format!("the event log did not acknowledge the events: {err}")
        });
    for waiter in waiters {
        let _ = waiter.send(result.clone());
    }
}
