//! The embedded [`Log`]: one redb file on local disk, written by a single group-commit thread.
//!
//! Every partition shares the table `log`, keyed by `(partition, seq)`. Sequences start at 1 and
//! are contiguous per partition. Appends are queued to a dedicated writer thread that drains
//! everything waiting (up to [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`]), writes it in one
//! transaction, commits it with `Durability::Immediate` (fsync), and only then answers every
//! appender. Subscribers read committed messages in read transactions on the blocking pool and,
//! once caught up, wait on a per-partition [`watch`] channel the writer signals after each commit.
//!
//! `msg_id` deduplication is kept in memory only, per partition, for two minutes: a resend after
//! a restart of the process is appended again.
//!
//! Trims and deletes go through the same writer, which keeps the payload bytes each partition
//! holds; with a byte limit, an append that would exceed it is refused (Unavailable) instead of
//! anything old being dropped. A trim records the partition's floor, so a consumer whose next
//! message was trimmed can tell.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::{oneshot, watch};

use self::writer::{AppendRequest, Recovered, Request, Writer};
use super::{Log, LogMessage, LogStream};
use crate::error::ResultExt;
use crate::{Error, Result};

mod writer;

/// Page cache of a log file opened with [`EmbeddedLog::open`]; reads are mostly of the
/// recent tail.
const CACHE_BYTES: usize = 16 << 20;
/// The messages: `(partition, seq)` to payload.
const LOG: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("log");
/// The highest sequence ever written per partition, so that deleting the newest message never
/// lets its sequence be reused after a restart.
const HEADS: TableDefinition<u32, u64> = TableDefinition::new("heads");
/// Payload bytes held per partition.
const SIZES: TableDefinition<u32, u64> = TableDefinition::new("sizes");
/// Per partition, the sequence below which everything was trimmed.
const FLOORS: TableDefinition<u32, u64> = TableDefinition::new("floors");
/// The file's identity, made when it is created (key `id`).
const IDENTITY: TableDefinition<&str, &str> = TableDefinition::new("identity");
/// Most messages a subscriber reads per read transaction.
const READ_BATCH: usize = 1024;
/// Most payload bytes a subscriber reads per read transaction.
const READ_BATCH_BYTES: usize = 4 << 20;

/// A durable, partitioned log in one local redb file.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by the handle, the writer thread and the subscribers.
struct Shared {
    db: Database,
    path: PathBuf,
    /// See [`Log::identity`].
    identity: String,
    /// Per partition: the last committed sequence.
    committed: Mutex<HashMap<u32, watch::Sender<u64>>>,
}

impl Shared {
    fn committed_receiver(&self, partition: u32) -> watch::Receiver<u64> {
        let mut map = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(partition)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn publish_committed(&self, last: &HashMap<u32, u64>) {
        let mut map = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (&partition, &seq) in last {
            map.entry(partition)
                .or_insert_with(|| watch::channel(0).0)
                .send_replace(seq);
        }
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log file at `path`, without a byte limit.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_limited(path, None, CACHE_BYTES)
    }

    /// Opens (or creates) the log file at `path`, caching up to `cache_bytes` of its pages, and
    /// starts its writer thread; appends beyond `max_bytes` of payload in all are refused until
    /// trims make room.
    pub fn open_limited(path: &Path, max_bytes: Option<u64>, cache_bytes: usize) -> Result<Self> {
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .context(|| format!("opening log file {}", path.display()))?;
        let recovered = create_and_recover(&db)
            .context(|| format!("recovering log file {}", path.display()))?;
        let identity = identity_of(&db)
            .context(|| format!("reading the identity of log file {}", path.display()))?;
        let committed = recovered
            .heads
            .iter()
            .map(|(&partition, &seq)| (partition, watch::channel(seq).0))
            .collect();
        let shared = Arc::new(Shared {
            db,
            path: path.to_path_buf(),
            identity,
            committed: Mutex::new(committed),
        });
        let (requests, receiver) = mpsc::channel();
        let writer = Writer::new(shared.clone(), recovered, max_bytes);
        let handle = std::thread::Builder::new()
            .name("beacon-log-writer".into())
            .spawn(move || writer.run(&receiver))
            .context(|| format!("starting the writer thread of {}", path.display()))?;
        tracing::info!(path = %path.display(), "embedded log opened");
        Ok(Self {
            shared,
            requests: Some(requests),
            writer: Some(handle),
        })
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it answered everything queued.
        self.requests = None;
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(path = %self.shared.path.display(), "log writer thread panicked");
        }
    }
}

impl EmbeddedLog {
    /// Sends `make(reply)` to the writer and waits for its answer.
    async fn request<T>(
        &self,
        partition: u32,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let closed = || {
            Error::Unavailable(format!(
                "log {} is closed; cannot write partition {partition}",
                self.shared.path.display()
            ))
        };
        let sender = self.requests.as_ref().ok_or_else(closed)?;
        sender.send(make(reply)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn enqueue(
        &self,
        partition: u32,
        msg_id: &str,
        payload: Bytes,
        expected_last: Option<u64>,
    ) -> Result<u64> {
        self.request(partition, |reply| {
            Request::Append(AppendRequest {
                partition,
                msg_id: msg_id.to_owned(),
                payload,
                expected_last,
                reply,
            })
        })
        .await
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    async fn append(&self, partition: u32, msg_id: &str, payload: Bytes) -> Result<u64> {
        self.enqueue(partition, msg_id, payload, None).await
    }

    async fn append_if_last(
        &self,
        partition: u32,
        expected_last: u64,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<u64> {
        self.enqueue(partition, msg_id, payload, Some(expected_last))
            .await
    }

    async fn delete(&self, partition: u32, seq: u64) -> Result<bool> {
        self.request(partition, |reply| Request::Delete {
            partition,
            seq,
            reply,
        })
        .await
    }

    async fn trim(&self, partition: u32, below: u64) -> Result<u64> {
        self.request(partition, |reply| Request::Trim {
            partition,
            below,
            reply,
        })
        .await
    }

    async fn floor(&self, partition: u32) -> Result<u64> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            read_floor(&shared.db, partition).context(|| {
                format!(
                    "reading the floor of partition {partition} of {}",
                    shared.path.display()
                )
            })
        })
        .await
        .context(|| format!("reading the floor of partition {partition}"))?
    }

    async fn identity(&self) -> Result<String> {
        Ok(self.shared.identity.clone())
    }

    async fn last(&self, partition: u32) -> Result<Option<LogMessage>> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            read_last(&shared.db, partition).context(|| {
                format!(
                    "reading the last message of partition {partition} from {}",
                    shared.path.display()
                )
            })
        })
        .await
        .context(|| format!("reading the last message of partition {partition}"))?
    }

    async fn subscribe(&self, partition: u32, after: u64) -> Result<LogStream> {
        let cursor = Cursor {
            committed: self.shared.committed_receiver(partition),
            shared: self.shared.clone(),
            partition,
            after,
            buffer: VecDeque::new(),
        };
        Ok(Box::pin(futures::stream::unfold(cursor, Cursor::next)))
    }
}

/// The sequence below which `partition` was trimmed; 0 when never.
fn read_floor(db: &Database, partition: u32) -> Result<u64, redb::Error> {
    let txn = db.begin_read()?;
    let floor = txn
        .open_table(FLOORS)?
        .get(partition)?
        .map_or(0, |v| v.value());
    Ok(floor)
}

/// Reads a per-partition `u32 -> u64` table.
fn read_map(
    txn: &redb::ReadTransaction,
    table: TableDefinition<u32, u64>,
) -> Result<HashMap<u32, u64>, redb::Error> {
    let mut out = HashMap::new();
    for entry in txn.open_table(table)?.iter()? {
        let (partition, value) = entry?;
        out.insert(partition.value(), value.value());
    }
    Ok(out)
}

/// The file's identity, made on its first open.
fn identity_of(db: &Database) -> Result<String, redb::Error> {
    let txn = db.begin_write()?;
    let identity = {
        let mut table = txn.open_table(IDENTITY)?;
        let known = table.get("id")?.map(|id| id.value().to_owned());
        match known {
            Some(id) => id,
            None => {
                let id = format!("file@{:032x}", rand::random::<u128>());
                table.insert("id", id.as_str())?;
                id
            }
        }
    };
    txn.commit()?;
    Ok(identity)
}

/// Creates the tables if needed and returns, per partition, the highest sequence ever written
/// (even if that message was deleted since) and the payload bytes held. Files written before
/// sizes were kept have their sizes counted once.
fn create_and_recover(db: &Database) -> Result<Recovered, redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(HEADS)?;
    txn.open_table(FLOORS)?;
    let counted = txn.open_table(SIZES)?.len()? > 0;
    txn.commit()?;
    if !counted {
        count_sizes(db)?;
    }

    let txn = db.begin_read()?;
    let mut last = read_map(&txn, HEADS)?;
    let sizes = read_map(&txn, SIZES)?;
    let table = txn.open_table(LOG)?;
    let mut newest = table.last()?.map(|(key, _)| key.value());
    // Walk partitions downward: the last key below (p, 0) is the last of the next lower one.
    while let Some((partition, seq)) = newest {
        let head = last.entry(partition).or_default();
        *head = (*head).max(seq);
        if partition == 0 {
            break;
        }
        newest = match table.range(..(partition, 0u64))?.next_back() {
            Some(entry) => Some(entry?.0.value()),
            None => None,
        };
    }
    Ok(Recovered { heads: last, sizes })
}

/// Counts the payload bytes of every partition message by message and stores them (for files
/// written before byte totals were kept; a new file stores nothing).
fn count_sizes(db: &Database) -> Result<(), redb::Error> {
    let mut sizes: HashMap<u32, u64> = HashMap::new();
    {
        let txn = db.begin_read()?;
        for entry in txn.open_table(LOG)?.iter()? {
            let (key, value) = entry?;
            *sizes.entry(key.value().0).or_default() += value.value().len() as u64;
        }
    }
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(SIZES)?;
        for (partition, bytes) in sizes {
            table.insert(partition, bytes)?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// The newest message of `partition`.
fn read_last(db: &Database, partition: u32) -> Result<Option<LogMessage>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(LOG)?;
    let newest = table
        .range((partition, 0u64)..=(partition, u64::MAX))?
        .next_back();
    match newest {
        None => Ok(None),
        Some(entry) => {
            let (key, value) = entry?;
            Ok(Some(LogMessage {
                seq: key.value().1,
                payload: Bytes::copy_from_slice(value.value()),
                trace: Default::default(),
            }))
        }
    }
}

/// Up to [`READ_BATCH`] messages of `partition` after `after`, in order.
fn read_after(db: &Database, partition: u32, after: u64) -> Result<Vec<LogMessage>, redb::Error> {
    let Some(start) = after.checked_add(1) else {
        return Ok(Vec::new());
    };
    let txn = db.begin_read()?;
    let table = txn.open_table(LOG)?;
    let mut messages = Vec::new();
    let mut bytes = 0;
    for entry in table.range((partition, start)..=(partition, u64::MAX))? {
        let (key, value) = entry?;
        let payload = Bytes::copy_from_slice(value.value());
        bytes += payload.len();
        messages.push(LogMessage {
            seq: key.value().1,
            payload,
            trace: Default::default(),
        });
        if messages.len() >= READ_BATCH || bytes >= READ_BATCH_BYTES {
            break;
        }
    }
    Ok(messages)
}

/// A subscriber's position in one partition.
struct Cursor {
    shared: Arc<Shared>,
    partition: u32,
    after: u64,
    buffer: VecDeque<LogMessage>,
    committed: watch::Receiver<u64>,
}

impl Cursor {
    /// The next message, waiting for a commit when caught up.
    async fn next(mut self) -> Option<(Result<LogMessage>, Self)> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                self.after = message.seq;
                return Some((Ok(message), self));
            }
            let committed = *self.committed.borrow_and_update();
            if committed > self.after {
                match self.fetch().await {
                    Ok(batch) if !batch.is_empty() => {
                        self.buffer.extend(batch);
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => return Some((Err(err), self)),
                }
            }
            if self.committed.changed().await.is_err() {
                return None;
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<LogMessage>> {
        let shared = self.shared.clone();
        let (partition, after) = (self.partition, self.after);
        tokio::task::spawn_blocking(move || {
            read_after(&shared.db, partition, after).context(|| {
                format!(
                    "reading partition {partition} after {after} from {}",
                    shared.path.display()
                )
            })
        })
        .await
        .context(|| format!("reading partition {partition} after {after}"))?
    }
}
