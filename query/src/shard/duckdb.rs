//! The DuckDB shard store: one file per rollup-log partition, `<dir>/partition.<p>.duckdb`,
//! holding the rollups of every tenant of that partition.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use ::duckdb::{Connection, OptionalExt, Transaction, params};
use async_trait::async_trait;
use beacon_core::partition::partition_of;
use beacon_proto::pipeline::v1::TenantRollup;

use super::cell::{DayKey, NewCell, append_day, append_hour};
use super::open::{OpenShards, Shard};
use super::schema;
use super::{Applied, RollupMessage, ShardQuery, ShardStore, ValidRollup, compact, read, rows};
use crate::QueryError;
use crate::error::ShardFailure;
use crate::metrics::Sums;

/// Folds a shard once this many rows arrived since the last fold.
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
        ::duckdb::Config::default()
            .max_memory(memory)
            .map_err(|err| {
                QueryError::invalid(format!(
                    "shard memory limit {memory:?} is not a DuckDB size such as \"256MB\": {err}"
                ))
            })?;
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

    async fn probe(&self, partition: u32, part: ValidRollup) -> Result<(), QueryError> {
        self.blocking(move |shards| {
            let Some(shard) = open(shards, partition, true)? else {
                return Err(QueryError::invalid(format!(
                    "partition {partition}: shard file was not created"
                )));
            };
            shard
                .with_writer(|conn| {
                    let tx = conn.transaction()?;
                    append_cells(&tx, &[&part])?;
                    tx.rollback()?;
                    Ok::<_, ShardFailure>(())
                })
                .map_err(|err| {
                    QueryError::shard(
                        &shard.name,
                        format!("probing the part of tenant {:?}", part.tenant_id()),
                        err,
                    )
                })
        })
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
    let Some(shard) = open(shards, partition, true)? else {
        return Err(QueryError::invalid(format!(
            "partition {partition}: shard file was not created"
        )));
    };
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
    if shard.note_appended(rows) >= FOLD_AFTER_ROWS
        && let Err(err) = fold(&shard)
    {
        // The rows are applied; unfolded rows only cost read time. Try again later.
        tracing::warn!(shard = %shard.name, error = %err, "folding failed");
    }
    Ok(applied)
}

fn fold(shard: &Shard) -> Result<(), QueryError> {
    shard.reset_appended();
    shard
        .with_writer(compact::fold)
        .map_err(|err| QueryError::shard(&shard.name, "folding deltas", err))?;
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
    // Past the watermark, and each sequence once even if a run repeated one.
    let mut high = watermark;
    let fresh: Vec<&RollupMessage> = messages
        .iter()
        .filter(|m| {
            let new = high.is_none_or(|w| m.seq > w);
            if new {
                high = Some(m.seq);
            }
            new
        })
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
    let rows = append_cells(&tx, &parts)?;
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

/// The cells of the parts: one per (tenant, day, dimension, value), and one per
/// (tenant, hour, day) of the totals.
#[derive(Default)]
struct NewCells<'a> {
    days: HashMap<(&'a str, i32, i16, &'a str), NewCell>,
    hours: HashMap<(&'a str, i64, i32), NewCell>,
}

impl<'a> NewCells<'a> {
    fn of(parts: &[&'a ValidRollup]) -> Result<Self, ShardFailure> {
        let mut out = Self::default();
        for part in parts {
            let tenant = part.tenant_id();
            let rows = part.rollup.rows.iter().zip(&part.keys.rows);
            for (row, &(day, dimension)) in rows {
                let cell = out.day(tenant, day, dimension, &row.value);
                cell.add_row(row);
                if !row.visitors.is_empty() {
                    cell.add_visitors(&row.visitors)?;
                }
                if dimension == 0 {
                    let cell = out.hour(tenant, row.hour_ms, day);
                    cell.add_row(row);
                    if !row.visitors.is_empty() {
                        cell.add_visitors(&row.visitors)?;
                    }
                }
            }
        }
        Ok(out)
    }

    fn day(&mut self, tenant: &'a str, day: i32, dimension: i16, value: &'a str) -> &mut NewCell {
        self.days
            .entry((tenant, day, dimension, value))
            .or_insert_with(NewCell::new)
    }

    fn hour(&mut self, tenant: &'a str, hour_ms: i64, day: i32) -> &mut NewCell {
        self.hours
            .entry((tenant, hour_ms, day))
            .or_insert_with(NewCell::new)
    }
}

/// Appends the parts' cells; returns the rows appended.
fn append_cells(tx: &Transaction<'_>, parts: &[&ValidRollup]) -> Result<u64, ShardFailure> {
    let cells = NewCells::of(parts)?;
    let rows = (cells.days.len() + cells.hours.len()) as u64;
    let mut appender = tx.appender("days")?;
    for (&(tenant, day, dimension, value), cell) in &cells.days {
        let key = DayKey {
            tenant,
            day,
            dimension,
            value,
        };
        append_day(
            &mut appender,
            &key,
            &cell.counters,
            cell.sketch_bytes(),
            false,
        )?;
    }
    appender.flush()?;
    let mut appender = tx.appender("hours")?;
    for (&(tenant, hour_ms, day), cell) in &cells.hours {
        let sketch = cell.sketch_bytes();
        append_hour(
            &mut appender,
            tenant,
            hour_ms,
            day,
            &cell.counters,
            sketch,
            false,
        )?;
    }
    appender.flush()?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
