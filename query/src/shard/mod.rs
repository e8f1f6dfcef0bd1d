//! Per-tenant shard files: the rollups of one tenant, applied exactly once, and queried.
//!
//! Invariant: one writer per shard file (this process), and every DuckDB call runs off the
//! async runtime.

use std::sync::Arc;

use async_trait::async_trait;
use beacon_proto::insights::v1::Metric;
use beacon_proto::pipeline::v1::TenantRollup;
use jiff::civil::Date;

use crate::QueryError;
use crate::metrics::Sums;

pub mod duckdb;
mod open;
mod rows;
mod schema;

pub use self::duckdb::DuckShardStore;

/// What applying a tenant's rollup did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The rows were added and the partition's watermark moved to the rollup's sequence.
    Applied,
    /// The shard had applied this partition up to `watermark` already; nothing changed.
    AlreadyApplied {
        /// The shard's applied rollup-log sequence of the partition.
        watermark: u64,
    },
}

/// How a query groups rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One group for the whole range (key "").
    Total,
    /// One group per local date (key "YYYY-MM-DD").
    Day,
    /// One group per hour bucket (key: the bucket's Unix milliseconds in decimal).
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

/// A read of one tenant's shard.
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
    /// Applies `rollup` (of rollup-log `partition` at sequence `seq`) to its tenant's shard,
    /// exactly once: in one transaction with the partition's watermark, and not at all when
    /// the watermark is at or past `seq`. Data that can never be applied is
    /// [`QueryError::InvalidRollup`].
    async fn apply(
        &self,
        partition: u32,
        seq: u64,
        rollup: Arc<TenantRollup>,
    ) -> Result<ApplyOutcome, QueryError>;

    /// The last rollup-log sequence of `partition` applied to the tenant's shard.
    async fn watermark(&self, tenant_id: &str, partition: u32) -> Result<Option<u64>, QueryError>;

    /// Summed counters and distinct visitors of the tenant's rows matching `query`. A tenant
    /// without a shard yet has no rows.
    async fn query(&self, tenant_id: &str, query: ShardQuery) -> Result<Vec<Sums>, QueryError>;
}
