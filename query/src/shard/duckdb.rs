//! The DuckDB shard store: one file per rollup-log partition, `<dir>/partition.<p>.duckdb`,
//! holding the rollups of every tenant of that partition.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::sync::Arc;

use ::duckdb::types::Value;
use ::duckdb::{Connection, OptionalExt, Transaction, params, params_from_iter};
use async_trait::async_trait;
use beacon_core::partition::partition_of;
use beacon_proto::pipeline::v1::{EventRow, SwapTotals, TenantRollup, TenantVersion};
use jiff::civil::Date;

use self::swap::Swaps;
use super::cell::{DayKey, HourKey, NewCell, Stamp, append_day, append_hour, append_recent_row};
use super::open::{DuckFailure, OpenShards, Shard, Staging, lock};
use super::schema;
use super::writes::{Touched, Written};
use super::{
    Answer, Applied, Covered, EventPosition, Recent, RecentQuery, Refused, RollupMessage,
    ScanQuery, ShardPosition, ShardQuery, ShardStore, ValidRollup, compact, events, read, rows,
    scan,
};
use crate::QueryError;
use crate::error::ShardFailure;

/// How long realtime rows are kept, behind the newest minute applied.
const RECENT_KEPT_MS: i64 = 2 * 3_600_000;

/// Bytes of settled days' sums a store keeps unless told otherwise
/// ([`DuckShardStore::with_settled_cache`]).
const DEFAULT_SETTLED_BYTES: usize = 64 << 20;

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
    /// absent); each file's DuckDB instance is limited to `memory_bytes`.
    pub fn new(dir: PathBuf, partitions: u32, memory_bytes: u64) -> Result<Self, QueryError> {
        std::fs::create_dir_all(&dir).map_err(|err| {
            beacon_core::Error::backend(format!("creating shard folder {}", dir.display()), err)
        })?;
        let shards = OpenShards::new(dir, memory_bytes);
        let partitions = partitions.max(1);
        shards.keep_spans(DEFAULT_SETTLED_BYTES / partitions as usize);
        Ok(Self {
            shards: Arc::new(shards),
            partitions,
        })
    }

    /// Keeps up to `bytes` (split evenly between the partitions' shards) of the sums of
    /// tenants' settled days between reads, for shards opened from now on; 0 keeps none.
    pub fn with_settled_cache(self, bytes: u64) -> Self {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.shards.keep_spans(bytes / self.partitions as usize);
        self
    }

    /// Deletes `tenant_id`'s live and staged events of local dates before `before`; returns
    /// how many.
    pub async fn expire_events(&self, tenant_id: &str, before: Date) -> Result<u64, QueryError> {
        beacon_core::auth::validate_tenant_id(tenant_id)?;
        let partition = partition_of(tenant_id, self.partitions);
        let tenant = tenant_id.to_owned();
        self.blocking(move |shards| {
            let Some(shard) = open(shards, partition, false)? else {
                return Ok(0);
            };
            shard
                .with_writer(Touched::Tenants(&[Written::any_day(&tenant)]), |conn| {
                    conn.prepare_cached(schema::EXPIRE_EVENTS)?
                        .execute(params![tenant, before.to_string()])
                })
                .map(|deleted| deleted as u64)
                .map_err(|err| {
                    QueryError::shard(&shard.name, format!("expiring events of {tenant:?}"), err)
                })
        })
        .await
    }

    /// Spans of settled days kept by `partition`'s shard, if open.
    #[cfg(test)]
    pub(crate) fn spans_kept(&self, partition: u32) -> usize {
        match self.shards.get(partition, false) {
            Ok(Some(shard)) => super::open::lock(&shard.spans).len(),
            _ => 0,
        }
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

    /// Runs `read` on a read connection of `tenant_id`'s shard, with the tenant id; the
    /// default answer when the shard was never created. `what` names the read in errors.
    async fn read_tenant<T, F>(
        &self,
        tenant_id: &str,
        what: String,
        read: F,
    ) -> Result<T, QueryError>
    where
        T: Default + Send + 'static,
        F: Fn(&Connection, &str, &Shard) -> Result<T, ShardFailure> + Send + 'static,
    {
        beacon_core::auth::validate_tenant_id(tenant_id)?;
        let partition = partition_of(tenant_id, self.partitions);
        let tenant = tenant_id.to_owned();
        self.blocking(move |shards| {
            let read = read_shard(shards, partition, what, |conn, shard| {
                read(conn, &tenant, shard)
            })?;
            Ok(read.unwrap_or_default())
        })
        .await
    }
}

#[async_trait]
impl ShardStore for DuckShardStore {
    fn changes(&self, tenant_id: &str) -> Option<u64> {
        Some(
            self.shards
                .writes(partition_of(tenant_id, self.partitions), tenant_id),
        )
    }

    fn validate(&self, partition: u32, rollup: TenantRollup) -> Result<ValidRollup, Box<Refused>> {
        let valid = rows::validate(rollup)?;
        let owner = partition_of(valid.tenant_id(), self.partitions);
        if owner != partition {
            let error = QueryError::InvalidRollup(format!(
                "tenant {:?} belongs to partition {owner} of {}, not {partition}",
                valid.tenant_id(),
                self.partitions
            ));
            return Err(Box::new(Refused {
                error,
                rollup: valid.rollup,
            }));
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
            let tenant = part.tenant_id().to_owned();
            let message = RollupMessage {
                seq: 0,
                logic_version: 0,
                tenants: vec![part],
                from_dead_letter: false,
                covered: None,
            };
            shard
                .with_writer(Touched::Tenants(&[Written::any_day(&tenant)]), |conn| {
                    let staging = lock(&shard.staging);
                    let tx = conn.transaction()?;
                    let mut parts = Parts::new(&tx, &staging);
                    for part in &message.tenants {
                        parts.add(part, &message)?;
                    }
                    parts.finish()?;
                    tx.rollback()?;
                    Ok::<_, ShardFailure>(())
                })
                .map_err(|err| {
                    QueryError::shard(
                        &shard.name,
                        format!("probing the part of tenant {tenant:?}"),
                        err,
                    )
                })
        })
        .await
    }

    async fn watermark(&self, partition: u32) -> Result<Option<u64>, QueryError> {
        self.blocking(move |shards| {
            let read = read_shard(shards, partition, "reading the watermark", |conn, _| {
                conn.query_row(schema::SELECT_WATERMARK, [partition], |row| row.get(0))
                    .optional()
            })?;
            Ok(read.flatten())
        })
        .await
    }

    async fn position(&self, partition: u32) -> Result<ShardPosition, QueryError> {
        self.blocking(move |shards| {
            let what = "reading the shard's position";
            let read = read_shard(shards, partition, what, |conn, _| {
                conn.query_row(schema::SELECT_POSITION, [partition], |row| {
                    let covered = match (row.get(1)?, row.get(2)?) {
                        (Some(seq), Some(index)) => Some(Covered {
                            to: EventPosition { seq, index },
                            log: row.get(3)?,
                        }),
                        _ => None,
                    };
                    Ok(ShardPosition {
                        watermark: row.get(0)?,
                        covered,
                        log: row.get(4)?,
                    })
                })
                .optional()
            })?;
            Ok(read.flatten().unwrap_or_default())
        })
        .await
    }

    async fn adopt_log(
        &self,
        partition: u32,
        identity: String,
        watermark: Option<u64>,
    ) -> Result<(), QueryError> {
        self.blocking(move |shards| {
            let Some(shard) = open(shards, partition, true)? else {
                return Err(QueryError::invalid(format!(
                    "partition {partition}: shard file was not created"
                )));
            };
            shard
                .with_writer(Touched::All, |conn| match watermark {
                    Some(seq) => conn.execute(
                        schema::MOVE_TO_LOG,
                        duckdb::params![partition, seq, identity],
                    ),
                    None => conn.execute(schema::UPSERT_LOG, duckdb::params![partition, identity]),
                })
                .map(|_| ())
                .map_err(|err| {
                    QueryError::shard(&shard.name, "recording the rollup log's identity", err)
                })
        })
        .await
    }

    async fn recent(&self, tenant_id: &str, query: RecentQuery) -> Result<Recent, QueryError> {
        let what = format!("reading the realtime view of tenant {tenant_id:?}");
        self.read_tenant(tenant_id, what, move |conn, tenant, _| {
            read::recent(conn, tenant, &query)
        })
        .await
    }

    async fn scan(&self, tenant_id: &str, query: ScanQuery) -> Result<Answer, QueryError> {
        let what = format!("scanning the events of tenant {tenant_id:?}");
        self.read_tenant(tenant_id, what, move |conn, tenant, _| {
            scan::run(conn, tenant, &query)
        })
        .await
    }

    async fn query(&self, tenant_id: &str, query: ShardQuery) -> Result<Answer, QueryError> {
        let dimension = i16::try_from(query.dimension).map_err(|_| {
            QueryError::invalid(format!(
                "dimension {} is not a known Dimension",
                query.dimension
            ))
        })?;
        if query.group.time == Some(super::Time::Hour)
            && (dimension != 0 || query.group.value || query.keep.is_some())
        {
            return Err(QueryError::invalid(
                "hourly groups are kept for unfiltered totals only (dimension 0)",
            ));
        }
        let what = format!("reading {:?} of tenant {tenant_id:?}", query.group);
        self.read_tenant(tenant_id, what, move |conn, tenant, shard| {
            let kept = read::Kept {
                spans: &shard.spans,
                writes: &shard.writes,
            };
            read::sums(conn, tenant, dimension, &query, kept)
        })
        .await
    }

    async fn versions(&self, partition: u32) -> Result<Vec<TenantVersion>, QueryError> {
        self.blocking(move |shards| {
            let read = read_shard(shards, partition, "listing logic versions", |conn, _| {
                let mut statement = conn.prepare(schema::VERSIONS)?;
                let rows = statement.query_map([], |row| {
                    Ok(TenantVersion {
                        tenant_id: row.get(0)?,
                        logic_version: u32::try_from(row.get::<_, i32>(1)?).unwrap_or(0),
                        first_date: row.get(2)?,
                        last_date: row.get(3)?,
                    })
                })?;
                rows.collect::<::duckdb::Result<Vec<_>>>()
            })?;
            Ok(read.unwrap_or_default())
        })
        .await
    }
}

/// Runs `read` on a read connection of the partition's shard; `None` when the shard was never
/// created. `what` names the read in errors.
///
/// Invariant: a read that meets an instance DuckDB invalidated (a fatal error in another call,
/// after this read took the shard) runs once more on the file opened again, instead of failing
/// its caller.
fn read_shard<T, E>(
    shards: &OpenShards,
    partition: u32,
    what: impl Into<String>,
    read: impl Fn(&Connection, &Shard) -> Result<T, E>,
) -> Result<Option<T>, QueryError>
where
    E: From<::duckdb::Error> + DuckFailure + Into<ShardFailure>,
{
    let mut again = true;
    loop {
        let Some(shard) = open(shards, partition, false)? else {
            return Ok(None);
        };
        match shard.with_reader(|conn| read(conn, &shard)) {
            Err(err) if again && err.invalidates() => {
                again = false;
                tracing::warn!(shard = %shard.name, error = %err, "a read met an invalidated instance; reading again from the file opened again");
            }
            out => {
                return out
                    .map(Some)
                    .map_err(|err| QueryError::shard(&shard.name, what, err));
            }
        }
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
    let tenants: Vec<Written<'_>> = messages
        .iter()
        .flat_map(|m| &m.tenants)
        .map(|part| Written {
            tenant: part.tenant_id(),
            from_day: part.first_day(),
        })
        .collect();
    let (applied, rows) = shard
        .with_writer(Touched::Tenants(&tenants), |conn| {
            apply_tx(conn, partition, messages, &mut lock(&shard.staging))
        })
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
        .with_writer(Touched::NoSums, compact::fold)
        .map_err(|err| QueryError::shard(&shard.name, "folding deltas", err))?;
    tracing::debug!(shard = %shard.name, "shard folded");
    Ok(())
}

/// The exactly-once step: the watermark check, the appended rows and sketches, the generation
/// changes and the new watermark commit together or not at all; `staging` follows the
/// generations once they are committed. Returns what was applied and the rows appended.
fn apply_tx(
    conn: &mut Connection,
    partition: u32,
    messages: &[RollupMessage],
    staging: &mut Staging,
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
        let applied = Applied {
            messages: 0,
            watermark: watermark.unwrap_or(0),
            swaps: Vec::new(),
        };
        return Ok((applied, 0));
    };
    let mut parts = Parts::new(&tx, staging);
    for message in &fresh {
        for part in &message.tenants {
            parts.add(part, message)?;
        }
    }
    let Finished {
        rows,
        swaps,
        generations,
    } = parts.finish()?;
    let covered = fresh.iter().rev().find_map(|m| m.covered.as_ref());
    let moved = match watermark {
        Some(_) => schema::UPDATE_WATERMARK,
        None => schema::INSERT_WATERMARK,
    };
    tx.prepare_cached(moved)?.execute(params![
        partition,
        last,
        covered.map(|c| c.to.seq),
        covered.map(|c| c.to.index),
        covered.and_then(|c| c.log.as_deref())
    ])?;
    tx.commit()?;
    for (key, stage) in generations {
        match stage {
            Some(stage) => staging.insert(key, stage),
            None => staging.remove(&key),
        };
    }
    let applied = Applied {
        messages: fresh.len(),
        watermark: last,
        swaps,
    };
    Ok((applied, rows))
}

/// A generation's progress as recorded in the shard.
#[derive(Debug, Clone, PartialEq)]
struct Generation {
    /// Last staged part applied.
    stage: u32,
    /// "staging", "swapped" or "dropped".
    state: &'static str,
    /// Whether it changed in this transaction.
    changed: bool,
}

/// The parts of a run, applied in order: rows are gathered into cells and appended in bulk,
/// and a swap or drop first appends what came before it.
struct Parts<'t, 'a> {
    tx: &'t Transaction<'t>,
    /// The generations staging as committed before this transaction.
    staging: &'t Staging,
    cells: NewCells<'a>,
    rows: u64,
    generations: HashMap<(&'a str, u64), Generation>,
    /// The swaps done: job and totals.
    swaps: Vec<(String, SwapTotals)>,
    /// The swaps waiting for the rows before them.
    pending: Swaps<'a>,
}

impl<'t, 'a> Parts<'t, 'a> {
    fn new(tx: &'t Transaction<'t>, staging: &'t Staging) -> Self {
        Self {
            tx,
            staging,
            cells: NewCells::default(),
            rows: 0,
            generations: HashMap::new(),
            swaps: Vec::new(),
            pending: Swaps::default(),
        }
    }

    /// Adds one part of `message`: live rows always; a generation's only while it is staging
    /// and the part's stage was not applied before.
    ///
    /// Invariant: a generation is swapped in only when every stage before the swap was
    /// applied, in order, from the rollup log itself. A stage that skips one (the missing one
    /// was parked as a dead letter) or a part replayed from the dead letters (its place in the
    /// log is gone: a swap replayed late would delete live rows it never saw) drops the
    /// generation instead, and the tenant keeps its live rows until a job runs again.
    fn add(&mut self, part: &'a ValidRollup, message: &RollupMessage) -> Result<(), ShardFailure> {
        let rollup = &part.rollup;
        let (tenant, gen_id) = (part.tenant_id(), rollup.generation);
        let stamp = Stamp {
            gen_id,
            version: i32::try_from(message.logic_version).unwrap_or(i32::MAX),
        };
        if self.pending.holds(tenant) {
            // The tenant's rows after its swap must not be replaced by it.
            self.settle()?;
        }
        if gen_id == 0 {
            return self.cells.add(part, stamp);
        }
        let generation = self.generation(tenant, gen_id)?;
        if generation.state != STAGING || (rollup.stage > 0 && rollup.stage <= generation.stage) {
            return Ok(());
        }
        let gap = rollup.stage > generation.stage + 1;
        if message.from_dead_letter || gap {
            tracing::error!(
                tenant,
                generation = gen_id,
                stage = rollup.stage,
                applied_stage = generation.stage,
                seq = message.seq,
                from_dead_letter = message.from_dead_letter,
                "a generation part is missing or out of place; the generation is dropped and \
                 its job must run again"
            );
            return self.discard(tenant, gen_id);
        }
        if rollup.stage > 0 {
            generation.stage = rollup.stage;
            generation.changed = true;
        }
        self.cells.add(part, stamp)?;
        if let Some(swap) = &rollup.swap {
            self.pending.push(tenant, gen_id, swap);
            self.close(tenant, gen_id, SWAPPED)?;
        } else if rollup.drop {
            self.discard(tenant, gen_id)?;
        }
        Ok(())
    }

    /// Deletes a generation's rows and records it dropped.
    fn discard(&mut self, tenant: &'a str, gen_id: u64) -> Result<(), ShardFailure> {
        self.settle()?;
        for sql in schema::DROP_GENERATION {
            self.tx
                .prepare_cached(sql)?
                .execute(params![tenant, gen_id])?;
        }
        self.close(tenant, gen_id, DROPPED)
    }

    fn generation(
        &mut self,
        tenant: &'a str,
        gen_id: u64,
    ) -> Result<&mut Generation, ShardFailure> {
        let (tx, staging) = (self.tx, self.staging);
        match self.generations.entry((tenant, gen_id)) {
            Entry::Occupied(known) => Ok(known.into_mut()),
            Entry::Vacant(vacant) => {
                let generation = match staging.get(&(tenant.to_owned(), gen_id)) {
                    Some(&stage) => Generation {
                        stage,
                        state: STAGING,
                        changed: false,
                    },
                    None => stored_generation(tx, tenant, gen_id)?,
                };
                Ok(vacant.insert(generation))
            }
        }
    }

    fn close(
        &mut self,
        tenant: &'a str,
        gen_id: u64,
        state: &'static str,
    ) -> Result<(), ShardFailure> {
        let generation = self.generation(tenant, gen_id)?;
        generation.state = state;
        generation.changed = true;
        Ok(())
    }

    /// Appends the cells gathered so far, then does the swaps waiting for them.
    fn settle(&mut self) -> Result<(), ShardFailure> {
        let cells = std::mem::take(&mut self.cells);
        self.rows += append_cells(self.tx, cells)?;
        let done = self.pending.run(self.tx)?;
        self.swaps.extend(done);
        Ok(())
    }

    /// Appends what is left, does the swaps left and records the generations that changed.
    fn finish(mut self) -> Result<Finished, ShardFailure> {
        self.settle()?;
        let changed: Vec<_> = self
            .generations
            .iter()
            .filter(|(_, generation)| generation.changed)
            .collect();
        if !changed.is_empty() {
            let params = changed.iter().flat_map(|&(&(tenant, gen_id), generation)| {
                [
                    Value::Text(tenant.to_owned()),
                    Value::UBigInt(gen_id),
                    Value::UInt(generation.stage),
                    Value::Text(generation.state.to_owned()),
                ]
            });
            self.tx
                .prepare(&schema::upsert_generations(changed.len()))?
                .execute(params_from_iter(params))?;
        }
        let generations = self
            .generations
            .into_iter()
            .map(|((tenant, gen_id), generation)| {
                let stage = (generation.state == STAGING).then_some(generation.stage);
                ((tenant.to_owned(), gen_id), stage)
            })
            .collect();
        Ok(Finished {
            rows: self.rows,
            swaps: self.swaps,
            generations,
        })
    }
}

/// What the parts of a run did, once appended and recorded.
struct Finished {
    /// Rows appended.
    rows: u64,
    /// The swaps done: job and totals.
    swaps: Vec<(String, SwapTotals)>,
    /// Every generation the run had parts of, with its stage if it is still staging.
    generations: Vec<((String, u64), Option<u32>)>,
}

/// A generation as the shard recorded it; a new one when it never did.
fn stored_generation(
    tx: &Transaction<'_>,
    tenant: &str,
    gen_id: u64,
) -> Result<Generation, ShardFailure> {
    let stored: Option<(u32, String)> = tx
        .prepare_cached(schema::SELECT_GENERATION)?
        .query_row(params![tenant, gen_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    Ok(match stored {
        Some((stage, state)) => Generation {
            stage,
            state: match state.as_str() {
                SWAPPED => SWAPPED,
                DROPPED => DROPPED,
                _ => STAGING,
            },
            changed: false,
        },
        None => Generation {
            stage: 0,
            state: STAGING,
            changed: true,
        },
    })
}

/// A generation still receiving rows.
const STAGING: &str = "staging";
/// A generation that replaced the live rows of its dates.
const SWAPPED: &str = "swapped";
/// A discarded generation.
const DROPPED: &str = "dropped";

/// The cells of the parts: one per (tenant, day, dimension, value) and stamp, and one per
/// (tenant, hour, day) and stamp of the totals. The maps hash with foldhash (hashbrown's
/// default): every rollup row is looked up once or twice.
#[derive(Default)]
struct NewCells<'a> {
    days: hashbrown::HashMap<(&'a str, i32, i16, &'a str, Stamp), NewCell>,
    hours: hashbrown::HashMap<(&'a str, i64, i32, Stamp), NewCell>,
    /// The realtime view's rows by (tenant, minute, dimension, value): live parts only.
    recent: hashbrown::HashMap<(&'a str, i64, i16, &'a str), NewCell>,
    /// The event store's rows, with their tenant, stamp and (event, visit) days.
    events: Vec<(&'a str, Stamp, &'a EventRow, (i32, i32))>,
}

impl<'a> NewCells<'a> {
    fn add(&mut self, part: &'a ValidRollup, stamp: Stamp) -> Result<(), ShardFailure> {
        let tenant = part.tenant_id();
        let rows = part.rollup.rows.iter().zip(&part.keys.rows);
        for (row, &(day, dimension)) in rows {
            let cell = self
                .days
                .entry((tenant, day, dimension, &row.value, stamp))
                .or_insert_with(NewCell::new);
            cell.add_row(row);
            if !row.visitors.is_empty() {
                cell.add_visitors(&row.visitors)?;
            }
            if dimension == 0 {
                let cell = self
                    .hours
                    .entry((tenant, row.hour_ms, day, stamp))
                    .or_insert_with(NewCell::new);
                cell.add_row(row);
                if !row.visitors.is_empty() {
                    cell.add_visitors(&row.visitors)?;
                }
            }
        }
        for (row, &days) in part.rollup.events.iter().zip(&part.keys.events) {
            self.events.push((tenant, stamp, row, days));
        }
        if stamp.gen_id != 0 {
            return Ok(());
        }
        for row in &part.rollup.recent {
            // Validation kept the dimension to 0, page or source.
            let dimension = i16::try_from(row.dimension).unwrap_or(0);
            let cell = self
                .recent
                .entry((tenant, row.hour_ms, dimension, &row.value))
                .or_insert_with(NewCell::new);
            cell.add_row(row);
            if !row.visitors.is_empty() {
                cell.add_visitors(&row.visitors)?;
            }
        }
        Ok(())
    }
}

/// Appends cells; returns the rows appended.
fn append_cells(tx: &Transaction<'_>, cells: NewCells<'_>) -> Result<u64, ShardFailure> {
    append_recent(tx, &cells.recent)?;
    if !cells.events.is_empty() {
        let mut appender = tx.appender("events")?;
        for &(tenant, stamp, row, days) in &cells.events {
            events::append(&mut appender, tenant, stamp, row, days)?;
        }
        appender.flush()?;
    }
    let rows = (cells.days.len() + cells.hours.len()) as u64;
    if rows == 0 {
        return Ok(0);
    }
    let mut appender = tx.appender("days")?;
    for (&(tenant, day, dimension, value, stamp), cell) in &cells.days {
        let key = DayKey {
            tenant,
            day,
            dimension,
            value,
            stamp,
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
    for (&(tenant, hour_ms, day, stamp), cell) in &cells.hours {
        let key = HourKey {
            tenant,
            hour_ms,
            day,
            stamp,
        };
        append_hour(
            &mut appender,
            &key,
            &cell.counters,
            cell.sketch_bytes(),
            false,
        )?;
    }
    appender.flush()?;
    Ok(rows)
}

/// Appends the realtime view's rows, then drops those more than [`RECENT_KEPT_MS`] older than
/// the newest minute appended.
fn append_recent(
    tx: &Transaction<'_>,
    recent: &hashbrown::HashMap<(&str, i64, i16, &str), NewCell>,
) -> Result<(), ShardFailure> {
    let Some(newest) = recent.keys().map(|&(_, minute, _, _)| minute).max() else {
        return Ok(());
    };
    let mut appender = tx.appender("recent")?;
    for (&(tenant, minute_ms, dimension, value), cell) in recent {
        append_recent_row(
            &mut appender,
            (tenant, minute_ms, dimension, value),
            &cell.counters,
            cell.sketch_bytes(),
        )?;
    }
    appender.flush()?;
    tx.prepare_cached(schema::PRUNE_RECENT)?
        .execute(params![newest - RECENT_KEPT_MS])?;
    Ok(())
}

mod swap;
#[cfg(test)]
mod tests;
