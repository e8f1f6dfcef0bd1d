//! Small shared state: tenants and keys, daily visitor salts, aggregator snapshots.

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

pub mod embedded;
pub mod goal;
pub mod nats;

pub use goal::{Goal, GoalKind};

#[cfg(test)]
mod conformance;

/// One merchant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tenant {
    /// Stable id: 1 to 64 characters of `[a-z0-9_-]`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// IANA time zone; hour buckets start at its local hours.
    pub time_zone: String,
    /// Days raw events are kept (0: forever). Older raw events are deleted; the numbers made
    /// from them stay, but can no longer be reprocessed.
    #[serde(default)]
    pub raw_retention_days: u32,
    /// What counts as a conversion, in the merchant's order.
    #[serde(default)]
    pub goals: Vec<Goal>,
    /// ISO 4217 code of the currency revenue is counted in; empty until set (events with
    /// revenue are refused meanwhile).
    #[serde(default)]
    pub currency: String,
    /// Site domains (lowercase hosts) whose beacons count for the tenant without a key, as
    /// Plausible's tracker sends them (`AdminService.SetDomains`); each belongs to one tenant.
    #[serde(default)]
    pub domains: Vec<String>,
    /// The public ingest key the gateway sends those beacons with, made by `SetDomains`.
    #[serde(default)]
    pub site_key: String,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    /// Send events only. May be public (embedded in web pages).
    Ingest,
    /// Read insights only. Secret.
    Read,
    /// Send events on behalf of visitors, stating their address (`Event.client_ip`). Secret:
    /// never embed it in a page.
    Server,
    /// Read insights only, like [`KeyKind::Read`], but made to be shared in a dashboard link;
    /// revoked on its own.
    Shared,
}

/// What a key grants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGrant {
    /// The tenant the key belongs to.
    pub tenant_id: String,
    /// What it may do.
    pub kind: KeyKind,
    /// When it was created, Unix milliseconds (0 for keys from before this was kept).
    #[serde(default)]
    pub created_ms: i64,
    /// From when on it is refused, Unix milliseconds; never when absent.
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// Tenants and their keys. Keys are stored only as hashes.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates a tenant; [`crate::Error::AlreadyExists`] if the id is taken.
    async fn create_tenant(&self, tenant: &Tenant) -> Result<()>;
    /// Replaces an existing tenant's record (name, time zone); [`crate::Error::NotFound`] if
    /// there is none.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<()>;
    /// Removes a tenant's record (its keys are revoked separately); nothing when absent.
    async fn delete_tenant(&self, id: &str) -> Result<()>;
    /// The tenant with this id.
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Every tenant, ordered by id.
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    /// Records a key by its hash.
    async fn put_key(&self, key_hash: &str, grant: &KeyGrant) -> Result<()>;
    /// The grant of a key hash.
    async fn key(&self, key_hash: &str) -> Result<Option<KeyGrant>>;
    /// Every key hash and its grant.
    async fn keys(&self) -> Result<Vec<(String, KeyGrant)>>;
}

/// Daily salts for visitor hashes, one per local date (tenants use their own zone's).
///
/// Invariant: every ingest replica gets the same salt for a date; a salt is deleted at most 72
/// hours after it was first used (a date lasts 50 hours across zones), so visitor hashes cannot
/// be linked across days.
#[async_trait]
pub trait SaltStore: Send + Sync + 'static {
    /// The salt of `day` ("YYYY-MM-DD", a local date). When none exists, stores `candidate` and returns
    /// it; when another replica won the race, returns the stored one.
    async fn salt(&self, day: &str, candidate: [u8; 32]) -> Result<[u8; 32]>;
}

/// Aggregator snapshots, one per name (for example `partition-3`), replaced on each save.
#[async_trait]
pub trait SnapshotStore: Send + Sync + 'static {
    /// Replaces the snapshot `name`, durably.
    async fn save(&self, name: &str, bytes: Bytes) -> Result<()>;
    /// The latest snapshot `name`.
    async fn load(&self, name: &str) -> Result<Option<Bytes>>;
    /// Every snapshot whose name starts with `prefix`, ordered by name.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Bytes)>>;
}
