//! Live traffic to the measured tenants while their dashboards are timed: a merchant's
//! dashboard is read while its site keeps sending, so its shard is written every flush and
//! no answer stays true for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::ingest::counted;
use std::time::Duration;

use beacon_proto::ingest::v1::SendEventsRequest;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::tenants::TenantKeys;
use crate::traffic::{TrafficConfig, TrafficModel};

/// Time between two batches of a tenant.
const EVERY: Duration = Duration::from_millis(100);

/// Events sent live until stopped.
pub(super) struct Live {
    stop: Arc<AtomicBool>,
    /// Events accepted, per tenant.
    sent: Arc<[AtomicU64]>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Live {
    /// Sends `per_second` events a second to each tenant of `tenants` (model index and keys)
    /// through `gateway`, drawn from a model of `config`.
    pub(super) async fn start(
        gateway: &str,
        config: TrafficConfig,
        tenants: Vec<(usize, TenantKeys)>,
        per_second: usize,
    ) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(gateway.to_owned())?.connect().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<[AtomicU64]> = tenants.iter().map(|_| AtomicU64::new(0)).collect();
        let per_batch = (per_second / 10).max(1);
        let task = tokio::spawn({
            let (stop, sent) = (stop.clone(), sent.clone());
            async move {
                let mut model = TrafficModel::new(config);
                let mut ticks = tokio::time::interval(EVERY);
                while !stop.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    let now = beacon_core::time::now_ms();
                    for ((index, keys), sent) in tenants.iter().zip(sent.iter()) {
                        let events = model.history(*index, per_batch, now - 1_000, now);
                        let request = crate::send::authorized(
                            &keys.ingest_key,
                            SendEventsRequest { events },
                        )?;
                        let reply = IngestServiceClient::new(channel.clone())
                            .send_events(request)
                            .await?
                            .into_inner();
                        sent.fetch_add(u64::from(reply.accepted), Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        });
        Ok(Self { stop, sent, task })
    }

    /// Stops sending; the events accepted, per tenant in the order given.
    pub(super) async fn stop(self) -> anyhow::Result<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await??;
        Ok(self
            .sent
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect())
    }
}

/// The events (bots included) each tenant of `keys` counts around today.
pub(super) async fn counts(gateway: &str, keys: &[TenantKeys]) -> anyhow::Result<Vec<u64>> {
    let channel = Channel::from_shared(gateway.to_owned())?.connect().await?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.push(counted(&channel, &key.read_key).await?);
    }
    Ok(out)
}
