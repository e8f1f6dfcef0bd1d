//! Availability, on a redundant cluster (two processes of every role, one nats-server):
//! - the share of ingest calls and dashboard reads that fail while every process is restarted
//!   in turn with SIGTERM, beside the same load without restarts: at the first attempt, and
//!   after the documented client retry (UNAVAILABLE, or CANCELLED the client did not ask for,
//!   is tried again on the other gateway, with the same event ids, for up to 10 s);
//! - failover: from SIGKILL of the aggregator that owns a probe tenant's partition until a new
//!   event of that tenant is counted, beside the same probe without a kill.
//!
//! Every acknowledged event is checked to be counted exactly once before a figure is reported.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use beacon_core::backends::NATS_PARTITIONS;
use beacon_proto::ingest::v1::SendEventsRequest;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::freshness::Probe;
use crate::ingest::{bench_env, setup, totals_request, wait_counted};
use crate::procs::{Cluster, Role};
use crate::tenants::{TenantKeys, create_tenants};
use crate::traffic::{TenantSpec, TrafficModel};

use crate::{Plan, Table};

/// Longest a process may take to exit after SIGTERM, or to be ready after its start.
const RESTART_WITHIN: Duration = Duration::from_secs(60);
/// Events per ingest call.
const BATCH: usize = 50;
/// Ingest and read loops running at once.
const SENDERS: usize = 4;
const READERS: usize = 2;

/// Calls of one kind made during a phase.
#[derive(Debug, Default)]
struct Calls {
    made: AtomicU64,
    failed_first: AtomicU64,
    failed: AtomicU64,
    /// Why calls failed after the retry, each reason once.
    errors: Mutex<std::collections::BTreeSet<String>>,
}

impl Calls {
    fn record<T>(&self, attempts: u32, result: &Result<T, Status>) {
        self.made.fetch_add(1, Ordering::Relaxed);
        if attempts > 1 || result.is_err() {
            self.failed_first.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(status) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(format!("{:?}: {}", status.code(), status.message()));
        }
    }

    /// "first attempt % / after retry %".
    fn shares(&self) -> String {
        let made = self.made.load(Ordering::Relaxed).max(1) as f64;
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        let why = if errors.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                errors.iter().cloned().collect::<Vec<_>>().join("; ")
            )
        };
        format!(
            "{:.2} % / {:.2} % of {}{why}",
            100.0 * self.failed_first.load(Ordering::Relaxed) as f64 / made,
            100.0 * self.failed.load(Ordering::Relaxed) as f64 / made,
            self.made.load(Ordering::Relaxed)
        )
    }
}

/// One load phase: ingest and reads, and the events acknowledged.
#[derive(Default)]
struct Phase {
    ingest: Calls,
    reads: Calls,
    acked: AtomicU64,
}

/// The load: [`SENDERS`] ingest loops and [`READERS`] read loops through every gateway.
struct Load {
    gateways: Vec<Channel>,
    keys: Vec<TenantKeys>,
    model: Mutex<TrafficModel>,
}

impl Load {
    /// Runs the load until `stop`, recording into `phase`.
    async fn run(self: Arc<Self>, phase: Arc<Phase>, stop: Arc<AtomicBool>) {
        let mut loops = Vec::new();
        for n in 0..SENDERS {
            loops.push(tokio::spawn(self.clone().send_loop(
                n,
                phase.clone(),
                stop.clone(),
            )));
        }
        for n in 0..READERS {
            loops.push(tokio::spawn(self.clone().read_loop(
                n,
                phase.clone(),
                stop.clone(),
            )));
        }
        for handle in loops {
            let _ = handle.await;
        }
    }

    async fn send_loop(self: Arc<Self>, n: usize, phase: Arc<Phase>, stop: Arc<AtomicBool>) {
        let mut turn = n;
        while !stop.load(Ordering::Relaxed) {
            let mut groups: std::collections::BTreeMap<usize, Vec<_>> = Default::default();
            {
                let mut model = self.model.lock().unwrap_or_else(PoisonError::into_inner);
                let now = beacon_core::time::now_ms();
                for _ in 0..BATCH {
                    let (tenant, event) = model.next_event(now);
                    groups.entry(tenant).or_default().push(event);
                }
            }
            for (tenant, events) in groups {
                self.send_one(&mut turn, &self.keys[tenant].ingest_key, events, &phase)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `events` with the client retry and records the outcome.
    async fn send_one(
        &self,
        turn: &mut usize,
        key: &str,
        events: Vec<beacon_proto::ingest::v1::Event>,
        phase: &Phase,
    ) {
        let (attempts, result) = self
            .with_retry(turn, |channel| {
                let request = crate::send::authorized(
                    key,
                    SendEventsRequest {
                        events: events.clone(),
                    },
                );
                async move {
                    let request = request.map_err(|err| Status::internal(err.to_string()))?;
                    IngestServiceClient::new(channel)
                        .send_events(request)
                        .await
                        .map(|reply| u64::from(reply.get_ref().accepted))
                }
            })
            .await;
        if let Ok(accepted) = result {
            phase.acked.fetch_add(accepted, Ordering::Relaxed);
        }
        phase.ingest.record(attempts, &result);
    }

    async fn read_loop(self: Arc<Self>, n: usize, phase: Arc<Phase>, stop: Arc<AtomicBool>) {
        let mut turn = n;
        let mut tenant = n;
        while !stop.load(Ordering::Relaxed) {
            tenant = (tenant + 7) % self.keys.len();
            let key = &self.keys[tenant].read_key;
            let (attempts, result) = self
                .with_retry(&mut turn, |channel| {
                    let request = totals_request(key);
                    async move {
                        let request = request.map_err(|err| Status::internal(err.to_string()))?;
                        InsightsServiceClient::new(channel)
                            .get_aggregate(request)
                            .await
                            .map(|_| 0)
                    }
                })
                .await;
            phase.reads.record(attempts, &result);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The documented client retry ([`crate::retry`]) over the gateways, starting at the one
    /// after `turn` (which moves on by the calls made).
    async fn with_retry<F, Fut>(&self, turn: &mut usize, call: F) -> (u32, Result<u64, Status>)
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<u64, Status>>,
    {
        let (calls, result) = crate::retry::with_retry(&self.gateways, *turn + 1, call).await;
        *turn += calls as usize;
        if let Err(status) = &result {
            tracing::warn!(code = ?status.code(), error = status.message(), "call failed after the client retry");
        }
        (calls, result)
    }
}

/// Measures the availability rows on a fresh redundant cluster.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let mut cluster = Cluster::start_redundant(&bench_env(NATS_PARTITIONS))?;
    cluster.wait_all_ready(RESTART_WITHIN).await?;
    let (model, keys) = setup(plan, &cluster.admin(), &cluster.admin_token).await?;
    let gateways = cluster
        .gateways()
        .into_iter()
        .map(|url| Ok(Endpoint::from_shared(url)?.connect_lazy()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load = Arc::new(Load {
        gateways,
        keys: keys.clone(),
        model: Mutex::new(model),
    });

    // The calm phase lasts about as long as a rolling restart of eight processes takes.
    let calm = Arc::new(Phase::default());
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load.clone().run(calm.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(24)).await;
    stop.store(true, Ordering::Relaxed);
    running.await?;

    let restarting = Arc::new(Phase::default());
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load.clone().run(restarting.clone(), stop.clone()));
    let started = Instant::now();
    cluster.rolling_restart(RESTART_WITHIN).await?;
    let restart_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    running.await?;
    let acked = calm.acked.load(Ordering::Relaxed) + restarting.acked.load(Ordering::Relaxed);
    wait_counted(&cluster.gateway(), &keys, acked, Duration::from_secs(300)).await?;
    for (what, during, baseline) in [
        ("ingest calls", &restarting.ingest, &calm.ingest),
        ("dashboard reads", &restarting.reads, &calm.reads),
    ] {
        table.row(
            &format!(
                "{what} failing during a rolling SIGTERM restart of all 8 processes \
                 ({:.0} s; first attempt / after client retry)",
                restart_took.as_secs_f64()
            ),
            during.shares(),
            format!("{} (same load, no restarts)", baseline.shares()),
            "-".to_owned(),
        );
    }
    failover(&mut cluster, table).await
}

/// The failover row: a probe event sent right after SIGKILL of the aggregator that owns the
/// probe tenant's partition, until it is counted; beside the same probe without a kill.
async fn failover(cluster: &mut Cluster, table: &mut Table) -> anyhow::Result<()> {
    let spec = TenantSpec {
        id: "failover-probe".into(),
        time_zone: "UTC".into(),
        weight: 0.0,
    };
    let keys = create_tenants(
        &cluster.admin(),
        &cluster.admin_token,
        std::slice::from_ref(&spec),
        1,
    )
    .await?;
    let probe = Probe::connect(&cluster.gateway(), &keys[0]).await?;
    let baseline = probe.measure(5, None).await?;
    let partition = beacon_core::partition::partition_of(&spec.id, NATS_PARTITIONS);
    // While the aggregators balance their partitions, a lease may be free for a moment.
    let asked = Instant::now();
    let owner = loop {
        if let Some(owner) = cluster.lease_holder(partition).await? {
            break owner;
        }
        if asked.elapsed() > Duration::from_secs(30) {
            bail!("no aggregator holds partition {partition}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let killed = Instant::now();
    cluster.kill9_instance(Role::Aggregator, owner);
    probe.measure(1, None).await?;
    let took = killed.elapsed();
    cluster.restart_instance(Role::Aggregator, owner)?;
    table.latency(
        "failover: SIGKILL of a partition's aggregator until a new event of it is counted",
        took.as_secs_f64() * 1000.0,
        "ack to counted, no kill (p50)",
        baseline.value_at_quantile(0.5) as f64 / 1000.0,
    );
    Ok(())
}
