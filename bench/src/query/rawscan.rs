//! The dashboard's baseline: the same report (totals, a daily series, top pages, top sources;
//! visitors, visits, pageviews, events, bounce rate and bot events) computed by DuckDB straight
//! from a tenant's raw events, with exact distinct counts or `approx_count_distinct`.
//!
//! Visitors, visits and bots are worked out here from what the traffic model sent (address and
//! user agent, timestamps, the model's own bot agents), sharing no code with Beacon's
//! sessionizer; only the labels of pages and sources come from Beacon's URL and referrer parsers.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use beacon_aggregator::enrich::{referrer, url};
use beacon_proto::ingest::v1::Event;
use beacon_proto::insights::v1::DateRange;
use hdrhistogram::Histogram;

use super::answer::{Answer, Counts};

/// A visit ends after more than this much inactivity (a gap of exactly 30 minutes continues).
const VISIT_GAP_MS: i64 = 30 * 60 * 1000;
/// A visit also ends at the first local midnight at least this long after its first event.
const LONG_VISIT_MS: i64 = 12 * 60 * 60 * 1000;

/// How the scan counts distinct visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Distinct {
    /// `count(DISTINCT visitor)`.
    Exact,
    /// `approx_count_distinct(visitor)` (DuckDB's HyperLogLog).
    Approx,
}

impl Distinct {
    fn sql(self) -> &'static str {
        match self {
            Self::Exact => "count(DISTINCT visitor)",
            Self::Approx => "approx_count_distinct(visitor)",
        }
    }
}

/// A new in-memory database with an empty `raw_events` table.
pub(super) fn create() -> anyhow::Result<duckdb::Connection> {
    let raw = duckdb::Connection::open_in_memory()?;
    raw.execute_batch(
        "CREATE TABLE raw_events (ts BIGINT, local_date DATE, late_date DATE, name VARCHAR, \
         path VARCHAR, source VARCHAR, visitor UBIGINT, bot BOOLEAN)",
    )?;
    Ok(raw)
}

/// Appends `events` of a tenant in `time_zone`, sent on the tenant's local date `arrived`, to
/// `raw_events`. Blocks.
pub(super) fn append(
    raw: &duckdb::Connection,
    events: &[Event],
    time_zone: &str,
    arrived: jiff::civil::Date,
) -> anyhow::Result<()> {
    let tz = jiff::tz::TimeZone::get(time_zone)?;
    let mut appender = raw.appender("raw_events")?;
    for event in events {
        let ts = crate::traffic::timestamp_ms(event)
            .ok_or_else(|| anyhow::anyhow!("event {} has no timestamp", event.id))?;
        let date_of = |ms: i64| -> anyhow::Result<String> {
            Ok(jiff::Timestamp::from_millisecond(ms)?
                .to_zoned_datetime(tz.clone())
                .date()
                .to_string())
        };
        let date = date_of(ts)?;
        // A visit starting with this event ends at the start of the day after `late_date`.
        let late_date = date_of(ts + LONG_VISIT_MS - 1)?;
        let page = url::parse(&event.url);
        let source = referrer::source(&event.referrer, &page.host, page.utm_source.as_deref());
        let bot = crate::traffic::is_bot_agent(&event.user_agent).ok_or_else(|| {
            anyhow::anyhow!("user agent {:?} is not the model's", event.user_agent)
        })?;
        appender.append_row(duckdb::params![
            ts,
            date,
            late_date,
            event.name,
            page.path,
            source.name,
            visitor(event, arrived),
            bot
        ])?;
    }
    appender.flush()?;
    Ok(())
}

/// The visitor as Beacon tells it apart: address and agent, on the tenant's local date of
/// arrival.
fn visitor(event: &Event, arrived: jiff::civil::Date) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (&event.client_ip, &event.user_agent, arrived).hash(&mut hasher);
    hasher.finish()
}

/// The statements of one dashboard, in order: sessions, visits, then the four reads.
fn statements(range: &DateRange, distinct: Distinct, limit: usize) -> [String; 6] {
    let dates = format!(
        "BETWEEN DATE '{}' AND DATE '{}'",
        range.start_date, range.end_date
    );
    let d = distinct.sql();
    [
        // A run of events without a 30-minute pause is one visit until the first local midnight
        // 12 hours after its start; after that, its visits start right after midnight and last
        // each a local day (a day's first event is within 30 minutes of its midnight).
        format!(
            "CREATE OR REPLACE TEMP TABLE ev AS SELECT ts, local_date, name, path, source, visitor, \
             run, CASE WHEN local_date > first_value(late_date) OVER (PARTITION BY visitor, run \
             ORDER BY ts) THEN local_date ELSE DATE '1970-01-01' END AS part \
             FROM (SELECT *, sum(starts) OVER (PARTITION BY visitor ORDER BY ts \
             ROWS UNBOUNDED PRECEDING) AS run \
             FROM (SELECT *, coalesce(ts - lag(ts) OVER (PARTITION BY visitor ORDER BY ts) \
             > {VISIT_GAP_MS}, true)::INT AS starts FROM raw_events WHERE NOT bot))"
        ),
        "CREATE OR REPLACE TEMP TABLE visits AS SELECT visitor, run, part, \
         arg_min(local_date, ts) AS date, arg_min(source, ts) AS source, count(*) AS n \
         FROM ev GROUP BY visitor, run, part"
            .to_owned(),
        format!(
            "SELECT 'total', (SELECT {d} FROM ev WHERE local_date {dates}), \
             (SELECT count(*) FROM visits WHERE date {dates}), \
             (SELECT count(*) FILTER (name = 'pageview') FROM ev WHERE local_date {dates}), \
             (SELECT count(*) FROM ev WHERE local_date {dates}), \
             (SELECT count(*) FILTER (n = 1) FROM visits WHERE date {dates}), \
             (SELECT count(*) FROM raw_events WHERE bot AND local_date {dates})"
        ),
        format!(
            "WITH e AS (SELECT local_date AS day, {d} AS visitors, \
             count(*) FILTER (name = 'pageview') AS pageviews, count(*) AS events \
             FROM ev WHERE local_date {dates} GROUP BY 1), \
             s AS (SELECT date AS day, count(*) AS visits, count(*) FILTER (n = 1) AS bounces \
             FROM visits WHERE date {dates} GROUP BY 1) \
             SELECT day::VARCHAR, visitors, coalesce(visits, 0), pageviews, events, \
             coalesce(bounces, 0), 0 FROM e LEFT JOIN s USING (day) ORDER BY day"
        ),
        format!(
            "SELECT path, {d} AS visitors, 0, count(*) FILTER (name = 'pageview'), count(*), 0, 0 \
             FROM ev WHERE local_date {dates} GROUP BY path \
             ORDER BY visitors DESC, path LIMIT {limit}"
        ),
        format!(
            "WITH a AS (SELECT v.source, {d} AS visitors, \
             count(*) FILTER (name = 'pageview') AS pageviews, count(*) AS events \
             FROM ev JOIN visits v USING (visitor, run, part) WHERE local_date {dates} GROUP BY 1), \
             b AS (SELECT source, count(*) AS visits, count(*) FILTER (n = 1) AS bounces \
             FROM visits WHERE date {dates} GROUP BY 1) \
             SELECT source, visitors, coalesce(visits, 0), pageviews, events, \
             coalesce(bounces, 0), 0 FROM a LEFT JOIN b USING (source) \
             ORDER BY visitors DESC, source LIMIT {limit}"
        ),
    ]
}

/// One dashboard from the raw events; `limit` rows of pages and of sources.
pub(super) fn answer(
    raw: &duckdb::Connection,
    range: &DateRange,
    distinct: Distinct,
    limit: usize,
) -> anyhow::Result<Answer> {
    let [sessions, visits, totals, days, pages, sources] = statements(range, distinct, limit);
    raw.execute_batch(&sessions)?;
    raw.execute_batch(&visits)?;
    let mut answer = Answer::default();
    if let Some((_, counts, bots)) = rows(raw, &totals)?.into_iter().next() {
        answer.totals = counts;
        answer.bot_events = bots;
    }
    answer.days = rows(raw, &days)?
        .into_iter()
        .map(|(day, counts, _)| (day, counts))
        .collect::<BTreeMap<_, _>>();
    answer.pages = strip(rows(raw, &pages)?);
    answer.sources = strip(rows(raw, &sources)?);
    Ok(answer)
}

fn strip(rows: Vec<(String, Counts, u64)>) -> Vec<(String, Counts)> {
    rows.into_iter().map(|(k, c, _)| (k, c)).collect()
}

/// Rows of (label, visitors, visits, pageviews, events, bounces, bot events).
fn rows(raw: &duckdb::Connection, sql: &str) -> anyhow::Result<Vec<(String, Counts, u64)>> {
    let mut statement = raw.prepare_cached(sql)?;
    let mut out = Vec::new();
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let count = |i: usize| -> anyhow::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
        let visits = count(2)?;
        let bounces = count(5)?;
        out.push((
            row.get::<_, String>(0)?,
            Counts {
                visitors: count(1)? as f64,
                visits: visits as f64,
                pageviews: count(3)? as f64,
                events: count(4)? as f64,
                bounce_rate: if visits == 0 {
                    0.0
                } else {
                    100.0 * bounces as f64 / visits as f64
                },
            },
            count(6)?,
        ));
    }
    Ok(out)
}

/// `requests` dashboards (top 10) from `clients` threads, each with its own connection to the
/// same database; microseconds per dashboard.
pub(super) fn latency(
    raw: &duckdb::Connection,
    range: &DateRange,
    distinct: Distinct,
    clients: usize,
    requests: usize,
) -> anyhow::Result<Histogram<u64>> {
    let per_client = requests.div_ceil(clients);
    let connections = (0..clients)
        .map(|_| raw.try_clone())
        .collect::<Result<Vec<_>, _>>()?;
    let histograms = std::thread::scope(|scope| {
        let threads: Vec<_> = connections
            .into_iter()
            .map(|connection| {
                scope.spawn(move || -> anyhow::Result<Histogram<u64>> {
                    let mut histogram = Histogram::<u64>::new(3)?;
                    for _ in 0..per_client {
                        let started = Instant::now();
                        answer(&connection, range, distinct, 10)?;
                        histogram.record(started.elapsed().as_micros() as u64)?;
                    }
                    Ok(histogram)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a raw-scan client panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut total = Histogram::<u64>::new(3)?;
    for histogram in histograms {
        total.add(histogram)?;
    }
    Ok(total)
}
