//! API keys: generation, hashing, and authentication with a small cache.
//!
//! Invariant: the tenant of every read and write comes from the authenticated key, never from
//! the request body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::meta::{KeyGrant, KeyKind, Tenant, TenantStore};
use crate::{Error, Result};

/// How long a successful key lookup is reused before asking the store again.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// A new random key of `kind`: `bk_ingest_…` or `bk_read_…`.
pub fn new_key(kind: KeyKind) -> String {
    let prefix = match kind {
        KeyKind::Ingest => "bk_ingest_",
        KeyKind::Read => "bk_read_",
    };
    let bytes: [u8; 20] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// The stored form of a key.
pub fn key_hash(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// Checks a tenant id: 1 to 64 characters of `[a-z0-9_-]`.
pub fn validate_tenant_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "id {id:?} must be 1 to 64 characters of [a-z0-9_-]"
        )))
    }
}

/// A key hash's lookup result and when it was made.
type CachedKey = (Instant, Tenant, KeyKind);

/// Authenticates keys and manages tenants over a [`TenantStore`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn TenantStore>,
    cache: Arc<Mutex<HashMap<String, CachedKey>>>,
}

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn TenantStore>) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    /// The tenant a key of kind `want` belongs to. Unknown keys are
    /// [`Error::Unauthenticated`]; a key of the other kind is [`Error::PermissionDenied`].
    pub async fn authenticate(&self, key: &str, want: KeyKind) -> Result<Tenant> {
        let hash = key_hash(key);
        let (tenant, kind) = match self.cached(&hash) {
            Some(hit) => hit,
            None => self.lookup(&hash).await?,
        };
        if kind != want {
            return Err(Error::PermissionDenied(format!(
                "a {} key cannot be used to {}",
                kind_name(kind),
                match want {
                    KeyKind::Ingest => "send events",
                    KeyKind::Read => "read insights",
                }
            )));
        }
        Ok(tenant)
    }

    fn cached(&self, hash: &str) -> Option<(Tenant, KeyKind)> {
        let cache = self.cache.lock().ok()?;
        let (at, tenant, kind) = cache.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| (tenant.clone(), *kind))
    }

    async fn lookup(&self, hash: &str) -> Result<(Tenant, KeyKind)> {
        let grant = self
            .store
            .key(hash)
            .await?
            .ok_or_else(|| Error::Unauthenticated("unknown API key".into()))?;
        let tenant = self.store.tenant(&grant.tenant_id).await?.ok_or_else(|| {
            Error::Unauthenticated(format!(
                "the key's tenant {:?} no longer exists",
                grant.tenant_id
            ))
        })?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(
                hash.to_owned(),
                (Instant::now(), tenant.clone(), grant.kind),
            );
        }
        Ok((tenant, grant.kind))
    }

    /// Creates a tenant with one ingest key and one read key, returned in that order. An empty
    /// `id` gets a generated one; an empty `time_zone` means UTC.
    pub async fn create_tenant(
        &self,
        id: &str,
        name: &str,
        time_zone: &str,
    ) -> Result<(Tenant, String, String)> {
        let id = if id.is_empty() {
            let bytes: [u8; 6] = rand::random();
            format!(
                "t-{}",
                bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        } else {
            id.to_owned()
        };
        validate_tenant_id(&id)?;
        if name.chars().count() > 200 {
            return Err(Error::InvalidArgument(
                "name is longer than 200 characters".into(),
            ));
        }
        let time_zone = if time_zone.is_empty() {
            "UTC"
        } else {
            time_zone
        };
        crate::time::time_zone(time_zone)?;
        let tenant = Tenant {
            id,
            name: name.to_owned(),
            time_zone: time_zone.to_owned(),
        };
        self.store.create_tenant(&tenant).await?;
        let ingest = self.create_key(&tenant.id, KeyKind::Ingest).await?;
        let read = self.create_key(&tenant.id, KeyKind::Read).await?;
        Ok((tenant, ingest, read))
    }

    /// Adds a key of `kind` to an existing tenant.
    pub async fn create_key(&self, tenant_id: &str, kind: KeyKind) -> Result<String> {
        if self.store.tenant(tenant_id).await?.is_none() {
            return Err(Error::NotFound(format!("tenant {tenant_id:?}")));
        }
        let key = new_key(kind);
        let grant = KeyGrant {
            tenant_id: tenant_id.to_owned(),
            kind,
        };
        self.store.put_key(&key_hash(&key), &grant).await?;
        Ok(key)
    }

    /// Every tenant.
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        self.store.tenants().await
    }
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Ingest => "ingest",
        KeyKind::Read => "read",
    }
}

/// `message` as a gRPC request carrying `authorization: Bearer <key>`.
pub fn with_bearer<T>(key: &str, message: T) -> Result<tonic::Request<T>> {
    let value =
        tonic::metadata::MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
            Error::InvalidArgument(format!(
                "a key of {} characters is not valid header text",
                key.len()
            ))
        })?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The API key of a gRPC request: `authorization: Bearer <key>` or `x-beacon-key: <key>`.
pub fn request_key(metadata: &tonic::metadata::MetadataMap) -> Result<String> {
    if let Some(value) = metadata.get("authorization") {
        let value = value
            .to_str()
            .map_err(|_| Error::Unauthenticated("authorization header is not ASCII".into()))?;
        return value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(|key| key.trim().to_owned())
            .ok_or_else(|| {
                Error::Unauthenticated("authorization must be \"Bearer <key>\"".into())
            });
    }
    if let Some(value) = metadata.get("x-beacon-key") {
        return value
            .to_str()
            .map(|key| key.trim().to_owned())
            .map_err(|_| Error::Unauthenticated("x-beacon-key header is not ASCII".into()));
    }
    Err(Error::Unauthenticated(
        "missing API key: send \"authorization: Bearer <key>\"".into(),
    ))
}
