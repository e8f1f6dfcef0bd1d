//! Folding: rewrites the days and hours that received rows into one row per key, sorted by
//! tenant. Older days and hours are never rewritten again, so a fold costs what arrived since
//! the last one (plus the rest of its days), not the size of the shard.

use ::duckdb::types::Value;
use ::duckdb::{Connection, OptionalExt, Row, Transaction, params};

use super::cell::Cell;
use super::schema;
use crate::error::ShardFailure;

/// Folds both tables of the shard in one transaction (readers keep their snapshot).
pub(crate) fn fold(conn: &mut Connection) -> Result<(), ShardFailure> {
    let tx = conn.transaction()?;
    if let Some(from_day) = dirty(&tx, schema::DIRTY_DAYS)? {
        fold_days(&tx, from_day)?;
    }
    if let Some(from_ms) = dirty(&tx, schema::DIRTY_HOURS)? {
        fold_hours(&tx, from_ms)?;
    }
    tx.commit()?;
    Ok(())
}

/// The first day (or hour) with unfolded rows.
fn dirty(tx: &Transaction<'_>, sql: &str) -> Result<Option<i64>, ShardFailure> {
    let first: Option<Option<i64>> = tx.query_row(sql, [], |row| row.get(0)).optional()?;
    Ok(first.flatten())
}

/// Reads the rows of `sql` (ordered by key) and adds up the cells of equal keys.
fn folded<K: PartialEq>(
    tx: &Transaction<'_>,
    sql: &str,
    from: i64,
    key: impl Fn(&Row<'_>) -> ::duckdb::Result<K>,
    cell_column: usize,
) -> Result<Vec<(K, Cell)>, ShardFailure> {
    let mut out: Vec<(K, Cell)> = Vec::new();
    let mut statement = tx.prepare(sql)?;
    let mut rows = statement.query([from])?;
    while let Some(row) = rows.next()? {
        let (key, cell) = (key(row)?, Cell::read(row, cell_column)?);
        match out.last_mut() {
            Some((last, sum)) if *last == key => sum.add(cell),
            _ => out.push((key, cell)),
        }
    }
    Ok(out)
}

fn day(days: i64) -> Value {
    Value::Date32(i32::try_from(days).unwrap_or(i32::MAX))
}

fn fold_days(tx: &Transaction<'_>, from_day: i64) -> Result<(), ShardFailure> {
    let key = |row: &Row<'_>| -> ::duckdb::Result<(String, i64, i16, String)> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    };
    let rows = folded(tx, &schema::days_from(), from_day, key, 4)?;
    tx.execute(schema::DELETE_DAYS_FROM, [from_day])?;
    let mut appender = tx.appender("days")?;
    for ((tenant, days, dimension, value), cell) in rows {
        let [pv, ev, vi, bo, du, bot] = cell.counters;
        let sketch = cell.into_sketch_bytes()?;
        appender.append_row(params![
            tenant,
            day(days),
            dimension,
            value,
            pv,
            ev,
            vi,
            bo,
            du,
            bot,
            sketch,
            true
        ])?;
    }
    appender.flush()?;
    Ok(())
}

fn fold_hours(tx: &Transaction<'_>, from_ms: i64) -> Result<(), ShardFailure> {
    let key = |row: &Row<'_>| -> ::duckdb::Result<(String, i64, i64)> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    };
    let rows = folded(tx, &schema::hours_from(), from_ms, key, 3)?;
    tx.execute(schema::DELETE_HOURS_FROM, [from_ms])?;
    let mut appender = tx.appender("hours")?;
    for ((tenant, hour_ms, days), cell) in rows {
        let [pv, ev, vi, bo, du, bot] = cell.counters;
        let sketch = cell.into_sketch_bytes()?;
        appender.append_row(params![
            tenant,
            hour_ms,
            day(days),
            pv,
            ev,
            vi,
            bo,
            du,
            bot,
            sketch,
            true
        ])?;
    }
    appender.flush()?;
    Ok(())
}
