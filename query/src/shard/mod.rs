//! Shard files: the rollups of the tenants of one rollup-log partition, applied exactly once,
//! and queried per tenant.
//!
//! Invariant: one writer per shard file (this process), and every DuckDB call runs off the
//! async runtime.

use std::sync::Arc;

use async_trait::async_trait;
use beacon_proto::insights::v1::Metric;
use beacon_proto::pipeline::v1::{SwapTotals, TenantRollup, TenantVersion};
use jiff::civil::Date;

use crate::QueryError;
use crate::metrics::Sums;

mod cell;
mod compact;
pub mod duckdb;
mod open;
mod read;
mod rows;
mod schema;
mod sketch;

pub use self::duckdb::DuckShardStore;
pub use self::rows::ValidRollup;

/// One rollup-log message: its sequence and its tenant parts that passed validation.
#[derive(Debug, Clone)]
pub struct RollupMessage {
    /// Rollup-log sequence of the message within its partition.
    pub seq: u64,
    /// Version of the processing logic that made it.
    pub logic_version: u32,
    /// The message's valid tenant parts.
    pub tenants: Vec<ValidRollup>,
    /// Whether it is a dead letter published again (`RollupBatch.from_dead_letter`).
    pub from_dead_letter: bool,
    /// The last event a live batch covers, recorded with the watermark so that the next batch
    /// can be checked to continue after it; `None` for batches that cover no events of their own.
    pub covered: Option<Covered>,
}

/// Where a partition's shard stands ([`ShardStore::position`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardPosition {
    /// The last rollup-log sequence applied.
    pub watermark: Option<u64>,
    /// The last event the live batches applied cover.
    pub covered: Option<Covered>,
    /// The identity of the rollup log the watermark is on, when recorded.
    pub log: Option<String>,
}

/// The last event the live batches applied to a partition cover, and the event log it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    /// The event.
    pub to: EventPosition,
    /// The identity of its event log (`RollupBatch.event_log`), when the batch named it.
    pub log: Option<String>,
}

/// An event's place in the event log: the message and the event's index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventPosition {
    /// Event-log sequence.
    pub seq: u64,
    /// Index of the event in the message.
    pub index: u32,
}

/// What applying a run of rollup messages did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Messages applied now; the others were at or below the watermark already.
    pub messages: usize,
    /// The partition's watermark afterwards.
    pub watermark: u64,
    /// The generations swapped in: the restatement job and the totals of its dates before and
    /// after.
    pub swaps: Vec<(String, SwapTotals)>,
}

/// The answer to a [`ShardQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The groups.
    pub groups: Vec<Sums>,
    /// Logic versions of the rows read, ascending.
    pub logic_versions: Vec<u32>,
}

/// How a query groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One group for the whole range (key "").
    Total,
    /// One group per local date (key "YYYY-MM-DD").
    Day,
    /// One group per hour bucket (key: the bucket's Unix milliseconds in decimal). Totals
    /// (dimension 0) only: hourly visitor sketches are kept for totals alone.
    Hour,
    /// One group per dimension value (key: the value).
    Value,
}

/// The best groups by one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Top {
    /// Groups are ordered by this metric, highest first, then by key ascending.
    pub metric: Metric,
    /// At most this many groups.
    pub limit: u32,
}

/// A read of one tenant's rollups.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardQuery {
    /// The dimension (`Dimension as i32`); 0 reads the tenant's totals.
    pub dimension: i32,
    /// First local date, inclusive.
    pub start: Date,
    /// Last local date, inclusive.
    pub end: Date,
    /// Grouping.
    pub group: GroupBy,
    /// Ordering and limit; groups come in no particular order without it.
    pub top: Option<Top>,
}

/// Stores tenants' rollups and answers queries over them.
#[async_trait]
pub trait ShardStore: Send + Sync + 'static {
    /// Checks a tenant part of a message of rollup-log `partition` before it is applied: data
    /// that can never be applied is [`QueryError::InvalidRollup`], naming the field.
    fn validate(&self, partition: u32, rollup: TenantRollup) -> Result<ValidRollup, QueryError>;

    /// Applies `messages` of rollup-log `partition` (ascending sequences) exactly once: in one
    /// transaction with the partition's watermark, skipping messages at or below it.
    async fn apply(
        &self,
        partition: u32,
        messages: Arc<[RollupMessage]>,
    ) -> Result<Applied, QueryError>;

    /// Applies one tenant part in a transaction that is rolled back: whether the part alone
    /// can be applied. Used to find the part that makes a message fail.
    async fn probe(&self, partition: u32, part: ValidRollup) -> Result<(), QueryError>;

    /// The last rollup-log sequence of `partition` applied here.
    async fn watermark(&self, partition: u32) -> Result<Option<u64>, QueryError>;

    /// Where `partition` stands here: its watermark, the last event its live batches cover,
    /// and the rollup log the watermark is on.
    async fn position(&self, partition: u32) -> Result<ShardPosition, QueryError>;

    /// Records that the watermark of `partition` is on the rollup log `identity`; with
    /// `watermark`, moves it there (an operator accepted a log created anew, trimmed or gone
    /// backwards). The rows and the covered events stay: rollups published again for events
    /// already applied are refused as overlapping.
    async fn adopt_log(
        &self,
        partition: u32,
        identity: String,
        watermark: Option<u64>,
    ) -> Result<(), QueryError>;

    /// Summed counters and unique visitors of the tenant's live rows matching `query`, and the
    /// logic versions that made them. A tenant without rollups has no rows.
    async fn query(&self, tenant_id: &str, query: ShardQuery) -> Result<Answer, QueryError>;

    /// Per tenant of `partition` and logic version, the dates of its live rows.
    async fn versions(&self, partition: u32) -> Result<Vec<TenantVersion>, QueryError>;
}
