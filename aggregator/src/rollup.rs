//! Pending rollup deltas: additive counters and visitor sets per (tenant, hour, dimension, value).

use std::collections::{HashMap, HashSet};

use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{RollupRow, TenantRollup, VisitorSet};

/// Additive changes to one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pageviews.
    pub pageviews: i64,
    /// Events, pageviews included.
    pub events: i64,
    /// Visits.
    pub visits: i64,
    /// Bounces.
    pub bounces: i64,
    /// Visit duration, milliseconds.
    pub duration_ms: i64,
    /// Bot events.
    pub bot_events: i64,
}

impl Counters {
    fn add(&mut self, other: Counters) {
        self.pageviews += other.pageviews;
        self.events += other.events;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration_ms += other.duration_ms;
        self.bot_events += other.bot_events;
    }

    fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

#[derive(Debug, Default)]
struct Bucket {
    local_date: String,
    counters: Counters,
    visitors: HashSet<u64>,
}

/// One tenant's pending buckets, by (hour, dimension) and value.
#[derive(Debug, Default)]
struct TenantPending {
    buckets: HashMap<(i64, Dimension), HashMap<String, Bucket>>,
}

/// Deltas not yet published.
#[derive(Debug, Default)]
pub struct PendingRollups {
    tenants: HashMap<String, TenantPending>,
    /// Rough encoded size, bytes, to bound the size of a rollup message.
    size_hint: usize,
}

/// Rough encoded size of a new bucket (keys, date, counters).
const BUCKET_BYTES: usize = 64;
/// Encoded size of one visitor hash.
const VISITOR_BYTES: usize = 8;

impl PendingRollups {
    /// Adds `counters` to the bucket.
    pub fn add(
        &mut self,
        tenant: &str,
        hour: (i64, &str),
        dim: Dimension,
        value: &str,
        counters: Counters,
    ) {
        if let Some(bucket) = self.bucket(tenant, hour, dim, value) {
            bucket.counters.add(counters);
        }
    }

    /// Adds `counters` to the bucket and records that `visitor` was seen in it.
    pub fn add_seen(
        &mut self,
        tenant: &str,
        hour: (i64, &str),
        dim: Dimension,
        value: &str,
        counters: Counters,
        visitor: u64,
    ) {
        let new_visitor = match self.bucket(tenant, hour, dim, value) {
            Some(bucket) => {
                bucket.counters.add(counters);
                bucket.visitors.insert(visitor)
            }
            None => false,
        };
        if new_visitor {
            self.size_hint += VISITOR_BYTES;
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Rough encoded size of the pending deltas, bytes.
    pub fn size_hint(&self) -> usize {
        self.size_hint
    }

    /// Takes every pending delta, in a deterministic order: tenants by id, rows and visitor sets
    /// by (hour, dimension, value), visitors ascending.
    pub fn take(&mut self) -> Vec<TenantRollup> {
        self.size_hint = 0;
        let mut tenants: Vec<TenantRollup> = self
            .tenants
            .drain()
            .map(|(tenant_id, pending)| tenant_rollup(tenant_id, pending))
            .filter(|t| !t.rows.is_empty() || !t.visitors.is_empty())
            .collect();
        tenants.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        tenants
    }

    /// The bucket, created when missing (always `Some`; keys are allocated only on creation).
    fn bucket(
        &mut self,
        tenant: &str,
        hour: (i64, &str),
        dim: Dimension,
        value: &str,
    ) -> Option<&mut Bucket> {
        if !self.tenants.contains_key(tenant) {
            self.tenants
                .insert(tenant.to_owned(), TenantPending::default());
        }
        let values = self
            .tenants
            .get_mut(tenant)?
            .buckets
            .entry((hour.0, dim))
            .or_default();
        if !values.contains_key(value) {
            self.size_hint += BUCKET_BYTES + value.len();
            let bucket = Bucket {
                local_date: hour.1.to_owned(),
                ..Bucket::default()
            };
            values.insert(value.to_owned(), bucket);
        }
        values.get_mut(value)
    }
}

fn tenant_rollup(tenant_id: String, pending: TenantPending) -> TenantRollup {
    let mut buckets: Vec<((i64, Dimension, String), Bucket)> = pending
        .buckets
        .into_iter()
        .flat_map(|((hour, dim), values)| {
            values
                .into_iter()
                .map(move |(value, b)| ((hour, dim, value), b))
        })
        .collect();
    buckets.sort_by(|a, b| (a.0.0, a.0.1 as i32, &a.0.2).cmp(&(b.0.0, b.0.1 as i32, &b.0.2)));
    let mut rollup = TenantRollup {
        tenant_id,
        rows: Vec::new(),
        visitors: Vec::new(),
    };
    for ((hour_ms, dim, value), bucket) in buckets {
        if !bucket.visitors.is_empty() {
            let mut visitors: Vec<u64> = bucket.visitors.into_iter().collect();
            visitors.sort_unstable();
            rollup.visitors.push(VisitorSet {
                hour_ms,
                local_date: bucket.local_date.clone(),
                dimension: dim as i32,
                value: value.clone(),
                visitors,
            });
        }
        if !bucket.counters.is_zero() {
            rollup
                .rows
                .push(row(hour_ms, bucket.local_date, dim, value, bucket.counters));
        }
    }
    rollup
}

fn row(hour_ms: i64, local_date: String, dim: Dimension, value: String, c: Counters) -> RollupRow {
    RollupRow {
        hour_ms,
        local_date,
        dimension: dim as i32,
        value,
        pageviews: c.pageviews,
        events: c.events,
        visits: c.visits,
        bounces: c.bounces,
        duration_ms: c.duration_ms,
        bot_events: c.bot_events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_EVENT: Counters = Counters {
        events: 1,
        pageviews: 0,
        visits: 0,
        bounces: 0,
        duration_ms: 0,
        bot_events: 0,
    };

    #[test]
    fn merges_and_orders() {
        let mut pending = PendingRollups::default();
        pending.add_seen(
            "b",
            (3_600_000, "1970-01-01"),
            Dimension::Page,
            "/x",
            ONE_EVENT,
            9,
        );
        pending.add_seen(
            "a",
            (3_600_000, "1970-01-01"),
            Dimension::Page,
            "/y",
            ONE_EVENT,
            9,
        );
        pending.add_seen("a", (0, "1970-01-01"), Dimension::Page, "/y", ONE_EVENT, 5);
        pending.add_seen("a", (0, "1970-01-01"), Dimension::Page, "/y", ONE_EVENT, 5);
        pending.add_seen(
            "a",
            (0, "1970-01-01"),
            Dimension::Unspecified,
            "",
            ONE_EVENT,
            1,
        );
        let taken = pending.take();
        assert!(pending.is_empty());
        assert_eq!(pending.size_hint(), 0);
        assert_eq!(
            taken
                .iter()
                .map(|t| t.tenant_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let a = &taken[0];
        let keys: Vec<(i64, i32, &str, i64)> = a
            .rows
            .iter()
            .map(|r| (r.hour_ms, r.dimension, r.value.as_str(), r.events))
            .collect();
        assert_eq!(
            keys,
            [(0, 0, "", 1), (0, 1, "/y", 2), (3_600_000, 1, "/y", 1)]
        );
        assert_eq!(a.visitors[1].visitors, vec![5]);
    }

    #[test]
    fn zero_rows_are_dropped_but_visitors_kept() {
        let mut pending = PendingRollups::default();
        let plus = Counters {
            bounces: 1,
            ..Counters::default()
        };
        let minus = Counters {
            bounces: -1,
            ..Counters::default()
        };
        pending.add("a", (0, "1970-01-01"), Dimension::Unspecified, "", plus);
        pending.add_seen("a", (0, "1970-01-01"), Dimension::Unspecified, "", minus, 3);
        let taken = pending.take();
        assert!(taken[0].rows.is_empty());
        assert_eq!(taken[0].visitors.len(), 1);
    }

    #[test]
    fn size_hint_grows_with_visitors() {
        let mut pending = PendingRollups::default();
        pending.add_seen("a", (0, "d"), Dimension::Unspecified, "", ONE_EVENT, 1);
        let one = pending.size_hint();
        pending.add_seen("a", (0, "d"), Dimension::Unspecified, "", ONE_EVENT, 2);
        assert_eq!(pending.size_hint(), one + VISITOR_BYTES);
        pending.add_seen("a", (0, "d"), Dimension::Unspecified, "", ONE_EVENT, 2);
        assert_eq!(pending.size_hint(), one + VISITOR_BYTES);
    }
}
