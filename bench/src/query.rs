//! Query latency of a merchant dashboard (totals, a 30-day daily series, top 10 pages, top 10
//! sources) for the largest and a median tenant, at 1 and 16 concurrent clients. Baseline: the
//! same report computed by DuckDB directly over the tenant's raw events, same run.
//!
//! The month of history is older than live ingest accepts (72 h), so it is loaded the way
//! reprocessing loads it: the aggregator's `Processor` over the events, applied to the query
//! role's DuckDB shards.

use std::sync::Arc;
use std::time::Instant;

use beacon_aggregator::LOGIC_VERSION;
use beacon_aggregator::enrich::{referrer, url};
use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    DateRange, Dimension, GetAggregateRequest, GetBreakdownRequest, GetTimeseriesRequest, Interval,
    Metric,
};
use beacon_query::Insights;
use hdrhistogram::Histogram;

use crate::traffic::{TrafficConfig, TrafficModel};

mod filtered;
pub(crate) mod load;
pub mod scale;

use crate::{Plan, Table};
pub use load::Loader;

pub(crate) const DAY_MS: i64 = 86_400_000;

/// One tenant's month of history, loaded into a shard and into a raw DuckDB table.
struct Loaded {
    tenant: Tenant,
    events: usize,
    raw: duckdb::Connection,
}

/// Measures dashboard latency for the largest and the median tenant and adds rows.
pub async fn run(plan: &Plan, table: &mut Table) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut model = TrafficModel::new(TrafficConfig {
        seed: plan.seed,
        tenants: plan.tenants,
        zipf_exponent: 1.1,
    });
    let now = beacon_core::time::now_ms();
    // The processor and DuckDB block: keep them off the async workers.
    let (loader, largest, median) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let mut loader = Loader::new(dir.path())?;
        let largest = load(&mut model, &mut loader, 0, plan.largest_tenant_events, now)?;
        let median = load(
            &mut model,
            &mut loader,
            plan.tenants / 2,
            plan.median_tenant_events,
            now,
        )?;
        loader.finish()?;
        Ok((loader, largest, median))
    })?;
    let insights = Arc::new(Insights::new(Arc::new(loader.store)));
    let range = month(now)?;
    filtered::run(
        &insights,
        &largest.tenant,
        &largest.raw,
        &range,
        (largest.events, plan.query_requests),
        table,
    )
    .await?;
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

/// Generates `count` events of tenant `index` over the last 30 days, a day at a time, folds
/// them into `loader`, and loads them raw into an in-memory DuckDB table.
fn load(
    model: &mut TrafficModel,
    loader: &mut Loader,
    index: usize,
    count: usize,
    now: i64,
) -> anyhow::Result<Loaded> {
    let tenant = load::tenant(&model.tenants()[index]);
    let tz = beacon_core::time::time_zone(&tenant.time_zone)?;
    let raw = duckdb::Connection::open_in_memory()?;
    raw.execute_batch(
        "CREATE TABLE raw_events (ts BIGINT, local_date DATE, name VARCHAR, path VARCHAR, \
         source VARCHAR, visitor UBIGINT, country VARCHAR, plan VARCHAR, bot BOOLEAN)",
    )?;
    let mut agents = beacon_aggregator::enrich::Enricher::default();
    {
        let mut appender = raw.appender("raw_events")?;
        for day in 0..30usize {
            let per_day = count / 30 + usize::from(day < count % 30);
            let start = now - (30 - day as i64) * DAY_MS;
            for event in model.history(index, per_day, start, start + DAY_MS) {
                let event = loader.add(&tenant, event)?;
                let page = url::parse(&event.url);
                let source =
                    referrer::source(&event.referrer, &page.host, page.utm_source.as_deref());
                let (_, date) = beacon_core::time::hour_bucket(event.timestamp_ms, &tz)?;
                let plan = event.props.get("plan").and_then(|p| match &p.kind {
                    Some(beacon_proto::ingest::v1::prop_value::Kind::StringValue(s)) => {
                        Some(s.clone())
                    }
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
        }
        appender.flush()?;
    }
    Ok(Loaded {
        tenant,
        events: count,
        raw,
    })
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
