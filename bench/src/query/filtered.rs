//! Reports beyond the dashboard on the largest tenant: a filtered report (country = DE, top 10
//! pages), which scans the event store, and a props breakdown (signup plans), from the rollups;
//! each beside the same report unfiltered and beside DuckDB over the raw events. Every answer
//! is checked against the raw scan's before a speed is reported.

use std::collections::BTreeMap;
use std::time::Instant;

use beacon_core::meta::Tenant;
use beacon_proto::insights::v1::{
    Condition, DateRange, Dimension, Filter, Metric, Operator, ReportDimension, RunReportRequest,
    RunReportResponse, filter, report_dimension,
};
use beacon_query::Insights;
use hdrhistogram::Histogram;

use crate::Table;

/// The country the filtered report keeps.
const COUNTRY: &str = "DE";
/// Rows of each report.
const TOP: usize = 10;
/// Largest relative error allowed on sketched visitor counts (the HLL sketches' stated error
/// is 1 %; the breakdown's values are small, where it is exact or nearly).
const VISITOR_ERROR: f64 = 0.02;

/// Rows of a report: (value, visitors, events or pageviews), in order.
type Rows = Vec<(String, u64, u64)>;

/// Measures the reports on `tenant` at one client and adds their rows to `table`.
pub(super) async fn run(
    insights: &Insights,
    tenant: &Tenant,
    raw: &duckdb::Connection,
    range: &DateRange,
    (events, requests): (usize, usize),
    table: &mut Table,
) -> anyhow::Result<()> {
    let label =
        |what: &str| format!("{what}, largest tenant ({events} events in 30 days), 1 client");
    let filtered = request(range, Some(by_page()), Some(country()), Metric::Pageviews);
    let unfiltered = request(range, Some(by_page()), None, Metric::Pageviews);
    let props = request(range, Some(by_plan()), None, Metric::Events);
    let raw_pages = format!(
        "SELECT path, count(DISTINCT visitor) AS v, count(*) FILTER (name = 'pageview') \
         FROM raw_events WHERE {} AND country = '{COUNTRY}' AND NOT bot AND name <> 'engagement' \
         GROUP BY path ORDER BY v DESC, path LIMIT {TOP}",
        dates(range)
    );
    let raw_plans = format!(
        "SELECT plan, count(DISTINCT visitor) AS v, count(*) FROM raw_events WHERE {} \
         AND plan IS NOT NULL AND NOT bot GROUP BY plan ORDER BY v DESC, plan LIMIT {TOP}",
        dates(range)
    );

    // The answers first: exact counts equal, visitors within the sketches' error.
    let (want_pages, want_plans) = tokio::task::block_in_place(|| {
        anyhow::Ok((scan_rows(raw, &raw_pages)?, scan_rows(raw, &raw_plans)?))
    })?;
    let got = rows(&insights.report(tenant, filtered.clone()).await?);
    check("filtered report", &got, &want_pages, 0.0)?;
    let got = rows(&insights.report(tenant, props.clone()).await?);
    check("props breakdown", &got, &want_plans, VISITOR_ERROR)?;

    let filtered_ms = p50(insights, tenant, &filtered, requests).await?;
    let unfiltered_ms = p50(insights, tenant, &unfiltered, requests).await?;
    let props_ms = p50(insights, tenant, &props, requests).await?;
    let (raw_pages_ms, raw_plans_ms) = tokio::task::block_in_place(|| {
        anyhow::Ok((
            raw_p50(raw, &raw_pages, requests)?,
            raw_p50(raw, &raw_plans, requests)?,
        ))
    })?;
    let filtered_label = label("filtered report p50 (country = DE, top 10 pages; event store)");
    table.latency(
        &filtered_label,
        filtered_ms,
        "the same report unfiltered p50, rollups",
        unfiltered_ms,
    );
    table.latency(
        &filtered_label,
        filtered_ms,
        "raw-event scan p50, DuckDB",
        raw_pages_ms,
    );
    table.latency(
        &label("props breakdown p50 (signup plan; rollups)"),
        props_ms,
        "raw-event scan p50, DuckDB",
        raw_plans_ms,
    );
    Ok(())
}

/// A report of visitors and `count` by `dimension`, top 10 by visitors.
fn request(
    range: &DateRange,
    dimension: Option<ReportDimension>,
    filter: Option<Filter>,
    count: Metric,
) -> RunReportRequest {
    RunReportRequest {
        date_range: Some(range.clone()),
        metrics: vec![Metric::Visitors as i32, count as i32],
        dimensions: dimension.into_iter().collect(),
        filter,
        limit: TOP as u32,
        ..Default::default()
    }
}

fn by_page() -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Dimension(Dimension::Page as i32)),
    }
}

fn by_plan() -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Property("plan".into())),
    }
}

fn country() -> Filter {
    Filter {
        kind: Some(filter::Kind::Condition(Condition {
            dimension: Dimension::Country as i32,
            operator: Operator::Is as i32,
            values: vec![COUNTRY.into()],
            ..Default::default()
        })),
    }
}

/// The raw table's rows of the range's dates, SQL.
fn dates(range: &DateRange) -> String {
    format!(
        "local_date BETWEEN DATE '{}' AND DATE '{}'",
        range.start_date, range.end_date
    )
}

fn rows(reply: &RunReportResponse) -> Rows {
    reply
        .rows
        .iter()
        .map(|row| {
            let value = |i: usize| row.values.get(i).map_or(0, |v| v.value.round() as u64);
            (row.dimensions[0].clone(), value(0), value(1))
        })
        .collect()
}

fn scan_rows(raw: &duckdb::Connection, sql: &str) -> anyhow::Result<Rows> {
    let mut statement = raw.prepare(sql)?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)? as u64,
            row.get::<_, i64>(2)? as u64,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Fails unless `got` has `want`'s values with equal counts and visitors within `error`
/// (relative); the order may differ where visitor counts are within the error.
fn check(what: &str, got: &Rows, want: &Rows, error: f64) -> anyhow::Result<()> {
    let by_value = |rows: &Rows| -> BTreeMap<String, (u64, u64)> {
        rows.iter().map(|(v, a, b)| (v.clone(), (*a, *b))).collect()
    };
    let (got_map, want_map) = (by_value(got), by_value(want));
    let agree = got.len() == want.len()
        && want_map.iter().all(|(value, (visitors, count))| {
            got_map.get(value).is_some_and(|(v, c)| {
                c == count && (*v as f64 - *visitors as f64).abs() <= error * *visitors as f64
            })
        });
    anyhow::ensure!(
        agree && !want.is_empty(),
        "{what}: Beacon answered {got:?}, the raw-event scan {want:?}"
    );
    Ok(())
}

/// The median of `requests` runs of `req`, milliseconds.
async fn p50(
    insights: &Insights,
    tenant: &Tenant,
    req: &RunReportRequest,
    requests: usize,
) -> anyhow::Result<f64> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..requests {
        let started = Instant::now();
        insights.report(tenant, req.clone()).await?;
        histogram.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(histogram.value_at_quantile(0.5) as f64 / 1000.0)
}

/// The median of `requests` runs of `sql` on the raw table, milliseconds.
fn raw_p50(raw: &duckdb::Connection, sql: &str, requests: usize) -> anyhow::Result<f64> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for _ in 0..requests {
        let started = Instant::now();
        let mut statement = raw.prepare_cached(sql)?;
        let mut rows = statement.query([])?;
        while rows.next()?.is_some() {}
        histogram.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(histogram.value_at_quantile(0.5) as f64 / 1000.0)
}
