//! Dashboard latency (totals, a 30-day daily series, top 10 pages, top 10 sources) of the
//! largest and a median tenant, at 1 and 16 concurrent clients, through the gateway of a
//! `beacon standalone` with production settings, on shards as its own pipeline left them.
//! Baseline: the same report computed by DuckDB straight from the tenant's raw events, exact
//! and approximate distinct counts, at the same concurrency, same run. Beacon's answer is
//! checked against the raw scan's before any speed is printed.
//!
//! A month of history is older than live ingest accepts (72 h): its first 28 days go through
//! `ImportEvents`, the last two through `SendEvents`, as a merchant moving to Beacon would send
//! them. The reports beyond the dashboard (`filtered`) and the tenant-scale rows (`scale`) run
//! in process, on shards loaded the way reprocessing loads them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_aggregator::LOGIC_VERSION;
use beacon_aggregator::enrich::{referrer, url};
use beacon_core::meta::Tenant;
use beacon_proto::admin::v1::ListReprocessRequest;
use beacon_proto::admin::v1::admin_service_client::AdminServiceClient;
use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    Metric,
};
use beacon_query::Insights;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::ingest::bench_env;
use crate::procs::{Ready, Standalone, keep_if_failed};
use crate::send::{SendConfig, send_events};
use crate::tenants::{TenantKeys, create_tenants};
use crate::traffic::{TrafficConfig, TrafficModel};
use beacon_core::backends::EMBEDDED_PARTITIONS;

mod answer;
mod filtered;
mod live;
pub(crate) mod load;
mod rawscan;
pub mod recompute;
pub mod scale;

use crate::{Plan, Table};
use live::Live;
pub use load::Loader;
use rawscan::Distinct;

pub(crate) const DAY_MS: i64 = 86_400_000;
/// Days of the month sent live (`SendEvents`); the older ones are imported.
const LIVE_DAYS: usize = 2;
/// Rows of the raw scan's panels when checking an answer: all of them.
const ALL_ROWS: usize = 1_000_000_000;
/// How long a settled tenant stays unchanged, with no restatement open, before it is checked:
/// longer than the aggregator takes to turn late (imported) dates into a restatement.
const QUIET_FOR: Duration = Duration::from_secs(6);
/// How long the loaded answers may take to be counted and to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(3600);

/// One tenant's month, sent through the gateway and kept raw for the baseline.
struct Month {
    label: &'static str,
    keys: TenantKeys,
    events: usize,
    raw: duckdb::Connection,
}

/// The largest tenant's month loaded in process, for the reports beyond the dashboard.
struct Loaded {
    tenant: Tenant,
    raw: duckdb::Connection,
}

/// Measures the dashboards of the largest and the median tenant and adds rows.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let result = run_in(plan, table, dir.path()).await;
    keep_if_failed(dir, result)
}

/// [`run`] with its data and logs in `dir`.
async fn run_in(plan: &Plan, table: &mut Table, dir: &Path) -> anyhow::Result<()> {
    let mut model = TrafficModel::new(TrafficConfig {
        seed: plan.seed,
        tenants: plan.tenants,
        zipf_exponent: 1.1,
    });
    let now = beacon_core::time::now_ms();
    let range = month(now)?;
    let beacon = Standalone::start(&dir.join("data"), 0, &dashboard_env(Cache::On))?;
    let indexes = [0, plan.tenants / 2];
    let specs: Vec<_> = indexes
        .iter()
        .map(|&i| model.tenants()[i].clone())
        .collect();
    let keys = create_tenants(
        &beacon.ready.admin,
        &beacon.ready.admin_token,
        &specs,
        specs.len(),
    )
    .await?;
    let mut loader = tokio::task::block_in_place(|| Loader::new(dir))?;
    let largest = Loaded::new(&specs[0])?;
    let mut months = Vec::new();
    for (((index, spec), keys), (label, count)) in indexes.iter().zip(&specs).zip(keys).zip([
        ("largest", plan.largest_tenant_events),
        ("median", plan.median_tenant_events),
    ]) {
        let raw = rawscan::create()?;
        for day in 0..30usize {
            let per_day = count / 30 + usize::from(day < count % 30);
            let start = now - (30 - day as i64) * DAY_MS;
            let events = model.history(*index, per_day, start, start + DAY_MS);
            let arrived = jiff::Timestamp::now()
                .to_zoned_datetime(jiff::tz::TimeZone::get(&spec.time_zone)?)
                .date();
            // The processor and DuckDB block: keep them off the async workers.
            tokio::task::block_in_place(|| {
                rawscan::append(&raw, &events, &spec.time_zone, arrived)?;
                if *index == 0 {
                    largest.add(&mut loader, &events)?;
                }
                anyhow::Ok(())
            })?;
            send_month_day(&beacon.ready.gateway, &keys, events, day >= 30 - LIVE_DAYS).await?;
        }
        months.push(Month {
            label,
            keys,
            events: count,
            raw,
        });
    }
    tokio::task::block_in_place(|| loader.finish())?;
    for month in &months {
        settle(&beacon.ready, month, &range).await?;
    }
    let insights = Arc::new(Insights::new(Arc::new(loader.store)));
    filtered::run(
        &insights,
        &largest.tenant,
        &largest.raw,
        &range,
        (plan.largest_tenant_events, plan.query_requests),
        table,
    )
    .await?;
    let baselines = months
        .iter()
        .map(|month| baselines(plan, month, &range))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut beacon = beacon;
    for cache in [Cache::On, Cache::Off] {
        if cache == Cache::Off {
            // The same data, the query role keeping no answers.
            let _ = beacon.proc.terminate(Duration::from_secs(30));
            beacon = Standalone::start(&dir.join("data"), 0, &dashboard_env(cache))?;
        }
        // Live traffic keeps writing the shards while the dashboards are read; a seed of
        // its own keeps its event ids apart from the month's.
        let config = TrafficConfig {
            seed: plan.seed + 1_000 + cache as u64,
            tenants: plan.tenants,
            zipf_exponent: 1.1,
        };
        let tenants = indexes
            .iter()
            .zip(&months)
            .zip(&specs)
            .map(|((index, month), spec)| (*index, month.keys.clone(), spec.time_zone.clone()))
            .collect();
        let before = dashboard_totals(&beacon.ready.gateway, &months, &range).await?;
        let live = Live::start(
            &beacon.ready.gateway,
            config,
            tenants,
            LIVE_PER_SECOND,
            &range,
        )
        .await?;
        for (month, baseline) in months.iter().zip(&baselines) {
            measure(
                plan,
                &beacon.ready.gateway,
                month,
                &range,
                cache,
                baseline,
                table,
            )
            .await?;
        }
        let sent = live.stop().await?;
        // The dashboards' answers, kept or not, must come to count every live event.
        let expected: Vec<u64> = before.iter().zip(&sent).map(|(b, s)| b + s).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = dashboard_totals(&beacon.ready.gateway, &months, &range).await?;
            if now == expected {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{cache:?}: the dashboards count {now:?} events 60 s after the live traffic \
                 stopped, want {expected:?} ({before:?} before, {sent:?} sent live)"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// Events and bot events of each month's dashboard totals through the gateway.
async fn dashboard_totals(
    gateway: &str,
    months: &[Month],
    range: &DateRange,
) -> anyhow::Result<Vec<u64>> {
    let channel = Channel::from_shared(gateway.to_owned())?.connect().await?;
    let mut totals = Vec::with_capacity(months.len());
    for month in months {
        let answer = answer::fetch(&channel, &month.keys.read_key, range).await?;
        totals.push(answer.totals.events as u64 + answer.bot_events);
    }
    Ok(totals)
}

/// Production settings, but for the gateway's limit of queries per second and tenant (200),
/// which 16 clients asking without pause would hit: the rows measure latency, not the limit.
fn dashboard_env(cache: Cache) -> Vec<(&'static str, String)> {
    let mut env = bench_env(EMBEDDED_PARTITIONS);
    env.push(("BEACON_TENANT_QUERIES_PER_SECOND", "1000000".into()));
    if cache == Cache::Off {
        env.push(("BEACON_RESULT_CACHE", "0".into()));
        env.push(("BEACON_SETTLED_CACHE", "0".into()));
    }
    env
}

/// Whether the query role keeps answers until their shard changes, and sums of settled days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// `--result-cache` and `--settled-cache` at their defaults.
    On,
    /// `--result-cache 0 --settled-cache 0`: every answer computed from the rows.
    Off,
}

/// The raw scan's latency at 1 and 16 clients: exact distinct, then approximate.
type Baselines = Vec<(usize, [Histogram<u64>; 2])>;

fn baselines(plan: &Plan, month: &Month, range: &DateRange) -> anyhow::Result<Baselines> {
    let requests = plan.raw_requests;
    // DuckDB blocks: keep it off the async workers.
    tokio::task::block_in_place(|| {
        CLIENTS
            .iter()
            .map(|&clients| {
                let scan = |d| rawscan::latency(&month.raw, range, d, clients, requests);
                Ok((clients, [scan(Distinct::Exact)?, scan(Distinct::Approx)?]))
            })
            .collect()
    })
}

/// Live events per second each measured tenant receives while its dashboard is read.
const LIVE_PER_SECOND: usize = 100;

/// Concurrent clients of the dashboard rows.
const CLIENTS: [usize; 2] = [1, 16];

/// Sends one day of a tenant's month: imported, or live for the last days.
async fn send_month_day(
    gateway: &str,
    keys: &TenantKeys,
    events: Vec<Event>,
    live: bool,
) -> anyhow::Result<()> {
    let config = SendConfig {
        gateway: gateway.to_owned(),
        concurrency: 8,
        batch: 500,
        rate: None,
        http_share: 0.0,
        import: !live,
    };
    let count = events.len() as u64;
    let report = send_events(
        &config,
        events.into_iter().map(|e| (0, e)).collect(),
        std::slice::from_ref(keys),
    )
    .await?;
    anyhow::ensure!(
        report.acked == count,
        "tenant {}: {} of {count} events of a day of history were accepted ({} rejected, {} calls failed)",
        keys.id,
        report.acked,
        report.rejected,
        report.failed_calls
    );
    Ok(())
}

/// Waits until Beacon counts every event of `month` in `range`, no restatement of the tenant
/// is open, and its dashboard has stopped changing for [`QUIET_FOR`]; then checks that
/// dashboard against the raw scan's.
async fn settle(ready: &Ready, month: &Month, range: &DateRange) -> anyhow::Result<()> {
    let channel = Channel::from_shared(ready.gateway.clone())?
        .connect()
        .await?;
    let admin = Channel::from_shared(ready.admin.clone())?.connect().await?;
    let want = tokio::task::block_in_place(|| {
        rawscan::answer(&month.raw, range, Distinct::Exact, ALL_ROWS)
    })?;
    let expected = want.totals.events as u64 + want.bot_events;
    let deadline = Instant::now() + SETTLE_WITHIN;
    let mut quiet: Option<(Instant, answer::Answer)> = None;
    loop {
        let got = match answer::fetch(&channel, &month.keys.read_key, range).await {
            Ok(got) => got,
            // A replica further behind its rollup log than `--max-serve-lag` refuses reads
            // until it catches up, as it may while a month is restated.
            Err(err) if unavailable(&err) && Instant::now() < deadline => {
                tracing::warn!(tenant = %month.keys.id, error = %err, "dashboard unavailable while settling; asking again");
                quiet = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        let counted = got.totals.events as u64 + got.bot_events;
        let open = open_jobs(&admin, &ready.admin_token, &month.keys.id).await?;
        quiet = match quiet {
            Some((since, previous)) if counted == expected && open == 0 && previous == got => {
                if since.elapsed() >= QUIET_FOR {
                    return answer::check(&month.keys.id, &got, &want);
                }
                Some((since, previous))
            }
            _ => (counted == expected && open == 0).then(|| (Instant::now(), got.clone())),
        };
        if Instant::now() > deadline {
            answer::check(&month.keys.id, &got, &want)?;
            anyhow::bail!(
                "tenant {}: {counted} of {expected} events counted and {open} restatements open {SETTLE_WITHIN:?} after the events were sent",
                month.keys.id
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether `err` is a gRPC UNAVAILABLE answer.
fn unavailable(err: &anyhow::Error) -> bool {
    err.downcast_ref::<tonic::Status>()
        .is_some_and(|status| status.code() == tonic::Code::Unavailable)
}

/// Restatements of `tenant` pending or running.
async fn open_jobs(admin: &Channel, token: &str, tenant: &str) -> anyhow::Result<usize> {
    let request = crate::send::authorized(
        token,
        ListReprocessRequest {
            tenant_id: tenant.to_owned(),
        },
    )?;
    let jobs = AdminServiceClient::new(admin.clone())
        .list_reprocess(request)
        .await?
        .into_inner()
        .jobs;
    Ok(jobs
        .iter()
        .filter(|job| matches!(job.state.as_str(), "pending" | "running"))
        .count())
}

/// Times the dashboard of `month` through the gateway at 1 and 16 clients and adds rows beside
/// the raw scans at the same concurrency.
async fn measure(
    plan: &Plan,
    gateway: &str,
    month: &Month,
    range: &DateRange,
    cache: Cache,
    baselines: &Baselines,
    table: &mut Table,
) -> anyhow::Result<()> {
    let cache = match cache {
        Cache::On => "answers and settled days kept",
        Cache::Off => "every answer computed",
    };
    let cache = format!("{cache}, {LIVE_PER_SECOND} live events/s arriving");
    for (clients, [exact, approx]) in baselines {
        let beacon = through_gateway(
            gateway,
            &month.keys.read_key,
            range,
            *clients,
            (plan.query_requests, plan.dashboard_for),
        )
        .await?;
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (exact, approx) = (ms(exact, q), ms(approx, q));
            table.latency(
                &format!(
                    "dashboard {name} through the gateway ({cache}), {} tenant ({} events in 30 days), {clients} client(s)",
                    month.label, month.events
                ),
                ms(&beacon, q),
                &format!(
                    "raw-event scan {name}, DuckDB, {clients} client(s), the faster of approx_count_distinct ({approx:.1} ms) and exact distinct ({exact:.1} ms)"
                ),
                approx.min(exact),
            );
        }
    }
    Ok(())
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// At least `requests` dashboards through the gateway from `clients` concurrent clients, each
/// on its own connection, for at least `min_for` (so that live traffic changes the shards
/// during the measurement); microseconds per dashboard.
async fn through_gateway(
    gateway: &str,
    read_key: &str,
    range: &DateRange,
    clients: usize,
    (requests, min_for): (usize, Duration),
) -> anyhow::Result<Histogram<u64>> {
    let started = Instant::now();
    let per_client = requests.div_ceil(clients);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let channel = Channel::from_shared(gateway.to_owned())?.connect().await?;
        let (read_key, range) = (read_key.to_owned(), range.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut done = 0;
            while done < per_client || started.elapsed() < min_for {
                let asked = Instant::now();
                answer::fetch(&channel, &read_key, &range).await?;
                histogram.record(asked.elapsed().as_micros() as u64)?;
                done += 1;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut total = Histogram::<u64>::new(3)?;
    for result in futures::future::join_all(tasks).await {
        total.add(result??)?;
    }
    Ok(total)
}

/// The last 30 local days (UTC dates).
pub(crate) fn month(now: i64) -> anyhow::Result<DateRange> {
    let date = |ms: i64| -> anyhow::Result<String> {
        Ok(jiff::Timestamp::from_millisecond(ms)?
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .date()
            .to_string())
    };
    Ok(DateRange {
        start_date: date(now - 29 * DAY_MS)?,
        end_date: date(now)?,
    })
}

impl Loaded {
    /// An empty bare table for the tenant of `spec`.
    fn new(spec: &crate::traffic::TenantSpec) -> anyhow::Result<Self> {
        let raw = duckdb::Connection::open_in_memory()?;
        raw.execute_batch(
            "CREATE TABLE raw_events (ts BIGINT, local_date DATE, name VARCHAR, path VARCHAR, \
             source VARCHAR, visitor UBIGINT, country VARCHAR, plan VARCHAR, bot BOOLEAN)",
        )?;
        Ok(Self {
            tenant: load::tenant(spec),
            raw,
        })
    }

    /// Folds `events` into `loader` and appends them to the bare table. Blocks.
    fn add(&self, loader: &mut Loader, events: &[Event]) -> anyhow::Result<()> {
        let tz = beacon_core::time::time_zone(&self.tenant.time_zone)?;
        let mut agents = beacon_aggregator::enrich::Enricher::default();
        let mut appender = self.raw.appender("raw_events")?;
        for event in events {
            let event = loader.add(&self.tenant, event.clone())?;
            let page = url::parse(&event.url);
            let source = referrer::source(&event.referrer, &page.host, page.utm_source.as_deref());
            let (_, date) = beacon_core::time::hour_bucket(event.timestamp_ms, &tz)?;
            let plan = event.props.get("plan").and_then(|p| match &p.kind {
                Some(beacon_proto::ingest::v1::prop_value::Kind::StringValue(s)) => Some(s.clone()),
                _ => None,
            });
            let agent = agents.user_agent(&event.user_agent);
            let bot = beacon_aggregator::processor::is_bot(&agent, &event, LOGIC_VERSION);
            appender.append_row(duckdb::params![
                event.timestamp_ms,
                date,
                event.name,
                page.path,
                source.name,
                event.visitor,
                event.country,
                plan,
                bot
            ])?;
        }
        appender.flush()?;
        Ok(())
    }
}

/// `requests` dashboards from `clients` concurrent clients; microseconds per dashboard.
pub(crate) async fn dashboards(
    insights: &Arc<Insights>,
    tenant: &Tenant,
    range: &DateRange,
    clients: usize,
    requests: usize,
) -> anyhow::Result<Histogram<u64>> {
    let per_client = requests.div_ceil(clients);
    let tasks = (0..clients).map(|_| {
        let (insights, tenant, range) = (insights.clone(), tenant.clone(), range.clone());
        tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            for _ in 0..per_client {
                let started = Instant::now();
                dashboard(&insights, &tenant, &range).await?;
                histogram.record(started.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(histogram)
        })
    });
    let mut total = Histogram::<u64>::new(3)?;
    for result in futures::future::join_all(tasks).await {
        total.add(result??)?;
    }
    Ok(total)
}

/// The metrics of the dashboard's series and breakdowns, visitors first.
pub(crate) fn dashboard_metrics() -> Vec<i32> {
    vec![
        Metric::Visitors as i32,
        Metric::Visits as i32,
        Metric::Pageviews as i32,
        Metric::BounceRate as i32,
    ]
}

async fn dashboard(insights: &Insights, tenant: &Tenant, range: &DateRange) -> anyhow::Result<()> {
    let date_range = Some(range.clone());
    let metrics = dashboard_metrics();
    let (totals, series, pages, sources) = tokio::join!(
        insights.aggregate(
            tenant,
            GetAggregateRequest {
                date_range: date_range.clone(),
                metrics: vec![]
            }
        ),
        insights.timeseries(
            tenant,
            GetTimeseriesRequest {
                date_range: date_range.clone(),
                interval: Interval::Day as i32,
                metrics: metrics.clone()
            }
        ),
        insights.breakdown(
            tenant,
            GetBreakdownRequest {
                date_range: date_range.clone(),
                dimension: Dimension::Page as i32,
                metrics: metrics.clone(),
                limit: 10
            }
        ),
        insights.breakdown(
            tenant,
            GetBreakdownRequest {
                date_range,
                dimension: Dimension::Source as i32,
                metrics,
                limit: 10
            }
        ),
    );
    totals?;
    series?;
    pages?;
    sources?;
    Ok(())
}
