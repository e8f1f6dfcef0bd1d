//! The embedded tenant, salt and snapshot stores: four tables in one local redb file.
//!
//! - `tenants`: id to the JSON of a [`Tenant`].
//! - `keys`: key hash to the JSON of a [`KeyGrant`].
//! - `salts`: day (`YYYY-MM-DD`) to 32 bytes; days sort chronologically as strings.
//! - `snapshots`: name to bytes.
//!
//! Every call is one transaction on the blocking pool; writes are durable on return.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use jiff::ToSpan;
use jiff::civil::Date;
use redb::{
    Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};

use super::{KeyGrant, SaltStore, SnapshotStore, Tenant, TenantStore};
use crate::error::ResultExt;
use crate::{Error, Result};

/// Page cache of a metadata file opened with [`EmbeddedMeta::open`].
const CACHE_BYTES: usize = 4 << 20;

/// Every table maps a string to bytes.
type BytesTable = TableDefinition<'static, &'static str, &'static [u8]>;

const TENANTS: BytesTable = TableDefinition::new("tenants");
const KEYS: BytesTable = TableDefinition::new("keys");
const SALTS: BytesTable = TableDefinition::new("salts");
const SNAPSHOTS: BytesTable = TableDefinition::new("snapshots");

/// How many dates before the requested one a salt is kept. Zones span 26 hours, so three
/// dates can be in use at once: a date's salt is used for 50 hours and gone at the first
/// request three dates later (at most 72 hours after it was first used).
const SALT_KEEP_DAYS: i64 = 2;

/// Tenants, keys, salts and snapshots in one local redb file.
pub struct EmbeddedMeta {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
}

impl EmbeddedMeta {
    /// Opens (or creates) the metadata file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, CACHE_BYTES)
    }

    /// Opens (or creates) the metadata file at `path`, caching up to `cache_bytes` of its pages.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .context(|| format!("opening metadata file {}", path.display()))?;
        create_tables(&db).context(|| format!("creating tables in {}", path.display()))?;
        tracing::info!(path = %path.display(), "embedded metadata store opened");
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
            }),
        })
    }

    /// Runs `work` on the blocking pool; `what` names it in errors.
    async fn blocking<T, F>(&self, what: String, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task_what = what.clone();
        tokio::task::spawn_blocking(move || {
            work(&inner).map_err(|err| err.into_error(&task_what, &inner.path))
        })
        .await
        .context(|| what)?
    }
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    for table in [TENANTS, KEYS, SALTS, SNAPSHOTS] {
        txn.open_table(table)?;
    }
    txn.commit()?;
    Ok(())
}

/// An error inside a blocking call, before the operation's description is added.
enum StoreError {
    Db(redb::Error),
    Beacon(Error),
}

/// `?` on every redb error inside a blocking call.
macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(err: $error) -> Self {
                Self::Db(err.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl StoreError {
    fn into_error(self, what: &str, path: &Path) -> Error {
        match self {
            Self::Db(err) => {
                crate::observe::redb_failed(path, &err);
                Error::backend(format!("{what} in {}", path.display()), err)
            }
            Self::Beacon(err) => err,
        }
    }
}

fn begin_durable(db: &Database) -> Result<WriteTransaction, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// The value stored under `key` in `table`.
fn get(db: &Database, table: BytesTable, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(table)?;
    Ok(table.get(key)?.map(|value| value.value().to_vec()))
}

/// Stores `value` under `key` in `table`, replacing any previous value.
fn put(db: &Database, table: BytesTable, key: &str, value: &[u8]) -> Result<(), StoreError> {
    let txn = begin_durable(db)?;
    txn.open_table(table)?.insert(key, value)?;
    txn.commit()?;
    Ok(())
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|err| StoreError::Beacon(Error::Corrupt(format!("{what}: {err}"))))
}

fn encode_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).context(|| format!("encoding {what}"))
}

/// The oldest day whose salt is kept when `day` is requested.
fn salt_cutoff(day: &str) -> Result<String> {
    let date: Date = day.parse().map_err(|err| {
        Error::InvalidArgument(format!("salt day {day:?} is not a YYYY-MM-DD date: {err}"))
    })?;
    let cutoff = date.checked_sub(SALT_KEEP_DAYS.days()).map_err(|err| {
        Error::InvalidArgument(format!("salt day {day:?} is out of range: {err}"))
    })?;
    Ok(cutoff.to_string())
}

impl Inner {
    fn create_tenant(&self, tenant: &Tenant, json: &[u8]) -> Result<(), StoreError> {
        let txn = begin_durable(&self.db)?;
        {
            let mut table = txn.open_table(TENANTS)?;
            if table.get(tenant.id.as_str())?.is_some() {
                return Err(StoreError::Beacon(Error::AlreadyExists(format!(
                    "tenant {}",
                    tenant.id
                ))));
            }
            table.insert(tenant.id.as_str(), json)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn update_tenant(&self, tenant: &Tenant, json: &[u8]) -> Result<(), StoreError> {
        let txn = begin_durable(&self.db)?;
        {
            let mut table = txn.open_table(TENANTS)?;
            if table.get(tenant.id.as_str())?.is_none() {
                return Err(StoreError::Beacon(Error::NotFound(format!(
                    "tenant {}",
                    tenant.id
                ))));
            }
            table.insert(tenant.id.as_str(), json)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TENANTS)?;
        let mut tenants = Vec::new();
        for entry in table.iter()? {
            let (id, json) = entry?;
            tenants.push(decode_json(
                &format!("tenant {}", id.value()),
                json.value(),
            )?);
        }
        Ok(tenants)
    }

    fn salt(&self, day: &str, cutoff: &str, candidate: [u8; 32]) -> Result<[u8; 32], StoreError> {
        let txn = begin_durable(&self.db)?;
        let salt = {
            let mut table = txn.open_table(SALTS)?;
            let stored = table.get(day)?.map(|value| value.value().to_vec());
            let salt = match stored {
                Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    StoreError::Beacon(Error::Corrupt(format!(
                        "salt of {day} has {} bytes instead of 32",
                        bytes.len()
                    )))
                })?,
                None => {
                    table.insert(day, candidate.as_slice())?;
                    candidate
                }
            };
            table.retain_in(..cutoff, |_, _| false)?;
            salt
        };
        txn.commit()?;
        Ok(salt)
    }
}

#[async_trait]
impl TenantStore for EmbeddedMeta {
    async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
        let json = encode_json(&format!("tenant {}", tenant.id), tenant)?;
        let tenant = tenant.clone();
        self.blocking(format!("creating tenant {}", tenant.id), move |inner| {
            inner.create_tenant(&tenant, &json)
        })
        .await
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<()> {
        let json = encode_json(&format!("tenant {}", tenant.id), tenant)?;
        let tenant = tenant.clone();
        self.blocking(format!("updating tenant {}", tenant.id), move |inner| {
            inner.update_tenant(&tenant, &json)
        })
        .await
    }

    async fn delete_tenant(&self, id: &str) -> Result<()> {
        let key = id.to_owned();
        self.blocking(format!("deleting tenant {id}"), move |inner| {
            let txn = begin_durable(&inner.db)?;
            txn.open_table(TENANTS)?.remove(key.as_str())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let key = id.to_owned();
        self.blocking(format!("reading tenant {id}"), move |inner| {
            match get(&inner.db, TENANTS, &key)? {
                Some(json) => decode_json(&format!("tenant {key}"), &json).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        self.blocking("listing tenants".into(), |inner| inner.tenants())
            .await
    }

    async fn put_key(&self, key_hash: &str, grant: &KeyGrant) -> Result<()> {
        let json = encode_json(&format!("key {key_hash}"), grant)?;
        let key = key_hash.to_owned();
        self.blocking(format!("storing key {key_hash}"), move |inner| {
            put(&inner.db, KEYS, &key, &json)
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<(String, KeyGrant)>> {
        self.blocking("listing keys".to_owned(), move |inner| {
            let txn = inner.db.begin_read()?;
            let table = txn.open_table(KEYS)?;
            let mut keys = Vec::new();
            for entry in table.iter()? {
                let (hash, json) = entry?;
                let grant = decode_json(&format!("key {}", hash.value()), json.value())?;
                keys.push((hash.value().to_owned(), grant));
            }
            Ok(keys)
        })
        .await
    }

    async fn key(&self, key_hash: &str) -> Result<Option<KeyGrant>> {
        let key = key_hash.to_owned();
        self.blocking(format!("reading key {key_hash}"), move |inner| {
            match get(&inner.db, KEYS, &key)? {
                Some(json) => decode_json(&format!("key {key}"), &json).map(Some),
                None => Ok(None),
            }
        })
        .await
    }
}

#[async_trait]
impl SaltStore for EmbeddedMeta {
    async fn salt(&self, day: &str, candidate: [u8; 32]) -> Result<[u8; 32]> {
        let cutoff = salt_cutoff(day)?;
        let day = day.to_owned();
        self.blocking(format!("choosing the salt of {day}"), move |inner| {
            inner.salt(&day, &cutoff, candidate)
        })
        .await
    }
}

#[async_trait]
impl SnapshotStore for EmbeddedMeta {
    async fn save(&self, name: &str, bytes: Bytes) -> Result<()> {
        let key = name.to_owned();
        self.blocking(format!("saving snapshot {name}"), move |inner| {
            put(&inner.db, SNAPSHOTS, &key, &bytes)
        })
        .await
    }

    async fn load(&self, name: &str) -> Result<Option<Bytes>> {
        let key = name.to_owned();
        self.blocking(format!("loading snapshot {name}"), move |inner| {
            Ok(get(&inner.db, SNAPSHOTS, &key)?.map(Bytes::from))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Bytes)>> {
        let start = prefix.to_owned();
        self.blocking(format!("listing snapshots {prefix}*"), move |inner| {
            let txn = inner.db.begin_read()?;
            let table = txn.open_table(SNAPSHOTS)?;
            let mut out = Vec::new();
            for entry in table.range(start.as_str()..)? {
                let (name, bytes) = entry?;
                if !name.value().starts_with(start.as_str()) {
                    break;
                }
                out.push((
                    name.value().to_owned(),
                    Bytes::copy_from_slice(bytes.value()),
                ));
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_cutoff_is_two_dates_before() {
        assert_eq!(
            salt_cutoff("2024-03-01").ok().as_deref(),
            Some("2024-02-28")
        );
        assert_eq!(
            salt_cutoff("2024-01-01").ok().as_deref(),
            Some("2023-12-30")
        );
        assert!(matches!(
            salt_cutoff("yesterday"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
