//! End-to-end ingest: events in through the public gateway until their rollups are applied and
//! visible in queries, standalone and in cluster mode.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use beacon_core::backends::{EMBEDDED_PARTITIONS, NATS_PARTITIONS};
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::{DateRange, GetAggregateRequest, Metric};
use futures::StreamExt;
use tonic::transport::Channel;

use crate::procs::{Cluster, Standalone, keep_if_failed};
use crate::report::mib;
use crate::send::{SendConfig, send};
use crate::tenants::{TenantKeys, create_tenants};
use crate::traffic::{TrafficConfig, TrafficModel};
use crate::{Plan, Table};

/// Environment of the benchmarked processes: production defaults, quieter logs. `partitions`
/// is the count a new deployment of the mode takes ([`EMBEDDED_PARTITIONS`],
/// [`NATS_PARTITIONS`]): the harness's own, 4, is the tests'.
pub fn bench_env(partitions: u32) -> Vec<(&'static str, String)> {
    vec![
        ("BEACON_PARTITIONS", partitions.to_string()),
        ("BEACON_FLUSH_INTERVAL", "1s".into()),
        ("BEACON_SNAPSHOT_INTERVAL", "30s".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

/// The model's tenants, created through the admin listener at `admin`.
pub async fn setup(
    plan: &Plan,
    admin: &str,
    admin_token: &str,
) -> anyhow::Result<(TrafficModel, Vec<TenantKeys>)> {
    let model = TrafficModel::new(TrafficConfig {
        seed: plan.seed,
        tenants: plan.tenants,
        zipf_exponent: 1.1,
    });
    let keys = create_tenants(admin, admin_token, model.tenants(), 16).await?;
    Ok((model, keys))
}

/// Rates of one ingest run.
#[derive(Debug, Clone)]
pub struct Rates {
    /// Events/s from the first byte until the last acknowledgement.
    pub acknowledged: f64,
    /// Events/s from the first byte until every acknowledged event is counted in queries.
    pub applied: f64,
    /// Mean events per gRPC call, as sent (the sender asks for 100).
    pub events_per_call: f64,
    /// CPU seconds this process (the load generator) spent sending.
    pub generator_cpu_s: f64,
    /// CPU seconds of each loaded process from the first event sent until all were counted.
    pub loaded_cpu_s: Vec<(String, f64)>,
    /// Events acknowledged.
    pub events: u64,
    /// Count queries the harness made while waiting for the events to be counted.
    pub harness_queries: u64,
}

impl Rates {
    /// CPU seconds of all loaded processes together.
    fn loaded_total(&self) -> f64 {
        self.loaded_cpu_s.iter().map(|(_, cpu)| cpu).sum()
    }

    /// `cpu_s` per million acknowledged events.
    fn per_million(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e6 / self.events.max(1) as f64
    }
}

/// Sends the plan's events as fast as the gateway takes them and measures both rates, and the
/// CPU seconds of what `cpu` samples (name and CPU seconds so far, per process) from the first
/// event sent until every event is counted.
async fn drive(
    plan: &Plan,
    gateway: &str,
    admin: &str,
    admin_token: &str,
    cpu: impl Fn() -> Vec<(String, f64)>,
) -> anyhow::Result<Rates> {
    let (mut model, keys) = setup(plan, admin, admin_token).await?;
    let config = SendConfig {
        gateway: gateway.to_owned(),
        concurrency: plan.concurrency,
        batch: 100,
        rate: None,
        http_share: 0.02,
        import: false,
    };
    let started = Instant::now();
    let loaded_before = cpu();
    let cpu_before = own_cpu_seconds();
    let report = send(&config, &mut model, &keys, plan.events).await?;
    let generator_cpu_s = own_cpu_seconds() - cpu_before;
    if report.failed_calls > 0 {
        bail!("{} calls failed during the ingest run", report.failed_calls);
    }
    let acknowledged = report.acked as f64 / started.elapsed().as_secs_f64();
    let harness_queries = wait_each_counted(
        gateway,
        &keys,
        &report.acked_by_tenant,
        Duration::from_secs(1800),
    )
    .await?;
    let applied = report.acked as f64 / started.elapsed().as_secs_f64();
    let loaded_cpu_s = cpu()
        .into_iter()
        .map(|(name, after)| {
            let before = loaded_before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |(_, b)| *b);
            (name, after - before)
        })
        .collect();
    Ok(Rates {
        acknowledged,
        applied,
        events_per_call: report.events_per_call(),
        generator_cpu_s,
        loaded_cpu_s,
        events: report.acked,
        harness_queries,
    })
}

/// CPU seconds this process has used so far (0 when /proc cannot tell).
fn own_cpu_seconds() -> f64 {
    crate::procs::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// The load generator's CPU beside the CPU of what it loaded.
fn generator_row(table: &mut Table, mode: &str, rate: &Rates) {
    let loaded = rate.loaded_total();
    table.row(
        &format!("CPU seconds, load generator (beacon-bench sending, {mode} ingest run)"),
        format!("{:.1} s", rate.generator_cpu_s),
        format!("{loaded:.1} s (what it loaded, same run)"),
        format!("{:.2}x", rate.generator_cpu_s / loaded.max(0.01)),
    );
}

/// `beacon standalone` on a fresh folder; `floor` is nats-server's CPU per million events of
/// the bare JetStream publish.
pub async fn standalone(plan: &Plan, table: &mut Table, floor: f64) -> anyhow::Result<Rates> {
    let dir = tempfile::tempdir()?;
    let result = standalone_in(plan, table, floor, dir.path()).await;
    keep_if_failed(dir, result)
}

/// [`standalone`] with its data and logs in `dir`.
async fn standalone_in(
    plan: &Plan,
    table: &mut Table,
    floor: f64,
    dir: &Path,
) -> anyhow::Result<Rates> {
    let beacon = Standalone::start(&dir.join("data"), 0, &bench_env(EMBEDDED_PARTITIONS))?;
    let ready = &beacon.ready;
    let at_rest = beacon.proc.peak_rss().unwrap_or(0);
    let sample = || {
        vec![(
            "beacon standalone".to_owned(),
            beacon.proc.cpu_seconds().unwrap_or(0.0),
        )]
    };
    let rate = drive(
        plan,
        &ready.gateway,
        &ready.admin,
        &ready.admin_token,
        sample,
    )
    .await?;
    let rss = beacon.proc.peak_rss().unwrap_or(0);
    generator_row(table, "standalone", &rate);
    cpu_rows(table, "standalone", &rate, floor);
    table.row(
        "peak RSS, beacon standalone (all roles, ingest run)",
        mib(rss),
        format!("{} (the same process ready, before any load)", mib(at_rest)),
        format!("{:.2}x", rss as f64 / at_rest.max(1) as f64),
    );
    Ok(rate)
}

/// nats-server and one process per role; `floor` as for [`standalone`].
pub async fn cluster(plan: &Plan, table: &mut Table, floor: f64) -> anyhow::Result<Rates> {
    let cluster = Cluster::start_with(&bench_env(NATS_PARTITIONS))?;
    let nats_pid = cluster.nats.pid();
    let sample = || {
        let mut cpu: Vec<(String, f64)> = cluster
            .cpu_seconds()
            .into_iter()
            .map(|(role, cpu)| (format!("{} role", role.name()), cpu))
            .collect();
        cpu.push((
            "nats-server".to_owned(),
            nats_pid.and_then(crate::procs::cpu_seconds).unwrap_or(0.0),
        ));
        cpu
    };
    let rate = drive(
        plan,
        &cluster.gateway(),
        &cluster.admin(),
        &cluster.admin_token,
        sample,
    )
    .await?;
    generator_row(table, "cluster", &rate);
    cpu_rows(table, "cluster", &rate, floor);
    let nats = nats_pid.and_then(crate::procs::peak_rss).unwrap_or(0);
    for (role, rss) in cluster.peak_rss() {
        table.row(
            &format!("peak RSS, {} role (cluster ingest run)", role.name()),
            mib(rss),
            format!("{} (nats-server, same run)", mib(nats)),
            format!("{:.2}x", rss as f64 / nats.max(1) as f64),
        );
    }
    Ok(rate)
}

/// CPU seconds per million events of each loaded process, and of all together, beside
/// `floor`: nats-server's per million events of the bare JetStream publish, same run (storing
/// each event once, durably).
fn cpu_rows(table: &mut Table, mode: &str, rate: &Rates, floor: f64) {
    let mut rows = rate.loaded_cpu_s.clone();
    if rows.len() > 1 {
        rows.push(("all of them".to_owned(), rate.loaded_total()));
    }
    for (name, cpu) in rows {
        let figure = rate.per_million(cpu);
        table.row(
            &format!(
                "CPU seconds per million events, {name} ({mode} ingest run of {} events, first event to all counted, with the harness's {} count queries)",
                rate.events, rate.harness_queries
            ),
            format!("{figure:.1} s"),
            format!("{floor:.1} s (nats-server storing them, bare JetStream publish, same run)"),
            format!("{:.2}x", figure / floor.max(0.01)),
        );
    }
}

/// A read-key request for one tenant's totals around today.
pub fn totals_request(read_key: &str) -> anyhow::Result<tonic::Request<GetAggregateRequest>> {
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    let day = |d: jiff::civil::Date| d.to_string();
    let range = DateRange {
        start_date: day(today.yesterday()?),
        end_date: day(today.tomorrow()?),
    };
    crate::send::authorized(
        read_key,
        GetAggregateRequest {
            date_range: Some(range),
            metrics: vec![Metric::Events as i32],
        },
    )
}

/// Events plus bot events counted for a tenant around today.
pub async fn counted(channel: &Channel, read_key: &str) -> anyhow::Result<u64> {
    let reply = InsightsServiceClient::new(channel.clone())
        .get_aggregate(totals_request(read_key)?)
        .await?
        .into_inner();
    let events = reply
        .values
        .first()
        .map(|v| v.value.round() as u64)
        .unwrap_or(0);
    Ok(events + reply.bot_events)
}

/// Waits until the tenants' counted events add up to `expected`.
pub async fn wait_counted(
    gateway: &str,
    keys: &[TenantKeys],
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(gateway.to_owned())?.connect().await?;
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while Instant::now() < deadline {
        let counts = futures::stream::iter(keys.iter().map(|k| counted(&channel, &k.read_key)))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        seen = counts.into_iter().filter_map(Result::ok).sum::<u64>();
        if seen == expected {
            return Ok(());
        }
        if seen > expected {
            bail!("{seen} events counted but only {expected} were acknowledged");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("only {seen} of {expected} acknowledged events were counted after {timeout:?}")
}

/// Tenants asked at once while waiting for counts.
const ASKED_AT_ONCE: usize = 16;

/// Waits until each tenant counts exactly the events acknowledged for it (`expected`, in the
/// order of `keys`); the count queries it made. It asks only tenants not there yet, 16 at once,
/// and ends a round at the first 16 with one still short (the pipeline is behind: the others
/// are asked once it has caught up), at first every 250 ms and then every twentieth of the time
/// waited so far (at most every 5 s). Its queries add to the query role's and the gateway's CPU,
/// which the ingest rows report, so it asks as few as it can while the pipeline is behind. Its
/// timing error stays within about 5 %.
pub async fn wait_each_counted(
    gateway: &str,
    keys: &[TenantKeys],
    expected: &[u64],
    timeout: Duration,
) -> anyhow::Result<u64> {
    let channel = Channel::from_shared(gateway.to_owned())?.connect().await?;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut queries = 0u64;
    let mut waiting: Vec<(&TenantKeys, u64)> = keys
        .iter()
        .zip(expected.iter().copied())
        .filter(|(_, n)| *n > 0)
        .collect();
    while !waiting.is_empty() {
        let mut still = Vec::with_capacity(waiting.len());
        let mut last = Vec::new();
        let mut groups = waiting.chunks(ASKED_AT_ONCE);
        for group in groups.by_ref() {
            queries += group.len() as u64;
            let counts = futures::future::join_all(
                group.iter().map(|(k, _)| counted(&channel, &k.read_key)),
            )
            .await;
            for (&(keys, want), count) in group.iter().zip(counts) {
                match count {
                    Ok(n) if n == want => {}
                    Ok(n) if n > want => bail!(
                        "tenant {}: {n} events counted but only {want} were acknowledged",
                        keys.id
                    ),
                    other => {
                        last.push(format!("{}: {other:?} of {want}", keys.id));
                        still.push((keys, want));
                    }
                }
            }
            if !still.is_empty() {
                break;
            }
        }
        still.extend(groups.flatten().copied());
        waiting = still;
        if Instant::now() > deadline {
            let missing: u64 = waiting.iter().map(|(_, n)| n).sum();
            bail!(
                "{} tenants (of {missing} acknowledged events) were not fully counted after {timeout:?}: {}",
                waiting.len(),
                last.join(", ")
            );
        }
        if !waiting.is_empty() {
            let pause =
                (started.elapsed() / 20).clamp(Duration::from_millis(250), Duration::from_secs(5));
            tokio::time::sleep(pause).await;
        }
    }
    Ok(queries)
}
