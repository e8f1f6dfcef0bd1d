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

/// Sketch bytes one fetch of a fold brings back, at most (and one row's more): DuckDB holds
/// a whole result in the shard's pool, and a big tenant's day of sketches is larger than it.
const FETCH_BYTES: i64 = 4 << 20;

/// The rows of the dirty keys, fetched in windows of rowids ([`windows`]), with the cells of
/// equal keys added up; in key order. The sums are kept here, not sorted by DuckDB, for the
/// same reason.
fn folded<K: Eq + Hash + Ord>(
    tx: &Transaction<'_>,
    (sizes, rows): (&str, &str),
    key: impl Fn(&Row<'_>) -> ::duckdb::Result<K>,
    cell_column: usize,
) -> Result<Vec<(K, Cell)>, ShardFailure> {
    let mut sums: HashMap<K, Cell> = HashMap::new();
    let mut statement = tx.prepare(rows)?;
    for (first, last) in windows(tx, sizes)? {
        let mut rows = statement.query([first, last])?;
        while let Some(row) = rows.next()? {
            let cell = Cell::read(row, cell_column)?;
            match sums.entry(key(row)?) {
                Entry::Occupied(sum) => sum.into_mut().add(cell),
                Entry::Vacant(sum) => {
                    sum.insert(cell);
                }
            }
        }
    }
    let mut out: Vec<(K, Cell)> = sums.into_iter().collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Ranges of rowids (first, last) whose rows' sketches add up to about [`FETCH_BYTES`] each,
/// from `sizes` (rowid and sketch bytes, by rowid).
fn windows(tx: &Transaction<'_>, sizes: &str) -> Result<Vec<(i64, i64)>, ShardFailure> {
    let mut out = Vec::new();
    let mut open: Option<(i64, i64, i64)> = None;
    let mut statement = tx.prepare(sizes)?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let (rowid, bytes): (i64, i64) = (row.get(0)?, row.get(1)?);
        open = match open {
            Some((first, _, held)) if held < FETCH_BYTES => Some((first, rowid, held + bytes)),
            Some((first, last, _)) => {
                out.push((first, last));
                Some((rowid, rowid, bytes))
            }
            None => Some((rowid, rowid, bytes)),
        };
    }
    out.extend(open.map(|(first, last, _)| (first, last)));
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
    let sql = (schema::dirty_day_sizes(), schema::dirty_day_rows());
    let rows = folded(tx, (&sql.0, &sql.1), key, 6)?;
    tx.execute_batch(schema::DELETE_DIRTY_DAYS)?;
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
    let sql = (schema::dirty_hour_sizes(), schema::dirty_hour_rows());
    let rows = folded(tx, (&sql.0, &sql.1), key, 5)?;
    tx.execute_batch(schema::DELETE_DIRTY_HOURS)?;
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
