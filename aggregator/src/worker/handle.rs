//! Handling one event-log message: decode, store raw events, process, park failures.

use beacon_core::log::LogMessage;
use beacon_core::raw::{Inserted, Origin, RawEvent};
use beacon_proto::pipeline::v1::{DeadLetter, EventBatch, LoggedEvent};
use bytes::Bytes;
use prost::Message;

use super::{MAX_PENDING_BYTES, Worker};
use crate::AggregatorError;
use crate::retry::{Limit, retry};

impl Worker {
    /// Folds one message into the state. False when shut down before it was fully handled; the
    /// state is then unchanged by it.
    pub(super) async fn handle(&mut self, msg: LogMessage) -> Result<bool, AggregatorError> {
        let (partition, seq) = (self.partition, msg.seq);
        if seq <= self.processed_seq {
            tracing::warn!(
                partition,
                seq,
                processed_seq = self.processed_seq,
                "skipping a message processed before"
            );
            return Ok(true);
        }
        // Messages covered by a published rollup are replayed silently: their dead letters are
        // parked already and their deltas published.
        let emit = seq > self.published_seq;
        let batch = match EventBatch::decode(msg.payload.clone()) {
            Ok(batch) => batch,
            Err(err) => {
                let letter = dead_letter(
                    partition,
                    seq,
                    0,
                    format!("undecodable event batch: {err}"),
                    msg.payload,
                );
                let letters = if emit {
                    vec![(format!("dead-{partition}-{seq}"), letter)]
                } else {
                    Vec::new()
                };
                if !self.park(letters).await? {
                    return Ok(false);
                }
                self.stats.dead_letters += 1;
                self.mark_processed(seq, emit);
                return Ok(true);
            }
        };
        let raws = raw_events(seq, &batch.events);
        let Some(inserted) = self.insert(seq, &raws).await? else {
            return Ok(false);
        };
        let mut prepared = Vec::with_capacity(batch.events.len());
        let mut letters = Vec::new();
        for (index, ((event, status), raw)) in
            batch.events.iter().zip(&inserted).zip(raws).enumerate()
        {
            if *status == Inserted::Duplicate {
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
        self.stats.dead_letters += letters.len() as u64;
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
        if self.processor.pending_size_hint() >= MAX_PENDING_BYTES {
            return self.flush().await;
        }
        Ok(true)
    }

    /// Stores the raw events of message `seq`; `None` when shut down first.
    async fn insert(
        &self,
        seq: u64,
        raws: &[RawEvent],
    ) -> Result<Option<Vec<Inserted>>, AggregatorError> {
        if raws.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let (store, partition) = (&self.raw, self.partition);
        let limit = Limit::UntilCancelled(&self.shutdown);
        let what = format!("storing the raw events of seq {seq}");
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
    async fn park(&self, letters: Vec<(String, DeadLetter)>) -> Result<bool, AggregatorError> {
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
