//! Handling event-log messages: decode, store raw events, process, park failures.

use beacon_core::log::LogMessage;
use beacon_core::raw::{Inserted, Origin, RawEvent};
use beacon_proto::pipeline::v1::{DeadLetter, EventBatch, LoggedEvent};
use bytes::Bytes;
use prost::Message;

use super::{MAX_PENDING_BYTES, Worker};
use crate::AggregatorError;
use crate::retry::{Limit, retry};

/// One message of a chunk, decoded or not.
struct Decoded {
    seq: u64,
    payload: Bytes,
    batch: Result<EventBatch, prost::DecodeError>,
}

impl Worker {
    /// Folds consecutive messages into the state. Their raw events are stored with one insert
    /// (one durable write instead of one per message). False when shut down before every message
    /// was handled; the state then covers exactly the messages up to `processed_seq`.
    pub(super) async fn handle_chunk(
        &mut self,
        messages: Vec<LogMessage>,
    ) -> Result<bool, AggregatorError> {
        let mut last = self.processed_seq;
        let mut decoded = Vec::with_capacity(messages.len());
        for msg in messages {
            if msg.seq <= last {
                tracing::warn!(
                    partition = self.partition,
                    seq = msg.seq,
                    processed_seq = last,
                    "skipping a message processed before"
                );
                continue;
            }
            last = msg.seq;
            let batch = EventBatch::decode(msg.payload.clone());
            decoded.push(Decoded {
                seq: msg.seq,
                payload: msg.payload,
                batch,
            });
        }
        let raws: Vec<RawEvent> = decoded
            .iter()
            .filter_map(|d| d.batch.as_ref().ok().map(|b| (d.seq, b)))
            .flat_map(|(seq, batch)| raw_events(seq, &batch.events))
            .collect();
        let Some(inserted) = self.insert(&raws).await? else {
            return Ok(false);
        };
        let mut results = inserted.into_iter().zip(raws);
        for message in decoded {
            let handled = match &message.batch {
                Ok(batch) => {
                    let results: Vec<(Inserted, RawEvent)> =
                        results.by_ref().take(batch.events.len()).collect();
                    self.fold(message.seq, batch, results).await?
                }
                Err(err) => self.park_message(&message, err).await?,
            };
            if !handled {
                return Ok(false);
            }
            if self.processor.pending_size_hint() >= MAX_PENDING_BYTES && !self.flush().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Processes the events of message `seq` whose raw events are stored.
    async fn fold(
        &mut self,
        seq: u64,
        batch: &EventBatch,
        results: Vec<(Inserted, RawEvent)>,
    ) -> Result<bool, AggregatorError> {
        // Messages covered by a published rollup are replayed silently: their dead letters are
        // parked already and their deltas published.
        let emit = seq > self.published_seq;
        let partition = self.partition;
        let mut prepared = Vec::with_capacity(batch.events.len());
        let mut letters = Vec::new();
        for (index, (event, (status, raw))) in batch.events.iter().zip(results).enumerate() {
            if status == Inserted::Duplicate {
                self.stats.duplicates += 1;
                continue;
            }
            match self.processor.prepare(event) {
                Ok(ready) => prepared.push(ready),
                Err(err) if emit => {
                    let letter =
                        dead_letter(partition, seq, index as u32, err.to_string(), raw.payload);
                    letters.push((format!("dead-{partition}-{seq}-{index}"), letter));
                }
                Err(_) => {}
            }
        }
        if !self.park(letters).await? {
            return Ok(false);
        }
        self.stats.events += prepared.len() as u64;
        for ready in prepared {
            self.processor.apply(ready, emit);
        }
        if let Some(received_ms) = batch.events.iter().map(|e| e.received_ms).max() {
            self.stats.received_ms = self.stats.received_ms.max(received_ms);
        }
        self.mark_processed(seq, emit);
        Ok(true)
    }

    /// Parks an undecodable message whole.
    async fn park_message(
        &mut self,
        message: &Decoded,
        err: &prost::DecodeError,
    ) -> Result<bool, AggregatorError> {
        let (partition, seq) = (self.partition, message.seq);
        let emit = seq > self.published_seq;
        if emit {
            let reason = format!("undecodable event batch: {err}");
            let letter = dead_letter(partition, seq, 0, reason, message.payload.clone());
            if !self
                .park(vec![(format!("dead-{partition}-{seq}"), letter)])
                .await?
            {
                return Ok(false);
            }
        }
        self.mark_processed(seq, emit);
        Ok(true)
    }

    /// Stores raw events; `None` when shut down first.
    async fn insert(&self, raws: &[RawEvent]) -> Result<Option<Vec<Inserted>>, AggregatorError> {
        let (Some(first), Some(last)) = (raws.first(), raws.last()) else {
            return Ok(Some(Vec::new()));
        };
        let (store, partition) = (&self.raw, self.partition);
        let limit = Limit::UntilCancelled(&self.shutdown);
        let what = format!(
            "storing {} raw events of seq {} to {}",
            raws.len(),
            first.origin.seq,
            last.origin.seq
        );
        let Some(inserted) = retry(partition, &what, limit, || store.insert(raws)).await? else {
            return Ok(None);
        };
        if inserted.len() != raws.len() {
            let reason = format!(
                "the raw store answered {} results for {} events",
                inserted.len(),
                raws.len()
            );
            return Err(AggregatorError::backend(
                format!("{what} (partition {partition})"),
                beacon_core::Error::Corrupt(reason),
            ));
        }
        Ok(Some(inserted))
    }

    /// Appends dead letters durably; false when shut down first.
    async fn park(&mut self, letters: Vec<(String, DeadLetter)>) -> Result<bool, AggregatorError> {
        let (log, partition) = (&self.backends.dead_letters, self.partition);
        for (msg_id, letter) in letters {
            tracing::warn!(partition, seq = letter.seq, index = letter.index, reason = %letter.reason, "parking a dead letter");
            let payload = Bytes::from(letter.encode_to_vec());
            let limit = Limit::UntilCancelled(&self.shutdown);
            let parked = retry(partition, "appending a dead letter", limit, || {
                log.append(partition, &msg_id, payload.clone())
            })
            .await?;
            if parked.is_none() {
                return Ok(false);
            }
            self.stats.dead_letters += 1;
        }
        Ok(true)
    }
}

/// The raw-store records of a message's events: origin (seq, index), payload the encoded event.
fn raw_events(seq: u64, events: &[LoggedEvent]) -> Vec<RawEvent> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| RawEvent {
            tenant_id: event.tenant_id.clone(),
            event_id: event.event_id.clone(),
            timestamp_ms: event.timestamp_ms,
            origin: Origin {
                seq,
                index: index as u32,
            },
            payload: Bytes::from(event.encode_to_vec()),
        })
        .collect()
}

fn dead_letter(partition: u32, seq: u64, index: u32, reason: String, payload: Bytes) -> DeadLetter {
    DeadLetter {
        partition,
        seq,
        index,
        reason,
        payload: payload.to_vec(),
    }
}
