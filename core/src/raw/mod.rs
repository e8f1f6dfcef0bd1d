//! The raw store: every accepted event, the source of truth for reprocessing.

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

pub mod cassandra;
pub mod embedded;

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
}
