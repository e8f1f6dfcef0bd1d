//! The embedded log's single writer thread: group-committed appends, trims and deletes, each
//! in one durable transaction, with the sequence counters, byte totals and dedup memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Durability, ReadableTable};
use tokio::sync::oneshot;

use super::{FLOORS, HEADS, LOG, SIZES, Shared};
use crate::{Error, Result};

/// Most appends written by one transaction.
const MAX_BATCH: usize = 4096;
/// Most payload bytes written by one transaction (the batch closes once it is reached).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// How long a `msg_id` is remembered for deduplication.
const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// Most remembered `msg_id`s; the oldest are forgotten first beyond it.
const DEDUP_CAPACITY: usize = 1 << 20;

/// One queued append.
pub(super) struct AppendRequest {
    pub partition: u32,
    pub msg_id: String,
    pub payload: Bytes,
    /// Append only if this is the partition's newest sequence.
    pub expected_last: Option<u64>,
    pub reply: oneshot::Sender<Result<u64>>,
}

/// A request to the writer.
pub(super) enum Request {
    /// Append a message.
    Append(AppendRequest),
    /// Remove the messages of `partition` below `below`; answers how many.
    Trim {
        partition: u32,
        below: u64,
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Remove one message; answers whether it was there.
    Delete {
        partition: u32,
        seq: u64,
        reply: oneshot::Sender<Result<bool>>,
    },
}

/// What the writer recovers from the file.
pub(super) struct Recovered {
    /// Highest sequence ever written per partition.
    pub heads: HashMap<u32, u64>,
    /// Payload bytes held per partition.
    pub sizes: HashMap<u32, u64>,
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
    /// A conditional append whose expected newest sequence was not the newest: the partition's
    /// newest sequence.
    Conflict(u64),
    /// The log holds its byte limit already.
    Full,
}

/// The writer, owning the sequence counters, byte totals and the dedup memory.
pub(super) struct Writer {
    shared: Arc<Shared>,
    /// Last written sequence per partition.
    last: HashMap<u32, u64>,
    /// Payload bytes held per partition.
    sizes: HashMap<u32, u64>,
    /// Refuse appends beyond this many payload bytes in all.
    max_bytes: Option<u64>,
    dedup: Dedup,
}

impl Writer {
    pub(super) fn new(shared: Arc<Shared>, recovered: Recovered, max_bytes: Option<u64>) -> Self {
        Self {
            shared,
            last: recovered.heads,
            sizes: recovered.sizes,
            max_bytes,
            dedup: Dedup::default(),
        }
    }

    /// Serves requests until every sender is gone: runs of appends in one transaction each.
    pub(super) fn run(mut self, requests: &mpsc::Receiver<Request>) {
        let mut next = requests.recv().ok();
        while let Some(request) = next.take() {
            match request {
                Request::Append(first) => {
                    let mut bytes = first.payload.len();
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                        match requests.try_recv() {
                            Ok(Request::Append(request)) => {
                                bytes += request.payload.len();
                                batch.push(request);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batch(batch);
                }
                Request::Trim {
                    partition,
                    below,
                    reply,
                } => {
                    let _ = reply.send(self.trim(partition, below));
                }
                Request::Delete {
                    partition,
                    seq,
                    reply,
                } => {
                    let _ = reply.send(self.delete(partition, seq));
                }
            }
            if next.is_none() {
                next = requests.recv().ok();
            }
        }
        tracing::debug!(path = %self.shared.path.display(), "log writer stopped");
    }

    fn total(&self) -> u64 {
        self.sizes.values().sum()
    }

    fn write_batch(&mut self, batch: Vec<AppendRequest>) {
        let now = Instant::now();
        self.dedup.expire(now);
        let mut last = HashMap::new();
        let mut pending = HashMap::new();
        let mut added: HashMap<u32, u64> = HashMap::new();
        let slots: Vec<Slot> = batch
            .iter()
            .map(|request| self.plan(request, &mut last, &mut pending, &mut added))
            .collect();
        let outcome = if last.is_empty() {
            Ok(())
        } else {
            self.commit(&batch, &slots, &last, &added)
        };
        match outcome {
            Ok(()) => {
                for ((partition, id), seq) in pending {
                    self.dedup.insert(now, partition, id, seq);
                }
                self.last.extend(last.iter().map(|(&p, &s)| (p, s)));
                for (partition, bytes) in added {
                    *self.sizes.entry(partition).or_default() += bytes;
                }
                self.shared.publish_committed(&last);
                crate::observe::health().clear(&format!("store {}", self.shared.path.display()));
                for (request, slot) in batch.into_iter().zip(slots) {
                    let answer = self.answer(&request, slot);
                    let _ = request.reply.send(answer);
                }
            }
            Err(err) => self.fail(batch, &slots, &err),
        }
    }

    fn answer(&self, request: &AppendRequest, slot: Slot) -> Result<u64> {
        match slot {
            Slot::New(seq) | Slot::Pending(seq) | Slot::Committed(seq) => Ok(seq),
            Slot::Conflict(newest) => Err(conflict(request, newest)),
            Slot::Full => Err(Error::Unavailable(format!(
                "log {} holds its limit of {} bytes; its consumers must catch up before it \
                 accepts more",
                self.shared.path.display(),
                self.max_bytes.unwrap_or_default()
            ))),
        }
    }

    /// Chooses the sequence of one request.
    fn plan(
        &self,
        request: &AppendRequest,
        last: &mut HashMap<u32, u64>,
        pending: &mut HashMap<(u32, u128), u64>,
        added: &mut HashMap<u32, u64>,
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
        if request
            .expected_last
            .is_some_and(|expected| expected != previous)
        {
            return Slot::Conflict(previous);
        }
        let size = request.payload.len() as u64;
        let after = self.total() + added.values().sum::<u64>() + size;
        if self.max_bytes.is_some_and(|max| after > max) {
            return Slot::Full;
        }
        let seq = previous + 1;
        last.insert(partition, seq);
        *added.entry(partition).or_default() += size;
        if let Some(id) = id {
            pending.insert((partition, id), seq);
        }
        Slot::New(seq)
    }

    /// Writes the new messages of a batch, the heads and the sizes in one durable transaction.
    fn commit(
        &self,
        batch: &[AppendRequest],
        slots: &[Slot],
        heads: &HashMap<u32, u64>,
        added: &HashMap<u32, u64>,
    ) -> Result<(), redb::Error> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(LOG)?;
            for (request, slot) in batch.iter().zip(slots) {
                if let Slot::New(seq) = slot {
                    table.insert((request.partition, *seq), request.payload.as_ref())?;
                }
            }
            let mut table = txn.open_table(HEADS)?;
            for (&partition, &seq) in heads {
                table.insert(partition, seq)?;
            }
            let mut table = txn.open_table(SIZES)?;
            for (&partition, &bytes) in added {
                let held = self.sizes.get(&partition).copied().unwrap_or_default();
                table.insert(partition, held + bytes)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Answers a failed batch: resends of earlier messages still succeed.
    fn fail(&self, batch: Vec<AppendRequest>, slots: &[Slot], err: &redb::Error) {
        let path = self.shared.path.display();
        tracing::error!(path = %path, messages = batch.len(), error = %err, "log commit failed");
        crate::observe::health().fault(&format!("store {path}"), &err.to_string());
        for (request, slot) in batch.into_iter().zip(slots) {
            let answer = match *slot {
                Slot::New(_) | Slot::Pending(_) => Err(Error::backend(
                    format!("appending to partition {} of log {path}", request.partition),
                    err.to_string(),
                )),
                other => self.answer(&request, other),
            };
            let _ = request.reply.send(answer);
        }
        crate::observe::redb_failed(&self.shared.path, err);
    }

    /// Removes the messages of `partition` below `below`, and records the floor.
    fn trim(&mut self, partition: u32, below: u64) -> Result<u64> {
        let (removed, freed) = self.trim_tx(partition, below).map_err(|err| {
            crate::observe::redb_failed(&self.shared.path, &err);
            Error::backend(
                format!(
                    "trimming partition {partition} of {} below {below}",
                    self.shared.path.display()
                ),
                err.to_string(),
            )
        })?;
        let held = self.sizes.entry(partition).or_default();
        *held = held.saturating_sub(freed);
        Ok(removed)
    }

    fn trim_tx(&self, partition: u32, below: u64) -> Result<(u64, u64), redb::Error> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let (mut removed, mut freed) = (0u64, 0u64);
        {
            let mut table = txn.open_table(LOG)?;
            let mut doomed = Vec::new();
            for entry in table.range((partition, 0u64)..(partition, below))? {
                let (key, value) = entry?;
                doomed.push(key.value().1);
                freed += value.value().len() as u64;
            }
            for seq in doomed {
                table.remove((partition, seq))?;
                removed += 1;
            }
            let mut floors = txn.open_table(FLOORS)?;
            let floor = floors.get(partition)?.map_or(0, |v| v.value());
            floors.insert(partition, floor.max(below))?;
            let held = self.sizes.get(&partition).copied().unwrap_or_default();
            txn.open_table(SIZES)?
                .insert(partition, held.saturating_sub(freed))?;
        }
        txn.commit()?;
        Ok((removed, freed))
    }

    /// Removes one message.
    fn delete(&mut self, partition: u32, seq: u64) -> Result<bool> {
        let freed = self.delete_tx(partition, seq).map_err(|err| {
            Error::backend(
                format!(
                    "deleting message {seq} of partition {partition} from {}",
                    self.shared.path.display()
                ),
                err.to_string(),
            )
        })?;
        if let Some(bytes) = freed {
            let held = self.sizes.entry(partition).or_default();
            *held = held.saturating_sub(bytes);
        }
        Ok(freed.is_some())
    }

    fn delete_tx(&self, partition: u32, seq: u64) -> Result<Option<u64>, redb::Error> {
        let mut txn = self.shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let freed = {
            let mut table = txn.open_table(LOG)?;
            let freed = table
                .remove((partition, seq))?
                .map(|value| value.value().len() as u64);
            if let Some(bytes) = freed {
                let held = self.sizes.get(&partition).copied().unwrap_or_default();
                txn.open_table(SIZES)?
                    .insert(partition, held.saturating_sub(bytes))?;
            }
            freed
        };
        txn.commit()?;
        Ok(freed)
    }
}

fn conflict(request: &AppendRequest, newest: u64) -> Error {
    Error::Conflict(format!(
        "partition {} ends at {newest}, not at the expected {}",
        request.partition,
        request.expected_last.unwrap_or_default()
    ))
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
