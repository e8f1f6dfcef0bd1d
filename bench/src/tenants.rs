//! Creates the traffic model's tenants through the gateway's admin API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use beacon_proto::admin::v1::admin_service_client::AdminServiceClient;
use beacon_proto::admin::v1::{CreateKeyRequest, CreateTenantRequest, KeyKind};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::send::{authorized, connect};
use crate::traffic::TenantSpec;

/// How long tenant creation keeps retrying while the gateway or its upstreams start.
const STARTUP_WINDOW: Duration = Duration::from_secs(60);
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A tenant's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeys {
    /// Tenant id.
    pub id: String,
    /// Key for sending events: a server key, since the load states each visitor's address.
    pub ingest_key: String,
    /// Key for reading insights.
    pub read_key: String,
}

/// Creates `tenants` through the gateway's admin listener at `admin` with `concurrency` calls
/// in flight, retrying for up to 60 s while the gateway starts. A tenant that already exists (a
/// rerun on the same data) gets fresh keys instead. Keys come back in the order of `tenants`.
pub async fn create_tenants(
    admin: &str,
    admin_token: &str,
    tenants: &[TenantSpec],
    concurrency: usize,
) -> anyhow::Result<Vec<TenantKeys>> {
    let deadline = Instant::now() + STARTUP_WINDOW;
    let channel = connect(admin, STARTUP_WINDOW).await?;
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let token: Arc<str> = Arc::from(admin_token);
    let mut tasks = JoinSet::new();
    for (index, spec) in tenants.iter().cloned().enumerate() {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .context("tenant creation: the concurrency semaphore closed")?;
        let (channel, token) = (channel.clone(), Arc::clone(&token));
        tasks.spawn(async move {
            let keys = match create_one(&channel, &token, &spec, deadline).await {
                Ok(keys) => set_currency(&channel, &token, &spec.id)
                    .await
                    .map(|()| keys),
                Err(err) => Err(err),
            };
            drop(permit);
            (index, keys)
        });
    }
    let mut keys: Vec<Option<TenantKeys>> = vec![None; tenants.len()];
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.context("a tenant creation task panicked")?;
        keys[index] = Some(result?);
    }
    tracing::info!(tenants = tenants.len(), admin, "tenants created");
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| k.ok_or_else(|| anyhow!("tenant #{i}: no keys were returned")))
        .collect()
}

/// Sets the tenant's currency, the one its purchases are in, retrying UNAVAILABLE (the
/// gateway's upstreams may still start) for a few seconds.
async fn set_currency(channel: &Channel, admin_token: &str, tenant: &str) -> anyhow::Result<()> {
    let (currency, _) = crate::traffic::currency_of(tenant);
    let until = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let request = beacon_proto::admin::v1::SetCurrencyRequest {
            tenant_id: tenant.to_owned(),
            currency: currency.to_owned(),
        };
        match AdminServiceClient::new(channel.clone())
            .set_currency(authorized(admin_token, request)?)
            .await
        {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(status) => {
                return Err(status).with_context(|| format!("setting the currency of {tenant}"));
            }
        }
    }
}

/// Creates one tenant, retrying transient failures until `deadline`.
async fn create_one(
    channel: &Channel,
    admin_token: &str,
    spec: &TenantSpec,
    deadline: Instant,
) -> anyhow::Result<TenantKeys> {
    let mut client = AdminServiceClient::new(channel.clone());
    loop {
        let request = CreateTenantRequest {
            id: spec.id.clone(),
            name: spec.id.clone(),
            time_zone: spec.time_zone.clone(),
        };
        let status = match client
            .create_tenant(authorized(admin_token, request)?)
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                let send_key = create_key(
                    &mut client,
                    admin_token,
                    &spec.id,
                    KeyKind::Server,
                    deadline,
                )
                .await?;
                return Ok(TenantKeys {
                    id: reply
                        .tenant
                        .map(|t| t.id)
                        .unwrap_or_else(|| spec.id.clone()),
                    ingest_key: send_key,
                    read_key: reply.read_key,
                });
            }
            Err(status) if status.code() == Code::AlreadyExists => {
                return fresh_keys(&mut client, admin_token, spec, deadline).await;
            }
            Err(status) => status,
        };
        wait_or_fail(&status, deadline, || {
            format!("creating tenant {} ({})", spec.id, spec.time_zone)
        })
        .await?;
    }
}

/// New sending (server) and read keys for an existing tenant.
async fn fresh_keys(
    client: &mut AdminServiceClient<Channel>,
    admin_token: &str,
    spec: &TenantSpec,
    deadline: Instant,
) -> anyhow::Result<TenantKeys> {
    tracing::info!(tenant = %spec.id, "tenant exists already; creating new keys");
    let ingest_key = create_key(client, admin_token, &spec.id, KeyKind::Server, deadline).await?;
    let read_key = create_key(client, admin_token, &spec.id, KeyKind::Read, deadline).await?;
    Ok(TenantKeys {
        id: spec.id.clone(),
        ingest_key,
        read_key,
    })
}

async fn create_key(
    client: &mut AdminServiceClient<Channel>,
    admin_token: &str,
    tenant: &str,
    kind: KeyKind,
    deadline: Instant,
) -> anyhow::Result<String> {
    loop {
        let request = CreateKeyRequest {
            tenant_id: tenant.to_owned(),
            kind: kind as i32,
        };
        match client.create_key(authorized(admin_token, request)?).await {
            Ok(reply) => return Ok(reply.into_inner().key),
            Err(status) => {
                wait_or_fail(&status, deadline, || {
                    format!("creating a {} key for tenant {tenant}", kind.as_str_name())
                })
                .await?;
            }
        }
    }
}

/// Sleeps before the next attempt if `status` may be transient and time is left; otherwise
/// fails, naming what was being done.
async fn wait_or_fail(
    status: &Status,
    deadline: Instant,
    what: impl Fn() -> String,
) -> anyhow::Result<()> {
    if !transient(status.code()) || Instant::now() + RETRY_PAUSE > deadline {
        return Err(anyhow!(
            "{}: {:?}: {}",
            what(),
            status.code(),
            status.message()
        ));
    }
    tracing::debug!(code = ?status.code(), message = status.message(), "admin call failed; retrying");
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

/// Failures that may pass while the gateway and its upstreams start.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_startup_failures_are_retried() {
        assert!(transient(Code::Unavailable));
        assert!(transient(Code::ResourceExhausted));
        assert!(!transient(Code::Unauthenticated));
        assert!(!transient(Code::InvalidArgument));
        assert!(!transient(Code::AlreadyExists));
    }

    #[tokio::test]
    async fn an_invalid_gateway_url_is_named_in_the_error() {
        let spec = TenantSpec {
            id: "t00000".into(),
            time_zone: "UTC".into(),
            weight: 1.0,
        };
        let err = create_tenants("not a url", "token", &[spec], 1).await.err();
        let message = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(message.contains("not a url"), "{message}");
    }
}
