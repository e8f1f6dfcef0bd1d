//! Freshness: time from an acknowledged event to its appearance in a query, idle and under a
//! steady load.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::{Event, SendEventsRequest};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::ingest::{bench_env, counted, setup};
use crate::procs::{Standalone, keep_if_failed};
use crate::send::{SendConfig, send};
use crate::tenants::{TenantKeys, create_tenants};
use crate::traffic::TenantSpec;
use crate::{Plan, Table};
use beacon_core::backends::EMBEDDED_PARTITIONS;

/// Measures idle and loaded freshness on a fresh `beacon standalone` and adds four rows.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let result = run_in(plan, table, dir.path()).await;
    keep_if_failed(dir, result)
}

/// [`run`] with its data and logs in `dir`.
async fn run_in(plan: &Plan, table: &mut Table, dir: &Path) -> anyhow::Result<()> {
    let beacon = Standalone::start(&dir.join("data"), 0, &bench_env(EMBEDDED_PARTITIONS))?;
    let (gateway, admin, token) = (
        beacon.ready.gateway.clone(),
        beacon.ready.admin.clone(),
        beacon.ready.admin_token.clone(),
    );
    let (mut model, keys) = setup(plan, &admin, &token).await?;
    let probe_spec = TenantSpec {
        id: "probe".into(),
        time_zone: "UTC".into(),
        weight: 0.0,
    };
    let probe_keys = create_tenants(&admin, &token, std::slice::from_ref(&probe_spec), 1).await?;
    let probe = Probe::connect(&gateway, &probe_keys[0]).await?;

    let idle = probe.stream(plan.probes, None).await?;
    let config = SendConfig {
        gateway: gateway.clone(),
        concurrency: plan.concurrency,
        batch: 100,
        rate: Some(plan.rate),
        http_share: 0.02,
        import: false,
    };
    let total = plan.rate * plan.freshness_for.as_secs();
    let load = send(&config, &mut model, &keys, total);
    let probing = probe.stream(usize::MAX, Some(plan.freshness_for));
    let (report, loaded) = tokio::join!(load, probing);
    let (report, loaded) = (report?, loaded?);
    let achieved = report.acked as f64 / report.elapsed.as_secs_f64();
    for (quantile, name) in [(0.5, "p50"), (0.99, "p99")] {
        table.latency(
            &format!(
                "freshness {name}, ack to visible in a query, under {achieved:.0} events/s ({} probes)",
                loaded.len()
            ),
            loaded.value_at_quantile(quantile) as f64 / 1000.0,
            &format!("idle {name}, same process, {} probes", idle.len()),
            idle.value_at_quantile(quantile) as f64 / 1000.0,
        );
    }
    table.latency(
        &format!(
            "ingest call latency p99 under the freshness load ({:.1} events per gRPC call)",
            report.events_per_call()
        ),
        report.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        "p50 of the same calls",
        report.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
    );
    Ok(())
}

/// Time between two probes of [`Probe::stream`]: enough probes for a p99 (500 in under 8 s)
/// at a load (67 events/s) that changes nothing the loaded phase measures.
const PROBE_EVERY: Duration = Duration::from_millis(15);
/// How often [`Probe::stream`] asks for the probe tenant's count.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long an acknowledged probe may take to be counted.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// Sends events to a dedicated tenant and measures when a query counts them.
#[derive(Clone)]
pub(crate) struct Probe {
    channel: Channel,
    keys: TenantKeys,
    /// Probes acknowledged so far, by this probe and its clones.
    acknowledged: Arc<AtomicU64>,
}

impl Probe {
    /// A probe of the tenant of `keys` through `gateway`.
    pub(crate) async fn connect(gateway: &str, keys: &TenantKeys) -> anyhow::Result<Self> {
        Ok(Self {
            channel: Channel::from_shared(gateway.to_owned())?.connect().await?,
            keys: keys.clone(),
            acknowledged: Arc::default(),
        })
    }

    /// Up to `count` probes, one at a time, or as many as fit in `window`; microseconds from ack
    /// to visible. The tenant must get no events but this probe's: a probe is visible once the
    /// tenant counts every probe acknowledged so far, not when its count merely rose, which a
    /// read from another query replica that lagged behind can show.
    pub(crate) async fn measure(
        &self,
        count: usize,
        window: Option<Duration>,
    ) -> anyhow::Result<Histogram<u64>> {
        let mut histogram = Histogram::<u64>::new(3)?;
        let started = Instant::now();
        for n in 0..count {
            if window.is_some_and(|w| started.elapsed() >= w) {
                break;
            }
            let acked = self.send(n).await?;
            let total = self.acknowledged.load(Ordering::Acquire);
            let deadline = acked + Duration::from_secs(60);
            loop {
                let now = counted(&self.channel, &self.keys.read_key).await?;
                if now >= total {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("probe event {n} not visible 60 s after its acknowledgement");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            histogram.record(acked.elapsed().as_micros() as u64)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(histogram)
    }

    /// Up to `count` probes, one every [`PROBE_EVERY`] without waiting for the previous one to
    /// be counted, or as many as fit in `window`; microseconds from ack to visible. The count
    /// is polled every [`POLL_EVERY`]; when it rises from `a` to `b`, the probes acknowledged
    /// `a`-th to `b`-th (in acknowledgement order) became visible then.
    pub(crate) async fn stream(
        &self,
        count: usize,
        window: Option<Duration>,
    ) -> anyhow::Result<Histogram<u64>> {
        let start = counted(&self.channel, &self.keys.read_key).await?;
        // How many probes were acknowledged, once every call has answered.
        let acked = AtomicUsize::new(usize::MAX);
        let sending = async {
            let started = Instant::now();
            let mut calls = tokio::task::JoinSet::new();
            let mut ticks = tokio::time::interval(PROBE_EVERY);
            for n in 0..count {
                if window.is_some_and(|w| started.elapsed() >= w) {
                    break;
                }
                ticks.tick().await;
                let probe = self.clone();
                calls.spawn(async move { probe.send(n).await });
            }
            let mut acks = Vec::with_capacity(calls.len());
            let mut failed = None;
            while let Some(ack) = calls.join_next().await {
                match ack.map_err(anyhow::Error::from).and_then(|ack| ack) {
                    Ok(at) => acks.push(at),
                    Err(err) => failed = Some(err),
                }
            }
            // The poller stops once this many probes are visible: none after a failure.
            acked.store(
                if failed.is_some() { 0 } else { acks.len() },
                Ordering::Release,
            );
            if let Some(err) = failed {
                return Err(err.context("a freshness probe failed"));
            }
            acks.sort_unstable();
            anyhow::Ok(acks)
        };
        let polling = async {
            let mut visible = Vec::new();
            let mut seen = start;
            let mut settled_at: Option<Instant> = None;
            loop {
                let now = counted(&self.channel, &self.keys.read_key).await?;
                let at = Instant::now();
                for _ in seen..now {
                    visible.push(at);
                }
                seen = seen.max(now);
                let expected = acked.load(Ordering::Acquire);
                if visible.len() >= expected {
                    return anyhow::Ok(visible);
                }
                if expected != usize::MAX && settled_at.get_or_insert(at).elapsed() > VISIBLE_WITHIN
                {
                    return anyhow::Ok(visible);
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        };
        let (acks, visible) = tokio::join!(sending, polling);
        let acks = acks?;
        let visible = visible?;
        anyhow::ensure!(
            visible.len() >= acks.len(),
            "{} of {} acknowledged probes were counted {VISIBLE_WITHIN:?} after the last ack",
            visible.len(),
            acks.len()
        );
        let mut histogram = Histogram::<u64>::new(3)?;
        for (acked, seen) in acks.iter().zip(&visible) {
            histogram.record(seen.saturating_duration_since(*acked).as_micros() as u64)?;
        }
        Ok(histogram)
    }

    async fn send(&self, n: usize) -> anyhow::Result<Instant> {
        let event = Event {
            id: format!("probe-{}-{n}", beacon_core::time::now_ms()),
            name: "pageview".into(),
            url: "https://probe.example/".into(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
                .into(),
            client_ip: "198.51.100.7".into(),
            ..Default::default()
        };
        let request = crate::send::authorized(
            &self.keys.ingest_key,
            SendEventsRequest {
                events: vec![event],
            },
        )?;
        let reply = IngestServiceClient::new(self.channel.clone())
            .send_events(request)
            .await?
            .into_inner();
        if reply.accepted != 1 {
            bail!("probe event {n} was not accepted: {:?}", reply.results);
        }
        self.acknowledged.fetch_add(1, Ordering::AcqRel);
        Ok(Instant::now())
    }
}
