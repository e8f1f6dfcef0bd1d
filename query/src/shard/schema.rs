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
ALTER TABLE applied ADD COLUMN IF NOT EXISTS covered_seq UBIGINT;
ALTER TABLE applied ADD COLUMN IF NOT EXISTS covered_index UINTEGER;
ALTER TABLE applied ADD COLUMN IF NOT EXISTS log VARCHAR;
ALTER TABLE applied ADD COLUMN IF NOT EXISTS covered_log VARCHAR;
ALTER TABLE days ADD COLUMN IF NOT EXISTS gen UBIGINT DEFAULT 0;
ALTER TABLE days ADD COLUMN IF NOT EXISTS logic_version INTEGER DEFAULT 0;
ALTER TABLE hours ADD COLUMN IF NOT EXISTS gen UBIGINT DEFAULT 0;
ALTER TABLE hours ADD COLUMN IF NOT EXISTS logic_version INTEGER DEFAULT 0;
ALTER TABLE days ADD COLUMN IF NOT EXISTS revenue_micros BIGINT DEFAULT 0;
ALTER TABLE days ADD COLUMN IF NOT EXISTS revenue_events BIGINT DEFAULT 0;
ALTER TABLE hours ADD COLUMN IF NOT EXISTS revenue_micros BIGINT DEFAULT 0;
ALTER TABLE hours ADD COLUMN IF NOT EXISTS revenue_events BIGINT DEFAULT 0;
CREATE TABLE IF NOT EXISTS recent (
    tenant VARCHAR,
    minute_ms BIGINT,
    dimension SMALLINT,
    "value" VARCHAR,
    pageviews BIGINT,
    events BIGINT,
    visits BIGINT,
    bounces BIGINT,
    duration_ms BIGINT,
    bot_events BIGINT,
    sketch BLOB,
    revenue_micros BIGINT,
    revenue_events BIGINT
);
CREATE TABLE IF NOT EXISTS events (
    tenant VARCHAR,
    gen UBIGINT,
    logic_version INTEGER,
    local_date DATE,
    hour_ms BIGINT,
    ts BIGINT,
    visitor UBIGINT,
    visit_visitor UBIGINT,
    visit_start BIGINT,
    visit_hour_ms BIGINT,
    visit_date DATE,
    name VARCHAR,
    page VARCHAR,
    hostname VARCHAR,
    entry_page VARCHAR,
    source VARCHAR,
    channel VARCHAR,
    referrer VARCHAR,
    country VARCHAR,
    region VARCHAR,
    city VARCHAR,
    device VARCHAR,
    browser VARCHAR,
    os VARCHAR,
    utm_source VARCHAR,
    utm_medium VARCHAR,
    utm_campaign VARCHAR,
    utm_term VARCHAR,
    utm_content VARCHAR,
    properties VARCHAR[],
    revenue_micros BIGINT,
    scroll_depth INTEGER,
    engaged_ms BIGINT,
    non_interactive BOOLEAN DEFAULT false
);
ALTER TABLE events ADD COLUMN IF NOT EXISTS non_interactive BOOLEAN DEFAULT false;
CREATE TABLE IF NOT EXISTS generations (
    tenant VARCHAR,
    gen UBIGINT,
    stage UINTEGER NOT NULL,
    state VARCHAR NOT NULL,
    PRIMARY KEY (tenant, gen)
);
"#;

/// A tenant generation's last applied stage and state ("staging", "swapped", "dropped").
pub(crate) const SELECT_GENERATION: &str =
    "SELECT stage, state FROM generations WHERE tenant = ? AND gen = ?";

/// Records the stage and state of `n` tenant generations, all different: parameters tenant,
/// generation, stage and state of each in turn. One statement for all: DuckDB plans every
/// execution, and a run with many jobs' parts recorded each generation with one of its own.
pub(crate) fn upsert_generations(n: usize) -> String {
    let rows = vec!["(?, ?, ?, ?)"; n].join(", ");
    format!(
        "INSERT INTO generations (tenant, gen, stage, state) VALUES {rows} \
         ON CONFLICT (tenant, gen) DO UPDATE SET stage = excluded.stage, state = excluded.state"
    )
}

/// The swaps of `n` generations into the live one, each for one tenant's local dates, as a
/// table of `n` rows: parameters tenant, generation, first and last date, and the swap's
/// index, for each swap in turn. At most one swap per tenant (its rows would match twice).
fn swap_values(n: usize) -> String {
    let row = "(?, CAST(? AS UBIGINT), CAST(? AS DATE), CAST(? AS DATE), CAST(? AS UINTEGER))";
    let rows = vec![row; n].join(", ");
    format!("(VALUES {rows}) s(s_tenant, s_gen, s_first, s_last, s_index)")
}

/// The statements of `n` swaps ([`swap_values`]' parameters each), in one transaction (the
/// caller's): the totals cells of each tenant's live rows and of its generation on the
/// swap's dates (columns: the swap's index, the generation (0 for live rows), then the
/// cell); then the deletes of the live rows of those dates, and the updates that turn each
/// generation live. Each scans its table once however many swaps there are.
pub(crate) fn swaps(n: usize) -> [String; 7] {
    let values = swap_values(n);
    let live_dates = "tenant = s_tenant AND gen = 0 AND local_date BETWEEN s_first AND s_last";
    let generation = "tenant = s_tenant AND gen = s_gen";
    [
        format!(
            "SELECT s_index, gen, {CELL} FROM days JOIN {values} ON tenant = s_tenant \
             AND (gen = 0 OR gen = s_gen) AND dimension = 0 \
             AND local_date BETWEEN s_first AND s_last"
        ),
        format!("DELETE FROM days USING {values} WHERE {live_dates}"),
        format!("DELETE FROM hours USING {values} WHERE {live_dates}"),
        format!("DELETE FROM events USING {values} WHERE {live_dates}"),
        format!("UPDATE days SET gen = 0, folded = false FROM {values} WHERE {generation}"),
        format!("UPDATE hours SET gen = 0, folded = false FROM {values} WHERE {generation}"),
        format!("UPDATE events SET gen = 0 FROM {values} WHERE {generation}"),
    ]
}

/// Deletes a tenant's events of dates before one: parameters tenant, first kept date.
pub(crate) const EXPIRE_EVENTS: &str =
    "DELETE FROM events WHERE tenant = ? AND local_date < CAST(? AS DATE)";

/// Drops a tenant generation's rows: parameters tenant, generation.
pub(crate) const DROP_GENERATION: [&str; 3] = [
    "DELETE FROM days WHERE tenant = ? AND gen = ?",
    "DELETE FROM hours WHERE tenant = ? AND gen = ?",
    "DELETE FROM events WHERE tenant = ? AND gen = ?",
];

/// The applied rollup-log sequence of a partition.
pub(crate) const SELECT_WATERMARK: &str = r#"SELECT seq FROM applied WHERE "partition" = ?"#;

/// Where a partition stands: watermark, covered event (sequence, index, event log), rollup log.
pub(crate) const SELECT_POSITION: &str = r#"SELECT seq, covered_seq, covered_index, covered_log, log
FROM applied WHERE "partition" = ?"#;

/// Records the rollup log a partition's watermark is on: parameters partition, log.
pub(crate) const UPSERT_LOG: &str = r#"
INSERT INTO applied ("partition", seq, log) VALUES (?, 0, ?)
ON CONFLICT ("partition") DO UPDATE SET log = excluded.log
"#;

/// Moves a partition's watermark onto another rollup log (the covered events stay: they are
/// positions of the event log): parameters partition, watermark, log.
pub(crate) const MOVE_TO_LOG: &str = r#"
INSERT INTO applied ("partition", seq, log) VALUES (?, ?, ?)
ON CONFLICT ("partition") DO UPDATE SET seq = excluded.seq, log = excluded.log
"#;

/// Records a partition's first watermark and, when given (not NULL), the last event covered.
pub(crate) const INSERT_WATERMARK: &str = r#"
INSERT INTO applied ("partition", seq, covered_seq, covered_index, covered_log)
VALUES (?, ?, ?, ?, ?)
"#;

/// Moves a recorded watermark and, when given (not NULL), the last event covered. A plain
/// update: DuckDB checks an `INSERT … ON CONFLICT` for keys repeated within itself with a hash
/// aggregate, planned again on every run, which cost 5 % of a standalone's CPU under ingest.
pub(crate) const UPDATE_WATERMARK: &str = r#"
UPDATE applied SET seq = $2,
    covered_seq = coalesce($3, covered_seq),
    covered_index = coalesce($4, covered_index),
    covered_log = coalesce($5, covered_log)
WHERE "partition" = $1
"#;

/// The counter columns, in [`Cell`](super::cell::Cell) order, then the sketch.
const CELL: &str = "pageviews, events, visits, bounces, duration_ms, bot_events, \
    revenue_micros, revenue_events, sketch";

/// [`CELL`] with a NULL in the sketch's place: DuckDB then does not read the sketches.
const CELL_COUNTERS: &str = "pageviews, events, visits, bounces, duration_ms, bot_events, \
    revenue_micros, revenue_events, NULL::BLOB";

/// Collects the (tenant, day) keys with unfolded rows.
pub(crate) const DIRTY_DAYS: &str = "CREATE TEMP TABLE dirty_days AS \
    SELECT DISTINCT tenant, local_date FROM days WHERE NOT folded";

/// Rows of a dirty (tenant, day) key, as `d`.
const DIRTY_DAY: &str =
    "EXISTS (SELECT 1 FROM dirty_days k WHERE k.tenant = d.tenant AND k.local_date = d.local_date)";

/// The rows of the dirty (tenant, day) keys, in no order. Columns: tenant, days since
/// 1970-01-01, dimension, value, generation, logic version, then the cell.
pub(crate) fn dirty_day_rows() -> String {
    format!(
        r#"SELECT d.tenant, CAST(d.local_date - DATE '1970-01-01' AS INTEGER), d.dimension, d."value", d.gen, d.logic_version, {CELL}
FROM days d WHERE {DIRTY_DAY}"#
    )
}

/// Drops the rows of the dirty (tenant, day) keys (they are written back folded).
pub(crate) fn delete_dirty_days() -> String {
    format!("DELETE FROM days d WHERE {DIRTY_DAY}; DROP TABLE dirty_days;")
}

/// Collects the (tenant, hour) keys with unfolded rows.
pub(crate) const DIRTY_HOURS: &str = "CREATE TEMP TABLE dirty_hours AS \
    SELECT DISTINCT tenant, hour_ms FROM hours WHERE NOT folded";

/// Rows of a dirty (tenant, hour) key, as `h`.
const DIRTY_HOUR: &str =
    "EXISTS (SELECT 1 FROM dirty_hours k WHERE k.tenant = h.tenant AND k.hour_ms = h.hour_ms)";

/// The rows of the dirty (tenant, hour) keys, in no order. Columns: tenant, hour, days since
/// 1970-01-01, generation, logic version, then the cell.
pub(crate) fn dirty_hour_rows() -> String {
    format!(
        "SELECT h.tenant, h.hour_ms, CAST(h.local_date - DATE '1970-01-01' AS INTEGER), h.gen, \
         h.logic_version, {CELL} FROM hours h WHERE {DIRTY_HOUR}"
    )
}

/// Drops the rows of the dirty (tenant, hour) keys.
pub(crate) fn delete_dirty_hours() -> String {
    format!("DELETE FROM hours h WHERE {DIRTY_HOUR}; DROP TABLE dirty_hours;")
}

/// A tenant's live rows for a read: parameters tenant, dimension, first and last local date
/// (DATE values: DuckDB binds every execution again, and casts of text parameters made each
/// binding dearer). Columns: the row's time (its local date, or the hour bucket's Unix
/// milliseconds when `hours`), its value, the cell (its sketch NULL unless `sketches`), the
/// logic version, then the local date ([`SELECT_DAY`]). Dates read as days since 1970-01-01.
/// Hourly rows come from `hours` (dimension 0 only).
pub(crate) fn select(hours: bool, sketches: bool) -> String {
    let cell = if sketches { CELL } else { CELL_COUNTERS };
    let range = "local_date BETWEEN ? AND ? AND gen = 0";
    if hours {
        return format!(
            "SELECT hour_ms, '', {cell}, logic_version, local_date FROM hours \
             WHERE tenant = ? AND 0 = ? AND {range}"
        );
    }
    format!(
        r#"SELECT local_date, "value", {cell}, logic_version, local_date
FROM days WHERE tenant = ? AND dimension = ? AND {range}"#
    )
}

/// The column of [`select`] holding the row's local date.
pub(crate) const SELECT_DAY: usize = 2 + super::cell::COUNTERS + 2;

/// Drops realtime rows of minutes before the parameter (Unix milliseconds).
pub(crate) const PRUNE_RECENT: &str = "DELETE FROM recent WHERE minute_ms < ?";

/// A tenant's realtime rows of a span of minutes: parameters tenant, first and last minute
/// (Unix milliseconds). Columns: minute, dimension, value, then the cell.
pub(crate) fn select_recent() -> String {
    format!(
        r#"SELECT minute_ms, dimension, "value", {CELL} FROM recent
WHERE tenant = ? AND minute_ms BETWEEN ? AND ?"#
    )
}

/// Per tenant and logic version, the first and last local date of the live rows.
pub(crate) const VERSIONS: &str = "SELECT tenant, logic_version, \
    CAST(min(local_date) AS VARCHAR), CAST(max(local_date) AS VARCHAR) FROM days WHERE gen = 0 \
    GROUP BY tenant, logic_version ORDER BY tenant, logic_version";
