//! The shard schema and the SQL of the apply, fold and read paths.
//!
//! Every table leads with the tenant: a shard file holds the tenants of one rollup-log
//! partition, and folds write rows sorted by tenant so that DuckDB's zone maps skip the row
//! groups of other tenants.

/// Tables of a shard file, created when absent. Dimension 0 holds each tenant's totals.
///
/// `rollups` holds additive deltas, appended as they arrive (`folded` false); reads sum them,
/// and folding rewrites the rows of the hours that received deltas into one row per key.
/// Appending with DuckDB's appender is cheap, while an `INSERT … ON CONFLICT` upsert was
/// re-planned on every apply and dominated the query role's CPU profile.
///
/// Unique visitors are HLL sketches: per (day, dimension, value) for every dimension, and
/// per hour for the totals only (the hourly time series). Several sketch rows of one key are
/// merged on read and folded into one.
pub(crate) const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS applied (
    "partition" INTEGER PRIMARY KEY,
    seq UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollups (
    tenant VARCHAR,
    hour_ms BIGINT,
    local_date DATE,
    dimension SMALLINT,
    "value" VARCHAR,
    pageviews BIGINT,
    events BIGINT,
    visits BIGINT,
    bounces BIGINT,
    duration_ms BIGINT,
    bot_events BIGINT,
    folded BOOLEAN
);
CREATE TABLE IF NOT EXISTS day_visitors (
    tenant VARCHAR,
    local_date DATE,
    dimension SMALLINT,
    "value" VARCHAR,
    sketch BLOB,
    folded BOOLEAN
);
CREATE TABLE IF NOT EXISTS hour_visitors (
    tenant VARCHAR,
    hour_ms BIGINT,
    local_date DATE,
    sketch BLOB,
    folded BOOLEAN
);
"#;

/// The applied rollup-log sequence of a partition.
pub(crate) const SELECT_WATERMARK: &str = r#"SELECT seq FROM applied WHERE "partition" = ?"#;

/// Moves a partition's watermark.
pub(crate) const UPSERT_WATERMARK: &str = r#"
INSERT INTO applied ("partition", seq) VALUES (?, ?)
ON CONFLICT ("partition") DO UPDATE SET seq = excluded.seq
"#;

/// The earliest hour with unfolded deltas, if any.
pub(crate) const DIRTY_HOURS: &str = "SELECT min(hour_ms) FROM rollups WHERE NOT folded";

/// Folds the counters of every hour from `from_ms` on into one row per key, sorted by tenant.
pub(crate) fn fold_rollups(from_ms: i64) -> String {
    format!(
        r#"
CREATE TEMP TABLE rollups_fold AS
    SELECT tenant, hour_ms, min(local_date) AS local_date, dimension, "value",
           sum(pageviews)::BIGINT AS pageviews, sum(events)::BIGINT AS events,
           sum(visits)::BIGINT AS visits, sum(bounces)::BIGINT AS bounces,
           sum(duration_ms)::BIGINT AS duration_ms, sum(bot_events)::BIGINT AS bot_events,
           true AS folded
    FROM rollups WHERE hour_ms >= {from_ms}
    GROUP BY tenant, hour_ms, dimension, "value";
DELETE FROM rollups WHERE hour_ms >= {from_ms};
INSERT INTO rollups SELECT * FROM rollups_fold ORDER BY tenant, dimension, hour_ms, "value";
DROP TABLE rollups_fold;
"#
    )
}

/// The earliest day with unfolded day sketches, as days since 1970-01-01.
pub(crate) const DIRTY_DAYS: &str =
    "SELECT min(local_date) - DATE '1970-01-01' FROM day_visitors WHERE NOT folded";

/// Day sketches from a day on, ordered by key: parameter days since 1970-01-01.
pub(crate) const DAY_SKETCHES_FROM: &str = r#"
SELECT tenant, local_date - DATE '1970-01-01', dimension, "value", sketch FROM day_visitors
WHERE local_date >= DATE '1970-01-01' + CAST(? AS INTEGER)
ORDER BY tenant, dimension, local_date, "value"
"#;

/// Drops the day sketches from a day on (they are written back folded).
pub(crate) const DELETE_DAY_SKETCHES_FROM: &str =
    "DELETE FROM day_visitors WHERE local_date >= DATE '1970-01-01' + CAST(? AS INTEGER)";

/// The earliest hour with unfolded hour sketches.
pub(crate) const DIRTY_SKETCH_HOURS: &str =
    "SELECT min(hour_ms) FROM hour_visitors WHERE NOT folded";

/// Hour sketches from an hour on, ordered by key.
pub(crate) const HOUR_SKETCHES_FROM: &str = r#"
SELECT tenant, hour_ms, local_date - DATE '1970-01-01', sketch FROM hour_visitors
WHERE hour_ms >= ? ORDER BY tenant, hour_ms
"#;

/// Drops the hour sketches from an hour on.
pub(crate) const DELETE_HOUR_SKETCHES_FROM: &str = "DELETE FROM hour_visitors WHERE hour_ms >= ?";

/// The SQL key of a grouping.
fn key(group: super::GroupBy) -> &'static str {
    use super::GroupBy;
    match group {
        GroupBy::Total => "''",
        GroupBy::Day => "CAST(local_date AS VARCHAR)",
        GroupBy::Hour => "CAST(hour_ms AS VARCHAR)",
        GroupBy::Value => r#""value""#,
    }
}

/// Summed counters of a tenant's rows: parameters tenant, dimension, first and last local
/// date ("YYYY-MM-DD"). Columns: key, visits, pageviews, events, bounces, duration_ms,
/// bot_events.
pub(crate) fn select_counters(group: super::GroupBy) -> String {
    format!(
        r#"
SELECT {key} AS k,
       CAST(sum(visits) AS BIGINT), CAST(sum(pageviews) AS BIGINT),
       CAST(sum(events) AS BIGINT), CAST(sum(bounces) AS BIGINT),
       CAST(sum(duration_ms) AS BIGINT), CAST(sum(bot_events) AS BIGINT)
FROM rollups
WHERE tenant = ? AND dimension = ? AND local_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
GROUP BY 1"#,
        key = key(group)
    )
}

/// A tenant's visitor sketches: parameters tenant, dimension, first and last local date.
/// Columns: key, sketch. Hourly groups read the totals' hour sketches (dimension 0 only).
pub(crate) fn select_sketches(group: super::GroupBy) -> String {
    let range = "local_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)";
    match group {
        super::GroupBy::Hour => format!(
            "SELECT CAST(hour_ms AS VARCHAR), sketch FROM hour_visitors \
             WHERE tenant = ? AND 0 = ? AND {range}"
        ),
        group => format!(
            "SELECT {key}, sketch FROM day_visitors \
             WHERE tenant = ? AND dimension = ? AND {range}",
            key = key(group)
        ),
    }
}
