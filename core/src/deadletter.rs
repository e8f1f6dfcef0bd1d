//! The dead-letter log (`deadletters.<p>`): what failed after it was accepted, parked with its
//! reason so that it is never dropped, until an operator replays or drops it.
//!
//! Invariant: a dead letter always fits in one log message. A failed item larger than
//! [`MAX_PAYLOAD`] is kept as a reference (source log, partition, sequence, index) and its size.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use beacon_proto::pipeline::v1::{
    DeadLetter, DeadLetterSource, EventBatch, LoggedEvent, RollupBatch, TenantRollup,
};
use bytes::Bytes;
use prost::Message;

use crate::log::Log;
use crate::time::now_ms;
use crate::{Error, Result};

/// Largest failed item kept inside a dead letter, bytes: any event-log message (ingest writes at
/// most 768 KiB) fits, with room for the letter's other fields under JetStream's 1 MiB.
pub const MAX_PAYLOAD: usize = 900 * 1024;

/// What failed and why, before it is parked.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The log it came from.
    pub source: DeadLetterSource,
    /// Its partition.
    pub partition: u32,
    /// Its sequence in the source log.
    pub seq: u64,
    /// The event's or tenant part's index in that message.
    pub index: u32,
    /// The short failure class (see the proto's `DeadLetter.cause`).
    pub cause: &'static str,
    /// Why, in words.
    pub reason: String,
    /// The tenant, when known.
    pub tenant_id: String,
    /// The failed item.
    pub payload: Bytes,
}

impl Failure {
    /// The dead letter, its payload left out when larger than [`MAX_PAYLOAD`].
    pub fn into_letter(self) -> DeadLetter {
        let payload_bytes = self.payload.len() as u64;
        let payload = if self.payload.len() <= MAX_PAYLOAD {
            self.payload.to_vec()
        } else {
            Vec::new()
        };
        DeadLetter {
            partition: self.partition,
            seq: self.seq,
            index: self.index,
            reason: self.reason,
            payload,
            source: self.source as i32,
            cause: self.cause.to_owned(),
            tenant_id: self.tenant_id,
            parked_ms: now_ms(),
            payload_bytes,
        }
    }
}

/// Cause: a log message that does not decode; the letter holds the whole message.
pub const UNDECODABLE_BATCH: &str = "undecodable_batch";
/// Cause: a rollup batch that could not be published; the letter holds the whole batch.
pub const UNPUBLISHABLE_ROLLUP: &str = "unpublishable_rollup";
/// Cause: a live rollup batch overlapping events already applied; the letter holds it whole.
pub const OVERLAPPING_BATCH: &str = "overlapping_batch";

/// Whether a letter of `cause` holds a whole log message (a batch), not one event or tenant
/// part.
pub fn holds_whole_message(cause: &str) -> bool {
    [UNDECODABLE_BATCH, UNPUBLISHABLE_ROLLUP, OVERLAPPING_BATCH].contains(&cause)
}

/// The id of a dead letter: one per failed item and cause, so parking the same failure again
/// (after a crash) keeps one letter.
pub fn letter_id(letter: &DeadLetter) -> String {
    format!(
        "dead-{}-{}-{}-{}-{}",
        source_name(letter.source),
        letter.cause,
        letter.partition,
        letter.seq,
        letter.index
    )
}

/// "events", "rollups" or "unknown".
pub fn source_name(source: i32) -> &'static str {
    match DeadLetterSource::try_from(source) {
        Ok(DeadLetterSource::Events) => "events",
        Ok(DeadLetterSource::Rollups) => "rollups",
        _ => "unknown",
    }
}

/// A parked dead letter and its position in the dead-letter log.
#[derive(Debug, Clone)]
pub struct Parked {
    /// Partition of the dead-letter log.
    pub partition: u32,
    /// Sequence in the dead-letter log.
    pub seq: u64,
    /// The letter.
    pub letter: DeadLetter,
}

/// The dead-letter log.
#[derive(Clone)]
pub struct DeadLetters {
    log: Arc<dyn Log>,
    /// Per partition, the ids of the letters parked there, read from the log on first use: a
    /// failure parked again after a restart (beyond the log's own dedup window) is not doubled.
    known: Arc<tokio::sync::Mutex<HashMap<u32, HashMap<String, u64>>>>,
}

impl DeadLetters {
    /// The dead letters kept in `log`.
    pub fn new(log: Arc<dyn Log>) -> Self {
        Self {
            log,
            known: Arc::default(),
        }
    }

    /// Appends `failure` durably, bounded in size, unless the same failure is parked already;
    /// returns its dead-letter sequence.
    pub async fn park(&self, failure: Failure) -> Result<u64> {
        let letter = failure.into_letter();
        let (partition, id) = (letter.partition, letter_id(&letter));
        let mut known = self.known.lock().await;
        let ids = match known.entry(partition) {
            std::collections::hash_map::Entry::Occupied(ids) => ids.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.ids(partition).await?)
            }
        };
        if let Some(&seq) = ids.get(&id) {
            return Ok(seq);
        }
        let payload = Bytes::from(letter.encode_to_vec());
        let seq = self.log.append(partition, &id, payload).await?;
        ids.insert(id, seq);
        Ok(seq)
    }

    /// The ids of every letter of `partition`.
    async fn ids(&self, partition: u32) -> Result<HashMap<String, u64>> {
        let mut ids = HashMap::new();
        let mut after = 0;
        loop {
            let page = self.list(partition, after, 1024).await?;
            let Some(last) = page.last() else {
                return Ok(ids);
            };
            after = last.seq;
            ids.extend(page.into_iter().map(|p| (letter_id(&p.letter), p.seq)));
        }
    }

    /// Up to `max` dead letters of `partition` after dead-letter sequence `after`, in order.
    pub async fn list(&self, partition: u32, after: u64, max: usize) -> Result<Vec<Parked>> {
        self.log
            .read(partition, after, max)
            .await?
            .into_iter()
            .map(|message| decode(partition, message.seq, message.payload))
            .collect()
    }

    /// The dead letter at `seq` of `partition`.
    pub async fn get(&self, partition: u32, seq: u64) -> Result<Parked> {
        let found = self.log.read(partition, seq.saturating_sub(1), 1).await?;
        match found.into_iter().next() {
            Some(message) if message.seq == seq => decode(partition, seq, message.payload),
            _ => Err(Error::NotFound(format!(
                "dead letter {seq} of partition {partition}"
            ))),
        }
    }

    /// Removes the dead letter at `seq` of `partition`; NotFound when there is none.
    pub async fn remove(&self, partition: u32, seq: u64) -> Result<()> {
        if self.log.delete(partition, seq).await? {
            if let Some(ids) = self.known.lock().await.get_mut(&partition) {
                ids.retain(|_, &mut parked| parked != seq);
            }
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "dead letter {seq} of partition {partition}"
            )))
        }
    }

    /// Sends the failed item of the letter at `seq` of `partition` through the pipeline again
    /// (an event to the event log, a tenant part to the rollup log), then removes the letter.
    /// Returns the log's name and the item's new sequence there.
    pub async fn replay(
        &self,
        partition: u32,
        seq: u64,
        events: &dyn Log,
        rollups: &dyn Log,
    ) -> Result<(&'static str, u64)> {
        let parked = self.get(partition, seq).await?;
        let letter = &parked.letter;
        if letter.payload.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "dead letter {seq} of partition {partition}: its {} byte item was kept as a \
                 reference only and cannot be replayed",
                letter.payload_bytes
            )));
        }
        let msg_id = format!("replay-{partition}-{seq}");
        let target = letter.partition;
        let replayed = match DeadLetterSource::try_from(letter.source) {
            Ok(DeadLetterSource::Events) => {
                let batch = match LoggedEvent::decode(letter.payload.as_slice()) {
                    Ok(event) if !holds_whole_message(&letter.cause) => EventBatch {
                        events: vec![event],
                        ..EventBatch::default()
                    }
                    .encode_to_vec(),
                    _ => letter.payload.clone(),
                };
                let seq = events.append(target, &msg_id, Bytes::from(batch)).await?;
                ("events", seq)
            }
            Ok(DeadLetterSource::Rollups) => {
                if holds_whole_message(&letter.cause) {
                    return Err(Error::InvalidArgument(format!(
                        "dead letter {seq} of partition {partition} ({}) holds a whole rollup \
                         batch, not one tenant's part; rebuild that range by reprocessing",
                        letter.cause
                    )));
                }
                let part = TenantRollup::decode(letter.payload.as_slice()).map_err(|err| {
                    Error::InvalidArgument(format!(
                        "dead letter {seq} of partition {partition} holds a whole rollup batch, \
                         not one tenant's part ({err}); rebuild that range by reprocessing"
                    ))
                })?;
                (
                    "rollups",
                    append_replayed(rollups, target, &msg_id, part).await?,
                )
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "dead letter {seq} of partition {partition} has no known source"
                )));
            }
        };
        self.remove(partition, seq).await?;
        Ok(replayed)
    }

    /// Counts of the dead letters of `partitions` by cause.
    pub async fn counts(&self, partitions: u32) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for partition in 0..partitions {
            let mut after = 0;
            loop {
                let page = self.list(partition, after, 1024).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for parked in &page {
                    *counts.entry(parked.letter.cause.clone()).or_default() += 1;
                }
            }
        }
        Ok(counts)
    }
}

/// Appends a tenant part to the rollup log as a replay: it carries the position of the rollup
/// before it, so the aggregator's restart point never moves back. The append is conditional on
/// that rollup still being the newest, and tried again when the aggregator published meanwhile.
async fn append_replayed(
    rollups: &dyn Log,
    partition: u32,
    msg_id: &str,
    part: TenantRollup,
) -> Result<u64> {
    const ATTEMPTS: u32 = 20;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let newest = rollups.last(partition).await?;
        let (expected, mut batch) = match newest {
            Some(message) => {
                let before = RollupBatch::decode(message.payload).map_err(|err| {
                    Error::Corrupt(format!(
                        "rollup {} of partition {partition}: {err}",
                        message.seq
                    ))
                })?;
                (message.seq, before)
            }
            None => (0, RollupBatch::default()),
        };
        batch.partition = partition;
        batch.first_event_seq = batch.last_event_seq;
        batch.first_event_index = batch.last_event_index;
        batch.tenants = vec![part.clone()];
        batch.replay = true;
        batch.from_dead_letter = true;
        let payload = Bytes::from(batch.encode_to_vec());
        match rollups
            .append_if_last(partition, expected, msg_id, payload)
            .await
        {
            Err(Error::Conflict(_)) if attempt < ATTEMPTS => continue,
            other => return other,
        }
    }
}

fn decode(partition: u32, seq: u64, payload: Bytes) -> Result<Parked> {
    let letter = DeadLetter::decode(payload).map_err(|err| {
        Error::Corrupt(format!(
            "dead letter {seq} of partition {partition} is not a DeadLetter: {err}"
        ))
    })?;
    Ok(Parked {
        partition,
        seq,
        letter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::embedded::EmbeddedLog;
    use beacon_testkit::TempDir;

    fn failure(index: u32, payload: usize) -> Failure {
        Failure {
            source: DeadLetterSource::Events,
            partition: 2,
            seq: 9,
            index,
            cause: "invalid_event",
            reason: "time_zone \"Mars/Olympus\" is not an IANA time zone".into(),
            tenant_id: "acme".into(),
            payload: Bytes::from(vec![7u8; payload]),
        }
    }

    #[test]
    fn large_items_are_kept_as_a_reference() {
        let small = failure(0, 10).into_letter();
        assert_eq!((small.payload.len(), small.payload_bytes), (10, 10));
        let large = failure(0, MAX_PAYLOAD + 1).into_letter();
        assert!(large.payload.is_empty());
        assert_eq!(large.payload_bytes, MAX_PAYLOAD as u64 + 1);
        assert!(large.encoded_len() < 1024, "{}", large.encoded_len());
        assert_eq!(letter_id(&large), "dead-events-invalid_event-2-9-0");
    }

    #[tokio::test]
    async fn park_list_get_remove_and_count() {
        let dir = TempDir::new("deadletters").expect("temp dir");
        let log = Arc::new(EmbeddedLog::open(&dir.path().join("dl.redb")).expect("open"));
        let letters = DeadLetters::new(log);
        let first = letters.park(failure(0, 3)).await.expect("park");
        let again = letters.park(failure(0, 3)).await.expect("park again");
        assert_eq!(first, again, "parking the same item twice keeps one letter");
        let second = letters.park(failure(1, 3)).await.expect("park");
        let listed = letters.list(2, 0, 10).await.expect("list");
        assert_eq!(
            listed.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [first, second]
        );
        assert_eq!(letters.get(2, second).await.expect("get").letter.index, 1);
        let counts = letters.counts(4).await.expect("counts");
        assert_eq!(counts.get("invalid_event"), Some(&2));
        letters.remove(2, first).await.expect("remove");
        assert!(matches!(
            letters.remove(2, first).await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            letters.get(2, first).await,
            Err(Error::NotFound(_))
        ));
        assert_eq!(letters.list(2, 0, 10).await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_failure_parked_again_after_a_restart_keeps_one_letter() {
        let dir = TempDir::new("repark").expect("temp dir");
        let path = dir.path().join("dl.redb");
        let first = {
            let letters = DeadLetters::new(Arc::new(EmbeddedLog::open(&path).expect("open")));
            letters.park(failure(0, 3)).await.expect("park")
        };
        let letters = DeadLetters::new(Arc::new(EmbeddedLog::open(&path).expect("reopen")));
        assert_eq!(
            letters.park(failure(0, 3)).await.expect("park again"),
            first
        );
        assert_eq!(letters.list(2, 0, 10).await.expect("list").len(), 1);
        letters.remove(2, first).await.expect("remove");
        let parked = letters
            .park(failure(0, 3))
            .await
            .expect("park after removal");
        assert!(parked > first, "a removed letter can be parked anew");
    }

    #[tokio::test]
    async fn replay_sends_an_event_to_the_event_log_and_a_part_after_the_last_rollup() {
        let dir = TempDir::new("replay").expect("temp dir");
        let open = |name: &str| -> Arc<dyn Log> {
            Arc::new(EmbeddedLog::open(&dir.path().join(name)).expect("open"))
        };
        let (dead, events, rollups) = (open("dl.redb"), open("events.redb"), open("rollups.redb"));
        let letters = DeadLetters::new(dead);
        let event = LoggedEvent {
            tenant_id: "acme".into(),
            event_id: "e-1".into(),
            ..LoggedEvent::default()
        };
        let mut parked = failure(0, 0);
        parked.payload = Bytes::from(event.encode_to_vec());
        let seq = letters.park(parked).await.expect("park");
        let (log, _) = letters
            .replay(2, seq, events.as_ref(), rollups.as_ref())
            .await
            .expect("replay");
        assert_eq!(log, "events");
        let sent = events.last(2).await.expect("last").expect("a message");
        let batch = EventBatch::decode(sent.payload).expect("an event batch");
        assert_eq!(batch.events, vec![event]);
        assert!(matches!(letters.get(2, seq).await, Err(Error::NotFound(_))));

        let before = RollupBatch {
            partition: 2,
            last_event_seq: 40,
            last_event_index: 7,
            ..RollupBatch::default()
        };
        rollups
            .append(2, "r-1", Bytes::from(before.encode_to_vec()))
            .await
            .expect("append rollup");
        let part = TenantRollup {
            tenant_id: "acme".into(),
            ..Default::default()
        };
        let mut parked = failure(1, 0);
        parked.source = DeadLetterSource::Rollups;
        parked.payload = Bytes::from(part.encode_to_vec());
        let seq = letters.park(parked).await.expect("park");
        letters
            .replay(2, seq, events.as_ref(), rollups.as_ref())
            .await
            .expect("replay");
        let sent = rollups.last(2).await.expect("last").expect("a message");
        let replayed = RollupBatch::decode(sent.payload).expect("a rollup batch");
        assert!(replayed.replay);
        assert_eq!(
            (replayed.last_event_seq, replayed.last_event_index),
            (40, 7),
            "the aggregator's restart point stays where it was"
        );
        assert_eq!(replayed.tenants, vec![part]);

        let large = letters
            .park(failure(2, MAX_PAYLOAD + 1))
            .await
            .expect("park");
        let refused = letters
            .replay(2, large, events.as_ref(), rollups.as_ref())
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
    }
}
