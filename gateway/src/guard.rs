//! Key authentication and per-tenant rate limits at the edge.

use std::num::NonZeroU32;
use std::sync::Arc;

use beacon_core::auth::{Registry, request_key};
use beacon_core::meta::{KeyKind, Tenant};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::{GatewayArgs, GatewayError};

/// Admits requests: a valid key of the right kind, within the tenant's rate.
#[derive(Clone)]
pub struct Guard {
    registry: Registry,
    events: Arc<DefaultKeyedRateLimiter<String>>,
    queries: Arc<DefaultKeyedRateLimiter<String>>,
    events_per_second: u32,
    queries_per_second: u32,
}

impl Guard {
    /// A guard with the limits of `args`.
    pub fn new(registry: Registry, args: &GatewayArgs) -> Result<Self, GatewayError> {
        let events = NonZeroU32::new(args.events_per_second)
            .ok_or(GatewayError::ZeroLimit("--tenant-events-per-second"))?;
        let queries = NonZeroU32::new(args.queries_per_second)
            .ok_or(GatewayError::ZeroLimit("--tenant-queries-per-second"))?;
        Ok(Self {
            registry,
            events: Arc::new(RateLimiter::keyed(Quota::per_second(events))),
            queries: Arc::new(RateLimiter::keyed(Quota::per_second(queries))),
            events_per_second: args.events_per_second,
            queries_per_second: args.queries_per_second,
        })
    }

    /// Admits `count` events sent with the key in `metadata`.
    pub async fn ingest(&self, metadata: &MetadataMap, count: usize) -> Result<Tenant, Status> {
        let key = request_key(metadata)?;
        let tenant = self.registry.authenticate(&key, KeyKind::Ingest).await?;
        let n = NonZeroU32::new(count.max(1) as u32).unwrap_or(NonZeroU32::MIN);
        match self.events.check_key_n(&tenant.id, n) {
            Ok(Ok(())) => Ok(tenant),
            Ok(Err(_)) | Err(_) => Err(Status::resource_exhausted(format!(
                "tenant {:?} exceeded its limit of {} events per second; retry later",
                tenant.id, self.events_per_second
            ))),
        }
    }

    /// Admits one insights request made with the key in `metadata`.
    pub async fn query(&self, metadata: &MetadataMap) -> Result<Tenant, Status> {
        let key = request_key(metadata)?;
        let tenant = self.registry.authenticate(&key, KeyKind::Read).await?;
        self.queries.check_key(&tenant.id).map_err(|_| {
            Status::resource_exhausted(format!(
                "tenant {:?} exceeded its limit of {} queries per second; retry later",
                tenant.id, self.queries_per_second
            ))
        })?;
        Ok(tenant)
    }
}
