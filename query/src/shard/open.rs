//! The open shard files: one DuckDB database per rollup-log partition, opened on first use
//! and kept open, or opened again once DuckDB invalidated its instance.
//!
//! Invariant: a file is open at most once in this process, but for an instance DuckDB
//! invalidated, which writes nothing more.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use duckdb::{Config, Connection};

use super::schema;
use super::settled::SpanCache;
use super::writes::{Touched, Writes};
use crate::error::ShardFailure;

/// Reads running at once on one shard; more wait. Each read runs on its caller's thread
/// (DuckDB threads = 1), so this also bounds the blocking threads a shard occupies.
///
/// Invariant: a read that ran out of the shard's memory runs once more alone, so reads that
/// fit the pool one at a time never fail for running at the same time.
const MAX_READERS: usize = 8;
/// DuckDB worker threads per shard: one, the caller's.
const SHARD_THREADS: i64 = 1;

/// Locks `mutex`, recovering the data if a holder panicked (DuckDB rolls back an open
/// transaction when its guard is dropped, so the connection stays usable).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open shard file: a write connection and a pool of read connections.
pub(crate) struct Shard {
    /// The file's name, for errors and logs.
    pub(crate) name: String,
    write: Mutex<Connection>,
    origin: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reading: Mutex<Reading>,
    freed: Condvar,
    appended: AtomicU64,
    /// Set once DuckDB invalidated the instance: it refuses every call from then on.
    invalidated: AtomicBool,
    /// Writes done on this partition's shard since the process started (kept across reopens).
    pub(crate) writes: Arc<Mutex<Writes>>,
    /// Sums of its tenants' settled days, kept between reads.
    pub(crate) spans: Mutex<SpanCache>,
    /// The last applied stage of each generation still staging, by (tenant, generation), as
    /// committed to the file. Only the writer reads and changes it, under the write lock.
    ///
    /// Invariant: it changes only after a commit, and only the rollup apply writes the
    /// `generations` table, so an entry is what the table holds.
    pub(crate) staging: Mutex<Staging>,
}

/// Generations still staging: their last applied stage by (tenant, generation).
pub(crate) type Staging = HashMap<(String, u64), u32>;

/// The reads running on a shard, and those waiting to run alone.
#[derive(Default)]
struct Reading {
    /// Reads running beside others.
    shared: usize,
    /// Whether a read runs alone.
    alone: bool,
    /// Reads waiting to run alone: no new read starts before them.
    waiting_alone: usize,
}

/// A running read; frees its place when dropped.
struct ReadPermit<'a> {
    shard: &'a Shard,
    alone: bool,
}

impl Drop for ReadPermit<'_> {
    fn drop(&mut self) {
        let mut reading = lock(&self.shard.reading);
        if self.alone {
            reading.alone = false;
        } else {
            reading.shared -= 1;
        }
        self.shard.freed.notify_all();
    }
}

impl Shard {
    fn open(
        path: PathBuf,
        memory: &str,
        writes: Arc<Mutex<Writes>>,
        span_bytes: usize,
    ) -> duckdb::Result<Self> {
        let config = Config::default()
            .threads(SHARD_THREADS)?
            .max_memory(memory)?;
        let write = Connection::open_with_flags(&path, config)?;
        write.execute_batch(schema::CREATE)?;
        let origin = write.try_clone()?;
        Ok(Self {
            name: path.display().to_string(),
            write: Mutex::new(write),
            origin: Mutex::new(origin),
            readers: Mutex::new(Vec::new()),
            reading: Mutex::default(),
            freed: Condvar::new(),
            appended: AtomicU64::new(0),
            invalidated: AtomicBool::new(false),
            writes,
            spans: Mutex::new(SpanCache::new(span_bytes)),
            staging: Mutex::default(),
        })
    }

    /// Counts `rows` appended and returns the count since the last fold.
    pub(crate) fn note_appended(&self, rows: u64) -> u64 {
        self.appended.fetch_add(rows, Ordering::Relaxed) + rows
    }

    /// Restarts the count after a fold.
    pub(crate) fn reset_appended(&self) {
        self.appended.store(0, Ordering::Relaxed);
    }

    /// Runs `f` with the shard's only write connection, and counts the write of `touched`'s
    /// rows once it is over (committed or not): a read that sees the count from before may have
    /// read either side.
    pub(crate) fn with_writer<T, E>(
        &self,
        touched: Touched<'_>,
        f: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: DuckFailure,
    {
        let out = f(&mut lock(&self.write));
        lock(&self.writes).count(touched);
        self.note(out)
    }

    /// Passes `out` on, noting whether its error invalidated the instance.
    fn note<T, E: DuckFailure>(&self, out: Result<T, E>) -> Result<T, E> {
        if let Err(err) = &out
            && err.invalidates()
            && !self.invalidated.swap(true, Ordering::Relaxed)
        {
            tracing::error!(shard = %self.name, error = %err, "DuckDB invalidated the shard's instance; the next call opens the file again");
        }
        out
    }

    /// Waits until this read may run: beside fewer than [`MAX_READERS`] others, or `alone`.
    fn read_permit(&self, alone: bool) -> ReadPermit<'_> {
        let mut reading = lock(&self.reading);
        if alone {
            reading.waiting_alone += 1;
        }
        loop {
            let free = if alone {
                reading.shared == 0
            } else {
                reading.shared < MAX_READERS && reading.waiting_alone == 0
            };
            if free && !reading.alone {
                break;
            }
            reading = self
                .freed
                .wait(reading)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if alone {
            reading.waiting_alone -= 1;
            reading.alone = true;
        } else {
            reading.shared += 1;
        }
        ReadPermit { shard: self, alone }
    }

    /// Runs `f` with a read connection of its own, concurrently with writes and other reads;
    /// once more alone if it ran out of the shard's memory.
    pub(crate) fn with_reader<T, E: From<duckdb::Error> + DuckFailure>(
        &self,
        f: impl Fn(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let out = match self.read(false, &f) {
            Err(err) if err.out_of_memory() => {
                tracing::debug!(shard = %self.name, error = %err, "a read ran out of the shard's memory; running it again alone");
                self.read(true, &f)
            }
            out => out,
        };
        self.note(out)
    }

    /// Runs `f` once with a pooled read connection, `alone` or beside other reads.
    fn read<T, E: From<duckdb::Error>>(
        &self,
        alone: bool,
        f: &impl Fn(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let _permit = self.read_permit(alone);
        let idle = lock(&self.readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => lock(&self.origin).try_clone()?,
        };
        let out = f(&conn);
        if out.is_ok() {
            let mut pool = lock(&self.readers);
            if pool.len() < MAX_READERS {
                pool.push(conn);
            }
        }
        out
    }
}

/// An error that may be one of DuckDB's that a shard handles: fatal, or out of memory.
///
/// After a fatal error (a checkpoint that failed for want of memory or disk, say) DuckDB
/// invalidates the instance and refuses every later call until the file is opened again,
/// which replays its write-ahead log. DuckDB's C API tells either kind only by its message.
pub(crate) trait DuckFailure: std::fmt::Display {
    /// Whether DuckDB invalidated its instance with this error.
    fn invalidates(&self) -> bool;
    /// Whether DuckDB ran out of the instance's memory limit.
    fn out_of_memory(&self) -> bool;
}

impl DuckFailure for duckdb::Error {
    fn invalidates(&self) -> bool {
        let text = self.to_string();
        text.contains("FATAL Error") || text.contains("database has been invalidated")
    }

    fn out_of_memory(&self) -> bool {
        self.to_string().contains("Out of Memory Error")
    }
}

impl DuckFailure for ShardFailure {
    fn invalidates(&self) -> bool {
        matches!(self, ShardFailure::DuckDb(err) if err.invalidates())
    }

    fn out_of_memory(&self) -> bool {
        matches!(self, ShardFailure::DuckDb(err) if err.out_of_memory())
    }
}

/// The shard files of one folder. Every method blocks: call from blocking threads only.
pub(crate) struct OpenShards {
    dir: PathBuf,
    memory: String,
    /// Bytes of settled days' sums each shard keeps.
    span_bytes: AtomicUsize,
    open: Mutex<HashMap<u32, Arc<Shard>>>,
    /// Per partition, the writes counted by its shard.
    writes: Mutex<HashMap<u32, Arc<Mutex<Writes>>>>,
}

impl OpenShards {
    /// Shards of `dir`, each DuckDB instance limited to `memory_bytes`.
    pub(crate) fn new(dir: PathBuf, memory_bytes: u64) -> Self {
        Self {
            dir,
            // DuckDB's syntax for a number of bytes.
            memory: format!("{memory_bytes}b"),
            span_bytes: AtomicUsize::new(0),
            open: Mutex::default(),
            writes: Mutex::default(),
        }
    }

    /// Makes each shard opened from now on keep up to `bytes` of its tenants' settled days'
    /// sums.
    pub(crate) fn keep_spans(&self, bytes: usize) {
        self.span_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The file of a partition's shard. The dot keeps it apart from any tenant-named file:
    /// tenant ids are `[a-z0-9_-]`.
    pub(crate) fn path(&self, partition: u32) -> PathBuf {
        self.dir.join(format!("partition.{partition}.duckdb"))
    }

    /// The partition's shard, opened (and created when `create`) as needed. `None` when the
    /// file does not exist and `create` is false.
    pub(crate) fn get(&self, partition: u32, create: bool) -> duckdb::Result<Option<Arc<Shard>>> {
        let mut open = lock(&self.open);
        if let Some(shard) = open.get(&partition) {
            if !shard.invalidated.load(Ordering::Relaxed) {
                return Ok(Some(shard.clone()));
            }
            tracing::warn!(partition, shard = %shard.name, "opening an invalidated shard again");
            open.remove(&partition);
        }
        let path = self.path(partition);
        if !create && !path.exists() {
            return Ok(None);
        }
        let spans = self.span_bytes.load(Ordering::Relaxed);
        let shard = Arc::new(Shard::open(
            path,
            &self.memory,
            self.writes_of(partition),
            spans,
        )?);
        tracing::debug!(partition, shard = %shard.name, "shard opened");
        open.insert(partition, shard.clone());
        Ok(Some(shard))
    }

    /// The number of the last write to `partition`'s shard that may have changed `tenant`'s
    /// rows: an answer read from them stays true while it stays the same. Never blocks on
    /// DuckDB.
    pub(crate) fn writes(&self, partition: u32, tenant: &str) -> u64 {
        lock(&self.writes_of(partition)).of(tenant)
    }

    fn writes_of(&self, partition: u32) -> Arc<Mutex<Writes>> {
        lock(&self.writes).entry(partition).or_default().clone()
    }

    /// Closes every shard (checkpointing it) once no one else holds it.
    pub(crate) fn close(&self) {
        lock(&self.open).clear();
    }
}
