//! Query latency of a merchant dashboard (totals, a 30-day daily series, top 10 pages, top 10
//! sources) for the largest and a median tenant, at 1 and 16 concurrent clients. Baseline: the
//! same report computed by DuckDB directly over the tenant's raw events, same run.
//!
//! The month of history is older than live ingest accepts (72 h), so it is loaded the way
//! reprocessing loads it: the aggregator's `Processor` over the events, applied to the query
//! role's DuckDB shards.

use std::sync::Arc;
use std::time::Instant;

use beacon_aggregator::Processor;
use beacon_aggregator::enrich::{referrer, url};
use beacon_core::meta::Tenant;
use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    Metric,
};
use beacon_proto::pipeline::v1::LoggedEvent;
use beacon_query::{DuckShardStore, Insights, ShardStore};
use hdrhistogram::Histogram;

use crate::traffic::{TrafficConfig, TrafficModel};
use crate::{Plan, Table};

const DAY_MS: i64 = 86_400_000;

/// One tenant's month of history, loaded into a shard and into a raw DuckDB table.
struct Loaded {
    tenant: Tenant,
    events: usize,
    raw: duckdb::Connection,
}

/// Measures dashboard latency for the largest and the median tenant and adds rows.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ShardStore> = Arc::new(DuckShardStore::new(dir.path().join("shards"), 64)?);
    let mut model = TrafficModel::new(TrafficConfig {
        seed: plan.seed,
        tenants: plan.tenants,
        zipf_exponent: 1.1,
    });
    let now = beacon_core::time::now_ms();
    let largest = load(&mut model, &store, 0, plan.largest_tenant_events, now).await?;
    let median = load(
        &mut model,
        &store,
        plan.tenants / 2,
        plan.median_tenant_events,
        now,
    )
    .await?;
    let insights = Arc::new(Insights::new(store));
    let range = month(now)?;
    for (label, loaded) in [("largest", &largest), ("median", &median)] {
        // DuckDB blocks: keep it off the async workers.
        let baseline = tokio::task::block_in_place(|| {
            raw_scan(&loaded.raw, &range, plan.query_requests.min(50))
        })?;
        for clients in [1usize, 16] {
            let latency = dashboards(
                &insights,
                &loaded.tenant,
                &range,
                clients,
                plan.query_requests,
            )
            .await?;
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                table.latency(
                    &format!(
                        "dashboard {name}, {label} tenant ({} events in 30 days), {clients} client(s)",
                        loaded.events
                    ),
                    latency.value_at_quantile(q) as f64 / 1000.0,
                    &format!("raw-event scan {name}, DuckDB, 1 client"),
                    baseline.value_at_quantile(q) as f64 / 1000.0,
                );
            }
        }
    }
    Ok(())
}

/// The last 30 local days (UTC dates).
fn month(now: i64) -> anyhow::Result<DateRange> {
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

fn logged(tenant: &Tenant, event: Event) -> LoggedEvent {
    let visitor = visitor_id(&event.client_ip, &event.user_agent);
    LoggedEvent {
        tenant_id: tenant.id.clone(),
        event_id: event.id,
        name: event.name,
        timestamp_ms: event
            .timestamp
            .map(|t| t.seconds * 1000)
            .unwrap_or_default(),
        received_ms: 0,
        url: event.url,
        referrer: event.referrer,
        title: event.title,
        user_agent: event.user_agent,
        props: event.props,
        revenue: event.revenue,
        country: String::new(),
        region: String::new(),
        city: String::new(),
        visitor,
        time_zone: tenant.time_zone.clone(),
    }
}

/// A stable 64-bit visitor id for the benchmark (ingest uses a salted keyed hash).
fn visitor_id(ip: &str, user_agent: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in ip.bytes().chain([0]).chain(user_agent.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Generates `count` events of tenant `index` over the last 30 days, folds them through the
/// aggregator's processor into the shard store, and loads them raw into an in-memory DuckDB.
async fn load(
    model: &mut TrafficModel,
    store: &Arc<dyn ShardStore>,
    index: usize,
    count: usize,
    now: i64,
) -> anyhow::Result<Loaded> {
    let spec = model.tenants()[index].clone();
    let tenant = Tenant {
        id: spec.id.clone(),
        name: spec.id.clone(),
        time_zone: spec.time_zone.clone(),
    };
    let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
    let events = model.history(index, count, now - 30 * DAY_MS, now);
    // DuckDB and the processor block: run them off the async workers, waiting for the shard
    // store's applies from there.
    let runtime = tokio::runtime::Handle::current();
    let raw = tokio::task::block_in_place(|| -> anyhow::Result<duckdb::Connection> {
        let raw = duckdb::Connection::open_in_memory()?;
        raw.execute_batch(
            "CREATE TABLE raw_events (ts BIGINT, local_date DATE, name VARCHAR, path VARCHAR, source VARCHAR, visitor UBIGINT)",
        )?;
        let mut processor = Processor::new();
        let mut seq = 0u64;
        {
            let mut appender = raw.appender("raw_events")?;
            for (n, event) in events.into_iter().enumerate() {
                let event = logged(&tenant, event);
                let page = url::parse(&event.url);
                let source =
                    referrer::source(&event.referrer, &page.host, page.utm_source.as_deref());
                let (_, date) = beacon_core::time::hour_bucket(event.timestamp_ms, &tz)?;
                appender.append_row(duckdb::params![
                    event.timestamp_ms,
                    date,
                    event.name,
                    page.path,
                    source.name,
                    event.visitor
                ])?;
                processor.process(&event, true)?;
                if (n + 1) % 50_000 == 0 {
                    seq += 1;
                    runtime.block_on(apply(store, &mut processor, seq))?;
                }
            }
            appender.flush()?;
        }
        runtime.block_on(apply(store, &mut processor, seq + 1))?;
        Ok(raw)
    })?;
    Ok(Loaded {
        tenant,
        events: count,
        raw,
    })
}

async fn apply(
    store: &Arc<dyn ShardStore>,
    processor: &mut Processor,
    seq: u64,
) -> anyhow::Result<()> {
    for rollup in processor.take_rollups() {
        store.apply(0, seq, Arc::new(rollup)).await?;
    }
    Ok(())
}

/// `requests` dashboards from `clients` concurrent clients; microseconds per dashboard.
async fn dashboards(
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

async fn dashboard(insights: &Insights, tenant: &Tenant, range: &DateRange) -> anyhow::Result<()> {
    let date_range = Some(range.clone());
    let metrics = vec![
        Metric::Visitors as i32,
        Metric::Visits as i32,
        Metric::Pageviews as i32,
        Metric::BounceRate as i32,
    ];
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

/// The same report straight from raw events: totals, daily series, top pages, top sources.
fn raw_scan(
    raw: &duckdb::Connection,
    range: &DateRange,
    requests: usize,
) -> anyhow::Result<Histogram<u64>> {
    let filter = format!(
        "local_date BETWEEN DATE '{}' AND DATE '{}'",
        range.start_date, range.end_date
    );
    let queries = [
        format!(
            "SELECT count(DISTINCT visitor), count(*) FILTER (name = 'pageview'), count(*) FROM raw_events WHERE {filter}"
        ),
        format!(
            "SELECT local_date, count(DISTINCT visitor), count(*) FILTER (name = 'pageview') FROM raw_events WHERE {filter} GROUP BY 1 ORDER BY 1"
        ),
        format!(
            "SELECT path, count(DISTINCT visitor) AS v, count(*) FROM raw_events WHERE {filter} AND name = 'pageview' GROUP BY 1 ORDER BY v DESC LIMIT 10"
        ),
        format!(
            "SELECT source, count(DISTINCT visitor) AS v, count(*) FROM raw_events WHERE {filter} GROUP BY 1 ORDER BY v DESC LIMIT 10"
        ),
    ];
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..requests {
        let started = Instant::now();
        for sql in &queries {
            let mut statement = raw.prepare_cached(sql)?;
            let mut rows = statement.query([])?;
            while rows.next()?.is_some() {}
        }
        histogram.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(histogram)
}
