//! Rebuilding a lost shard: a replica that finds no watermark for a partition whose rollup log
//! was trimmed cannot replay what it lost from the log. It asks the aggregator for a restatement
//! of every tenant of the partition over its whole history (from the raw store), then follows
//! the log from its floor: each job's swap replaces whatever partial numbers the replica applied
//! before with the tenant's complete history.

use std::sync::Arc;

use beacon_core::jobs::{JobSpec, Jobs};
use beacon_core::meta::TenantStore;
use beacon_core::time::now_ms;
use beacon_proto::pipeline::v1::RestatementKind;

/// What a replica needs to ask for a rebuild.
#[derive(Clone)]
pub struct Rebuild {
    /// The tenants, to find the partition's.
    pub tenants: Arc<dyn TenantStore>,
    /// The jobs (they know the partition count).
    pub jobs: Jobs,
}

impl Rebuild {
    /// Asks for a whole-history restatement of every tenant of `partition`; returns how many
    /// were asked for. A tenant with a job running already keeps it (its own swap follows).
    pub(crate) async fn request(&self, partition: u32) -> beacon_core::Result<usize> {
        let mut asked = 0;
        for tenant in self.tenants.tenants().await? {
            if self.jobs.partition(&tenant.id) != partition {
                continue;
            }
            let spec = JobSpec {
                kind: RestatementKind::Reprocess,
                whole_history: true,
                ..JobSpec::reprocess("", "")
            };
            match self.jobs.create(&tenant.id, spec, now_ms()).await {
                Ok(job) => {
                    tracing::info!(partition, tenant = %tenant.id, job = %job.id, "shard rebuild requested");
                    asked += 1;
                }
                Err(beacon_core::Error::AlreadyExists(why)) => {
                    tracing::info!(partition, tenant = %tenant.id, why, "shard rebuild: a job runs already");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(asked)
    }
}
