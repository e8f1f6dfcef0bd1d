//! The embedded [`Log`]: one redb file on local disk, written by a single group-commit thread.
//!
//! Every partition shares the table `log`, keyed by `(partition, seq)`. Sequences start at 1 and
//! are contiguous per partition. Appends are queued to a dedicated writer thread that drains
//! everything waiting (up to [`MAX_BATCH`] messages or [`MAX_BATCH_BYTES`]), writes it in one
//! transaction, commits it with [`Durability::Immediate`] (fsync), and only then answers every
//! appender. Subscribers read committed messages in read transactions on the blocking pool and,
//! once caught up, wait on a per-partition [`watch`] channel the writer signals after each commit.
//!
//! `msg_id` deduplication is kept in memory only, per partition, for [`DEDUP_WINDOW`]: a resend
//! after a restart of the process is appended again.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use super::{Log, LogMessage, LogStream};
use crate::error::ResultExt;
use crate::{Error, Result};

/// Page cache of one log file; reads are mostly of the recent tail.
const CACHE_BYTES: usize = 64 << 20;
/// The single table: `(partition, seq)` to payload.
const LOG: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("log");
/// Most appends written by one transaction.
const MAX_BATCH: usize = 4096;
/// Most payload bytes written by one transaction (the batch closes once it is reached).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How long a `msg_id` is remembered for deduplication.
const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Most remembered `msg_id`s; the oldest are forgotten first beyond it.
const DEDUP_CAPACITY: usize = 1 << 20;
/// Most messages a subscriber reads per read transaction.
const READ_BATCH: usize = 1024;
/// Most payload bytes a subscriber reads per read transaction.
const READ_BATCH_BYTES: usize = 4 << 20;

/// A durable, partitioned log in one local redb file.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<AppendRequest>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by the handle, the writer thread and the subscribers.
struct Shared {
    db: Database,
    path: PathBuf,
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

/// One queued append.
struct AppendRequest {
    partition: u32,
    msg_id: String,
    payload: Bytes,
    reply: oneshot::Sender<Result<u64>>,
}

impl EmbeddedLog {
    /// Opens (or creates) the log file at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .context(|| format!("opening log file {}", path.display()))?;
        let last = create_and_recover(&db)
            .context(|| format!("recovering log file {}", path.display()))?;
        let committed = last
            .iter()
            .map(|(&partition, &seq)| (partition, watch::channel(seq).0))
            .collect();
        let shared = Arc::new(Shared {
            db,
            path: path.to_path_buf(),
            committed: Mutex::new(committed),
        });
        let (requests, receiver) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            last,
            dedup: Dedup::default(),
        };
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

#[async_trait]
impl Log for EmbeddedLog {
    async fn append(&self, partition: u32, msg_id: &str, payload: Bytes) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            partition,
            msg_id: msg_id.to_owned(),
            payload,
            reply,
        };
        let closed = || {
            Error::Unavailable(format!(
                "log {} is closed; cannot append to partition {partition}",
                self.shared.path.display()
            ))
        };
        let sender = self.requests.as_ref().ok_or_else(closed)?;
        sender.send(request).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
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

/// Creates the table if needed and returns the last sequence of every partition.
fn create_and_recover(db: &Database) -> Result<HashMap<u32, u64>, redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.commit()?;

    let txn = db.begin_read()?;
    let table = txn.open_table(LOG)?;
    let mut last = HashMap::new();
    let mut newest = table.last()?.map(|(key, _)| key.value());
    // Walk partitions downward: the last key below (p, 0) is the last of the next lower one.
    while let Some((partition, seq)) = newest {
        last.insert(partition, seq);
        if partition == 0 {
            break;
        }
        newest = match table.range(..(partition, 0u64))?.next_back() {
            Some(entry) => Some(entry?.0.value()),
            None => None,
        };
    }
    Ok(last)
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

/// Recently appended `msg_id`s per partition, hashed to 128 bits.
#[derive(Default)]
struct Dedup {
    seqs: HashMap<(u32, u128), u64>,
    order: VecDeque<(Instant, u32, u128)>,
}

impl Dedup {
    fn key(msg_id: &str) -> u128 {
        let hash = blake3::hash(msg_id.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&hash.as_bytes()[..16]);
        u128::from_le_bytes(first)
    }

    fn get(&self, partition: u32, id: u128) -> Option<u64> {
        self.seqs.get(&(partition, id)).copied()
    }

    fn insert(&mut self, now: Instant, partition: u32, id: u128, seq: u64) {
        self.seqs.insert((partition, id), seq);
        self.order.push_back((now, partition, id));
    }

    /// Forgets ids older than the window, and the oldest beyond the capacity.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, partition, id)) = self.order.front() {
            if now.duration_since(at) < DEDUP_WINDOW && self.order.len() <= DEDUP_CAPACITY {
                break;
            }
            self.order.pop_front();
            self.seqs.remove(&(partition, id));
        }
    }
}

/// Where one request of a batch lands.
#[derive(Clone, Copy)]
enum Slot {
    /// A new message, written by this batch.
    New(u64),
    /// A resend of a message written by this batch.
    Pending(u64),
    /// A resend of a message committed earlier.
    Committed(u64),
}

/// The group-commit writer, owning the sequence counters and the dedup memory.
struct Writer {
    shared: Arc<Shared>,
    /// Last committed sequence per partition.
    last: HashMap<u32, u64>,
    dedup: Dedup,
}

impl Writer {
    fn run(mut self, requests: &mpsc::Receiver<AppendRequest>) {
        while let Ok(first) = requests.recv() {
            let mut bytes = first.payload.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match requests.try_recv() {
                    Ok(request) => {
                        bytes += request.payload.len();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
        tracing::debug!(path = %self.shared.path.display(), "log writer stopped");
    }

    fn write_batch(&mut self, batch: Vec<AppendRequest>) {
        let now = Instant::now();
        self.dedup.expire(now);
        let mut last = HashMap::new();
        let mut pending = HashMap::new();
        let slots: Vec<Slot> = batch
            .iter()
            .map(|request| self.plan(request, &mut last, &mut pending))
            .collect();
        let outcome = if last.is_empty() {
            Ok(())
        } else {
            self.commit(&batch, &slots)
        };
        match outcome {
            Ok(()) => {
                for ((partition, id), seq) in pending {
                    self.dedup.insert(now, partition, id, seq);
                }
                self.last.extend(last.iter().map(|(&p, &s)| (p, s)));
                self.shared.publish_committed(&last);
                for (request, slot) in batch.into_iter().zip(slots) {
                    let (Slot::New(seq) | Slot::Pending(seq) | Slot::Committed(seq)) = slot;
                    let _ = request.reply.send(Ok(seq));
                }
            }
            Err(err) => self.fail(batch, &slots, &err),
        }
    }

    /// Chooses the sequence of one request.
    fn plan(
        &self,
        request: &AppendRequest,
        last: &mut HashMap<u32, u64>,
        pending: &mut HashMap<(u32, u128), u64>,
    ) -> Slot {
        let partition = request.partition;
        let id = (!request.msg_id.is_empty()).then(|| Dedup::key(&request.msg_id));
        if let Some(id) = id {
            if let Some(seq) = self.dedup.get(partition, id) {
                return Slot::Committed(seq);
            }
            if let Some(&seq) = pending.get(&(partition, id)) {
                return Slot::Pending(seq);
            }
        }
        let previous = last
            .get(&partition)
            .or_else(|| self.last.get(&partition))
            .copied()
            .unwrap_or(0);
        let seq = previous + 1;
        last.insert(partition, seq);
        if let Some(id) = id {
            pending.insert((partition, id), seq);
        }
        Slot::New(seq)
    }

    /// Writes the new messages of a batch in one durable transaction.
    fn commit(&self, batch: &[AppendRequest], slots: &[Slot]) -> Result<(), redb::Error> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(LOG)?;
            for (request, slot) in batch.iter().zip(slots) {
                if let Slot::New(seq) = slot {
                    table.insert((request.partition, *seq), request.payload.as_ref())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Answers a failed batch: resends of earlier messages still succeed.
    fn fail(&self, batch: Vec<AppendRequest>, slots: &[Slot], err: &redb::Error) {
        let path = self.shared.path.display();
        tracing::error!(path = %path, messages = batch.len(), error = %err, "log commit failed");
        for (request, slot) in batch.into_iter().zip(slots) {
            let answer = match *slot {
                Slot::Committed(seq) => Ok(seq),
                Slot::New(_) | Slot::Pending(_) => Err(Error::backend(
                    format!("appending to partition {} of log {path}", request.partition),
                    err.to_string(),
                )),
            };
            let _ = request.reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_forgets_after_the_window() {
        let mut dedup = Dedup::default();
        let start = Instant::now();
        let id = Dedup::key("m-1");
        dedup.insert(start, 3, id, 7);
        assert_eq!(dedup.get(3, id), Some(7));
        assert_eq!(dedup.get(4, id), None, "dedup is per partition");
        dedup.expire(start + DEDUP_WINDOW - Duration::from_secs(1));
        assert_eq!(dedup.get(3, id), Some(7));
        dedup.expire(start + DEDUP_WINDOW);
        assert_eq!(dedup.get(3, id), None);
        assert!(dedup.order.is_empty());
    }

    #[test]
    fn dedup_keys_differ_per_id() {
        assert_ne!(Dedup::key("a"), Dedup::key("b"));
        assert_eq!(Dedup::key("a"), Dedup::key("a"));
    }
}
