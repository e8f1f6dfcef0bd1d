//! The shard schema and the statements of the apply path.

/// Tables of a shard file, created when absent. Dimension 0 holds the tenant's totals.
///
/// `rollups` holds additive deltas, appended as they arrive; reads sum them, and compaction
/// folds them into one row per (hour, dimension, value). Appending with DuckDB's appender is
/// cheap, while an `INSERT … ON CONFLICT` upsert was re-planned on every apply and dominated the
/// query role's CPU profile.
pub(crate) const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS applied (
    "partition" INTEGER PRIMARY KEY,
    seq UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS rollups (
    hour_ms BIGINT,
    local_date DATE,
    dimension SMALLINT,
    "value" VARCHAR,
    pageviews BIGINT,
    events BIGINT,
    visits BIGINT,
    bounces BIGINT,
    duration_ms BIGINT,
    bot_events BIGINT
);
CREATE TABLE IF NOT EXISTS visitors (
    hour_ms BIGINT,
    local_date DATE,
    dimension SMALLINT,
    "value" VARCHAR,
    visitor UBIGINT
);
"#;

/// The applied rollup-log sequence of a partition.
pub(crate) const SELECT_WATERMARK: &str = r#"SELECT seq FROM applied WHERE "partition" = ?"#;

/// Moves a partition's watermark.
pub(crate) const UPSERT_WATERMARK: &str = r#"
INSERT INTO applied ("partition", seq) VALUES (?, ?)
ON CONFLICT ("partition") DO UPDATE SET seq = excluded.seq
"#;

/// Folds `rollups` into one row per (hour, dimension, value) and `visitors` into distinct
/// rows; sums and distinct counts are unchanged.
pub(crate) const COMPACT: &str = r#"
CREATE TABLE rollups_compacted AS
    SELECT hour_ms, min(local_date) AS local_date, dimension, "value",
           sum(pageviews)::BIGINT AS pageviews, sum(events)::BIGINT AS events,
           sum(visits)::BIGINT AS visits, sum(bounces)::BIGINT AS bounces,
           sum(duration_ms)::BIGINT AS duration_ms, sum(bot_events)::BIGINT AS bot_events
    FROM rollups GROUP BY hour_ms, dimension, "value" ORDER BY hour_ms;
DROP TABLE rollups;
ALTER TABLE rollups_compacted RENAME TO rollups;
CREATE TABLE visitors_compacted AS
    SELECT DISTINCT hour_ms, local_date, dimension, "value", visitor FROM visitors ORDER BY hour_ms;
DROP TABLE visitors;
ALTER TABLE visitors_compacted RENAME TO visitors;
"#;

/// The read of a [`ShardQuery`](super::ShardQuery): parameters `$1` dimension, `$2` first
/// and `$3` last local date ("YYYY-MM-DD"). Columns: key, visitors, visits, pageviews,
/// events, bounces, duration_ms, bot_events.
pub(crate) fn select_sums(group: super::GroupBy, top: Option<super::Top>) -> String {
    use super::GroupBy;
    let key = match group {
        GroupBy::Total => "''",
        GroupBy::Day => "CAST(local_date AS VARCHAR)",
        GroupBy::Hour => "CAST(hour_ms AS VARCHAR)",
        GroupBy::Value => r#""value""#,
    };
    let filter = "dimension = $1 AND local_date BETWEEN CAST($2 AS DATE) AND CAST($3 AS DATE)";
    let tail = match top {
        Some(top) => format!(
            "ORDER BY {} DESC, k ASC LIMIT {}",
            crate::metrics::order_sql(top.metric),
            top.limit
        ),
        None => String::new(),
    };
    format!(
        r#"
WITH r AS (
    SELECT {key} AS k,
           CAST(sum(visits) AS BIGINT) AS vi,
           CAST(sum(pageviews) AS BIGINT) AS pv,
           CAST(sum(events) AS BIGINT) AS ev,
           CAST(sum(bounces) AS BIGINT) AS bo,
           CAST(sum(duration_ms) AS BIGINT) AS du,
           CAST(sum(bot_events) AS BIGINT) AS bot
    FROM rollups WHERE {filter} GROUP BY 1
), v AS (
    SELECT {key} AS k, count(DISTINCT visitor) AS uv
    FROM visitors WHERE {filter} GROUP BY 1
)
SELECT k, uv, vi, pv, ev, bo, du, bot FROM (
    SELECT coalesce(r.k, v.k) AS k,
           coalesce(v.uv, 0) AS uv,
           coalesce(r.vi, 0) AS vi,
           coalesce(r.pv, 0) AS pv,
           coalesce(r.ev, 0) AS ev,
           coalesce(r.bo, 0) AS bo,
           coalesce(r.du, 0) AS du,
           coalesce(r.bot, 0) AS bot
    FROM r FULL OUTER JOIN v ON r.k = v.k
) AS j
{tail}"#
    )
}
