//! Reports read from the event store: SQL over a tenant's `events` rows.
//!
//! Event metrics count the events that pass the filter, on their own local date. A visit
//! counts, on the date it started, in every group where one of its events passes the filter;
//! its bounce and duration are the whole visit's. Engagement metrics average, per
//! (visitor, page), the deepest scroll and the summed engaged time of the reports that pass.

use std::collections::{BTreeSet, HashMap};

use ::duckdb::{Connection, Row, params_from_iter};
use jiff::civil::Date;

use super::{Answer, ScanColumn, ScanQuery, Time};
use crate::error::ShardFailure;
use crate::metrics::Sums;

/// Separates the values of two grouping columns in a group's key.
pub const KEY_SEPARATOR: char = '\u{1e}';

/// Runs `query` over `tenant`'s live events.
pub(crate) fn run(
    conn: &Connection,
    tenant: &str,
    query: &ScanQuery,
) -> Result<Answer, ShardFailure> {
    let sql = Sql::new(query);
    let mut params: Vec<String> = vec![tenant.to_owned()];
    params.extend(query.filter.iter().flat_map(|p| p.params.iter().cloned()));
    params.extend(query.base.iter().flat_map(|p| p.params.iter().cloned()));
    // Each statement fills its own fields of the groups, columns 3 on.
    let mut statements: Vec<(String, Fill)> = vec![(sql.events(), fill_events)];
    if query.needs.visits {
        statements.push((sql.visits(), fill_visits));
    }
    if query.needs.engagement {
        statements.push((sql.engagement(), fill_engagement));
    }
    let mut groups: HashMap<(i64, String), Sums> = HashMap::new();
    for (statement, fill) in statements {
        each(conn, &statement, &params, |row| {
            fill(group(&mut groups, row)?, row)
        })?;
    }
    let mut versions = BTreeSet::new();
    each(conn, &sql.versions(), &params[..1], |row| {
        versions.insert(u32::try_from(row.get::<_, i32>(0)?).unwrap_or(0));
        Ok(())
    })?;
    let mut points: HashMap<i64, u64> = HashMap::new();
    if query.needs.point_visitors {
        each(conn, &sql.point_visitors(), &params, |row| {
            let time: i64 = row.get::<_, Option<i64>>(0)?.unwrap_or(0);
            points.insert(time, u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0));
            Ok(())
        })?;
    }
    let groups: Vec<Sums> = groups
        .into_values()
        .filter(|s| s.events > 0 || s.visits > 0 || s.engaged_pages > 0)
        .map(|mut s| {
            s.point_visitors = points.get(&s.time).copied().unwrap_or(0);
            s
        })
        .collect();
    Ok(Answer {
        total: groups.len(),
        groups,
        logic_versions: versions.into_iter().collect(),
    })
}

/// Sets a group's fields from a row of one statement.
type Fill = fn(&mut Sums, &Row<'_>) -> Result<(), ShardFailure>;

fn fill_events(sums: &mut Sums, row: &Row<'_>) -> Result<(), ShardFailure> {
    sums.visitors = u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0);
    sums.pageviews = row.get(4)?;
    sums.events = row.get(5)?;
    sums.revenue_micros = row.get(6)?;
    sums.revenue_events = row.get(7)?;
    sums.total_visitors = u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0);
    Ok(())
}

fn fill_visits(sums: &mut Sums, row: &Row<'_>) -> Result<(), ShardFailure> {
    sums.visits = row.get(3)?;
    sums.bounces = row.get(4)?;
    sums.duration_ms = row.get(5)?;
    Ok(())
}

fn fill_engagement(sums: &mut Sums, row: &Row<'_>) -> Result<(), ShardFailure> {
    sums.engaged_pages = row.get(3)?;
    sums.scroll_sum = row.get(4)?;
    sums.engaged_ms = row.get(5)?;
    Ok(())
}

/// The group of a row led by its time and its one or two values.
fn group<'g>(
    groups: &'g mut HashMap<(i64, String), Sums>,
    row: &Row<'_>,
) -> Result<&'g mut Sums, ShardFailure> {
    let time: i64 = row.get::<_, Option<i64>>(0)?.unwrap_or(0);
    let key = key(row.get(1)?, row.get(2)?);
    Ok(groups.entry((time, key.clone())).or_insert_with(|| Sums {
        key,
        time,
        ..Sums::default()
    }))
}

/// Runs `sql` with `params`, calling `f` on every row.
fn each(
    conn: &Connection,
    sql: &str,
    params: &[String],
    mut f: impl FnMut(&Row<'_>) -> Result<(), ShardFailure>,
) -> Result<(), ShardFailure> {
    tracing::trace!(sql, "event store scan");
    let mut statement = conn.prepare(sql)?;
    let mut rows = statement.query(params_from_iter(params))?;
    while let Some(row) = rows.next()? {
        f(row)?;
    }
    Ok(())
}

/// A group's key: its one or two values.
fn key(first: Option<String>, second: Option<String>) -> String {
    match (first, second) {
        (Some(a), Some(b)) => format!("{a}{KEY_SEPARATOR}{b}"),
        (Some(a), None) => a,
        (None, _) => String::new(),
    }
}

/// The statements of one scan.
struct Sql {
    /// The common table expressions: the tenant's events of the range (and of the day before,
    /// so that a visit that began then has its exit page) with their groups, times and filter
    /// results.
    with: String,
    /// Conditions on the grouping columns (a group needs a value).
    grouped: String,
    /// The range's dates, SQL.
    first: String,
    last: String,
}

impl Sql {
    fn new(query: &ScanQuery) -> Self {
        let (first, last) = (date(query.start), date(query.end));
        let exit = if query.needs.exit_page {
            ", arg_max(page, ts) FILTER (WHERE name = 'pageview') \
             OVER (PARTITION BY visit_visitor, visit_start) AS exit_page"
        } else {
            ""
        };
        let column = |i: usize| {
            query
                .columns
                .get(i)
                .map_or("CAST(NULL AS VARCHAR)".to_owned(), ScanColumn::sql)
        };
        let predicate =
            |p: &Option<super::Predicate>| p.as_ref().map_or("true".to_owned(), |p| p.sql.clone());
        let base = query
            .base
            .as_ref()
            .map_or("false".to_owned(), |p| p.sql.clone());
        let with = format!(
            "WITH raw AS (SELECT *{exit} FROM events WHERE tenant = ? AND gen = 0 \
             AND (local_date BETWEEN {first} - 1 AND {last} \
             OR visit_date BETWEEN {first} AND {last})), \
             ev AS (SELECT visitor, visit_visitor, visit_start, ts, name, local_date, visit_date, page, \
             revenue_micros, scroll_depth, engaged_ms, non_interactive, \
             {te} AS te, {tv} AS tv, {g0} AS g0, {g1} AS g1, {pass} AS pass, {base} AS base FROM raw)",
            te = time(query, "local_date", "hour_ms"),
            tv = time(query, "visit_date", "visit_hour_ms"),
            g0 = column(0),
            g1 = column(1),
            pass = predicate(&query.filter),
        );
        let grouped = (0..query.columns.len())
            .map(|i| format!(" AND g{i} IS NOT NULL"))
            .collect();
        Self {
            with,
            grouped,
            first,
            last,
        }
    }

    fn events(&self) -> String {
        let Self {
            with,
            grouped,
            first,
            last,
        } = self;
        format!(
            "{with} SELECT te, g0, g1, count(DISTINCT visitor) FILTER (WHERE pass), \
             count(*) FILTER (WHERE pass AND name = 'pageview'), count(*) FILTER (WHERE pass), \
             coalesce(sum(revenue_micros) FILTER (WHERE pass), 0), \
             count(revenue_micros) FILTER (WHERE pass), \
             count(DISTINCT visitor) FILTER (WHERE base) \
             FROM ev WHERE name <> 'engagement' AND local_date BETWEEN {first} AND {last} \
             AND (pass OR base){grouped} GROUP BY te, g0, g1"
        )
    }

    fn visits(&self) -> String {
        let Self {
            with,
            grouped,
            first,
            last,
        } = self;
        let started = format!("name <> 'engagement' AND visit_date BETWEEN {first} AND {last}");
        format!(
            "{with}, visits AS (SELECT visit_visitor, visit_start, \
             count(*) FILTER (WHERE NOT non_interactive) < 2 AS bounce, \
             max(ts) - min(ts) AS duration FROM ev WHERE {started} GROUP BY visit_visitor, visit_start), \
             groups AS (SELECT visit_visitor, visit_start, any_value(tv) AS tv, g0, g1 FROM ev \
             WHERE {started}{grouped} GROUP BY visit_visitor, visit_start, g0, g1 HAVING bool_or(pass)) \
             SELECT tv, g0, g1, count(*), count(*) FILTER (WHERE bounce), \
             coalesce(sum(duration), 0) FROM groups JOIN visits USING (visit_visitor, visit_start) \
             GROUP BY tv, g0, g1"
        )
    }

    fn engagement(&self) -> String {
        let Self {
            with,
            grouped,
            first,
            last,
        } = self;
        format!(
            "{with} SELECT te, g0, g1, count(*), coalesce(sum(depth), 0), \
             coalesce(sum(engaged), 0) FROM (SELECT te, g0, g1, visitor, page, \
             max(scroll_depth) AS depth, sum(engaged_ms) AS engaged FROM ev \
             WHERE name = 'engagement' AND pass AND local_date BETWEEN {first} AND {last}{grouped} \
             GROUP BY te, g0, g1, visitor, page) GROUP BY te, g0, g1"
        )
    }

    fn versions(&self) -> String {
        let Self { first, last, .. } = self;
        format!(
            "SELECT DISTINCT logic_version FROM events WHERE tenant = ? AND gen = 0 \
             AND local_date BETWEEN {first} AND {last}"
        )
    }

    fn point_visitors(&self) -> String {
        let Self {
            with,
            grouped,
            first,
            last,
        } = self;
        format!(
            "{with} SELECT te, count(DISTINCT visitor) FROM ev WHERE name <> 'engagement' \
             AND pass AND local_date BETWEEN {first} AND {last}{grouped} GROUP BY te"
        )
    }
}

/// A date as an SQL literal.
fn date(date: Date) -> String {
    format!("DATE '{date}'")
}

/// The SQL of a group's time from a date column and an hour column: see
/// [`super::read`]'s buckets (days are shifted by the query's days before weeks and months
/// are cut, and shifted back).
fn time(query: &ScanQuery, day: &str, hour: &str) -> String {
    let shift = query.shift_days;
    let start = crate::range::epoch_day(query.start) + shift;
    let epoch = format!("({day} - DATE '1970-01-01')");
    match query.time {
        None => "CAST(0 AS BIGINT)".to_owned(),
        Some(Time::Hour) => hour.to_owned(),
        Some(Time::Day) => epoch,
        Some(Time::Week) => format!(
            "greatest(({epoch} + {shift}) - (({epoch} + {shift} + 3) % 7), {start}) - {shift}"
        ),
        Some(Time::Month) => format!(
            "greatest(CAST(date_trunc('month', {day} + {shift}) AS DATE) - DATE '1970-01-01', \
             {start}) - {shift}"
        ),
    }
}

impl ScanColumn {
    /// The SQL of its value (NULL when the event has none).
    pub(crate) fn sql(&self) -> String {
        match self {
            Self::Stored(column) => (*column).to_owned(),
            Self::ExitPage => "exit_page".to_owned(),
            Self::Property(key) => property_sql(key),
        }
    }
}

/// The SQL of a custom property's value (`key` as rows keep it), NULL when the event has none.
pub fn property_sql(key: &str) -> String {
    let literal = key.replace('\'', "''");
    let skip = key.chars().count() + 2;
    format!(
        "substr(list_filter(properties, lambda x: starts_with(x, '{literal}' || chr(31)))[1], {skip})"
    )
}
