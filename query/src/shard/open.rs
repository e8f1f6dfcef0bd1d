//! The open shard files: at most `max_open` DuckDB databases, least recently used closed first.
//!
//! Invariant: a file is open at most once in this process. A shard is closed only while no one
//! uses it, under the map lock, so it can never be reopened while it is still closing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use duckdb::{Config, Connection};

use super::schema;

/// Read connections per shard: idle ones kept, and queries running at once. More concurrent
/// queries wait: each runs within the shard's memory limit, and 16 dashboards at once on one
/// shard ran DuckDB out of memory.
const MAX_READERS: usize = 4;
/// DuckDB worker threads per shard: queries of one tenant are small.
const SHARD_THREADS: i64 = 1;
/// Memory limit of each shard's DuckDB instance.
const SHARD_MEMORY: &str = "128MB";

/// Locks `mutex`, recovering the data if a holder panicked (DuckDB rolls back an open
/// transaction when its guard is dropped, so the connection stays usable).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open shard file: a write connection and a pool of read connections.
pub(crate) struct Shard {
    write: Mutex<Connection>,
    origin: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    active: Mutex<usize>,
    freed: Condvar,
    appended: AtomicU64,
}

/// A running read; frees its place when dropped.
struct ReadPermit<'a>(&'a Shard);

impl Drop for ReadPermit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.active) -= 1;
        self.0.freed.notify_one();
    }
}

impl Shard {
    fn open(path: &Path) -> duckdb::Result<Self> {
        let config = Config::default()
            .threads(SHARD_THREADS)?
            .max_memory(SHARD_MEMORY)?;
        let write = Connection::open_with_flags(path, config)?;
        write.execute_batch(schema::CREATE)?;
        let origin = write.try_clone()?;
        Ok(Self {
            write: Mutex::new(write),
            origin: Mutex::new(origin),
            readers: Mutex::new(Vec::new()),
            active: Mutex::new(0),
            freed: Condvar::new(),
            appended: AtomicU64::new(0),
        })
    }

    /// Counts `rows` appended and returns the count since the last compaction.
    pub(crate) fn note_appended(&self, rows: u64) -> u64 {
        self.appended.fetch_add(rows, Ordering::Relaxed) + rows
    }

    /// Restarts the count after a compaction.
    pub(crate) fn reset_appended(&self) {
        self.appended.store(0, Ordering::Relaxed);
    }

    /// Runs `f` with the shard's only write connection.
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> duckdb::Result<T>,
    ) -> duckdb::Result<T> {
        f(&mut lock(&self.write))
    }

    /// Waits until fewer than [`MAX_READERS`] reads run on this shard.
    fn read_permit(&self) -> ReadPermit<'_> {
        let mut active = lock(&self.active);
        while *active >= MAX_READERS {
            active = self
                .freed
                .wait(active)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *active += 1;
        ReadPermit(self)
    }

    /// Runs `f` with a read connection of its own, concurrently with writes and other reads.
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> duckdb::Result<T>,
    ) -> duckdb::Result<T> {
        let _permit = self.read_permit();
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

/// A place for one tenant's shard; empty until first opened.
#[derive(Default)]
struct Slot {
    shard: Mutex<Option<Arc<Shard>>>,
}

/// A shard in use. While it lives the shard stays open.
pub(crate) struct ShardRef {
    // Dropped first: when the slot reference goes, no other handle to the shard is left.
    shard: Arc<Shard>,
    _slot: Arc<Slot>,
}

impl std::ops::Deref for ShardRef {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        &self.shard
    }
}

#[derive(Default)]
struct Lru {
    tick: u64,
    slots: HashMap<String, (u64, Arc<Slot>)>,
}

/// The open shards of one folder. Every method blocks: call from blocking threads only.
pub(crate) struct OpenShards {
    dir: PathBuf,
    max_open: usize,
    lru: Mutex<Lru>,
}

impl OpenShards {
    /// Shards of `dir`, at most `max_open` (at least 1) open at once while idle.
    pub(crate) fn new(dir: PathBuf, max_open: usize) -> Self {
        Self {
            dir,
            max_open: max_open.max(1),
            lru: Mutex::default(),
        }
    }

    /// The file of a tenant's shard.
    pub(crate) fn path(&self, tenant_id: &str) -> PathBuf {
        self.dir.join(format!("{tenant_id}.duckdb"))
    }

    /// The tenant's shard, opened (and created when `create`) as needed. `None` when the file
    /// does not exist and `create` is false.
    pub(crate) fn get(&self, tenant_id: &str, create: bool) -> duckdb::Result<Option<ShardRef>> {
        let slot = self.slot(tenant_id);
        let mut current = lock(&slot.shard);
        if current.is_none() {
            let path = self.path(tenant_id);
            if !create && !path.exists() {
                return Ok(None);
            }
            *current = Some(Arc::new(Shard::open(&path)?));
            tracing::debug!(tenant = tenant_id, path = %path.display(), "shard opened");
        }
        let shard = current.clone();
        drop(current);
        Ok(shard.map(|shard| ShardRef { shard, _slot: slot }))
    }

    fn slot(&self, tenant_id: &str) -> Arc<Slot> {
        let mut lru = lock(&self.lru);
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.slots.entry(tenant_id.to_owned()).or_default();
        entry.0 = tick;
        let slot = entry.1.clone();
        self.evict(&mut lru);
        slot
    }

    /// Closes the least recently used idle shards until at most `max_open` remain. Shards in
    /// use are skipped, so the count may exceed the limit while they are busy.
    fn evict(&self, lru: &mut Lru) {
        while lru.slots.len() > self.max_open {
            let victim = lru
                .slots
                .iter()
                .filter(|(_, (_, slot))| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, (tick, _))| *tick)
                .map(|(tenant, _)| tenant.clone());
            let Some(victim) = victim else { break };
            // Dropped here, under the lock: the file is closed before anyone can reopen it.
            lru.slots.remove(&victim);
            tracing::debug!(tenant = %victim, "shard closed");
        }
    }

    /// Closes every idle shard.
    pub(crate) fn close_idle(&self) {
        let mut lru = lock(&self.lru);
        lru.slots.retain(|_, (_, slot)| Arc::strong_count(slot) > 1);
    }

    /// Number of shard slots held (open or known absent).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        lock(&self.lru).slots.len()
    }
}
