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
use crate::filter::ValueFilter;
use crate::metrics::Sums;

mod cell;
mod compact;
pub mod duckdb;
mod events;
mod open;
mod read;
mod rows;
mod scan;
mod schema;
mod settled;
mod sketch;
mod writes;

pub use self::duckdb::DuckShardStore;
pub use self::events::column as event_column;
pub(crate) use self::open::DuckFailure;
pub use self::read::sort;
pub use self::rows::ValidRollup;
pub use self::scan::{KEY_SEPARATOR, property_sql};

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
    /// The groups: with a [`Page`], the page's, in order; else every group, unordered.
    pub groups: Vec<Sums>,
    /// Groups before paging.
    pub total: usize,
    /// Logic versions of the rows read, ascending.
    pub logic_versions: Vec<u32>,
}

/// The width of a time group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Time {
    /// Hour buckets ([`Sums::time`]: the bucket's Unix milliseconds). Totals (dimension 0)
    /// only, unfiltered: hourly visitor sketches are kept for totals alone.
    Hour,
    /// Local dates ([`Sums::time`]: days since 1970-01-01).
    Day,
    /// Weeks from Monday, the first cut to the query's start ([`Sums::time`]: the first
    /// date's days since 1970-01-01).
    Week,
    /// Calendar months, the first cut to the query's start (as weeks).
    Month,
}

/// How a query groups rows: by time, by the dimension's value, both, or neither (one group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// Time groups, if any.
    pub time: Option<Time>,
    /// One group per value of the dimension ([`Sums::key`]); else the key is empty.
    pub value: bool,
}

impl GroupBy {
    /// One group for the whole range.
    pub const TOTAL: Self = Self {
        time: None,
        value: false,
    };
    /// One group per dimension value.
    pub const VALUE: Self = Self {
        time: None,
        value: true,
    };

    /// Groups of `time` width.
    pub fn time(time: Time) -> Self {
        Self {
            time: Some(time),
            value: false,
        }
    }
}

/// What groups are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// A metric's value.
    Metric(Metric),
    /// The time group.
    Time,
    /// The value of the report's value column of this index (0 when it has one).
    Value(usize),
}

/// One sort key and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The key.
    pub key: SortKey,
    /// Highest first.
    pub descending: bool,
}

/// An ordered page of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Sort keys; ties are broken by time, then value, ascending.
    pub sort: Vec<Sort>,
    /// Groups skipped.
    pub offset: usize,
    /// Most groups returned.
    pub limit: usize,
}

impl Page {
    /// The first `limit` groups by `metric`, highest first, then by value.
    pub fn top(metric: Metric, limit: usize) -> Self {
        Self {
            sort: vec![Sort {
                key: SortKey::Metric(metric),
                descending: true,
            }],
            offset: 0,
            limit,
        }
    }
}

/// A read of one tenant's rollups.
#[derive(Debug, Clone)]
pub struct ShardQuery {
    /// The dimension (`Dimension as i32`); 0 reads the tenant's totals.
    pub dimension: i32,
    /// First local date, inclusive.
    pub start: Date,
    /// Last local date, inclusive.
    pub end: Date,
    /// Grouping.
    pub group: GroupBy,
    /// Keeps only the rows whose value passes (a filter on the dimension itself).
    pub keep: Option<Arc<ValueFilter>>,
    /// Ordering and paging; every group comes, unordered, without it.
    pub page: Option<Page>,
    /// Days, weeks and months are grouped as if every row were this many days later, and their
    /// group times moved back by as much: a comparison range grouped like the range it is
    /// compared with. 0 otherwise; hours ignore it.
    pub shift_days: i64,
    /// Whether the groups' distinct visitors are wanted; without, their sketches are not read
    /// and every group shows 0 visitors.
    pub visitors: bool,
}

impl ShardQuery {
    /// Every row of `dimension` between `start` and `end`, grouped by `group`.
    pub fn new(dimension: i32, start: Date, end: Date, group: GroupBy) -> Self {
        Self {
            dimension,
            start,
            end,
            group,
            keep: None,
            page: None,
            shift_days: 0,
            visitors: true,
        }
    }
}

/// A grouping column of an event store scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanColumn {
    /// A column of the event store ([`event_column`]).
    Stored(&'static str),
    /// The last page viewed in the event's visit.
    ExitPage,
    /// A custom property's value, by its key as rows keep it.
    Property(String),
}

/// An SQL predicate over the event store and its parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Predicate {
    /// The predicate.
    pub sql: String,
    /// Its parameters.
    pub params: Vec<String>,
}

/// What an event store scan computes besides the event metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Visits, bounces and duration.
    pub visits: bool,
    /// Scroll depth and engaged time.
    pub engagement: bool,
    /// The visitors of each time point across groups ([`Sums::point_visitors`]).
    pub point_visitors: bool,
    /// Each visit's exit page, which a column or the filter reads.
    pub exit_page: bool,
}

/// A report read from a tenant's event store.
#[derive(Debug, Clone)]
pub struct ScanQuery {
    /// First local date.
    pub start: Date,
    /// Last local date, inclusive.
    pub end: Date,
    /// Days are grouped as if this many days later (see [`ShardQuery::shift_days`]).
    pub shift_days: i64,
    /// Time points, if any.
    pub time: Option<Time>,
    /// Value columns, at most two: a group's key joins their values with [`KEY_SEPARATOR`].
    pub columns: Vec<ScanColumn>,
    /// Which events pass; all when `None`.
    pub filter: Option<Predicate>,
    /// With a group conversion rate: the filter without its goal conditions; each group's
    /// visitors passing it are its [`Sums::total_visitors`].
    pub base: Option<Predicate>,
    /// What else to compute.
    pub needs: Needs,
}

/// A read of one tenant's realtime rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentQuery {
    /// First minute of the series, Unix milliseconds.
    pub from_ms: i64,
    /// First minute counted for the current visitors.
    pub current_from_ms: i64,
    /// Last minute, inclusive.
    pub to_ms: i64,
    /// Top pages and sources returned.
    pub limit: usize,
}

/// The realtime view of a tenant: minutes, current visitors, top pages and sources.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    /// The minutes with events ([`Sums::time`]: the minute's Unix milliseconds), unordered.
    pub minutes: Vec<Sums>,
    /// Distinct visitors from `current_from_ms` on.
    pub current_visitors: u64,
    /// Pages by visitors, best first, then by path.
    pub pages: Vec<Sums>,
    /// Sources, as pages.
    pub sources: Vec<Sums>,
}

/// A tenant part that validation refused, given back with the reason: it is parked as it came
/// (encoding every part up front, in case, was a percent of a standalone's CPU).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Refused {
    /// Why: a [`QueryError::InvalidRollup`] naming the field.
    pub error: QueryError,
    /// The part.
    pub rollup: TenantRollup,
}

/// Stores tenants' rollups and answers queries over them.
#[async_trait]
pub trait ShardStore: Send + Sync + 'static {
    /// Checks a tenant part of a message of rollup-log `partition` before it is applied: data
    /// that can never be applied is refused with a [`QueryError::InvalidRollup`] naming the
    /// field, and given back.
    fn validate(&self, partition: u32, rollup: TenantRollup) -> Result<ValidRollup, Box<Refused>>;

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

    /// A report scanned from a tenant's event store; every group, unsorted.
    async fn scan(&self, tenant_id: &str, query: ScanQuery) -> Result<Answer, QueryError>;

    /// The realtime view of a tenant's last minutes ([`RecentQuery`]).
    async fn recent(&self, tenant_id: &str, query: RecentQuery) -> Result<Recent, QueryError>;

    /// Per tenant of `partition` and logic version, the dates of its live rows.
    async fn versions(&self, partition: u32) -> Result<Vec<TenantVersion>, QueryError>;

    /// A count that changes whenever the rows `tenant_id`'s answers are read from may have
    /// changed (every write of its rows, and every write of the whole shard), so that an answer
    /// can be kept until it does; `None` when the store cannot tell, and then no answer is kept.
    /// Must not block.
    fn changes(&self, tenant_id: &str) -> Option<u64> {
        let _ = tenant_id;
        None
    }
}
