//! Key authentication, the per-address limit on failed authentication, and per-tenant rate
//! limits at the edge.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use beacon_core::auth::{Registry, request_key};
use beacon_core::meta::{KeyKind, Tenant};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::edge::Edge;
use crate::{GatewayArgs, GatewayError};

/// Admits requests: an address not refused for failing too often, a valid key of the right
/// kind, within the tenant's rate.
#[derive(Clone)]
pub struct Guard {
    registry: Registry,
    /// Client addresses and failed-authentication limits.
    pub edge: Edge,
    events: Arc<DefaultKeyedRateLimiter<String>>,
    queries: Arc<DefaultKeyedRateLimiter<String>>,
    events_per_second: u32,
    queries_per_second: u32,
}

impl Guard {
    /// A guard with the limits of `args`.
    pub fn new(registry: Registry, args: &GatewayArgs) -> Result<Self, GatewayError> {
        let edge = Edge::new(&args.trusted_proxies, args.failed_auth_per_second)?;
        let events = NonZeroU32::new(args.events_per_second)
            .ok_or(GatewayError::ZeroLimit("--tenant-events-per-second"))?;
        let queries = NonZeroU32::new(args.queries_per_second)
            .ok_or(GatewayError::ZeroLimit("--tenant-queries-per-second"))?;
        Ok(Self {
            registry,
            edge,
            events: Arc::new(RateLimiter::keyed(Quota::per_second(events))),
            queries: Arc::new(RateLimiter::keyed(Quota::per_second(queries))),
            events_per_second: args.events_per_second,
            queries_per_second: args.queries_per_second,
        })
    }

    /// The address of the client that sent `request`, as the edge resolves it.
    pub fn client_of<T>(&self, request: &tonic::Request<T>) -> Option<IpAddr> {
        self.edge
            .client(request.remote_addr().map(|a| a.ip()), request.metadata())
    }

    /// The tenant of the key in `metadata` allowed to do `want`, counting failures of `client`.
    async fn authenticate(
        &self,
        metadata: &MetadataMap,
        want: KeyKind,
        client: Option<IpAddr>,
    ) -> Result<Tenant, Status> {
        self.authenticate_key(request_key(metadata), want, client)
            .await
    }

    /// The tenant of server key `key` (a GA4 Measurement Protocol `api_secret`), counting
    /// failures of `client`.
    pub async fn server_tenant(&self, key: &str, client: Option<IpAddr>) -> Result<Tenant, Status> {
        self.authenticate_key(Ok(key.to_owned()), KeyKind::Server, client)
            .await
    }

    async fn authenticate_key(
        &self,
        key: beacon_core::Result<String>,
        want: KeyKind,
        client: Option<IpAddr>,
    ) -> Result<Tenant, Status> {
        self.edge.admit(client)?;
        let authenticated = match key {
            Ok(key) => self.registry.authenticate(&key, want).await,
            Err(err) => Err(err),
        };
        authenticated.map_err(|err| {
            let status = Status::from(err);
            if status.code() == Code::Unauthenticated {
                self.edge.failed(client);
            }
            status
        })
    }

    /// The site key of the tenant that registered `domain` (keyless beacons); an unknown
    /// domain counts as a failed authentication of `client`.
    pub async fn site_key(
        &self,
        domain: &str,
        client: Option<IpAddr>,
    ) -> Result<Option<String>, Status> {
        self.edge.admit(client)?;
        let tenant = self.registry.tenant_of_domain(domain).await?;
        if tenant.is_none() {
            self.edge.failed(client);
        }
        Ok(tenant.map(|t| t.site_key).filter(|key| !key.is_empty()))
    }

    /// Admits `count` events sent by `client` with the key in `metadata`.
    pub async fn ingest(
        &self,
        metadata: &MetadataMap,
        count: usize,
        client: Option<IpAddr>,
    ) -> Result<Tenant, Status> {
        let tenant = self.authenticate(metadata, KeyKind::Ingest, client).await?;
        let n = NonZeroU32::new(count.max(1) as u32).unwrap_or(NonZeroU32::MIN);
        match self.events.check_key_n(&tenant.id, n) {
            Ok(Ok(())) => Ok(tenant),
            Ok(Err(_)) | Err(_) => Err(Status::resource_exhausted(format!(
                "tenant {:?} exceeded its limit of {} events per second; retry later",
                tenant.id, self.events_per_second
            ))),
        }
    }

    /// Admits one insights request made by `client` with the key in `metadata`.
    pub async fn query(
        &self,
        metadata: &MetadataMap,
        client: Option<IpAddr>,
    ) -> Result<Tenant, Status> {
        let tenant = self.authenticate(metadata, KeyKind::Read, client).await?;
        self.queries.check_key(&tenant.id).map_err(|_| {
            Status::resource_exhausted(format!(
                "tenant {:?} exceeded its limit of {} queries per second; retry later",
                tenant.id, self.queries_per_second
            ))
        })?;
        Ok(tenant)
    }
}
