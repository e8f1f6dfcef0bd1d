//! A cell: the additive counters and the visitor sketch of one key, as stored in a row, and
//! how cells of one key add up (on apply, on fold and on read).

use ::duckdb::types::Value;
use ::duckdb::{Appender, Row, params};
use beacon_proto::pipeline::v1::RollupRow;
use datasketches::hll::HllSketch;

use super::sketch::{self, Merge};
use crate::error::ShardFailure;
use crate::metrics::Sums;

/// Additive counters in column order: pageviews, events, visits, bounces, duration_ms,
/// bot_events, revenue_micros, revenue_events.
pub(crate) type Counters = [i64; COUNTERS];

/// Counters of a cell.
pub(crate) const COUNTERS: usize = 8;
/// Where the events counter is in [`Counters`].
pub(crate) const EVENTS: usize = 1;

/// The counters of a rollup row.
pub(crate) fn counters(row: &RollupRow) -> Counters {
    [
        row.pageviews,
        row.events,
        row.visits,
        row.bounces,
        row.duration_ms,
        row.bot_events,
        row.revenue_micros,
        row.revenue_events,
    ]
}

fn add(into: &mut Counters, other: &Counters) {
    // Saturating: a corrupt but decodable rollup must not panic every read of its tenant.
    for (a, b) in into.iter_mut().zip(other) {
        *a = a.saturating_add(*b);
    }
}

/// Counters and a sketch being built from rollups (the apply path).
pub(crate) struct NewCell {
    /// Summed counters.
    pub counters: Counters,
    /// Visitors seen, if any.
    pub sketch: Option<HllSketch>,
}

impl NewCell {
    /// An empty cell.
    pub(crate) fn new() -> Self {
        Self {
            counters: [0; COUNTERS],
            sketch: None,
        }
    }

    /// Adds a rollup row's counters.
    pub(crate) fn add_row(&mut self, row: &RollupRow) {
        add(&mut self.counters, &counters(row));
    }

    /// Records visitors.
    pub(crate) fn add_visitors(&mut self, visitors: &[u64]) -> Result<(), ShardFailure> {
        let sketch = match &mut self.sketch {
            Some(sketch) => sketch,
            None => self.sketch.insert(sketch::new()?),
        };
        visitors.iter().for_each(|&visitor| sketch.update(visitor));
        Ok(())
    }

    /// The sketch as stored.
    pub(crate) fn sketch_bytes(&self) -> Option<Vec<u8>> {
        self.sketch.as_ref().map(HllSketch::serialize)
    }
}

/// Stored cells of one key being added up (the fold and read paths).
pub(crate) struct Cell {
    /// Summed counters.
    pub counters: Counters,
    /// Merged sketches; `None` while no row had visitors.
    pub sketch: Option<Merge>,
}

impl Cell {
    /// The cell of a row whose cell columns start at `first`.
    pub(crate) fn read(row: &Row<'_>, first: usize) -> ::duckdb::Result<Self> {
        let mut cell = Self::read_counters(row, first)?;
        let sketch: Option<Vec<u8>> = row.get(first + COUNTERS)?;
        cell.sketch = sketch.map(Merge::of);
        Ok(cell)
    }

    /// The counters of a row whose cell columns start at `first`, leaving its sketch unread.
    pub(crate) fn read_counters(row: &Row<'_>, first: usize) -> ::duckdb::Result<Self> {
        let mut counters = [0; COUNTERS];
        for (i, counter) in counters.iter_mut().enumerate() {
            *counter = row.get(first + i)?;
        }
        Ok(Self {
            counters,
            sketch: None,
        })
    }

    /// Adds `other`'s counters and sketches (merged when needed).
    pub(crate) fn add(&mut self, other: Cell) {
        add(&mut self.counters, &other.counters);
        match (&mut self.sketch, other.sketch) {
            (_, None) => {}
            (None, Some(sketch)) => self.sketch = Some(sketch),
            (Some(mine), Some(theirs)) => mine.add(theirs),
        }
    }

    /// The merged sketch as stored.
    pub(crate) fn into_sketch_bytes(self) -> Result<Option<Vec<u8>>, ShardFailure> {
        self.sketch.map(Merge::into_bytes).transpose()
    }

    /// The group's sums, unique visitors counted when `count_visitors`.
    pub(crate) fn sums(&self, key: String, count_visitors: bool) -> Result<Sums, ShardFailure> {
        let visitors = match (&self.sketch, count_visitors) {
            (Some(merge), true) => merge.count()?,
            _ => 0,
        };
        let [
            pageviews,
            events,
            visits,
            bounces,
            duration_ms,
            bot_events,
            revenue_micros,
            revenue_events,
        ] = self.counters;
        Ok(Sums {
            key,
            time: 0,
            visitors,
            visits,
            pageviews,
            events,
            bounces,
            duration_ms,
            bot_events,
            revenue_micros,
            revenue_events,
            ..Sums::default()
        })
    }
}

/// Where a row belongs besides its key: its generation (0 is live) and the logic version that
/// made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Stamp {
    /// Generation; queries read 0.
    pub gen_id: u64,
    /// Logic version of the aggregator that made the row.
    pub version: i32,
}

/// The key of a `days` row.
pub(crate) struct DayKey<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Local date, days since 1970-01-01.
    pub day: i32,
    /// Dimension (0 for totals).
    pub dimension: i16,
    /// Dimension value ("" for totals).
    pub value: &'a str,
    /// Generation and logic version.
    pub stamp: Stamp,
}

/// The key of an `hours` row.
pub(crate) struct HourKey<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Hour bucket, Unix milliseconds.
    pub hour_ms: i64,
    /// The hour's local date, days since 1970-01-01.
    pub day: i32,
    /// Generation and logic version.
    pub stamp: Stamp,
}

/// Appends a `days` row.
pub(crate) fn append_day(
    appender: &mut Appender<'_>,
    key: &DayKey<'_>,
    counters: &Counters,
    sketch: Option<Vec<u8>>,
    folded: bool,
) -> ::duckdb::Result<()> {
    let [pv, ev, vi, bo, du, bot, rev, rev_ev] = *counters;
    appender.append_row(params![
        key.tenant,
        Value::Date32(key.day),
        key.dimension,
        key.value,
        pv,
        ev,
        vi,
        bo,
        du,
        bot,
        sketch,
        folded,
        key.stamp.gen_id,
        key.stamp.version,
        rev,
        rev_ev
    ])
}

/// Appends a `recent` row: its (tenant, minute, dimension, value), counters and sketch.
pub(crate) fn append_recent_row(
    appender: &mut Appender<'_>,
    key: (&str, i64, i16, &str),
    counters: &Counters,
    sketch: Option<Vec<u8>>,
) -> ::duckdb::Result<()> {
    let [pv, ev, vi, bo, du, bot, rev, rev_ev] = *counters;
    let (tenant, minute_ms, dimension, value) = key;
    appender.append_row(params![
        tenant, minute_ms, dimension, value, pv, ev, vi, bo, du, bot, sketch, rev, rev_ev
    ])
}

/// Appends an `hours` row.
pub(crate) fn append_hour(
    appender: &mut Appender<'_>,
    key: &HourKey<'_>,
    counters: &Counters,
    sketch: Option<Vec<u8>>,
    folded: bool,
) -> ::duckdb::Result<()> {
    let [pv, ev, vi, bo, du, bot, rev, rev_ev] = *counters;
    appender.append_row(params![
        key.tenant,
        key.hour_ms,
        Value::Date32(key.day),
        pv,
        ev,
        vi,
        bo,
        du,
        bot,
        sketch,
        folded,
        key.stamp.gen_id,
        key.stamp.version,
        rev,
        rev_ev
    ])
}
