//! API keys: generation, hashing, and authentication with a small cache.
//!
//! Invariant: the tenant of every read and write comes from the authenticated key, never from
//! the request body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::meta::{KeyGrant, KeyKind, Tenant, TenantStore};
use crate::{Error, Result};

/// How long a key lookup (found or not) is reused before asking the store again: a revoked key
/// stops working within this time on every replica.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most cached lookups of each kind (found, unknown); the cache starts over beyond it.
const CACHE_ENTRIES: usize = 100_000;
/// Characters of a key's hash shown as its id.
const KEY_ID_CHARS: usize = 12;

/// A new random key of `kind`: `bk_ingest_…`, `bk_read_…`, `bk_server_…` or `bk_share_…`.
pub fn new_key(kind: KeyKind) -> String {
    let prefix = match kind {
        KeyKind::Ingest => "bk_ingest_",
        KeyKind::Read => "bk_read_",
        KeyKind::Server => "bk_server_",
        KeyKind::Shared => "bk_share_",
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

/// A stored key as an operator sees it: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The first characters of the key's hash: names the key in `RevokeKey`.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// What it may do.
    pub kind: KeyKind,
    /// When it was created, Unix milliseconds.
    pub created_ms: i64,
    /// From when on it is refused, Unix milliseconds.
    pub expires_ms: Option<i64>,
}

/// Key lookups of the last [`CACHE_TTL`]: found ones and unknown ones apart, so a flood of
/// made-up keys never pushes out the keys in use.
#[derive(Default)]
struct Cache {
    found: HashMap<String, (Instant, Tenant, KeyGrant)>,
    unknown: HashMap<String, Instant>,
    /// Bumped by every revocation: a lookup that started before one is not cached.
    generation: u64,
}

/// Authenticates keys and manages tenants over a [`TenantStore`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn TenantStore>,
    cache: Arc<Mutex<Cache>>,
    /// Tenants by registered domain, and when they were listed.
    domains: Arc<Mutex<Option<DomainList>>>,
}

/// When the tenants were listed, and each registered domain's tenant.
type DomainList = (Instant, HashMap<String, Tenant>);

/// Most site domains one tenant may register.
pub const MAX_DOMAINS: usize = 50;

impl Registry {
    /// A registry over `store`.
    pub fn new(store: Arc<dyn TenantStore>) -> Self {
        Self {
            store,
            cache: Arc::default(),
            domains: Arc::default(),
        }
    }

    /// Replaces the site domains whose keyless beacons count for tenant `id`, making its site
    /// key (a public ingest key) if it has none that works. A domain belongs to one tenant.
    pub async fn set_domains(&self, id: &str, domains: Vec<String>) -> Result<Tenant> {
        let domains = valid_domains(domains)?;
        let Some(before) = self.store.tenant(id).await? else {
            return Err(Error::NotFound(format!("tenant_id {id:?} is not a tenant")));
        };
        for other in self.store.tenants().await? {
            if let (false, Some(taken)) = (
                other.id == id,
                other.domains.iter().find(|d| domains.contains(d)),
            ) {
                return Err(Error::InvalidArgument(format!(
                    "domains: {taken:?} is a site of tenant {:?} already",
                    other.id
                )));
            }
        }
        let works = !before.site_key.is_empty()
            && self
                .authenticate(&before.site_key, KeyKind::Ingest)
                .await
                .is_ok();
        let site_key = if works {
            before.site_key.clone()
        } else {
            self.create_key(id, KeyKind::Ingest).await?
        };
        let after = Tenant {
            domains,
            site_key,
            ..before
        };
        self.store.update_tenant(&after).await?;
        if let Ok(mut cached) = self.domains.lock() {
            *cached = None;
        }
        Ok(after)
    }

    /// The tenant that registered site `domain`, from a list of the tenants at most
    /// [`CACHE_TTL`] old.
    pub async fn tenant_of_domain(&self, domain: &str) -> Result<Option<Tenant>> {
        let domain = domain.trim().to_ascii_lowercase();
        let fresh = |cached: &Option<DomainList>| {
            cached
                .as_ref()
                .filter(|(at, _)| at.elapsed() < CACHE_TTL)
                .map(|(_, map)| map.get(&domain).cloned())
        };
        if let Some(found) = self.domains.lock().ok().and_then(|c| fresh(&c)) {
            return Ok(found);
        }
        let mut map = HashMap::new();
        for tenant in self.store.tenants().await? {
            for domain in &tenant.domains {
                map.insert(domain.clone(), tenant.clone());
            }
        }
        let found = map.get(&domain).cloned();
        if let Ok(mut cached) = self.domains.lock() {
            *cached = Some((Instant::now(), map));
        }
        Ok(found)
    }

    /// The tenant a key allowed to do `want` belongs to. Unknown, revoked and expired keys are
    /// [`Error::Unauthenticated`]; a key of another kind is [`Error::PermissionDenied`]. A
    /// server key may do what an ingest key may, a shared key what a read key may.
    pub async fn authenticate(&self, key: &str, want: KeyKind) -> Result<Tenant> {
        self.authenticate_kind(key, want)
            .await
            .map(|(tenant, _)| tenant)
    }

    /// Like [`Registry::authenticate`], also returning the key's own kind.
    pub async fn authenticate_kind(&self, key: &str, want: KeyKind) -> Result<(Tenant, KeyKind)> {
        let hash = key_hash(key);
        let found = match self.cached(&hash) {
            Some(hit) => hit,
            None => self.lookup(&hash).await?,
        };
        let (tenant, grant) =
            found.ok_or_else(|| Error::Unauthenticated("unknown API key".into()))?;
        if grant
            .expires_ms
            .is_some_and(|at| at <= crate::time::now_ms())
        {
            return Err(Error::Unauthenticated("the API key was revoked".into()));
        }
        let allowed = grant.kind == want
            || (grant.kind == KeyKind::Server && want == KeyKind::Ingest)
            || (grant.kind == KeyKind::Shared && want == KeyKind::Read);
        if !allowed {
            return Err(Error::PermissionDenied(format!(
                "a {} key cannot be used to {}",
                kind_name(grant.kind),
                match want {
                    KeyKind::Ingest | KeyKind::Server => "send events",
                    KeyKind::Read | KeyKind::Shared => "read insights",
                }
            )));
        }
        Ok((tenant, grant.kind))
    }

    fn cached(&self, hash: &str) -> Option<Option<(Tenant, KeyGrant)>> {
        let cache = self.cache.lock().ok()?;
        if let Some((at, tenant, grant)) = cache.found.get(hash) {
            return (at.elapsed() < CACHE_TTL).then(|| Some((tenant.clone(), grant.clone())));
        }
        let at = cache.unknown.get(hash)?;
        (at.elapsed() < CACHE_TTL).then_some(None)
    }

    /// Looks a key hash up and caches the answer, unknown keys included, so a flood of made-up
    /// keys costs one store read per key and TTL at most.
    async fn lookup(&self, hash: &str) -> Result<Option<(Tenant, KeyGrant)>> {
        let generation = self.cache.lock().map(|c| c.generation).unwrap_or_default();
        let found = match self.store.key(hash).await? {
            None => None,
            Some(grant) => self
                .store
                .tenant(&grant.tenant_id)
                .await?
                .map(|tenant| (tenant, grant)),
        };
        if let Ok(mut cache) = self.cache.lock()
            && cache.generation == generation
        {
            let now = Instant::now();
            match &found {
                Some((tenant, grant)) => {
                    if cache.found.len() >= CACHE_ENTRIES {
                        cache.found.clear();
                    }
                    cache
                        .found
                        .insert(hash.to_owned(), (now, tenant.clone(), grant.clone()));
                }
                None => {
                    if cache.unknown.len() >= CACHE_ENTRIES {
                        cache.unknown.clear();
                    }
                    cache.unknown.insert(hash.to_owned(), now);
                }
            }
        }
        Ok(found)
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
            raw_retention_days: 0,
            goals: Vec::new(),
            currency: String::new(),
            domains: Vec::new(),
            site_key: String::new(),
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
            created_ms: crate::time::now_ms(),
            expires_ms: None,
        };
        self.store.put_key(&key_hash(&key), &grant).await?;
        Ok(key)
    }

    /// The keys of `tenant_id`, oldest first.
    pub async fn keys(&self, tenant_id: &str) -> Result<Vec<KeyInfo>> {
        let mut keys: Vec<KeyInfo> = self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|(_, grant)| grant.tenant_id == tenant_id)
            .map(|(hash, grant)| KeyInfo {
                id: hash.chars().take(KEY_ID_CHARS).collect(),
                tenant_id: grant.tenant_id,
                kind: grant.kind,
                created_ms: grant.created_ms,
                expires_ms: grant.expires_ms,
            })
            .collect();
        keys.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(keys)
    }

    /// Makes the key `key_id` of `tenant_id` stop working after `grace` (at once when zero), on
    /// every replica within [`CACHE_TTL`] after that. Returns when it stops.
    pub async fn revoke_key(&self, tenant_id: &str, key_id: &str, grace: Duration) -> Result<i64> {
        let (hash, mut grant) = self.find_key(tenant_id, key_id).await?;
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let at = crate::time::now_ms().saturating_add(grace_ms);
        grant.expires_ms = Some(grant.expires_ms.map_or(at, |before| before.min(at)));
        self.store.put_key(&hash, &grant).await?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.generation += 1;
            cache.found.remove(&hash);
        }
        Ok(at)
    }

    /// Rotates the key `key_id` of `tenant_id`: a new key of the same kind, and the old one
    /// revoked after `grace`, so clients can switch over. Returns the new key.
    pub async fn rotate_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        grace: Duration,
    ) -> Result<String> {
        let (_, grant) = self.find_key(tenant_id, key_id).await?;
        if grant
            .expires_ms
            .is_some_and(|at| at <= crate::time::now_ms())
        {
            return Err(Error::InvalidArgument(format!(
                "key {key_id:?} of tenant {tenant_id:?} is revoked already; create a new key instead"
            )));
        }
        let key = self.create_key(tenant_id, grant.kind).await?;
        self.revoke_key(tenant_id, key_id, grace).await?;
        Ok(key)
    }

    async fn find_key(&self, tenant_id: &str, key_id: &str) -> Result<(String, KeyGrant)> {
        let key_id = key_id.trim().to_ascii_lowercase();
        let key_id = key_id.as_str();
        if key_id.len() < KEY_ID_CHARS {
            return Err(Error::InvalidArgument(format!(
                "key_id {key_id:?}: give the {KEY_ID_CHARS} characters ListKeys shows"
            )));
        }
        let mut matches = self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|(hash, grant)| grant.tenant_id == tenant_id && hash.starts_with(key_id));
        match (matches.next(), matches.next()) {
            (Some(found), None) => Ok(found),
            (None, _) => Err(Error::NotFound(format!(
                "key {key_id:?} of tenant {tenant_id:?}"
            ))),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "key_id {key_id:?} names several keys; give more characters"
            ))),
        }
    }

    /// Every tenant.
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        self.store.tenants().await
    }

    /// One tenant.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.store.tenant(id).await
    }

    /// Revokes every key of a tenant at once; returns how many. Deleting a tenant starts with
    /// this, and its reset job removes the data and then the record.
    pub async fn revoke_all_keys(&self, id: &str) -> Result<usize> {
        if self.store.tenant(id).await?.is_none() {
            return Err(Error::NotFound(format!("tenant_id {id:?} is not a tenant")));
        }
        let keys = self.keys(id).await?;
        for key in &keys {
            self.revoke_key(id, &key.id, Duration::ZERO).await?;
        }
        Ok(keys.len())
    }

    /// Sets how many days a tenant's raw events are kept (0: forever).
    pub async fn set_raw_retention(&self, id: &str, days: u32) -> Result<()> {
        let Some(before) = self.store.tenant(id).await? else {
            return Err(Error::NotFound(format!("tenant_id {id:?} is not a tenant")));
        };
        self.store
            .update_tenant(&Tenant {
                raw_retention_days: days,
                ..before
            })
            .await
    }

    /// Replaces a tenant's goals, once [`crate::meta::goal::validate`] accepts them.
    pub async fn set_goals(&self, id: &str, goals: Vec<crate::meta::Goal>) -> Result<()> {
        crate::meta::goal::validate(&goals)?;
        let Some(before) = self.store.tenant(id).await? else {
            return Err(Error::NotFound(format!("tenant_id {id:?} is not a tenant")));
        };
        self.store.update_tenant(&Tenant { goals, ..before }).await
    }

    /// Sets the currency a tenant's revenue is counted in (an ISO 4217 code, three capital
    /// letters). Revenue already counted is not converted.
    pub async fn set_currency(&self, id: &str, currency: &str) -> Result<()> {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidArgument(format!(
                "currency: {currency:?} is not an ISO 4217 code of 3 capital letters"
            )));
        }
        let Some(before) = self.store.tenant(id).await? else {
            return Err(Error::NotFound(format!("tenant_id {id:?} is not a tenant")));
        };
        self.store
            .update_tenant(&Tenant {
                currency: currency.to_owned(),
                ..before
            })
            .await
    }

    /// Changes a tenant's time zone; every replica stamps events with it once its cached keys
    /// expire (5 seconds). Returns the tenant as it was.
    pub async fn set_time_zone(&self, id: &str, time_zone: &str) -> Result<Tenant> {
        crate::time::time_zone(time_zone)?;
        let Some(before) = self.store.tenant(id).await? else {
            return Err(Error::NotFound(format!("tenant_id {id:?} is not a tenant")));
        };
        let after = Tenant {
            time_zone: time_zone.to_owned(),
            ..before.clone()
        };
        self.store.update_tenant(&after).await?;
        Ok(before)
    }
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Ingest => "ingest",
        KeyKind::Read => "read",
        KeyKind::Server => "server",
        KeyKind::Shared => "shared",
    }
}

/// Site domains as stored: trimmed, lowercase, each a host name of at most 253 characters
/// (letters, digits, `-` and `.`), without repeats, at most [`MAX_DOMAINS`].
fn valid_domains(domains: Vec<String>) -> Result<Vec<String>> {
    if domains.len() > MAX_DOMAINS {
        return Err(Error::InvalidArgument(format!(
            "domains: {} domains; at most {MAX_DOMAINS} are allowed",
            domains.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for (i, domain) in domains.into_iter().enumerate() {
        let domain = domain.trim().to_ascii_lowercase();
        let host = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if domain.is_empty() || domain.len() > 253 || !domain.chars().all(host) {
            return Err(Error::InvalidArgument(format!(
                "domains[{i}]: {domain:?} is not a host name (letters, digits, '-' and '.', at \
                 most 253 characters)"
            )));
        }
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    Ok(out)
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

#[cfg(test)]
mod domain_tests {
    use super::*;

    #[test]
    fn domains_are_hosts_lowercase_without_repeats() {
        let got = valid_domains(vec![" Shop.Example ".into(), "shop.example".into()]);
        assert_eq!(got.ok(), Some(vec!["shop.example".to_owned()]));
        let err = valid_domains(vec!["a.example".into(), "https://b.example/".into()])
            .expect_err("a URL");
        assert!(err.to_string().contains("domains[1]"), "{err}");
        let many = (0..=MAX_DOMAINS).map(|i| format!("s{i}.example")).collect();
        let err = valid_domains(many).expect_err("too many");
        assert!(err.to_string().contains("at most 50"), "{err}");
    }
}
