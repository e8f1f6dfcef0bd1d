//! Visitor identity without storing IP addresses.
//!
//! Invariant: no client IP is stored anywhere. A visitor is a keyed hash of (IP, user agent,
//! tenant) under a salt that rotates every UTC day and is deleted after 48 hours.

use std::sync::{Arc, Mutex};

use crate::Result;
use crate::meta::SaltStore;

/// A UTC day ("YYYY-MM-DD") and its salt.
type DaySalt = (String, [u8; 32]);

/// Hashes visitors with the current day's salt, shared by every ingest replica.
#[derive(Clone)]
pub struct VisitorHasher {
    store: Arc<dyn SaltStore>,
    current: Arc<Mutex<Option<DaySalt>>>,
}

impl VisitorHasher {
    /// A hasher whose salts live in `store`.
    pub fn new(store: Arc<dyn SaltStore>) -> Self {
        Self {
            store,
            current: Arc::default(),
        }
    }

    /// The visitor hash of `ip` with `user_agent` for `tenant_id`, under today's salt.
    pub async fn hash(&self, ip: &str, user_agent: &str, tenant_id: &str) -> Result<u64> {
        let salt = self.salt().await?;
        let mut hasher = blake3::Hasher::new_keyed(&salt);
        for part in [ip, user_agent, tenant_id] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        Ok(u64::from_le_bytes(first))
    }

    async fn salt(&self) -> Result<[u8; 32]> {
        let day = jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date()
            .to_string();
        let cached = self.current.lock().ok().and_then(|current| current.clone());
        if let Some((cached_day, salt)) = cached
            && cached_day == day
        {
            return Ok(salt);
        }
        let salt = self.store.salt(&day, rand::random()).await?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((day, salt));
        }
        Ok(salt)
    }
}
