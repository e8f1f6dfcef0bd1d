//! Raw-event retention: every `--retention-every`, the worker deletes raw events older than
//! their tenant's `raw_retention_days` (tenants of its partition only). Rollups are kept.

use std::time::Instant;

use beacon_core::partition::partition_of;
use beacon_core::time::now_ms;

use super::Worker;

/// Most raw events one sweep deletes per tenant; the next sweep goes on.
const SWEEP_EVENTS: usize = 100_000;
/// One day, milliseconds.
const DAY_MS: i64 = 86_400_000;

impl Worker {
    /// Deletes expired raw events when a sweep is due. Failures are logged; the next sweep
    /// tries again.
    pub(super) async fn enforce_retention(&mut self) {
        if self
            .last_sweep
            .is_some_and(|at| at.elapsed() < self.timing.retention_every)
        {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let partition = self.lane.partition();
        let tenants = match self.backends.tenants.tenants().await {
            Ok(tenants) => tenants,
            Err(err) => {
                tracing::warn!(partition, error = %err, "listing tenants for raw retention failed");
                return;
            }
        };
        for tenant in tenants {
            if tenant.raw_retention_days == 0
                || partition_of(&tenant.id, self.backends.partitions) != partition
            {
                continue;
            }
            let before = now_ms() - i64::from(tenant.raw_retention_days) * DAY_MS;
            match self.raw.expire(&tenant.id, before, SWEEP_EVENTS).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(partition, tenant = %tenant.id, days = tenant.raw_retention_days, deleted, "expired raw events deleted")
                }
                Err(err) => {
                    tracing::warn!(partition, tenant = %tenant.id, error = %err, "deleting expired raw events failed")
                }
            }
        }
    }
}
