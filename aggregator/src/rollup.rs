//! Pending rollup deltas: additive counters and visitors per (tenant, hour, dimension, value),
//! with an upper bound of their encoded size that is kept up to date as they grow.
//!
//! The maps hash with foldhash (hashbrown's default), not SipHash: every event touches a dozen
//! buckets, and SipHash was a tenth of a replay's time. foldhash is seeded per process, and a
//! tenant's values per day and dimension are capped (see `cap`), which bounds what colliding
//! keys could cost.

use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap, HashSet};

use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{EventRow, RollupRow, TenantRollup};
use prost::Message;

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
    /// Revenue, millionths of the tenant's currency.
    pub revenue_micros: i64,
    /// Events that carried revenue.
    pub revenue_events: i64,
}

impl Counters {
    fn add(&mut self, other: Counters) {
        self.pageviews += other.pageviews;
        self.events += other.events;
        self.visits += other.visits;
        self.bounces += other.bounces;
        self.duration_ms += other.duration_ms;
        self.bot_events += other.bot_events;
        self.revenue_micros = self.revenue_micros.saturating_add(other.revenue_micros);
        self.revenue_events += other.revenue_events;
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

/// Buckets by (hour or minute, dimension) and value.
type Buckets = HashMap<(i64, Dimension), HashMap<String, Bucket>>;

/// One tenant's pending buckets: the hourly ones, and the minutes of the realtime view.
#[derive(Debug, Default)]
struct TenantPending {
    buckets: Buckets,
    recent: Buckets,
    /// The event store's rows, in the order of their events.
    events: Vec<EventRow>,
}

/// Deltas not yet published.
#[derive(Debug, Default)]
pub struct PendingRollups {
    tenants: HashMap<String, TenantPending>,
    /// Upper bound of the encoded size of the tenants' parts, bytes.
    bound: usize,
}

/// Most bytes a `RollupBatch` needs besides its tenant parts: partition, two positions, logic
/// version and two flags, each with its tag, at the longest varint, and the event log's
/// identity (at most [`beacon_core::log::MAX_IDENTITY_BYTES`]).
pub const BATCH_OVERHEAD: usize = 64 + 3 + beacon_core::log::MAX_IDENTITY_BYTES;
/// Most bytes a tenant part needs besides its rows: its tag, length and tenant id field
/// (tenant ids are at most 64 bytes).
const TENANT_BYTES: usize = 1 + 5 + 2 + 64;
/// Most bytes a row needs besides its value and visitors: its tag and length (5), hour (11),
/// date (12), dimension (11), value tag and length (3), eight counters (88) and the visitors'
/// tag and length (6).
const ROW_BYTES: usize = 5 + 11 + 12 + 11 + 3 + 88 + 6;
/// Encoded size of one visitor hash.
const VISITOR_BYTES: usize = 8;

impl PendingRollups {
    /// One tenant's deltas, for the buckets of one event.
    pub fn tenant(&mut self, tenant: &str) -> TenantDeltas<'_> {
        let pending = match self.tenants.entry_ref(tenant) {
            EntryRef::Occupied(occupied) => occupied.into_mut(),
            EntryRef::Vacant(vacant) => {
                self.bound += TENANT_BYTES;
                vacant.insert(TenantPending::default())
            }
        };
        TenantDeltas {
            pending,
            bound: &mut self.bound,
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Upper bound of the encoded size of the pending tenant parts, bytes: never below what
    /// [`PendingRollups::take`] encodes to.
    pub fn size_bound(&self) -> usize {
        self.bound
    }

    /// Takes every pending delta, in a deterministic order: tenants by id, rows by (hour,
    /// dimension, value), visitors ascending.
    pub fn take(&mut self) -> Vec<TenantRollup> {
        self.bound = 0;
        let mut tenants: Vec<TenantRollup> = self
            .tenants
            .drain()
            .map(|(tenant_id, pending)| tenant_rollup(tenant_id, pending))
            .filter(|t| !t.rows.is_empty() || !t.recent.is_empty() || !t.events.is_empty())
            .collect();
        tenants.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        tenants
    }
}

/// One tenant's pending deltas (see [`PendingRollups::tenant`]).
pub struct TenantDeltas<'p> {
    pending: &'p mut TenantPending,
    bound: &'p mut usize,
}

impl TenantDeltas<'_> {
    /// Adds `counters` to the bucket.
    pub fn add(&mut self, hour: (i64, &str), dim: Dimension, value: &str, counters: Counters) {
        self.bucket(hour, dim, value).counters.add(counters);
    }

    /// Adds `counters` to the bucket and records that `visitor` was seen in it.
    pub fn add_seen(
        &mut self,
        hour: (i64, &str),
        dim: Dimension,
        value: &str,
        counters: Counters,
        visitor: u64,
    ) {
        let bucket = self.bucket(hour, dim, value);
        bucket.counters.add(counters);
        if bucket.visitors.insert(visitor) {
            *self.bound += VISITOR_BYTES;
        }
    }

    /// Adds `counters` to the realtime bucket of the UTC minute starting at `minute_ms`, and
    /// records that `visitor` was seen in it.
    pub fn add_recent(
        &mut self,
        minute_ms: i64,
        dim: Dimension,
        value: &str,
        counters: Counters,
        visitor: u64,
    ) {
        let bucket = bucket(
            &mut self.pending.recent,
            self.bound,
            (minute_ms, ""),
            dim,
            value,
        );
        bucket.counters.add(counters);
        if bucket.visitors.insert(visitor) {
            *self.bound += VISITOR_BYTES;
        }
    }

    /// Adds an event store row.
    pub fn add_event(&mut self, row: EventRow) {
        // Tag and length of the row within its tenant part.
        *self.bound += row.encoded_len() + 1 + 5;
        self.pending.events.push(row);
    }

    /// The hourly bucket, created when missing.
    fn bucket(&mut self, hour: (i64, &str), dim: Dimension, value: &str) -> &mut Bucket {
        bucket(&mut self.pending.buckets, self.bound, hour, dim, value)
    }
}

/// The bucket of `buckets`, created when missing (its key is allocated only then, and its
/// encoded size added to `bound`).
fn bucket<'b>(
    buckets: &'b mut Buckets,
    bound: &mut usize,
    time: (i64, &str),
    dim: Dimension,
    value: &str,
) -> &'b mut Bucket {
    let values = buckets.entry((time.0, dim)).or_default();
    match values.entry_ref(value) {
        EntryRef::Occupied(occupied) => occupied.into_mut(),
        EntryRef::Vacant(vacant) => {
            *bound += ROW_BYTES + value.len();
            vacant.insert(Bucket {
                local_date: time.1.to_owned(),
                ..Bucket::default()
            })
        }
    }
}

fn tenant_rollup(tenant_id: String, pending: TenantPending) -> TenantRollup {
    TenantRollup {
        tenant_id,
        rows: rows_of(pending.buckets),
        recent: rows_of(pending.recent),
        events: pending.events,
        ..Default::default()
    }
}

/// The rows of `buckets` ordered by (time, dimension, value), empty ones left out.
fn rows_of(buckets: Buckets) -> Vec<RollupRow> {
    let mut buckets: Vec<((i64, Dimension, String), Bucket)> = buckets
        .into_iter()
        .flat_map(|((hour, dim), values)| {
            values
                .into_iter()
                .map(move |(value, b)| ((hour, dim, value), b))
        })
        .collect();
    buckets.sort_by(|a, b| (a.0.0, a.0.1 as i32, &a.0.2).cmp(&(b.0.0, b.0.1 as i32, &b.0.2)));
    buckets
        .into_iter()
        .filter(|(_, bucket)| !bucket.counters.is_zero() || !bucket.visitors.is_empty())
        .map(|((hour_ms, dim, value), bucket)| row(hour_ms, dim, value, bucket))
        .collect()
}

fn row(hour_ms: i64, dim: Dimension, value: String, bucket: Bucket) -> RollupRow {
    let c = bucket.counters;
    let mut visitors: Vec<u64> = bucket.visitors.into_iter().collect();
    visitors.sort_unstable();
    RollupRow {
        hour_ms,
        local_date: bucket.local_date,
        dimension: dim as i32,
        value,
        pageviews: c.pageviews,
        events: c.events,
        visits: c.visits,
        bounces: c.bounces,
        duration_ms: c.duration_ms,
        bot_events: c.bot_events,
        visitors,
        revenue_micros: c.revenue_micros,
        revenue_events: c.revenue_events,
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
        revenue_micros: 0,
        revenue_events: 0,
    };

    #[test]
    fn merges_and_orders() {
        let mut pending = PendingRollups::default();
        pending.tenant("b").add_seen(
            (3_600_000, "1970-01-01"),
            Dimension::Page,
            "/x",
            ONE_EVENT,
            9,
        );
        pending.tenant("a").add_seen(
            (3_600_000, "1970-01-01"),
            Dimension::Page,
            "/y",
            ONE_EVENT,
            9,
        );
        pending
            .tenant("a")
            .add_seen((0, "1970-01-01"), Dimension::Page, "/y", ONE_EVENT, 5);
        pending
            .tenant("a")
            .add_seen((0, "1970-01-01"), Dimension::Page, "/y", ONE_EVENT, 5);
        pending
            .tenant("a")
            .add_seen((0, "1970-01-01"), Dimension::Unspecified, "", ONE_EVENT, 1);
        let taken = pending.take();
        assert!(pending.is_empty());
        assert_eq!(pending.size_bound(), 0);
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
        assert_eq!(a.rows[1].visitors, vec![5]);
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
        pending
            .tenant("a")
            .add((0, "1970-01-01"), Dimension::Unspecified, "", plus);
        pending
            .tenant("a")
            .add_seen((0, "1970-01-01"), Dimension::Unspecified, "", minus, 3);
        let taken = pending.take();
        assert_eq!(
            taken[0].rows.len(),
            1,
            "the zero row is kept for its visitor"
        );
        assert_eq!(taken[0].rows[0].visitors, vec![3]);
        assert_eq!(taken[0].rows[0].bounces, 0);
    }

    #[test]
    fn size_bound_grows_with_visitors() {
        let mut pending = PendingRollups::default();
        pending
            .tenant("a")
            .add_seen((0, "d"), Dimension::Unspecified, "", ONE_EVENT, 1);
        let one = pending.size_bound();
        pending
            .tenant("a")
            .add_seen((0, "d"), Dimension::Unspecified, "", ONE_EVENT, 2);
        assert_eq!(pending.size_bound(), one + VISITOR_BYTES);
        pending
            .tenant("a")
            .add_seen((0, "d"), Dimension::Unspecified, "", ONE_EVENT, 2);
        assert_eq!(pending.size_bound(), one + VISITOR_BYTES);
    }

    #[test]
    fn the_bound_holds_for_extreme_values() {
        let mut pending = PendingRollups::default();
        let big = Counters {
            pageviews: i64::MIN,
            events: i64::MAX,
            visits: i64::MIN,
            bounces: i64::MAX,
            duration_ms: i64::MIN,
            bot_events: i64::MAX,
            revenue_micros: i64::MIN,
            revenue_events: i64::MAX,
        };
        let tenant = "t".repeat(64);
        for n in 0..300u64 {
            let value = "é".repeat((n % 128) as usize);
            let hour = (i64::MIN + n as i64, "2026-03-01");
            pending.tenant(&tenant).add_seen(
                hour,
                Dimension::UtmCampaign,
                &value,
                big,
                u64::MAX - n,
            );
            let none = Counters::default();
            pending
                .tenant(&tenant)
                .add_seen(hour, Dimension::UtmCampaign, &value, none, n);
        }
        let bound = pending.size_bound() + BATCH_OVERHEAD;
        let batch = beacon_proto::pipeline::v1::RollupBatch {
            partition: u32::MAX,
            first_event_seq: u64::MAX,
            last_event_seq: u64::MAX,
            logic_version: u32::MAX,
            tenants: pending.take(),
            first_event_index: u32::MAX,
            last_event_index: u32::MAX,
            replay: true,
            from_dead_letter: true,
            event_log: "x".repeat(beacon_core::log::MAX_IDENTITY_BYTES),
        };
        let exact = batch.encoded_len();
        assert!(exact <= bound, "encoded {exact} > bound {bound}");
        assert!(
            bound - exact < bound / 4,
            "a loose bound: {bound} for {exact}"
        );
    }
}
