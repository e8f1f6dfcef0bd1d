//! The shard schema and the SQL of the apply, fold and read paths.
//!
//! Every table leads with the tenant: a shard file holds the tenants of one rollup-log
//! partition, and folds write rows sorted by tenant so that DuckDB's zone maps skip the row
//! groups of other tenants. Reads are plain filtered scans; sums and sketch merges happen in
//! Rust, because DuckDB plans every statement again on each execution and planning was half
//! of a dashboard's CPU time.

/// Tables of a shard file, created when absent.
///
/// `days` holds one row per (tenant, local day, dimension, value) for every dimension, with
/// dimension 0 for the tenant's totals; `hours` holds the totals per (tenant, hour) for the
/// hourly series. Each row carries additive counters and an HLL sketch of its unique visitors
/// (NULL when it saw none, e.g. bots only). Rows are appended as they arrive (`folded` false);
/// reads add up every row of a key, and folding rewrites the days and hours that received rows
/// into one row per key. Appending with DuckDB's appender is cheap, while an
/// `INSERT … ON CONFLICT` upsert was re-planned on every apply and dominated the query role's
/// CPU profile.
pub(crate) const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS applied (
    "partition" INTEGER PRIMARY KEY,
    seq UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS days (
    tenant VARCHAR,
    local_date DATE,
    dimension SMALLINT,
    "value" VARCHAR,
    pageviews BIGINT,
    events BIGINT,
    visits BIGINT,
    bounces BIGINT,
    duration_ms BIGINT,
    bot_events BIGINT,
    sketch BLOB,
    folded BOOLEAN
);
CREATE TABLE IF NOT EXISTS hours (
    tenant VARCHAR,
    hour_ms BIGINT,
    local_date DATE,
    pageviews BIGINT,
    events BIGINT,
    visits BIGINT,
    bounces BIGINT,
    duration_ms BIGINT,
    bot_events BIGINT,
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

/// The counter columns, in [`Cell`](super::cell::Cell) order, then the sketch.
const CELL: &str = "pageviews, events, visits, bounces, duration_ms, bot_events, sketch";

/// Collects the (tenant, day) keys with unfolded rows.
pub(crate) const DIRTY_DAYS: &str = "CREATE TEMP TABLE dirty_days AS \
    SELECT DISTINCT tenant, local_date FROM days WHERE NOT folded";

/// The rows of the dirty (tenant, day) keys, ordered by key. Columns: tenant, days since
/// 1970-01-01, dimension, value, then the cell.
pub(crate) fn dirty_day_rows() -> String {
    format!(
        r#"SELECT d.tenant, CAST(d.local_date - DATE '1970-01-01' AS INTEGER), d.dimension, d."value", {CELL}
FROM days d JOIN dirty_days k ON d.tenant = k.tenant AND d.local_date = k.local_date
ORDER BY d.tenant, d.dimension, d.local_date, d."value""#
    )
}

/// Drops the rows of the dirty (tenant, day) keys (they are written back folded).
pub(crate) const DELETE_DIRTY_DAYS: &str = "DELETE FROM days WHERE EXISTS (\
    SELECT 1 FROM dirty_days k WHERE k.tenant = days.tenant AND k.local_date = days.local_date);
    DROP TABLE dirty_days;";

/// Collects the (tenant, hour) keys with unfolded rows.
pub(crate) const DIRTY_HOURS: &str = "CREATE TEMP TABLE dirty_hours AS \
    SELECT DISTINCT tenant, hour_ms FROM hours WHERE NOT folded";

/// The rows of the dirty (tenant, hour) keys, ordered by key. Columns: tenant, hour, days
/// since 1970-01-01, then the cell.
pub(crate) fn dirty_hour_rows() -> String {
    format!(
        "SELECT h.tenant, h.hour_ms, CAST(h.local_date - DATE '1970-01-01' AS INTEGER), {CELL} \
         FROM hours h JOIN dirty_hours k ON h.tenant = k.tenant AND h.hour_ms = k.hour_ms \
         ORDER BY h.tenant, h.hour_ms, h.local_date"
    )
}

/// Drops the rows of the dirty (tenant, hour) keys.
pub(crate) const DELETE_DIRTY_HOURS: &str = "DELETE FROM hours WHERE EXISTS (\
    SELECT 1 FROM dirty_hours k WHERE k.tenant = hours.tenant AND k.hour_ms = hours.hour_ms);
    DROP TABLE dirty_hours;";

/// A tenant's rows for a read: parameters tenant, dimension, first and last local date
/// ("YYYY-MM-DD"). Columns: the group key, then the cell. Hourly groups read `hours`
/// (dimension 0 only).
pub(crate) fn select(group: super::GroupBy) -> String {
    use super::GroupBy;
    let range = "local_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)";
    let key = match group {
        GroupBy::Hour => {
            return format!(
                "SELECT CAST(hour_ms AS VARCHAR), {CELL} FROM hours \
                 WHERE tenant = ? AND 0 = ? AND {range}"
            );
        }
        GroupBy::Total => "''",
        GroupBy::Day => "CAST(local_date AS VARCHAR)",
        GroupBy::Value => r#""value""#,
    };
    format!("SELECT {key}, {CELL} FROM days WHERE tenant = ? AND dimension = ? AND {range}")
}
