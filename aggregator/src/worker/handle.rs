//! Handling event-log messages: decode, check, store raw events, fold, park failures.
//!
//! An event that can never be processed (undecodable message, invalid time zone or timestamp,
//! refused by the raw store) is parked in the dead-letter log and never stored as a raw event,
//! so replaying its dead letter later stores and counts it once.

use beacon_core::consumer::Halt;
use beacon_core::deadletter::Failure;
use beacon_core::log::LogMessage;
use beacon_core::raw::{Inserted, Origin, RawEvent};
use beacon_core::trace::TraceContext;
use beacon_proto::pipeline::v1::{DeadLetterSource, EventBatch, LoggedEvent};
use bytes::Bytes;
use prost::Message;

use super::hold::RELEASE_PER_STEP;
use super::{FLUSH_BYTES, Position, Worker};
use crate::AggregatorError;
use crate::processor::Prepared;
use crate::rollup::BATCH_OVERHEAD;

/// One message of a chunk, decoded or not.
struct Decoded {
    seq: u64,
    payload: Bytes,
    batch: Result<EventBatch, prost::DecodeError>,
}

/// What to do at one position, in order.
enum Step<'a> {
    /// Fold a checked event whose raw event is `raws[raw]`.
    Fold { prepared: Prepared<'a>, raw: usize },
    /// Nothing to fold (the event was parked): only advance.
    Skip,
    /// A release slot of a tick stamped at `appended_ms`: release held events that are due.
    Release { appended_ms: i64 },
    /// Every event of the message is handled; the writer stamped it at `appended_ms` (ticks).
    End { appended_ms: i64 },
}

impl Worker {
    /// Folds consecutive messages into the state; their raw events are stored with one write.
    /// A rollup is published whenever the pending deltas grow past [`FLUSH_BYTES`], also in the
    /// middle of a message.
    pub(super) async fn handle_chunk(
        &mut self,
        messages: Vec<LogMessage>,
    ) -> Result<(), Halt<AggregatorError>> {
        // One span per traced message, ended when the chunk is handled; the pending deltas
        // continue the first traced message's.
        let folds: Vec<(u64, tracing::Span)> = messages
            .iter()
            .filter(|message| !message.trace.is_empty())
            .map(|message| {
                let span = TraceContext::span_of("aggregator.fold", [&message.trace]);
                span.record("partition", self.lane.partition());
                span.record("seq", message.seq);
                (message.seq, span)
            })
            .collect();
        let decoded = self.decode(messages);
        let mut raws = Vec::new();
        let mut failures = Vec::new();
        let steps = self.plan(&decoded, &mut raws, &mut failures);
        for failure in failures {
            self.park(failure).await?;
        }
        let inserted = self.insert(&raws).await?;
        for (position, step) in steps {
            let emit = position > self.published;
            match step {
                Step::Fold { prepared, raw } => match inserted[raw] {
                    Some(Inserted::Duplicate) => {
                        self.stats.duplicates += 1;
                        self.mark_processed(position, false);
                    }
                    Some(_) => {
                        self.stats.received_ms = self.stats.received_ms.max(prepared.received_ms());
                        let folded = if self.hold.is_off() {
                            self.processor.apply(prepared, emit);
                            true
                        } else {
                            let event = prepared.event();
                            let times = (event.timestamp_ms, event.received_ms);
                            self.hold.push(position, times, raws[raw].payload.clone());
                            self.release_held(emit)
                        };
                        self.stats.events += 1;
                        self.mark_processed(position, emit && folded);
                    }
                    None => self.mark_processed(position, false),
                },
                Step::Skip => self.mark_processed(position, false),
                Step::Release { appended_ms } => {
                    self.hold.advance(appended_ms);
                    let released = self.release_held(emit);
                    self.mark_processed(position, emit && released);
                }
                Step::End { appended_ms } => {
                    if self.pending_trace.is_empty()
                        && let Some((_, span)) = folds.iter().find(|(seq, _)| *seq == position.seq)
                    {
                        self.pending_trace = TraceContext::of(span);
                    }
                    self.hold.advance(appended_ms);
                    let released = self.release_held(emit);
                    self.stats.messages += 1;
                    self.mark_processed(position, emit && released);
                }
            }
            if self.processor.pending_size_bound() + BATCH_OVERHEAD >= FLUSH_BYTES {
                self.publish_pending().await?;
            }
        }
        Ok(())
    }

    /// Decodes the messages not folded yet.
    fn decode(&self, messages: Vec<LogMessage>) -> Vec<Decoded> {
        let done = self.resume_seq();
        messages
            .into_iter()
            .filter(|msg| msg.seq > done)
            .map(|msg| Decoded {
                seq: msg.seq,
                batch: EventBatch::decode(msg.payload.clone()),
                payload: msg.payload,
            })
            .collect()
    }

    /// Checks every event not folded yet: the valid ones become raw events and fold steps, the
    /// others failures (parked only past W: earlier ones were parked before the crash).
    fn plan<'a>(
        &mut self,
        decoded: &'a [Decoded],
        raws: &mut Vec<RawEvent>,
        failures: &mut Vec<Failure>,
    ) -> Vec<(Position, Step<'a>)> {
        let partition = self.lane.partition();
        let mut steps = Vec::new();
        for message in decoded {
            let seq = message.seq;
            let batch = match &message.batch {
                Ok(batch) => batch,
                Err(err) => {
                    if (Position { seq, index: 0 }) > self.published {
                        failures.push(Failure {
                            source: DeadLetterSource::Events,
                            partition,
                            seq,
                            index: 0,
                            cause: beacon_core::deadletter::UNDECODABLE_BATCH,
                            reason: format!("undecodable EventBatch: {err}"),
                            tenant_id: String::new(),
                            payload: message.payload.clone(),
                        });
                        self.stats.dead_letters += 1;
                    }
                    steps.push((Position::end_of(seq), Step::End { appended_ms: 0 }));
                    continue;
                }
            };
            for (index, event) in batch.events.iter().enumerate() {
                let index = u32::try_from(index).unwrap_or(u32::MAX - 1);
                let position = Position { seq, index };
                if position <= self.processed {
                    continue;
                }
                match self.processor.prepare(event) {
                    Ok(prepared) => {
                        steps.push((
                            position,
                            Step::Fold {
                                prepared,
                                raw: raws.len(),
                            },
                        ));
                        raws.push(raw_event(position, event));
                    }
                    Err(err) => {
                        if position > self.published {
                            failures.push(event_failure(
                                partition,
                                position,
                                event,
                                "invalid_event",
                                err.to_string(),
                            ));
                            self.stats.dead_letters += 1;
                        }
                        steps.push((position, Step::Skip));
                    }
                }
            }
            let appended_ms = batch.appended_ms;
            if batch.events.is_empty() {
                for index in 0..batch.releases.min(u32::MAX - 1) {
                    let position = Position { seq, index };
                    if position > self.processed {
                        steps.push((position, Step::Release { appended_ms }));
                    }
                }
            }
            steps.push((Position::end_of(seq), Step::End { appended_ms }));
        }
        steps
    }

    /// Sessionizes at most [`RELEASE_PER_STEP`] held events that are due, in time order,
    /// their deltas kept with `emit`. Returns whether any was released.
    fn release_held(&mut self, emit: bool) -> bool {
        let released = self.hold.release(RELEASE_PER_STEP);
        let any = !released.is_empty();
        for (position, encoded) in released {
            // It was decoded and checked before it was held, by the same logic.
            if let Err(err) = self.fold_held(encoded, emit) {
                tracing::error!(partition = self.lane.partition(), seq = position.seq, index = position.index, error = %err, "a held event failed its check again; skipped");
            }
        }
        any
    }

    /// Sessionizes one released event.
    fn fold_held(&mut self, encoded: Bytes, emit: bool) -> Result<(), String> {
        let event = LoggedEvent::decode(encoded).map_err(|err| err.to_string())?;
        let prepared = self
            .processor
            .prepare(&event)
            .map_err(|err| err.to_string())?;
        self.processor.apply(prepared, emit);
        Ok(())
    }

    /// Stores raw events; per event its outcome, `None` for one the store refused for good
    /// (parked). Transient failures are retried; a permanent one makes the events go one by one.
    async fn insert(
        &mut self,
        raws: &[RawEvent],
    ) -> Result<Vec<Option<Inserted>>, Halt<AggregatorError>> {
        let (Some(first), Some(last)) = (raws.first(), raws.last()) else {
            return Ok(Vec::new());
        };
        let what = format!(
            "storing {} raw events of seq {} to {}",
            raws.len(),
            first.origin.seq,
            last.origin.seq
        );
        match self.insert_some(&what, raws).await {
            Ok(inserted) => return Ok(inserted.into_iter().map(Some).collect()),
            Err(Halt::Stopped) => return Err(Halt::Stopped),
            Err(Halt::Failed(err)) => {
                tracing::warn!(partition = self.lane.partition(), what, error = %err, "the raw store refused a chunk; storing its events one by one");
            }
        }
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let what = format!(
                "storing raw event {:?} of seq {}",
                raw.event_id, raw.origin.seq
            );
            match self.insert_some(&what, std::slice::from_ref(raw)).await {
                Ok(inserted) => out.push(inserted.first().copied()),
                Err(Halt::Stopped) => return Err(Halt::Stopped),
                Err(Halt::Failed(err)) => {
                    let position = Position {
                        seq: raw.origin.seq,
                        index: raw.origin.index,
                    };
                    if position > self.published {
                        let event = LoggedEvent::decode(raw.payload.clone()).unwrap_or_default();
                        let failure = event_failure(
                            self.lane.partition(),
                            position,
                            &event,
                            "raw_store_rejected",
                            err.to_string(),
                        );
                        self.park(failure).await?;
                        self.stats.dead_letters += 1;
                    }
                    out.push(None);
                }
            }
        }
        Ok(out)
    }

    /// One insert call, retried while the failure is transient; checks the answer's length.
    async fn insert_some(
        &self,
        what: &str,
        raws: &[RawEvent],
    ) -> Result<Vec<Inserted>, Halt<beacon_core::Error>> {
        let store = &self.raw;
        let inserted = self.lane.retry(what, || store.insert(raws)).await?;
        if inserted.len() != raws.len() {
            return Err(Halt::Failed(beacon_core::Error::Corrupt(format!(
                "{what}: the raw store answered {} results for {} events",
                inserted.len(),
                raws.len()
            ))));
        }
        Ok(inserted)
    }

    /// Parks a failure durably.
    async fn park(&mut self, failure: Failure) -> Result<(), Halt<AggregatorError>> {
        self.lane.park(failure).await?;
        Ok(())
    }
}

/// The failure of one event.
fn event_failure(
    partition: u32,
    position: Position,
    event: &LoggedEvent,
    cause: &'static str,
    reason: String,
) -> Failure {
    Failure {
        source: DeadLetterSource::Events,
        partition,
        seq: position.seq,
        index: position.index,
        cause,
        reason,
        tenant_id: event.tenant_id.clone(),
        payload: Bytes::from(event.encode_to_vec()),
    }
}

/// The raw-store record of an event: origin (seq, index), payload the encoded event.
fn raw_event(position: Position, event: &LoggedEvent) -> RawEvent {
    RawEvent {
        tenant_id: event.tenant_id.clone(),
        event_id: event.event_id.clone(),
        timestamp_ms: event.timestamp_ms,
        origin: Origin {
            seq: position.seq,
            index: position.index,
        },
        payload: Bytes::from(event.encode_to_vec()),
    }
}
