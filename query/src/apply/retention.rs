//! Trimming the rollup log: every query replica records how far it applied each partition
//! (a mark in the snapshot store), and the log is trimmed below the lowest mark.
//!
//! Invariant: a message is trimmed only after every replica that ever recorded a mark for its
//! partition applied it. A replica records its mark when its consumer starts, before it applied
//! anything, so one restarted before its first rollup (the aggregator holds events back for a
//! moment) is not trimmed past. A replica removed for good keeps its mark, which holds trimming
//! back until the mark is deleted: safe, never lossy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_core::log::Log;
use beacon_core::meta::SnapshotStore;
use prost::bytes::Bytes;

/// How often a replica records its position and trims.
const EVERY: Duration = Duration::from_secs(5);

/// One replica's marks of one partition.
pub(crate) struct Marks {
    store: Arc<dyn SnapshotStore>,
    replica: String,
    partition: u32,
    saved: Option<Instant>,
}

impl Marks {
    /// Marks of `replica` for `partition`, kept in `store`.
    pub(crate) fn new(store: Arc<dyn SnapshotStore>, replica: &str, partition: u32) -> Self {
        Self {
            store,
            replica: replica.to_owned(),
            partition,
            saved: None,
        }
    }

    fn prefix(&self) -> String {
        format!("rollup-mark.p{}.", self.partition)
    }

    /// Records that everything up to `applied` is applied here and trims `rollups` below the
    /// lowest mark, at most every few seconds. Failures are logged and tried again later.
    pub(crate) async fn record(&mut self, rollups: &dyn Log, applied: u64) {
        if self.saved.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        self.saved = Some(Instant::now());
        if let Err(err) = self.record_and_trim(rollups, applied).await {
            tracing::warn!(partition = self.partition, applied, error = %err, "recording the rollup mark or trimming failed");
        }
    }

    async fn record_and_trim(&self, rollups: &dyn Log, applied: u64) -> beacon_core::Result<()> {
        let name = format!("{}{}", self.prefix(), self.replica);
        let mark = Bytes::copy_from_slice(&applied.to_le_bytes());
        self.store.save(&name, mark).await?;
        let lowest = self
            .store
            .list(&self.prefix())
            .await?
            .iter()
            .map(|(name, bytes)| decode(name, bytes))
            .collect::<beacon_core::Result<Vec<u64>>>()?
            .into_iter()
            .min()
            .unwrap_or(applied);
        // The message at the lowest mark stays: the aggregator reads the newest rollup.
        let removed = rollups.trim(self.partition, lowest).await?;
        tracing::debug!(
            partition = self.partition,
            below = lowest,
            removed,
            "rollup log trimmed"
        );
        Ok(())
    }
}

fn decode(name: &str, bytes: &[u8]) -> beacon_core::Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| beacon_core::Error::Corrupt(format!("rollup mark {name} is not 8 bytes")))?;
    Ok(u64::from_le_bytes(array))
}
