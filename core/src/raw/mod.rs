//! The raw store: every accepted event, the source of truth for reprocessing.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Error, Result};

pub mod cassandra;
pub mod embedded;
pub mod nats;

#[cfg(test)]
mod conformance;

/// Where in the event log an event was first seen: the message sequence and the event's index
/// inside that message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// Event-log sequence of the message.
    pub seq: u64,
    /// Index of the event inside the message.
    pub index: u32,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// The tenant.
    pub tenant_id: String,
    /// The event id (client-chosen or assigned by ingest).
    pub event_id: String,
    /// Event time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Where the event was first seen.
    pub origin: Origin,
    /// The encoded `beacon.pipeline.v1.LoggedEvent`.
    pub payload: Bytes,
}

/// Longest tenant id or event id any raw store takes, bytes (ingest allows 64 characters).
pub const MAX_KEY_BYTES: usize = 256;
/// Largest payload any raw store takes, bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Events one [`RawStore::expire`] call reads per scan.
const EXPIRE_PAGE: usize = 4096;

/// Refuses events no raw store may hold, naming the event, the field and the limit. Every
/// backend calls it before writing anything, so all refuse the same events, and refuse the
/// whole batch: the error is [`Error::InvalidArgument`], which is never retried.
pub fn check(events: &[RawEvent]) -> Result<()> {
    for event in events {
        let field = |name: &str, value: &str, limit: usize| {
            if value.is_empty() || value.len() > limit {
                return Err(Error::InvalidArgument(format!(
                    "raw event {:?} of tenant {:?}: {name} must be 1 to {limit} bytes, is {}",
                    event.event_id,
                    event.tenant_id,
                    value.len()
                )));
            }
            Ok(())
        };
        field("tenant_id", &event.tenant_id, MAX_KEY_BYTES)?;
        field("event_id", &event.event_id, MAX_KEY_BYTES)?;
        if event.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::InvalidArgument(format!(
                "raw event {:?} of tenant {:?}: payload is {} bytes, at most {MAX_PAYLOAD_BYTES} \
                 are stored",
                event.event_id,
                event.tenant_id,
                event.payload.len()
            )));
        }
    }
    Ok(())
}

/// Whether a [`RawStore::scan`] with these arguments has nothing to return, whatever is
/// stored: no room, an empty range, or a cursor at or past the range's end.
pub(crate) fn nothing_to_scan(
    from_ms: i64,
    to_ms: i64,
    after: Option<&(i64, String)>,
    limit: usize,
) -> bool {
    let after_end = after.is_some_and(|(ts, _)| *ts >= to_ms);
    limit == 0 || from_ms >= to_ms || after_end
}

/// What [`RawStore::insert`] found for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// First time this (tenant, event id) was seen: stored.
    New,
    /// Stored before from the same origin: the log is being replayed. Count it.
    Replay,
    /// Stored before from another origin: a client retry. Do not count it again.
    Duplicate,
}

/// Durable storage of raw events.
///
/// Invariant: a (tenant, event id) is stored once, with the origin of its first insert; every
/// later insert of it reports [`Inserted::Replay`] (same origin) or [`Inserted::Duplicate`].
///
/// Errors follow [`Error::is_transient`]: a backend that is unreachable, busy or held by
/// another process fails transiently (try again later); events refused by [`check`] fail with
/// [`Error::InvalidArgument`] on every attempt.
#[async_trait]
pub trait RawStore: Send + Sync + 'static {
    /// Stores `events` (durably, before returning) and reports, per event, whether it is new.
    /// A batch may contain the same event id twice: the later one is a duplicate.
    async fn insert(&self, events: &[RawEvent]) -> Result<Vec<Inserted>>;

    /// A tenant's events with `from_ms <= timestamp_ms < to_ms`, ordered by (timestamp, event
    /// id), starting strictly after `after` when given, at most `limit` of them.
    async fn scan(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<RawEvent>>;

    /// Removes a tenant's events named by (timestamp, event id), and the record of their ids
    /// (a client sending one again later stores it anew). Returns how many were removed.
    async fn delete(&self, tenant_id: &str, keys: &[(i64, String)]) -> Result<u64>;

    /// The times of a tenant's earliest and latest stored events.
    async fn bounds(&self, tenant_id: &str) -> Result<Option<(i64, i64)>>;

    /// Removes a tenant's events older than `before_ms`, and their id records, about `max`
    /// at most (whole scan pages); returns how many. Retention calls it again until it returns
    /// less than `max`.
    async fn expire(&self, tenant_id: &str, before_ms: i64, max: usize) -> Result<u64> {
        let mut deleted = 0;
        while usize::try_from(deleted).unwrap_or(usize::MAX) < max {
            let page = self
                .scan(tenant_id, i64::MIN, before_ms, None, EXPIRE_PAGE.min(max))
                .await?;
            let keys: Vec<(i64, String)> = page
                .iter()
                .map(|event| (event.timestamp_ms, event.event_id.clone()))
                .collect();
            deleted += self.delete(tenant_id, &keys).await?;
            if page.len() < EXPIRE_PAGE.min(max) {
                break;
            }
        }
        Ok(deleted)
    }
}
