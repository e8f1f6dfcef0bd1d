//! The JetStream [`RawStore`]: raw events shared by every aggregator of a cluster that has no
//! Cassandra (the embedded store is one process's file, so after a partition moves to another
//! aggregator, reprocessing would read only what that one stored).
//!
//! - The stream `BEACON_RAW` holds one message per event on the subject
//!   `raw.<tenant>.<day>` (the tenant id in hex, the event's Unix day), so that a time-range
//!   scan reads only the days it covers. A message is the event time, the origin, the event id
//!   and the payload.
//! - The KV bucket `beacon_raw_ids` maps `<tenant>.<blake3(event id)>` to the origin and time:
//!   the idempotency index.
//!
//! An insert stores the event before its id, so a crash in between leaves an event without an
//! id record, which the next insert (a replay) stores again; reads keep the first copy of each
//! (time, id).
//!
//! Cost: one KV read per event, and for a new event one publish and one KV create, each synced
//! to disk by the server; scans read whole days. Cassandra remains the store for large
//! deployments.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::stream::{self, StorageType};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};

use super::{Inserted, Origin, RawEvent, RawStore, check, nothing_to_scan};
use crate::meta::nats::kv_bucket;
use crate::{Error, Result};

/// The stream of raw events.
const STREAM: &str = "BEACON_RAW";
/// The bucket of event ids.
const IDS_BUCKET: &str = "beacon_raw_ids";
/// Milliseconds per day.
const DAY_MS: i64 = 86_400_000;
/// Calls in flight for one batch.
const IN_FLIGHT: usize = 64;
/// Longest wait for the next message of a day being read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a read checks whether anything is left to deliver: messages pending
/// when it began may have been deleted since (retention, deletion jobs).
const SILENCE: Duration = Duration::from_secs(1);
/// Bytes in front of the event id in a stored message: time, origin seq and index, id length.
const HEADER: usize = 8 + 8 + 4 + 2;

/// Raw events in JetStream.
pub struct NatsRawStore {
    js: Context,
    stream: stream::Stream,
    ids: kv::Store,
}

impl NatsRawStore {
    /// Opens (creating when missing) the stream and bucket with `replicas` replicas.
    pub async fn open(js: Context, replicas: usize) -> Result<Self> {
        let config = stream::Config {
            name: STREAM.into(),
            description: Some("Beacon raw events, raw.<tenant hex>.<Unix day>".into()),
            subjects: vec!["raw.>".into()],
            storage: StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        js.create_or_update_stream(config).await.map_err(|err| {
            Error::Unavailable(format!("opening JetStream stream {STREAM}: {err}"))
        })?;
        let stream = js.get_stream(STREAM).await.map_err(|err| {
            Error::Unavailable(format!("opening JetStream stream {STREAM}: {err}"))
        })?;
        let ids = kv_bucket(
            &js,
            kv::Config {
                bucket: IDS_BUCKET.into(),
                description: "Beacon raw event ids, <tenant hex>.<blake3 of the id>".into(),
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        tracing::info!(stream = STREAM, replicas, "JetStream raw store opened");
        Ok(Self { js, stream, ids })
    }

    /// How the stored id of `event` compares with its origin, or `None` when it has none.
    async fn stored(&self, event: &RawEvent) -> Result<Option<Inserted>> {
        let key = id_key(&event.tenant_id, &event.event_id);
        let value = self
            .ids
            .get(&key)
            .await
            .map_err(|err| Error::Unavailable(format!("reading raw event id {key}: {err}")))?;
        Ok(value.map(|value| classify(&value, event.origin)))
    }

    /// Stores `event` and then its id; `Duplicate` or `Replay` when another insert recorded
    /// the id first.
    async fn store_new(&self, event: &RawEvent) -> Result<Inserted> {
        let subject = day_subject(&event.tenant_id, day_of(event.timestamp_ms));
        let failed = |err: &dyn std::fmt::Display| {
            Error::Unavailable(format!("storing a raw event on {subject}: {err}"))
        };
        let stored = self
            .js
            .publish(subject.clone(), encode_message(event))
            .await
            .map_err(|err| failed(&err))?
            .await
            .map_err(|err| failed(&err))?;
        let key = id_key(&event.tenant_id, &event.event_id);
        match self.ids.create(&key, id_value(event)).await {
            Ok(_) => Ok(Inserted::New),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                // Another insert of the id won: its copy is the event, this one goes.
                self.stream
                    .delete_message(stored.sequence)
                    .await
                    .map_err(|err| failed(&err))?;
                Ok(self.stored(event).await?.unwrap_or(Inserted::Duplicate))
            }
            Err(err) => Err(Error::Unavailable(format!(
                "recording raw event id {key}: {err}"
            ))),
        }
    }

    /// The Unix days with stored events of `tenant`, ascending.
    async fn days(&self, tenant: &str) -> Result<BTreeSet<i64>> {
        let filter = format!("raw.{}.*", hex(tenant));
        let subjects: Vec<(String, usize)> = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|err| Error::Unavailable(format!("listing {filter} in {STREAM}: {err}")))?
            .try_collect()
            .await
            .map_err(|err| Error::Unavailable(format!("listing {filter} in {STREAM}: {err}")))?;
        Ok(subjects
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .filter_map(|(subject, _)| subject.rsplit('.').next()?.parse().ok())
            .collect())
    }

    /// Every stored event of `tenant` on `day`, ordered by (time, event id), the first copy of
    /// each.
    async fn read_day(&self, tenant: &str, day: i64) -> Result<Vec<RawEvent>> {
        let mut events = self.read_all(tenant, day).await?;
        events.sort_by(|(a, a_seq), (b, b_seq)| {
            (a.timestamp_ms, &a.event_id, a_seq).cmp(&(b.timestamp_ms, &b.event_id, b_seq))
        });
        events
            .dedup_by(|b, a| a.0.timestamp_ms == b.0.timestamp_ms && a.0.event_id == b.0.event_id);
        Ok(events.into_iter().map(|(event, _)| event).collect())
    }

    /// Messages of `subject` stored after stream sequence `after`.
    async fn pending_after(&self, subject: &str, after: u64) -> Result<u64> {
        let config = OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        };
        let consumer = self.stream.create_consumer(config).await.map_err(|err| {
            Error::Unavailable(format!(
                "counting {subject} after {after} in {STREAM}: {err}"
            ))
        })?;
        Ok(consumer.cached_info().num_pending)
    }

    /// Every stored copy of `tenant`'s events on `day` with its stream sequence, in stream
    /// order.
    async fn read_all(&self, tenant: &str, day: i64) -> Result<Vec<(RawEvent, u64)>> {
        let subject = day_subject(tenant, day);
        let failed = |err: &dyn std::fmt::Display| {
            Error::Unavailable(format!("reading {subject} from {STREAM}: {err}"))
        };
        let config = OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let consumer = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|err| failed(&err))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer.messages().await.map_err(|err| failed(&err))?;
        let mut events: Vec<(RawEvent, u64)> = Vec::new();
        let mut silent = Duration::ZERO;
        loop {
            let Ok(next) = tokio::time::timeout(SILENCE, messages.next()).await else {
                let after = events.last().map_or(0, |(_, seq)| *seq);
                if self.pending_after(&subject, after).await? == 0 {
                    break;
                }
                silent += SILENCE;
                if silent >= READ_TIMEOUT {
                    return Err(failed(&"no message within 10 s"));
                }
                continue;
            };
            silent = Duration::ZERO;
            let Some(message) = next else { break };
            let message = message.map_err(|err| failed(&err))?;
            let info = message.info().map_err(|err| failed(&err))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let event = decode_message(tenant, &message.payload).ok_or_else(|| {
                Error::Corrupt(format!("raw event {seq} of {subject} does not decode"))
            })?;
            events.push((event, seq));
            if pending == 0 {
                break;
            }
        }
        Ok(events)
    }
}

#[async_trait]
impl RawStore for NatsRawStore {
    async fn insert(&self, events: &[RawEvent]) -> Result<Vec<Inserted>> {
        check(events)?;
        let mut results: Vec<Option<Inserted>> = vec![None; events.len()];
        let mut in_batch = HashSet::new();
        let mut first = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if in_batch.insert((event.tenant_id.as_str(), event.event_id.as_str())) {
                first.push(i);
            } else {
                results[i] = Some(Inserted::Duplicate);
            }
        }
        let stored: Vec<(usize, Option<Inserted>)> = futures::stream::iter(first)
            .map(|i| async move { Ok::<_, Error>((i, self.stored(&events[i]).await?)) })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut new = Vec::new();
        for (i, found) in stored {
            match found {
                Some(found) => results[i] = Some(found),
                None => new.push(i),
            }
        }
        let inserted: Vec<(usize, Inserted)> = futures::stream::iter(new)
            .map(|i| async move { Ok::<_, Error>((i, self.store_new(&events[i]).await?)) })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        for (i, result) in inserted {
            results[i] = Some(result);
        }
        Ok(results
            .into_iter()
            .map(|result| result.unwrap_or(Inserted::Duplicate))
            .collect())
    }

    async fn scan(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<RawEvent>> {
        if nothing_to_scan(from_ms, to_ms, after.as_ref(), limit) {
            return Ok(Vec::new());
        }
        let start = after.as_ref().map_or(from_ms, |(ts, _)| from_ms.max(*ts));
        let (first_day, last_day) = (day_of(start), day_of(to_ms.saturating_sub(1)));
        let mut out = Vec::new();
        for day in self.days(tenant_id).await?.range(first_day..=last_day) {
            let events = self.read_day(tenant_id, *day).await?;
            let wanted = events.into_iter().filter(|event| {
                let key = (event.timestamp_ms, &event.event_id);
                (from_ms..to_ms).contains(&event.timestamp_ms)
                    && after.as_ref().is_none_or(|(ts, id)| key > (*ts, id))
            });
            out.extend(wanted.take(limit - out.len()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn delete(&self, tenant_id: &str, keys: &[(i64, String)]) -> Result<u64> {
        let mut by_day: HashMap<i64, HashSet<(i64, &str)>> = HashMap::new();
        for (ts, id) in keys {
            by_day.entry(day_of(*ts)).or_default().insert((*ts, id));
        }
        let days = self.days(tenant_id).await?;
        let mut removed = 0;
        for (day, wanted) in by_day {
            if !days.contains(&day) {
                continue;
            }
            // Every copy of each named event (a crash may have left two).
            let subject = day_subject(tenant_id, day);
            let mut found = HashSet::new();
            for (event, seq) in self.read_all(tenant_id, day).await? {
                let key = (event.timestamp_ms, event.event_id.as_str());
                if !wanted.contains(&key) {
                    continue;
                }
                self.stream.delete_message(seq).await.map_err(|err| {
                    Error::Unavailable(format!("deleting raw event {seq} of {subject}: {err}"))
                })?;
                found.insert((event.timestamp_ms, event.event_id));
            }
            for (_, id) in &found {
                let key = id_key(tenant_id, id);
                self.ids.delete(&key).await.map_err(|err| {
                    Error::Unavailable(format!("deleting raw event id {key}: {err}"))
                })?;
            }
            removed += found.len() as u64;
        }
        Ok(removed)
    }

    async fn bounds(&self, tenant_id: &str) -> Result<Option<(i64, i64)>> {
        let days = self.days(tenant_id).await?;
        let (Some(&first), Some(&last)) = (days.first(), days.last()) else {
            return Ok(None);
        };
        let mut times = Vec::new();
        for day in BTreeSet::from([first, last]) {
            let events = self.read_all(tenant_id, day).await?;
            times.extend(events.into_iter().map(|(event, _)| event.timestamp_ms));
        }
        Ok(times
            .iter()
            .min()
            .zip(times.iter().max())
            .map(|(a, b)| (*a, *b)))
    }
}

/// How a stored id record compares with an insert from `origin`.
fn classify(value: &[u8], origin: Origin) -> Inserted {
    let seq = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    let index = value
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes);
    if seq == Some(origin.seq) && index == Some(origin.index) {
        Inserted::Replay
    } else {
        Inserted::Duplicate
    }
}

/// The id record of `event`: origin seq, origin index, time.
fn id_value(event: &RawEvent) -> Bytes {
    let mut value = BytesMut::with_capacity(20);
    value.put_u64_le(event.origin.seq);
    value.put_u32_le(event.origin.index);
    value.put_i64_le(event.timestamp_ms);
    value.freeze()
}

/// The stored message of `event`: time, origin, id and payload.
fn encode_message(event: &RawEvent) -> Bytes {
    let id = event.event_id.as_bytes();
    let mut message = BytesMut::with_capacity(HEADER + id.len() + event.payload.len());
    message.put_i64_le(event.timestamp_ms);
    message.put_u64_le(event.origin.seq);
    message.put_u32_le(event.origin.index);
    message.put_u16_le(u16::try_from(id.len()).unwrap_or(u16::MAX));
    message.put_slice(id);
    message.put_slice(&event.payload);
    message.freeze()
}

/// The event of `tenant` a stored message holds.
fn decode_message(tenant: &str, message: &[u8]) -> Option<RawEvent> {
    let timestamp_ms = i64::from_le_bytes(message.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(message.get(8..16)?.try_into().ok()?);
    let index = u32::from_le_bytes(message.get(16..20)?.try_into().ok()?);
    let id_len = usize::from(u16::from_le_bytes(message.get(20..22)?.try_into().ok()?));
    let id = std::str::from_utf8(message.get(HEADER..HEADER + id_len)?).ok()?;
    Some(RawEvent {
        tenant_id: tenant.to_owned(),
        event_id: id.to_owned(),
        timestamp_ms,
        origin: Origin { seq, index },
        payload: Bytes::copy_from_slice(message.get(HEADER + id_len..)?),
    })
}

/// The Unix day of a time.
fn day_of(timestamp_ms: i64) -> i64 {
    timestamp_ms.div_euclid(DAY_MS)
}

/// The subject of `tenant`'s events of `day`.
fn day_subject(tenant: &str, day: i64) -> String {
    format!("raw.{}.{day}", hex(tenant))
}

/// The id record key of an event.
fn id_key(tenant: &str, event_id: &str) -> String {
    format!(
        "{}.{}",
        hex(tenant),
        blake3::hash(event_id.as_bytes()).to_hex()
    )
}

/// `text` as lowercase hex: any tenant id becomes one subject token.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let event = RawEvent {
            tenant_id: "acme".into(),
            event_id: "e-1".into(),
            timestamp_ms: -5,
            origin: Origin { seq: 9, index: 2 },
            payload: Bytes::from_static(b"payload"),
        };
        assert_eq!(
            decode_message("acme", &encode_message(&event)),
            Some(event.clone())
        );
        assert_eq!(
            classify(&id_value(&event), Origin { seq: 9, index: 2 }),
            Inserted::Replay
        );
        assert_eq!(
            classify(&id_value(&event), Origin { seq: 9, index: 3 }),
            Inserted::Duplicate
        );
        assert_eq!(day_of(-5), -1);
        assert_eq!(day_subject("a.b", -1), "raw.612e62.-1");
    }
}
