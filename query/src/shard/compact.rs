//! Folding: rewrites the rows of every (tenant, day) and (tenant, hour) that received rows
//! since the last fold into one row per key, sorted by tenant. Other keys are not touched, so
//! a fold costs about what arrived since the last one, late events included.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use ::duckdb::{Connection, Row, Transaction};

use super::cell::{Cell, DayKey, HourKey, Stamp, append_day, append_hour};
use super::schema;
use crate::error::ShardFailure;

/// Folds both tables of the shard in one transaction (readers keep their snapshot).
pub(crate) fn fold(conn: &mut Connection) -> Result<(), ShardFailure> {
    let tx = conn.transaction()?;
    fold_days(&tx)?;
    fold_hours(&tx)?;
    tx.commit()?;
    Ok(())
}

/// Reads the rows of `sql` and adds up the cells of equal keys; returns them in key order.
/// DuckDB does not sort the rows: sorting a big tenant's day of sketches ran out of the
/// shard's memory.
fn folded<K: Eq + Hash + Ord>(
    tx: &Transaction<'_>,
    sql: &str,
    key: impl Fn(&Row<'_>) -> ::duckdb::Result<K>,
    cell_column: usize,
) -> Result<Vec<(K, Cell)>, ShardFailure> {
    let mut sums: HashMap<K, Cell> = HashMap::new();
    let mut statement = tx.prepare(sql)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let cell = Cell::read(row, cell_column)?;
        match sums.entry(key(row)?) {
            Entry::Occupied(sum) => sum.into_mut().add(cell),
            Entry::Vacant(sum) => {
                sum.insert(cell);
            }
        }
    }
    let mut out: Vec<(K, Cell)> = sums.into_iter().collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn fold_days(tx: &Transaction<'_>) -> Result<(), ShardFailure> {
    tx.execute_batch(schema::DIRTY_DAYS)?;
    // Ordered by tenant, then dimension: the order reads select them in.
    type Key = (String, i16, i32, String, Stamp);
    let key = |row: &Row<'_>| -> ::duckdb::Result<Key> {
        Ok((
            row.get(0)?,
            row.get(2)?,
            row.get(1)?,
            row.get(3)?,
            stamp(row, 4)?,
        ))
    };
    let rows = folded(tx, &schema::dirty_day_rows(), key, 6)?;
    tx.execute_batch(&schema::delete_dirty_days())?;
    let mut appender = tx.appender("days")?;
    for ((tenant, dimension, day, value, stamp), cell) in rows {
        let key = DayKey {
            tenant: &tenant,
            day,
            dimension,
            value: &value,
            stamp,
        };
        let counters = cell.counters;
        append_day(
            &mut appender,
            &key,
            &counters,
            cell.into_sketch_bytes()?,
            true,
        )?;
    }
    appender.flush()?;
    Ok(())
}

fn fold_hours(tx: &Transaction<'_>) -> Result<(), ShardFailure> {
    tx.execute_batch(schema::DIRTY_HOURS)?;
    let key = |row: &Row<'_>| -> ::duckdb::Result<(String, i64, i32, Stamp)> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, stamp(row, 3)?))
    };
    let rows = folded(tx, &schema::dirty_hour_rows(), key, 5)?;
    tx.execute_batch(&schema::delete_dirty_hours())?;
    let mut appender = tx.appender("hours")?;
    for ((tenant, hour_ms, day, stamp), cell) in rows {
        let key = HourKey {
            tenant: &tenant,
            hour_ms,
            day,
            stamp,
        };
        let counters = cell.counters;
        append_hour(
            &mut appender,
            &key,
            &counters,
            cell.into_sketch_bytes()?,
            true,
        )?;
    }
    appender.flush()?;
    Ok(())
}

/// The generation and logic version in columns `first` and `first + 1`.
fn stamp(row: &Row<'_>, first: usize) -> ::duckdb::Result<Stamp> {
    Ok(Stamp {
        gen_id: row.get(first)?,
        version: row.get(first + 1)?,
    })
}
