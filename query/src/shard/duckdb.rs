//! The DuckDB shard store: one file per rollup-log partition, `<dir>/p<partition>.duckdb`,
//! holding the rollups of every tenant of that partition.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;

use ::duckdb::types::Value;
use ::duckdb::{Connection, OptionalExt, Transaction, params};
use async_trait::async_trait;
use beacon_core::partition::partition_of;
use beacon_proto::pipeline::v1::TenantRollup;
use datasketches::hll::HllSketch;

use super::open::{OpenShards, Shard};
use super::{Applied, RollupMessage, ShardQuery, ShardStore, ValidRollup, compact, read, rows};
use super::{schema, sketch};
use crate::QueryError;
use crate::error::ShardFailure;
use crate::metrics::Sums;

/// Folds a shard once this many rows (counter deltas and sketches) arrived since the last fold.
const FOLD_AFTER_ROWS: u64 = 100_000;

/// [`ShardStore`] over DuckDB files. Every DuckDB call runs on a blocking thread.
#[derive(Clone)]
pub struct DuckShardStore {
    shards: Arc<OpenShards>,
    partitions: u32,
}

impl DuckShardStore {
    /// A store of the shard files of `partitions` rollup-log partitions in `dir` (created if
    /// absent); each file's DuckDB instance is limited to `memory` ("256MB").
    pub fn new(dir: PathBuf, partitions: u32, memory: &str) -> Result<Self, QueryError> {
        std::fs::create_dir_all(&dir).map_err(|err| {
            beacon_core::Error::backend(format!("creating shard folder {}", dir.display()), err)
        })?;
        Ok(Self {
            shards: Arc::new(OpenShards::new(dir, memory.to_owned())),
            partitions: partitions.max(1),
        })
    }

    /// Folds every open shard's deltas now, off the async runtime.
    pub async fn fold(&self) -> Result<(), QueryError> {
        let (shards, partitions) = (self.shards.clone(), self.partitions);
        tokio::task::spawn_blocking(move || {
            for partition in 0..partitions {
                if let Some(shard) = open(&shards, partition, false)? {
                    fold(&shard)?;
                }
            }
            Ok(())
        })
        .await?
    }

    /// Closes every shard (checkpointing it), off the async runtime.
    pub async fn close(&self) -> Result<(), QueryError> {
        let shards = self.shards.clone();
        Ok(tokio::task::spawn_blocking(move || shards.close()).await?)
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: FnOnce(&OpenShards) -> Result<T, QueryError> + Send + 'static,
    {
        let shards = self.shards.clone();
        tokio::task::spawn_blocking(move || f(&shards)).await?
    }
}

#[async_trait]
impl ShardStore for DuckShardStore {
    fn validate(&self, partition: u32, rollup: TenantRollup) -> Result<ValidRollup, QueryError> {
        let valid = rows::validate(rollup)?;
        let owner = partition_of(valid.tenant_id(), self.partitions);
        if owner != partition {
            return Err(QueryError::InvalidRollup(format!(
                "tenant {:?} belongs to partition {owner} of {}, not {partition}",
                valid.tenant_id(),
                self.partitions
            )));
        }
        Ok(valid)
    }

    async fn apply(
        &self,
        partition: u32,
        messages: Arc<[RollupMessage]>,
    ) -> Result<Applied, QueryError> {
        self.blocking(move |shards| apply(shards, partition, &messages))
            .await
    }

    async fn watermark(&self, partition: u32) -> Result<Option<u64>, QueryError> {
        self.blocking(move |shards| {
            let Some(shard) = open(shards, partition, false)? else {
                return Ok(None);
            };
            shard
                .with_reader(|conn| {
                    conn.query_row(schema::SELECT_WATERMARK, [partition], |row| row.get(0))
                        .optional()
                })
                .map_err(|err| QueryError::shard(&shard.name, "reading the watermark", err))
        })
        .await
    }

    async fn query(&self, tenant_id: &str, query: ShardQuery) -> Result<Vec<Sums>, QueryError> {
        beacon_core::auth::validate_tenant_id(tenant_id)?;
        let dimension = i16::try_from(query.dimension).map_err(|_| {
            QueryError::invalid(format!(
                "dimension {} is not a known Dimension",
                query.dimension
            ))
        })?;
        if query.group == super::GroupBy::Hour && dimension != 0 {
            return Err(QueryError::invalid(
                "hourly groups are kept for totals only (dimension 0)",
            ));
        }
        let partition = partition_of(tenant_id, self.partitions);
        let tenant = tenant_id.to_owned();
        self.blocking(move |shards| {
            let Some(shard) = open(shards, partition, false)? else {
                return Ok(Vec::new());
            };
            shard
                .with_reader(|conn| read::sums(conn, &tenant, dimension, &query))
                .map_err(|err| {
                    QueryError::shard(
                        &shard.name,
                        format!("reading {:?} of tenant {tenant:?}", query.group),
                        err,
                    )
                })
        })
        .await
    }
}

fn open(
    shards: &OpenShards,
    partition: u32,
    create: bool,
) -> Result<Option<Arc<Shard>>, QueryError> {
    shards.get(partition, create).map_err(|err| {
        QueryError::shard(shards.path(partition).display().to_string(), "opening", err)
    })
}

fn apply(
    shards: &OpenShards,
    partition: u32,
    messages: &[RollupMessage],
) -> Result<Applied, QueryError> {
    let shard = open(shards, partition, true)?.ok_or_else(|| {
        QueryError::InvalidRollup(format!("partition {partition}: shard could not be created"))
    })?;
    let (first, last) = (
        messages.first().map_or(0, |m| m.seq),
        messages.last().map_or(0, |m| m.seq),
    );
    let (applied, rows) = shard
        .with_writer(|conn| apply_tx(conn, partition, messages))
        .map_err(|err| {
            QueryError::shard(
                &shard.name,
                format!("applying rollup-log partition {partition} seq {first}..={last}"),
                err,
            )
        })?;
    if shard.note_appended(rows) >= FOLD_AFTER_ROWS {
        fold(&shard)?;
    }
    Ok(applied)
}

fn fold(shard: &Shard) -> Result<(), QueryError> {
    shard
        .with_writer(compact::fold)
        .map_err(|err| QueryError::shard(&shard.name, "folding deltas", err))?;
    shard.reset_appended();
    tracing::debug!(shard = %shard.name, "shard folded");
    Ok(())
}

/// The exactly-once step: the watermark check, the appended rows and sketches and the new
/// watermark commit together or not at all. Returns what was applied and the rows appended.
fn apply_tx(
    conn: &mut Connection,
    partition: u32,
    messages: &[RollupMessage],
) -> Result<(Applied, u64), ShardFailure> {
    let tx = conn.transaction()?;
    // Statements are prepared once per connection: parsing and planning dominated the apply
    // path's profile before.
    let watermark: Option<u64> = tx
        .prepare_cached(schema::SELECT_WATERMARK)?
        .query_row([partition], |row| row.get(0))
        .optional()?;
    let fresh: Vec<&RollupMessage> = messages
        .iter()
        .filter(|m| watermark.is_none_or(|w| m.seq > w))
        .collect();
    let Some(last) = fresh.last().map(|m| m.seq) else {
        tx.rollback()?;
        let watermark = watermark.unwrap_or(0);
        return Ok((
            Applied {
                messages: 0,
                watermark,
            },
            0,
        ));
    };
    let parts: Vec<&ValidRollup> = fresh.iter().flat_map(|m| &m.tenants).collect();
    let rows = append_rows(&tx, &parts)? + append_sketches(&tx, &parts)?;
    tx.prepare_cached(schema::UPSERT_WATERMARK)?
        .execute(params![partition, last])?;
    tx.commit()?;
    Ok((
        Applied {
            messages: fresh.len(),
            watermark: last,
        },
        rows,
    ))
}

fn append_rows(tx: &Transaction<'_>, parts: &[&ValidRollup]) -> Result<u64, ShardFailure> {
    let mut appender = tx.appender("rollups")?;
    let mut rows = 0;
    for part in parts {
        let tenant = part.tenant_id();
        for (row, &(day, dimension)) in part.rollup.rows.iter().zip(&part.keys.rows) {
            appender.append_row(params![
                tenant,
                row.hour_ms,
                Value::Date32(day),
                dimension,
                row.value,
                row.pageviews,
                row.events,
                row.visits,
                row.bounces,
                row.duration_ms,
                row.bot_events,
                false,
            ])?;
            rows += 1;
        }
    }
    appender.flush()?;
    Ok(rows)
}

/// Sketches of the parts' visitors: one per (tenant, day, dimension, value), and one per
/// (tenant, hour) of the totals.
#[derive(Default)]
struct NewSketches<'a> {
    days: HashMap<(&'a str, i32, i16, &'a str), HllSketch>,
    hours: HashMap<(&'a str, i64), (i32, HllSketch)>,
}

impl<'a> NewSketches<'a> {
    fn of(parts: &[&'a ValidRollup]) -> Result<Self, ShardFailure> {
        let mut out = Self::default();
        for part in parts {
            let tenant = part.tenant_id();
            for (set, &(day, dimension)) in part.rollup.visitors.iter().zip(&part.keys.visitors) {
                if set.visitors.is_empty() {
                    continue;
                }
                let sketch = match out.days.entry((tenant, day, dimension, &set.value)) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => entry.insert(sketch::new()?),
                };
                set.visitors
                    .iter()
                    .for_each(|&visitor| sketch.update(visitor));
                if dimension != 0 {
                    continue;
                }
                let (_, sketch) = match out.hours.entry((tenant, set.hour_ms)) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => entry.insert((day, sketch::new()?)),
                };
                set.visitors
                    .iter()
                    .for_each(|&visitor| sketch.update(visitor));
            }
        }
        Ok(out)
    }
}

fn append_sketches(tx: &Transaction<'_>, parts: &[&ValidRollup]) -> Result<u64, ShardFailure> {
    let sketches = NewSketches::of(parts)?;
    let rows = (sketches.days.len() + sketches.hours.len()) as u64;
    let mut appender = tx.appender("day_visitors")?;
    for ((tenant, day, dimension, value), sketch) in sketches.days {
        appender.append_row(params![
            tenant,
            Value::Date32(day),
            dimension,
            value,
            sketch.serialize(),
            false
        ])?;
    }
    appender.flush()?;
    let mut appender = tx.appender("hour_visitors")?;
    for ((tenant, hour_ms), (day, sketch)) in sketches.hours {
        appender.append_row(params![
            tenant,
            hour_ms,
            Value::Date32(day),
            sketch.serialize(),
            false
        ])?;
    }
    appender.flush()?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
