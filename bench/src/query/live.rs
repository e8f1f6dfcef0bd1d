//! Live traffic to the measured tenants while their dashboards are timed: a merchant's
//! dashboard is read while its site keeps sending, so its shard is written every flush and
//! no answer stays true for long.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Duration;

use beacon_proto::ingest::v1::SendEventsRequest;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::insights::v1::DateRange;
use jiff::civil::Date;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::tenants::TenantKeys;
use crate::traffic::{TrafficConfig, TrafficModel};

/// Time between two batches of a tenant.
const EVERY: Duration = Duration::from_millis(100);

/// Events sent live until stopped.
pub(super) struct Live {
    stop: Arc<AtomicBool>,
    /// Events accepted whose local date is in the measured range, per tenant.
    sent: Arc<[AtomicU64]>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Live {
    /// Sends `per_second` events a second to each tenant of `tenants` (model index, keys and
    /// time zone) through `gateway`, drawn from a model of `config`, counting those of local
    /// dates in `range`.
    pub(super) async fn start(
        gateway: &str,
        config: TrafficConfig,
        tenants: Vec<(usize, TenantKeys, String)>,
        per_second: usize,
        range: &DateRange,
    ) -> anyhow::Result<Self> {
        let (first, last): (Date, Date) = (range.start_date.parse()?, range.end_date.parse()?);
        let zones = tenants
            .iter()
            .map(|(_, _, zone)| jiff::tz::TimeZone::get(zone))
            .collect::<Result<Vec<_>, _>>()?;
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
                    for (((index, keys, _), zone), sent) in
                        tenants.iter().zip(&zones).zip(sent.iter())
                    {
                        let events = model.history(*index, per_batch, now - 1_000, now);
                        let in_range = events
                            .iter()
                            .filter_map(crate::traffic::timestamp_ms)
                            .filter_map(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                            .map(|ts| ts.to_zoned_datetime(zone.clone()).date())
                            .filter(|date| (first..=last).contains(date))
                            .count() as u64;
                        let count = events.len();
                        let request = crate::send::authorized(
                            &keys.ingest_key,
                            SendEventsRequest { events },
                        )?;
                        let reply = IngestServiceClient::new(channel.clone())
                            .send_events(request)
                            .await?
                            .into_inner();
                        anyhow::ensure!(
                            reply.accepted as usize == count,
                            "{} of {count} live events accepted: {:?}",
                            reply.accepted,
                            reply.results.iter().find(|r| !r.error.is_empty())
                        );
                        sent.fetch_add(in_range, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
        });
        Ok(Self { stop, sent, task })
    }

    /// Stops sending; the events accepted in the range, per tenant in the order given.
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
