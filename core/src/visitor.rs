//! Visitor identity without storing IP addresses.
//!
//! Invariant: no client IP is stored anywhere. A visitor is a keyed hash of (IP, user agent,
//! tenant) under the salt of the tenant's local date when the event arrives; a date's salt is
//! used for the 50 hours some zone is on that date, and deleted at most 72 hours after it was
//! first used.
//!
//! So a day never splits a visitor: every event a tenant receives on one local date hashes
//! under one salt. In the first [`CONTINUE_MS`] of a local day an event also carries its hash
//! under the previous date's salt, so that a visit open across local midnight continues.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::civil::Date;

use crate::Result;
use crate::meta::SaltStore;

/// How long after local midnight an event also carries the previous date's hash: the idle
/// time that ends a visit (30 minutes) and the 5 minutes events may arrive late and still
/// join one.
pub const CONTINUE_MS: i64 = 35 * 60_000;

/// Salts cached per process: the dates in use around now in every zone.
const CACHED_SALTS: usize = 4;

/// A visitor's hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visitor {
    /// Under the salt of the tenant's local date at arrival.
    pub id: u64,
    /// Under the previous date's salt, in the first [`CONTINUE_MS`] of a local day.
    pub previous: Option<u64>,
}

/// Hashes visitors with the salts of tenant-local dates, shared by every ingest replica.
#[derive(Clone)]
pub struct VisitorHasher {
    store: Arc<dyn SaltStore>,
    cached: Arc<Mutex<BTreeMap<Date, [u8; 32]>>>,
}

impl VisitorHasher {
    /// A hasher whose salts live in `store`.
    pub fn new(store: Arc<dyn SaltStore>) -> Self {
        Self {
            store,
            cached: Arc::default(),
        }
    }

    /// The hashes of `ip` with `user_agent` for `tenant_id`, whose zone is `time_zone`, for an
    /// event arriving at `now_ms` (Unix milliseconds).
    pub async fn hash(
        &self,
        (ip, user_agent): (&str, &str),
        tenant_id: &str,
        time_zone: &str,
        now_ms: i64,
    ) -> Result<Visitor> {
        let (date, into_day_ms) = local_day(time_zone, now_ms)?;
        let parts = [ip, user_agent, tenant_id];
        let id = keyed(&self.salt(date).await?, parts);
        let previous = match date.yesterday() {
            Ok(yesterday) if into_day_ms < CONTINUE_MS => {
                Some(keyed(&self.salt(yesterday).await?, parts))
            }
            _ => None,
        };
        Ok(Visitor { id, previous })
    }

    /// The salt of `date`, from the cache or the store.
    async fn salt(&self, date: Date) -> Result<[u8; 32]> {
        let cached = self
            .cached
            .lock()
            .ok()
            .and_then(|cached| cached.get(&date).copied());
        if let Some(salt) = cached {
            return Ok(salt);
        }
        let salt = self.store.salt(&date.to_string(), rand::random()).await?;
        if let Ok(mut cached) = self.cached.lock() {
            cached.insert(date, salt);
            while cached.len() > CACHED_SALTS {
                cached.pop_first();
            }
        }
        Ok(salt)
    }
}

/// The local date of `now_ms` in `time_zone`, and the milliseconds since its midnight.
fn local_day(time_zone: &str, now_ms: i64) -> Result<(Date, i64)> {
    let tz = crate::time::time_zone(time_zone)?;
    let now = jiff::Timestamp::from_millisecond(now_ms).map_err(|err| {
        crate::Error::InvalidArgument(format!("instant {now_ms} ms is out of range: {err}"))
    })?;
    let zoned = now.to_zoned_datetime(tz);
    let midnight = zoned.start_of_day().map_err(|err| {
        crate::Error::InvalidArgument(format!("the start of {}: {err}", zoned.date()))
    })?;
    Ok((zoned.date(), now_ms - midnight.timestamp().as_millisecond()))
}

/// The first 8 bytes of the keyed hash of `parts`, each length-prefixed.
fn keyed(salt: &[u8; 32], parts: [&str; 3]) -> u64 {
    let mut hasher = blake3::Hasher::new_keyed(salt);
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::embedded::EmbeddedMeta;

    /// 2026-03-01T18:20:00Z: 23:50 in Kolkata.
    const EVENING: i64 = 1_772_389_200_000;
    const MIN: i64 = 60_000;

    fn hasher(dir: &std::path::Path) -> VisitorHasher {
        let meta = EmbeddedMeta::open(&dir.join("meta.redb")).expect("meta");
        VisitorHasher::new(Arc::new(meta))
    }

    #[tokio::test]
    async fn a_local_day_keeps_one_hash_and_midnight_carries_the_last_one() {
        let dir = beacon_testkit::TempDir::new("visitor-days").expect("temp dir");
        let hasher = hasher(dir.path());
        let who = ("203.0.113.7", "Firefox");
        let at = |ms| hasher.hash(who, "shop", "Asia/Kolkata", ms);
        let evening = at(EVENING).await.expect("hash");
        assert_eq!(evening.previous, None, "23:50 is not the start of a day");
        // 18:30 UTC is midnight in Kolkata: a UTC salt would have lasted until 05:30 local.
        let after = at(EVENING + 20 * MIN).await.expect("hash");
        assert_ne!(after.id, evening.id, "a new local date, a new salt");
        assert_eq!(
            after.previous,
            Some(evening.id),
            "00:10 carries yesterday's hash"
        );
        let later = at(EVENING + 50 * MIN).await.expect("hash");
        assert_eq!(
            (later.id, later.previous),
            (after.id, None),
            "00:40 carries none"
        );
        // UTC midnight, 05:30 in Kolkata, does not change the hash.
        let dawn = at(EVENING + 5 * 60 * MIN + 50 * MIN).await.expect("hash");
        assert_eq!(dawn.id, after.id);
        // Another tenant, another zone: the same instant is still 2026-03-01 in New York.
        let ny = hasher
            .hash(who, "shop", "America/New_York", EVENING + 20 * MIN)
            .await
            .expect("hash");
        assert_eq!(ny.id, evening.id, "both on 2026-03-01's salt");
    }
}
