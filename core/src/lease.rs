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

/// When a lease was last renewed, shared with the work it guards: work that must not happen
/// beside a new holder (a snapshot, a trim) waits while the renewal is not recent, as after the
/// process was paused.
#[derive(Debug, Clone)]
pub struct Renewed(std::sync::Arc<std::sync::Mutex<Instant>>);

impl Renewed {
    /// Renewed now.
    pub fn now() -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Instant::now())))
    }

    /// Records a renewal.
    pub fn mark(&self) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// Whether the last renewal is recent: within half the lease's time to live.
    pub fn is_fresh(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
            < LEASE_TTL / 2
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
    /// `None` while someone else holds it. Without `take` (the caller holds its share), it
    /// only watches the lease, and takes it only when nobody else did for long: free for
    /// [`LEASE_TTL`], or unrenewed for twice that (no partition stays unowned because every
    /// process holds its share).
    pub async fn acquire(
        &self,
        key: &str,
        holder: &str,
        watched: &mut Watched,
        take: bool,
    ) -> Result<Option<Lease>> {
        let Self::Nats(store) = self else {
            return Ok(Some(local(key)));
        };
        let unavailable = |err: &dyn std::fmt::Display| {
            Error::Unavailable(format!("reading lease {key} from {BUCKET}: {err}"))
        };
        let entry = store.entry(key).await.map_err(|err| unavailable(&err))?;
        let held_by = entry
            .as_ref()
            .filter(|entry| entry.operation == Operation::Put && !entry.value.is_empty())
            .map(|entry| entry.value.clone());
        // Held by this holder before a restart: taken back at once.
        if held_by.as_deref() != Some(holder.as_bytes()) {
            let revision = entry.as_ref().map_or(0, |entry| entry.revision);
            let seen = watched
                .0
                .entry(key.to_owned())
                .or_insert((revision, Instant::now()));
            if seen.0 != revision {
                *seen = (revision, Instant::now());
            }
            let unchanged = seen.1.elapsed();
            let may = match &held_by {
                None => take || unchanged >= LEASE_TTL,
                Some(_) => unchanged >= LEASE_TTL && (take || unchanged >= 2 * LEASE_TTL),
            };
            if !may {
                return Ok(None);
            }
            if let Some(other) = &held_by {
                tracing::warn!(key, holder = %String::from_utf8_lossy(other), "taking over a lease its holder stopped renewing");
            }
        }
        let value = Bytes::from(holder.to_owned());
        let written = match entry {
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

/// The processes of a role that share its leases: each announces itself every
/// [`Members::announce`]; one that stopped announcing for [`LEASE_TTL`] (on the reader's own
/// clock) no longer counts. Used to share partitions fairly.
#[derive(Debug, Default)]
pub struct Members {
    /// Per member key: the revision seen last, and since when.
    seen: HashMap<String, (u64, Instant)>,
}

impl Members {
    /// Announces `holder` as a live member of `role`.
    pub async fn announce(&self, leases: &Leases, role: &str, holder: &str) -> Result<()> {
        let Leases::Nats(store) = leases else {
            return Ok(());
        };
        let key = member_key(role, holder);
        store
            .put(&key, Bytes::from(holder.to_owned()))
            .await
            .map(|_| ())
            .map_err(|err| Error::Unavailable(format!("announcing {key} in {BUCKET}: {err}")))
    }

    /// Withdraws `holder` from `role` (shutting down).
    pub async fn withdraw(&self, leases: &Leases, role: &str, holder: &str) -> Result<()> {
        let Leases::Nats(store) = leases else {
            return Ok(());
        };
        let key = member_key(role, holder);
        store
            .delete(&key)
            .await
            .map_err(|err| Error::Unavailable(format!("withdrawing {key} in {BUCKET}: {err}")))
    }

    /// How many members of `role` are live: announced within [`LEASE_TTL`]. At least one.
    pub async fn live(&mut self, leases: &Leases, role: &str) -> Result<usize> {
        let Leases::Nats(store) = leases else {
            return Ok(1);
        };
        let unavailable =
            |err: &dyn std::fmt::Display| Error::Unavailable(format!("listing {BUCKET}: {err}"));
        let prefix = format!("member.{role}.");
        let mut keys = store.keys().await.map_err(|err| unavailable(&err))?;
        let mut live = 0;
        let mut present = Vec::new();
        while let Some(key) = futures::StreamExt::next(&mut keys).await {
            let key = key.map_err(|err| unavailable(&err))?;
            if !key.starts_with(&prefix) {
                continue;
            }
            let Some(entry) = store.entry(&key).await.map_err(|err| unavailable(&err))? else {
                continue;
            };
            if entry.operation != Operation::Put {
                continue;
            }
            let seen = self
                .seen
                .entry(key.clone())
                .or_insert((entry.revision, Instant::now()));
            if seen.0 != entry.revision {
                *seen = (entry.revision, Instant::now());
            }
            if seen.1.elapsed() < LEASE_TTL {
                live += 1;
            }
            present.push(key);
        }
        self.seen.retain(|key, _| present.contains(key));
        Ok(live.max(1))
    }
}

/// The key of `holder`'s membership of `role`: holder names hold characters keys may not.
fn member_key(role: &str, holder: &str) -> String {
    let hash = blake3::hash(holder.as_bytes());
    format!("member.{role}.{}", &hash.to_hex()[..16])
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
            .acquire("aggregator.0", "a", &mut a_watched, true)
            .await
            .expect("acquire")
            .expect("free");
        assert!(
            leases
                .acquire("aggregator.0", "b", &mut b_watched, true)
                .await
                .expect("acquire")
                .is_none(),
            "held by a"
        );
        assert!(leases.renew(&mut a, "a").await.expect("renew"));

        // Released: b takes it at once, and a's next renewal finds it lost.
        leases.release(a.clone()).await.expect("release");
        let mut b = leases
            .acquire("aggregator.0", "b", &mut b_watched, true)
            .await
            .expect("acquire")
            .expect("released");
        assert!(!leases.renew(&mut a, "a").await.expect("renew"));

        // b stops renewing: a takes it once its revision stayed the same for the TTL.
        assert!(
            leases
                .acquire("aggregator.0", "a", &mut a_watched, true)
                .await
                .expect("acquire")
                .is_none()
        );
        tokio::time::sleep(LEASE_TTL + Duration::from_millis(200)).await;
        let taken = leases
            .acquire("aggregator.0", "a", &mut a_watched, true)
            .await
            .expect("acquire")
            .expect("taken over");
        assert!(taken.revision() > b.revision());
        assert!(!leases.renew(&mut b, "b").await.expect("renew"));

        // a restarts (a fresh process with the same holder name): it takes the lease back at
        // once, and the old process's next renewal finds it lost.
        let mut before = taken;
        let again = leases
            .acquire("aggregator.0", "a", &mut Watched::default(), true)
            .await
            .expect("acquire")
            .expect("taken back");
        assert!(again.revision() > before.revision());
        assert!(!leases.renew(&mut before, "a").await.expect("renew"));
    }

    #[tokio::test]
    async fn a_process_at_its_share_takes_only_leases_nobody_took() {
        let server = beacon_testkit::NatsServer::start().expect("nats-server");
        let leases = leases(&server).await;
        let mut watched = Watched::default();
        let free = leases
            .acquire("aggregator.1", "a", &mut watched, false)
            .await
            .expect("acquire");
        assert!(
            free.is_none(),
            "a free lease is left to processes below their share"
        );
        tokio::time::sleep(LEASE_TTL + Duration::from_millis(200)).await;
        let taken = leases
            .acquire("aggregator.1", "a", &mut watched, false)
            .await
            .expect("acquire");
        assert!(taken.is_some(), "nobody took it for the TTL");
    }

    #[tokio::test]
    async fn members_count_while_they_announce_themselves() {
        let server = beacon_testkit::NatsServer::start().expect("nats-server");
        let leases = leases(&server).await;
        let mut members = Members::default();
        for holder in ["host:/data/a", "host:/data/b"] {
            members
                .announce(&leases, "aggregator", holder)
                .await
                .expect("announce");
        }
        members
            .announce(&leases, "query", "host:/data/q")
            .await
            .expect("announce");
        assert_eq!(members.live(&leases, "aggregator").await.expect("live"), 2);
        members
            .withdraw(&leases, "aggregator", "host:/data/b")
            .await
            .expect("withdraw");
        assert_eq!(members.live(&leases, "aggregator").await.expect("live"), 1);
        // a stops announcing: after the TTL it no longer counts (at least one always does).
        tokio::time::sleep(LEASE_TTL + Duration::from_millis(200)).await;
        members
            .announce(&leases, "aggregator", "host:/data/c")
            .await
            .expect("announce");
        assert_eq!(members.live(&leases, "aggregator").await.expect("live"), 1);
    }
}
