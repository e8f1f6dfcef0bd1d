//! The embedded [`RawStore`]: two redb tables in one local file.
//!
//! - `ids`: `(tenant, event id)` to `(origin seq, origin index, timestamp)`, the idempotency
//!   index.
//! - `events`: `(tenant, timestamp, event id)` to the origin (12 bytes, little endian) followed
//!   by the payload, ordered for time-range scans.
//!
//! Each [`RawStore::insert`] is one durable write transaction on the blocking pool.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Inserted, Origin, RawEvent, RawStore};
use crate::error::ResultExt;
use crate::{Error, Result};

/// Page cache of a raw store opened with [`EmbeddedRawStore::open`].
const CACHE_BYTES: usize = 32 << 20;
/// `(tenant, event id)` to `(seq, index, timestamp)`.
const IDS: TableDefinition<(&str, &str), (u64, u32, i64)> = TableDefinition::new("ids");
/// `(tenant, timestamp, event id)` to origin header and payload.
const EVENTS: TableDefinition<(&str, i64, &str), &[u8]> = TableDefinition::new("events");
/// Length of the origin header in front of each stored payload.
const ORIGIN_LEN: usize = 12;

/// Raw events in one local redb file.
pub struct EmbeddedRawStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
}

impl EmbeddedRawStore {
    /// Opens (or creates) the raw store at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, CACHE_BYTES)
    }

    /// Opens (or creates) the raw store at `path`, caching up to `cache_bytes` of its pages.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = match Builder::new().set_cache_size(cache_bytes).create(path) {
            Ok(db) => db,
            // Another process (an overlapping restart) still has it: it may let go.
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::Unavailable(format!(
                    "raw store {} is open in another process",
                    path.display()
                )));
            }
            Err(err) => {
                return Err(err).context(|| format!("opening raw store {}", path.display()));
            }
        };
        create_tables(&db).context(|| format!("creating tables in {}", path.display()))?;
        tracing::info!(path = %path.display(), "embedded raw store opened");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
            }),
        })
    }
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(IDS)?;
    txn.open_table(EVENTS)?;
    txn.commit()?;
    Ok(())
}

/// The stored value of `events`: origin header, then payload.
fn encode_value(origin: Origin, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(ORIGIN_LEN + payload.len());
    value.extend_from_slice(&origin.seq.to_le_bytes());
    value.extend_from_slice(&origin.index.to_le_bytes());
    value.extend_from_slice(payload);
    value
}

fn decode_value(value: &[u8]) -> Option<(Origin, Bytes)> {
    let seq = u64::from_le_bytes(value.get(..8)?.try_into().ok()?);
    let index = u32::from_le_bytes(value.get(8..ORIGIN_LEN)?.try_into().ok()?);
    let payload = Bytes::copy_from_slice(value.get(ORIGIN_LEN..)?);
    Some((Origin { seq, index }, payload))
}

impl Inner {
    fn insert(&self, events: &[RawEvent]) -> Result<Vec<Inserted>, redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut results = Vec::with_capacity(events.len());
        {
            let mut ids = txn.open_table(IDS)?;
            let mut rows = txn.open_table(EVENTS)?;
            let mut in_batch = HashSet::new();
            for event in events {
                let key = (event.tenant_id.as_str(), event.event_id.as_str());
                if !in_batch.insert(key) {
                    results.push(Inserted::Duplicate);
                    continue;
                }
                let stored = ids.get(key)?.map(|guard| guard.value());
                let result = match stored {
                    Some((seq, index, _)) if (Origin { seq, index }) == event.origin => {
                        Inserted::Replay
                    }
                    Some(_) => Inserted::Duplicate,
                    None => {
                        let origin = event.origin;
                        ids.insert(key, (origin.seq, origin.index, event.timestamp_ms))?;
                        let row = (key.0, event.timestamp_ms, key.1);
                        rows.insert(row, encode_value(origin, &event.payload).as_slice())?;
                        Inserted::New
                    }
                };
                results.push(result);
            }
        }
        txn.commit()?;
        Ok(results)
    }

    fn scan(&self, query: &Scan) -> Result<Vec<RawEvent>> {
        let txn = self.db.begin_read().context(|| self.scan_what(query))?;
        let table = txn.open_table(EVENTS).context(|| self.scan_what(query))?;
        let tenant = query.tenant_id.as_str();
        let lower = match &query.after {
            Some((ts, id)) if *ts >= query.from_ms => Bound::Excluded((tenant, *ts, id.as_str())),
            _ => Bound::Included((tenant, query.from_ms, "")),
        };
        let upper = Bound::Excluded((tenant, query.to_ms, ""));
        let mut events = Vec::new();
        for entry in table
            .range((lower, upper))
            .context(|| self.scan_what(query))?
        {
            let (key, value) = entry.context(|| self.scan_what(query))?;
            let (_, timestamp_ms, event_id) = key.value();
            let (origin, payload) = decode_value(value.value()).ok_or_else(|| {
                Error::Corrupt(format!(
                    "raw event {tenant}/{event_id} in {} has a truncated value",
                    self.path.display()
                ))
            })?;
            events.push(RawEvent {
                tenant_id: query.tenant_id.clone(),
                event_id: event_id.to_owned(),
                timestamp_ms,
                origin,
                payload,
            });
            if events.len() >= query.limit {
                break;
            }
        }
        Ok(events)
    }

    fn delete(&self, tenant: &str, keys: &[(i64, String)]) -> Result<u64, redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let mut removed = 0;
        {
            let mut ids = txn.open_table(IDS)?;
            let mut rows = txn.open_table(EVENTS)?;
            for (ts, id) in keys {
                if rows.remove((tenant, *ts, id.as_str()))?.is_some() {
                    removed += 1;
                    ids.remove((tenant, id.as_str()))?;
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    fn bounds(&self, tenant: &str) -> Result<Option<(i64, i64)>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut range = table.range((tenant, i64::MIN, "")..=(tenant, i64::MAX, "\u{10FFFF}"))?;
        let first = range.next().transpose()?.map(|(key, _)| key.value().1);
        let last = range.next_back().transpose()?.map(|(key, _)| key.value().1);
        Ok(first.map(|first| (first, last.unwrap_or(first))))
    }

    fn scan_what(&self, query: &Scan) -> String {
        format!(
            "scanning raw events of {} in [{}, {}) from {}",
            query.tenant_id,
            query.from_ms,
            query.to_ms,
            self.path.display()
        )
    }
}

/// The arguments of one scan.
struct Scan {
    tenant_id: String,
    from_ms: i64,
    to_ms: i64,
    after: Option<(i64, String)>,
    limit: usize,
}

impl Scan {
    /// Whether no event can match.
    fn is_empty(&self) -> bool {
        super::nothing_to_scan(self.from_ms, self.to_ms, self.after.as_ref(), self.limit)
    }
}

#[async_trait]
impl RawStore for EmbeddedRawStore {
    async fn insert(&self, events: &[RawEvent]) -> Result<Vec<Inserted>> {
        super::check(events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        let events = events.to_vec();
        let count = events.len();
        tokio::task::spawn_blocking(move || {
            inner
                .insert(&events)
                .inspect_err(|err| crate::observe::redb_failed(&inner.path, err))
                .context(|| format!("inserting {count} raw events into {}", inner.path.display()))
        })
        .await
        .context(|| format!("inserting {count} raw events"))?
    }

    async fn scan(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<RawEvent>> {
        let query = Scan {
            tenant_id: tenant_id.to_owned(),
            from_ms,
            to_ms,
            after,
            limit,
        };
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.scan(&query))
            .await
            .context(|| format!("scanning raw events of {tenant_id}"))?
    }

    async fn delete(&self, tenant_id: &str, keys: &[(i64, String)]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (inner, tenant, keys) = (self.inner.clone(), tenant_id.to_owned(), keys.to_vec());
        let what = format!("deleting {} raw events of {tenant_id}", keys.len());
        let done = what.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .delete(&tenant, &keys)
                .inspect_err(|err| crate::observe::redb_failed(&inner.path, err))
                .context(|| format!("{what} from {}", inner.path.display()))
        })
        .await
        .context(|| done)?
    }

    async fn bounds(&self, tenant_id: &str) -> Result<Option<(i64, i64)>> {
        let (inner, tenant) = (self.inner.clone(), tenant_id.to_owned());
        tokio::task::spawn_blocking(move || {
            inner.bounds(&tenant).context(|| {
                format!(
                    "reading the time bounds of {tenant} in {}",
                    inner.path.display()
                )
            })
        })
        .await
        .context(|| format!("reading the time bounds of {tenant_id}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let origin = Origin { seq: 42, index: 7 };
        let value = encode_value(origin, b"payload");
        assert_eq!(
            decode_value(&value),
            Some((origin, Bytes::from_static(b"payload")))
        );
        assert_eq!(decode_value(&value[..11]), None);
        assert_eq!(
            decode_value(&encode_value(origin, b"")),
            Some((origin, Bytes::new()))
        );
    }

    #[test]
    fn empty_scans_are_detected() {
        let scan = |from_ms, to_ms, after: Option<(i64, &str)>, limit| Scan {
            tenant_id: "t".into(),
            from_ms,
            to_ms,
            after: after.map(|(ts, id)| (ts, id.to_owned())),
            limit,
        };
        assert!(scan(0, 10, None, 0).is_empty());
        assert!(scan(10, 10, None, 5).is_empty());
        assert!(scan(0, 10, Some((10, "a")), 5).is_empty());
        assert!(!scan(0, 10, Some((9, "a")), 5).is_empty());
        assert!(!scan(0, 10, Some((-5, "a")), 5).is_empty());
    }
}
