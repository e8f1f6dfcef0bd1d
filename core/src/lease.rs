//! Leases: which process owns a partition's work, in JetStream key-value (`beacon_leases`).
//!
//! A lease is a key whose value names its holder. The holder renews it by writing it again
//! with the revision it last wrote (compare-and-set); a renewal that finds another revision
//! means another process took the lease. A contender takes a lease only after watching its
//! revision stay unchanged for [`LEASE_TTL`] on its own clock (no clocks are compared), or at
//! once when it is free (released on shutdown, or never taken) or names the contender itself
//! (a holder restarted after a crash, with the same holder name).
//!
//! A lease says who should work, not who can: a paused holder may not know yet that it lost
//! it. What makes that safe is fencing at the log: every rollup is appended only while the
//! partition's newest rollup is the one its writer saw last (`Log::append_if_last`).
//!
//! Standalone (embedded backends) has one process: every lease is always held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;

use crate::meta::nats::kv_bucket;
use crate::{Error, Result};

/// How long a lease's revision must stay unchanged before a contender takes it.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// The KV bucket of leases.
const BUCKET: &str = "beacon_leases";

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    /// The revision this process wrote last: its fencing token.
    revision: u64,
    /// When it was last written successfully.
    renewed_at: Instant,
}

impl Lease {
    /// Whether the last successful renewal is older than the lease's time to live: another
    /// process may hold it by now.
    pub fn may_be_lost(&self) -> bool {
        self.renewed_at.elapsed() >= LEASE_TTL
    }

    /// The revision this process wrote last.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// The leases of a deployment.
#[derive(Clone)]
pub enum Leases {
    /// One process (standalone): every lease is held.
    Local,
    /// Leases in a JetStream key-value bucket.
    Nats(Box<kv::Store>),
}

/// Revisions a contender watched, and since when, per lease key.
#[derive(Debug, Default)]
pub struct Watched(HashMap<String, (u64, Instant)>);

impl Leases {
    /// The leases in JetStream, with `replicas` replicas of their bucket.
    pub async fn nats(js: &Context, replicas: usize) -> Result<Self> {
        let store = kv_bucket(
            js,
            kv::Config {
                bucket: BUCKET.into(),
                description: "Beacon partition leases: <role>.<partition> to the holder".into(),
                history: 1,
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self::Nats(Box::new(store)))
    }

    /// Takes lease `key` for `holder` when it is free or its holder stopped renewing it;
    /// `None` while someone else holds it.
    pub async fn acquire(
        &self,
        key: &str,
        holder: &str,
        watched: &mut Watched,
    ) -> Result<Option<Lease>> {
        let Self::Nats(store) = self else {
            return Ok(Some(local(key)));
        };
        let unavailable = |err: &dyn std::fmt::Display| {
            Error::Unavailable(format!("reading lease {key} from {BUCKET}: {err}"))
        };
        let entry = store.entry(key).await.map_err(|err| unavailable(&err))?;
        let value = Bytes::from(holder.to_owned());
        let written = match entry {
            // Held by this holder before a restart: taken back at once.
            Some(entry)
                if entry.operation == Operation::Put && entry.value == holder.as_bytes() =>
            {
                store.update(key, value, entry.revision).await.ok()
            }
            Some(entry) if entry.operation == Operation::Put && !entry.value.is_empty() => {
                let seen = watched
                    .0
                    .entry(key.to_owned())
                    .or_insert((entry.revision, Instant::now()));
                if seen.0 != entry.revision {
                    *seen = (entry.revision, Instant::now());
                    return Ok(None);
                }
                if seen.1.elapsed() < LEASE_TTL {
                    return Ok(None);
                }
                tracing::warn!(key, holder = %String::from_utf8_lossy(&entry.value), "taking over a lease its holder stopped renewing");
                store.update(key, value, entry.revision).await.ok()
            }
            // Released (deleted or emptied): free.
            Some(entry) => store.update(key, value, entry.revision).await.ok(),
            None => store.create(key, value).await.ok(),
        };
        watched.0.remove(key);
        Ok(written.map(|revision| Lease {
            key: key.to_owned(),
            revision,
            renewed_at: Instant::now(),
        }))
    }

    /// Writes `lease` again; `Ok(false)` when another process took it meanwhile.
    pub async fn renew(&self, lease: &mut Lease, holder: &str) -> Result<bool> {
        let Self::Nats(store) = self else {
            lease.renewed_at = Instant::now();
            return Ok(true);
        };
        let value = Bytes::from(holder.to_owned());
        match store.update(&lease.key, value, lease.revision).await {
            Ok(revision) => {
                lease.revision = revision;
                lease.renewed_at = Instant::now();
                Ok(true)
            }
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(Error::Unavailable(format!(
                "renewing lease {} in {BUCKET}: {err}",
                lease.key
            ))),
        }
    }

    /// Gives `lease` up, so another process may take it at once.
    pub async fn release(&self, lease: Lease) -> Result<()> {
        let Self::Nats(store) = self else {
            return Ok(());
        };
        store
            .update(&lease.key, Bytes::new(), lease.revision)
            .await
            .map(|_| ())
            .map_err(|err| {
                Error::Unavailable(format!("releasing lease {} in {BUCKET}: {err}", lease.key))
            })
    }
}

/// A lease of the single standalone process.
fn local(key: &str) -> Lease {
    Lease {
        key: key.to_owned(),
        revision: 0,
        renewed_at: Instant::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn leases(server: &beacon_testkit::NatsServer) -> Leases {
        let client = crate::backends::connect_nats(&server.url())
            .await
            .expect("connect");
        Leases::nats(&async_nats::jetstream::new(client), 1)
            .await
            .expect("leases")
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_and_passes_on_release_or_silence() {
        let server = beacon_testkit::NatsServer::start().expect("nats-server");
        let leases = leases(&server).await;
        let (mut a_watched, mut b_watched) = (Watched::default(), Watched::default());
        let mut a = leases
            .acquire("aggregator.0", "a", &mut a_watched)
            .await
            .expect("acquire")
            .expect("free");
        assert!(
            leases
                .acquire("aggregator.0", "b", &mut b_watched)
                .await
                .expect("acquire")
                .is_none(),
            "held by a"
        );
        assert!(leases.renew(&mut a, "a").await.expect("renew"));

        // Released: b takes it at once, and a's next renewal finds it lost.
        leases.release(a.clone()).await.expect("release");
        let mut b = leases
            .acquire("aggregator.0", "b", &mut b_watched)
            .await
            .expect("acquire")
            .expect("released");
        assert!(!leases.renew(&mut a, "a").await.expect("renew"));

        // b stops renewing: a takes it once its revision stayed the same for the TTL.
        assert!(
            leases
                .acquire("aggregator.0", "a", &mut a_watched)
                .await
                .expect("acquire")
                .is_none()
        );
        tokio::time::sleep(LEASE_TTL + Duration::from_millis(200)).await;
        let taken = leases
            .acquire("aggregator.0", "a", &mut a_watched)
            .await
            .expect("acquire")
            .expect("taken over");
        assert!(taken.revision() > b.revision());
        assert!(!leases.renew(&mut b, "b").await.expect("renew"));

        // a restarts (a fresh process with the same holder name): it takes the lease back at
        // once, and the old process's next renewal finds it lost.
        let mut before = taken;
        let again = leases
            .acquire("aggregator.0", "a", &mut Watched::default())
            .await
            .expect("acquire")
            .expect("taken back");
        assert!(again.revision() > before.revision());
        assert!(!leases.renew(&mut before, "a").await.expect("renew"));
    }
}
