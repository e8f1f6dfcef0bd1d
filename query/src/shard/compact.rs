//! Folding: rewrites the rows of the hours and days that received deltas into one row per
//! key, sorted by tenant. Old hours are never rewritten again, so a fold costs what arrived
//! since the last one (plus the rest of its hours), not the size of the shard.

use ::duckdb::types::Value;
use ::duckdb::{Connection, OptionalExt, Transaction, params};

use super::schema;
use super::sketch::Merge;
use crate::error::ShardFailure;

/// Folds every table of the shard in one transaction (readers keep their snapshot).
pub(crate) fn fold(conn: &mut Connection) -> Result<(), ShardFailure> {
    let tx = conn.transaction()?;
    if let Some(from_ms) = dirty(&tx, schema::DIRTY_HOURS)? {
        tx.execute_batch(&schema::fold_rollups(from_ms))?;
    }
    if let Some(from_day) = dirty(&tx, schema::DIRTY_DAYS)? {
        fold_day_sketches(&tx, from_day)?;
    }
    if let Some(from_ms) = dirty(&tx, schema::DIRTY_SKETCH_HOURS)? {
        fold_hour_sketches(&tx, from_ms)?;
    }
    tx.commit()?;
    Ok(())
}

/// The first hour (or day) with unfolded rows.
fn dirty(tx: &Transaction<'_>, sql: &str) -> Result<Option<i64>, ShardFailure> {
    let first: Option<Option<i64>> = tx.query_row(sql, [], |row| row.get(0)).optional()?;
    Ok(first.flatten())
}

/// Groups consecutive rows with equal keys and merges their sketches.
struct Folder<K> {
    current: Option<(K, Merge)>,
    done: Vec<(K, Vec<u8>)>,
}

impl<K: PartialEq> Folder<K> {
    fn new() -> Self {
        Self {
            current: None,
            done: Vec::new(),
        }
    }

    fn push(&mut self, key: K, sketch: Vec<u8>) -> Result<(), ShardFailure> {
        match &mut self.current {
            Some((current, merge)) if *current == key => merge.add(&sketch)?,
            _ => {
                self.finish_current();
                self.current = Some((key, Merge::of(sketch)));
            }
        }
        Ok(())
    }

    fn finish_current(&mut self) {
        if let Some((key, merge)) = self.current.take() {
            self.done.push((key, merge.into_bytes()));
        }
    }

    fn finish(mut self) -> Vec<(K, Vec<u8>)> {
        self.finish_current();
        self.done
    }
}

type DayKey = (String, i64, i16, String);

fn fold_day_sketches(tx: &Transaction<'_>, from_day: i64) -> Result<(), ShardFailure> {
    let mut folder = Folder::<DayKey>::new();
    {
        let mut statement = tx.prepare(schema::DAY_SKETCHES_FROM)?;
        let mut rows = statement.query([from_day])?;
        while let Some(row) = rows.next()? {
            let key = (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            folder.push(key, row.get(4)?)?;
        }
    }
    tx.execute(schema::DELETE_DAY_SKETCHES_FROM, [from_day])?;
    let mut appender = tx.appender("day_visitors")?;
    for ((tenant, day, dimension, value), sketch) in folder.finish() {
        let day = i32::try_from(day).unwrap_or(i32::MAX);
        appender.append_row(params![
            tenant,
            Value::Date32(day),
            dimension,
            value,
            sketch,
            true
        ])?;
    }
    appender.flush()?;
    Ok(())
}

type HourKey = (String, i64, i64);

fn fold_hour_sketches(tx: &Transaction<'_>, from_ms: i64) -> Result<(), ShardFailure> {
    let mut folder = Folder::<HourKey>::new();
    {
        let mut statement = tx.prepare(schema::HOUR_SKETCHES_FROM)?;
        let mut rows = statement.query([from_ms])?;
        while let Some(row) = rows.next()? {
            let key = (row.get(0)?, row.get(1)?, row.get(2)?);
            folder.push(key, row.get(3)?)?;
        }
    }
    tx.execute(schema::DELETE_HOUR_SKETCHES_FROM, [from_ms])?;
    let mut appender = tx.appender("hour_visitors")?;
    for ((tenant, hour_ms, day), sketch) in folder.finish() {
        let day = i32::try_from(day).unwrap_or(i32::MAX);
        appender.append_row(params![tenant, hour_ms, Value::Date32(day), sketch, true])?;
    }
    appender.flush()?;
    Ok(())
}
