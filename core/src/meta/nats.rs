//! The clustered tenant, salt and snapshot stores on JetStream.
//!
//! - KV bucket `beacon_tenants`: `tenant.<id>` and `key.<hash>`, JSON values.
//! - KV bucket `beacon_salts`: one key per date, 32 bytes, expiring after 72 hours.
//! - Object store `beacon_snapshots`: one object per snapshot name (snapshots can exceed the
//!   message size limit, the object store chunks them).

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::object_store::{self, GetErrorKind, ObjectStore};
use async_nats::jetstream::stream::StorageType;
use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::io::AsyncReadExt;

use super::{KeyGrant, SaltStore, SnapshotStore, Tenant, TenantStore};
use crate::{Error, Result};

const TENANTS_BUCKET: &str = "beacon_tenants";
const SALTS_BUCKET: &str = "beacon_salts";
const SNAPSHOTS_BUCKET: &str = "beacon_snapshots";
/// Salts are deleted by JetStream this long after they were chosen.
/// A date's salt is used for 50 hours (the zones on that date span 26): kept 72.
const SALT_MAX_AGE: Duration = Duration::from_secs(72 * 3600);
/// Longest wait for one snapshot download.
/// Time a snapshot read may take before it is tried again: this much, plus
/// [`SNAPSHOT_READ_PER_MIB`] per MiB.
const SNAPSHOT_READ_BASE: Duration = Duration::from_millis(500);
/// Extra time per MiB of a snapshot read.
const SNAPSHOT_READ_PER_MIB: Duration = Duration::from_secs(2);
/// Reads of one snapshot given up before loading it fails.
const SNAPSHOT_READ_ATTEMPTS: u32 = 5;
/// How often a salt is tried again when it vanished between create and get.
const SALT_ATTEMPTS: usize = 5;

/// Tenants, keys, salts and snapshots on JetStream.
pub struct NatsMeta {
    tenants: kv::Store,
    salts: kv::Store,
    snapshots: ObjectStore,
}

impl NatsMeta {
    /// Opens the buckets, creating them with `replicas` replicas if they do not exist.
    pub async fn open(js: Context, replicas: usize) -> Result<Self> {
        let tenants = kv_bucket(
            &js,
            kv::Config {
                bucket: TENANTS_BUCKET.into(),
                description: "Beacon tenants and key hashes".into(),
                history: 1,
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let salts = kv_bucket(
            &js,
            kv::Config {
                bucket: SALTS_BUCKET.into(),
                description: "Beacon daily visitor salts".into(),
                history: 1,
                max_age: SALT_MAX_AGE,
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        let snapshots = object_bucket(
            &js,
            object_store::Config {
                bucket: SNAPSHOTS_BUCKET.into(),
                description: Some("Beacon aggregator snapshots".into()),
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        tracing::info!(replicas, "JetStream metadata buckets opened");
        Ok(Self {
            tenants,
            salts,
            snapshots,
        })
    }
}

/// The KV bucket of `config`, created if it does not exist; an existing one gets the
/// configured replicas and maximum age.
pub(crate) async fn kv_bucket(js: &Context, config: kv::Config) -> Result<kv::Store> {
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_key_value(bucket.as_str()).await {
        let stream = format!("KV_{bucket}");
        reconcile(js, &stream, config.num_replicas, config.max_age).await?;
        return Ok(store);
    }
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another process may have created it meanwhile.
        Err(create) => js
            .get_key_value(bucket.as_str())
            .await
            .map_err(|_| Error::Unavailable(format!("opening KV bucket {bucket}: {create}"))),
    }
}

/// The object store of `config`, created if it does not exist; an existing one gets the
/// configured replicas.
async fn object_bucket(js: &Context, config: object_store::Config) -> Result<ObjectStore> {
    let bucket = config.bucket.clone();
    if let Ok(store) = js.get_object_store(bucket.as_str()).await {
        let stream = format!("OBJ_{bucket}");
        reconcile(js, &stream, config.num_replicas, config.max_age).await?;
        return Ok(store);
    }
    match js.create_object_store(config).await {
        Ok(store) => Ok(store),
        Err(create) => js
            .get_object_store(bucket.as_str())
            .await
            .map_err(|_| Error::Unavailable(format!("opening object store {bucket}: {create}"))),
    }
}

/// Brings the stream behind an existing bucket to `replicas` replicas (at least one) and
/// `max_age`, when it differs: a deployment that grows from one NATS node to three gets its
/// old buckets replicated too.
async fn reconcile(
    js: &Context,
    stream: &str,
    replicas: usize,
    max_age: std::time::Duration,
) -> Result<()> {
    let failed = |err: &dyn std::fmt::Display| {
        Error::Unavailable(format!("updating JetStream stream {stream}: {err}"))
    };
    let mut handle = js.get_stream(stream).await.map_err(|err| failed(&err))?;
    let info = handle.info().await.map_err(|err| failed(&err))?;
    let mut config = info.config.clone();
    let replicas = replicas.max(1);
    if config.num_replicas == replicas && config.max_age == max_age {
        return Ok(());
    }
    tracing::info!(
        stream,
        from = config.num_replicas,
        to = replicas,
        ?max_age,
        "updating a bucket's replicas and age"
    );
    config.num_replicas = replicas;
    config.max_age = max_age;
    js.update_stream(config).await.map_err(|err| failed(&err))?;
    Ok(())
}

fn tenant_key(id: &str) -> Result<String> {
    kv_key("tenant id", "tenant.", id)
}

fn key_key(hash: &str) -> Result<String> {
    kv_key("key hash", "key.", hash)
}

/// `prefix` + `value`, if `value` is a valid single KV key token.
fn kv_key(what: &str, prefix: &str, value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
    if ok {
        Ok(format!("{prefix}{value}"))
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {value:?} must be one or more characters of [A-Za-z0-9_=-]"
        )))
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| Error::Corrupt(format!("{what}: {err}")))
}

fn encode_json<T: serde::Serialize>(what: &str, value: &T) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| Error::backend(format!("encoding {what}"), err))
}

fn unavailable(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {err}"))
}

impl NatsMeta {
    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.tenants.get(key).await {
            Ok(Some(bytes)) => decode_json(&format!("{TENANTS_BUCKET}/{key}"), &bytes).map(Some),
            Ok(None) => Ok(None),
            Err(err) => Err(unavailable(format!("reading {TENANTS_BUCKET}/{key}"), err)),
        }
    }

    /// The stored salt of `day`, if any.
    async fn stored_salt(&self, day: &str) -> Result<Option<[u8; 32]>> {
        let bytes = self
            .salts
            .get(day)
            .await
            .map_err(|err| unavailable(format!("reading the salt of {day}"), err))?;
        bytes
            .map(|bytes| {
                <[u8; 32]>::try_from(bytes.as_ref()).map_err(|_| {
                    Error::Corrupt(format!(
                        "salt of {day} has {} bytes instead of 32",
                        bytes.len()
                    ))
                })
            })
            .transpose()
    }
}

#[async_trait]
impl TenantStore for NatsMeta {
    async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
        let key = tenant_key(&tenant.id)?;
        let json = encode_json(&format!("tenant {}", tenant.id), tenant)?;
        match self.tenants.create(&key, json).await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists(format!("tenant {}", tenant.id)))
            }
            Err(err) => Err(unavailable(format!("creating tenant {}", tenant.id), err)),
        }
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<()> {
        let key = tenant_key(&tenant.id)?;
        let json = encode_json(&format!("tenant {}", tenant.id), tenant)?;
        let entry = self
            .tenants
            .entry(&key)
            .await
            .map_err(|err| unavailable(format!("reading tenant {}", tenant.id), err))?;
        let Some(entry) =
            entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        else {
            return Err(Error::NotFound(format!("tenant {}", tenant.id)));
        };
        self.tenants
            .update(&key, json, entry.revision)
            .await
            .map(|_| ())
            .map_err(|err| unavailable(format!("updating tenant {}", tenant.id), err))
    }

    async fn delete_tenant(&self, id: &str) -> Result<()> {
        self.tenants
            .delete(&tenant_key(id)?)
            .await
            .map_err(|err| unavailable(format!("deleting tenant {id}"), err))
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.get_json(&tenant_key(id)?).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let keys: Vec<String> = self
            .tenants
            .keys()
            .await
            .map_err(|err| unavailable("listing tenants", err))?
            .try_collect()
            .await
            .map_err(|err| unavailable("listing tenants", err))?;
        let mut tenants = Vec::new();
        for key in keys.iter().filter(|key| key.starts_with("tenant.")) {
            if let Some(tenant) = self.get_json::<Tenant>(key).await? {
                tenants.push(tenant);
            }
        }
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(tenants)
    }

    async fn put_key(&self, key_hash: &str, grant: &KeyGrant) -> Result<()> {
        let key = key_key(key_hash)?;
        let json = encode_json(&format!("key {key_hash}"), grant)?;
        self.tenants
            .put(&key, json)
            .await
            .map(|_| ())
            .map_err(|err| unavailable(format!("storing key {key_hash}"), err))
    }

    async fn key(&self, key_hash: &str) -> Result<Option<KeyGrant>> {
        self.get_json(&key_key(key_hash)?).await
    }

    async fn keys(&self) -> Result<Vec<(String, KeyGrant)>> {
        let names: Vec<String> = self
            .tenants
            .keys()
            .await
            .map_err(|err| unavailable("listing keys", err))?
            .try_collect()
            .await
            .map_err(|err| unavailable("listing keys", err))?;
        let mut keys = Vec::new();
        for name in names {
            let Some(hash) = name.strip_prefix("key.") else {
                continue;
            };
            if let Some(grant) = self.get_json::<KeyGrant>(&name).await? {
                keys.push((hash.to_owned(), grant));
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(keys)
    }
}

#[async_trait]
impl SaltStore for NatsMeta {
    async fn salt(&self, day: &str, candidate: [u8; 32]) -> Result<[u8; 32]> {
        kv_key("salt day", "", day)?;
        for _ in 0..SALT_ATTEMPTS {
            let created = self
                .salts
                .create(day, Bytes::copy_from_slice(&candidate))
                .await;
            match created {
                Ok(_) => return Ok(candidate),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                    if let Some(salt) = self.stored_salt(day).await? {
                        return Ok(salt);
                    }
                    // Expired or deleted between the create and the get: try again.
                }
                Err(err) => return Err(unavailable(format!("storing the salt of {day}"), err)),
            }
        }
        Err(Error::Unavailable(format!(
            "the salt of {day} could neither be created nor read after {SALT_ATTEMPTS} attempts"
        )))
    }
}

#[async_trait]
impl SnapshotStore for NatsMeta {
    async fn save(&self, name: &str, bytes: Bytes) -> Result<()> {
        let mut reader: &[u8] = &bytes;
        self.snapshots
            .put(name, &mut reader)
            .await
            .map(|_| ())
            .map_err(|err| unavailable(format!("saving snapshot {name}"), err))
    }

    async fn load(&self, name: &str) -> Result<Option<Bytes>> {
        // A read that races a replacement of the object waits for chunks that were purged; a
        // fresh get reads the new object, so a stalled read is given up and tried again.
        let mut stalled = 0;
        loop {
            let mut object = match self.snapshots.get(name).await {
                Ok(object) => object,
                Err(err) if err.kind() == GetErrorKind::NotFound => return Ok(None),
                Err(err) => return Err(unavailable(format!("loading snapshot {name}"), err)),
            };
            let size = object.info.size;
            let patience = SNAPSHOT_READ_BASE + SNAPSHOT_READ_PER_MIB * (size >> 20).max(1) as u32;
            let mut bytes = Vec::with_capacity(size);
            match tokio::time::timeout(patience, object.read_to_end(&mut bytes)).await {
                Ok(read) => {
                    read.map_err(|err| unavailable(format!("loading snapshot {name}"), err))?;
                    return Ok(Some(Bytes::from(bytes)));
                }
                Err(_) if stalled < SNAPSHOT_READ_ATTEMPTS => {
                    stalled += 1;
                    tracing::debug!(
                        name,
                        size,
                        stalled,
                        "snapshot read stalled (replaced meanwhile?); reading again"
                    );
                }
                Err(_) => {
                    return Err(Error::Unavailable(format!(
                        "loading snapshot {name} ({size} bytes) stalled {stalled} times"
                    )));
                }
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Bytes)>> {
        let mut infos = self
            .snapshots
            .list()
            .await
            .map_err(|err| unavailable(format!("listing snapshots {prefix}*"), err))?;
        let mut names = Vec::new();
        while let Some(info) = infos
            .try_next()
            .await
            .map_err(|err| unavailable(format!("listing snapshots {prefix}*"), err))?
        {
            if info.name.starts_with(prefix) && !info.deleted {
                names.push(info.name);
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(bytes) = self.load(&name).await? {
                out.push((name, bytes));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_single_tokens() {
        assert_eq!(tenant_key("acme-1").ok().as_deref(), Some("tenant.acme-1"));
        assert_eq!(key_key("ab12").ok().as_deref(), Some("key.ab12"));
        assert!(tenant_key("").is_err());
        assert!(tenant_key("a.b").is_err());
        assert!(tenant_key("a b").is_err());
        assert!(kv_key("salt day", "", "2024-05-01").is_ok());
    }

    #[tokio::test]
    async fn an_existing_bucket_gets_the_configured_age_and_replicas() {
        let server = beacon_testkit::NatsServer::start().expect("nats-server");
        let client = crate::backends::connect_nats(&server.url())
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        let config = |hours: u64| kv::Config {
            bucket: "reconciled".into(),
            max_age: std::time::Duration::from_secs(hours * 3600),
            ..Default::default()
        };
        kv_bucket(&js, config(1)).await.expect("created");
        kv_bucket(&js, config(2)).await.expect("reopened");
        let mut stream = js.get_stream("KV_reconciled").await.expect("stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.config.max_age, std::time::Duration::from_secs(7200));
        assert_eq!(info.config.num_replicas, 1);
    }
}
