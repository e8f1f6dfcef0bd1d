//! Event-store retention: every few minutes, each query replica deletes the stored events of
//! its partitions' tenants that are older than their `raw_retention_days`, as the aggregator
//! deletes their raw events. Rollups are kept.

use std::sync::Arc;
use std::time::Duration;

use beacon_core::meta::{Tenant, TenantStore};
use beacon_core::partition::partition_of;
use beacon_core::time::now_ms;
use jiff::civil::Date;
use tokio_util::sync::CancellationToken;

use crate::DuckShardStore;

/// How often the event store is swept.
pub const EVERY: Duration = Duration::from_secs(600);
/// One day, milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Sweeps until `shutdown`: the tenants of `partitions` (of `total`) in `store`.
pub async fn run(
    store: DuckShardStore,
    tenants: Arc<dyn TenantStore>,
    (partitions, total): (Vec<u32>, u32),
    shutdown: CancellationToken,
) {
    loop {
        match tenants.tenants().await {
            Ok(list) => {
                for tenant in list {
                    if !partitions.contains(&partition_of(&tenant.id, total)) {
                        continue;
                    }
                    sweep(&store, &tenant).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "listing tenants for event retention failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Deletes `tenant`'s expired events, if it has a retention; failures are logged and tried
/// again at the next sweep.
async fn sweep(store: &DuckShardStore, tenant: &Tenant) {
    let Some(before) = first_kept(tenant, now_ms()) else {
        return;
    };
    match store.expire_events(&tenant.id, before).await {
        Ok(0) => {}
        Ok(deleted) => {
            tracing::info!(tenant = %tenant.id, %before, deleted, "expired stored events deleted")
        }
        Err(err) => {
            tracing::warn!(tenant = %tenant.id, error = %err, "deleting expired stored events failed")
        }
    }
}

/// The first local date whose events `tenant` keeps at `now_ms`: the date of the instant its
/// retention reaches back to (so at most a day more than the retention is kept); `None`
/// without a retention.
pub fn first_kept(tenant: &Tenant, now_ms: i64) -> Option<Date> {
    if tenant.raw_retention_days == 0 {
        return None;
    }
    let tz = beacon_core::time::time_zone(&tenant.time_zone).ok()?;
    let oldest = now_ms - i64::from(tenant.raw_retention_days) * DAY_MS;
    let instant = jiff::Timestamp::from_millisecond(oldest).ok()?;
    Some(instant.to_zoned_datetime(tz).date())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_retention_in_the_tenants_days() {
        let mut tenant = Tenant {
            id: "shop".into(),
            name: "shop".into(),
            time_zone: "Asia/Kolkata".into(),
            raw_retention_days: 0,
            goals: Vec::new(),
            currency: String::new(),
            domains: Vec::new(),
            site_key: String::new(),
        };
        // 2026-03-10T20:00:00Z: 2026-03-11 01:30 in Kolkata.
        let now = 1_773_172_800_000;
        assert_eq!(first_kept(&tenant, now), None);
        tenant.raw_retention_days = 30;
        assert_eq!(
            first_kept(&tenant, now),
            Some(jiff::civil::date(2026, 2, 9))
        );
    }
}
