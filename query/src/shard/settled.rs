//! Sums of a tenant's settled days, kept between reads: under live traffic a tenant's writes
//! change its last day or two, while a dashboard reads a month. A read adds the kept sums of
//! the days before the newest write's first day to a fresh scan of the days after.
//!
//! Invariant: kept sums are used only while the number of the last write that may have
//! changed their tenant's rows of their days
//! ([`Writes::of_days`](super::writes::Writes::of_days)) is the one read before they were
//! scanned. Counters are kept for every group; sketches only for the groups reads asked for,
//! each merged into one.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use jiff::civil::Date;

use super::GroupBy;
use super::cell::Cell;
use super::sketch::Merge;
use crate::error::ShardFailure;

/// A group of a read: its time and its value.
pub(crate) type Key = (i64, String);

/// Bytes counted for a group besides its value and sketch.
const GROUP_OVERHEAD: usize = 96;

/// What kept sums are the sums of: a read's tenant, dimension, grouping and days.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SpanKey {
    /// The tenant.
    pub tenant: String,
    /// The dimension (0: totals).
    pub dimension: i16,
    /// The read's first day, which also cuts its weeks and months.
    pub start: Date,
    /// The last day summed.
    pub through: Date,
    /// The read's grouping.
    pub group: GroupBy,
    /// The read's shift of days ([`ShardQuery::shift_days`](super::ShardQuery::shift_days)).
    pub shift_days: i64,
}

/// The sums of a span of settled days.
#[derive(Default)]
pub(crate) struct Span {
    /// Every group's counters (cells without sketches).
    pub counters: HashMap<Key, Cell>,
    /// The merged sketches of the groups read with visitors (`None`: a group without any).
    pub sketches: HashMap<Key, Option<Vec<u8>>>,
    /// Whether `sketches` holds every group's.
    pub every_sketch: bool,
    /// Logic versions of the rows summed.
    pub versions: BTreeSet<u32>,
}

impl Span {
    /// Merges and keeps the sketches of `cells`' groups that `wanted` selects.
    pub(crate) fn keep_sketches(
        &mut self,
        cells: HashMap<Key, Cell>,
        wanted: impl Fn(&Key) -> bool,
    ) -> Result<(), ShardFailure> {
        for (key, cell) in cells {
            if wanted(&key) {
                let merged = cell.sketch.map(Merge::into_bytes).transpose()?;
                self.sketches.insert(key, merged);
            }
        }
        Ok(())
    }

    /// The groups of `wanted` with rows in the span whose sketches are not kept.
    pub(crate) fn missing(&self, wanted: &HashSet<Key>) -> HashSet<Key> {
        wanted
            .iter()
            .filter(|key| self.counters.contains_key(*key) && !self.sketches.contains_key(*key))
            .cloned()
            .collect()
    }

    /// Every group's cell, with its kept sketch where `with_sketch` selects it.
    pub(crate) fn cells(&self, with_sketch: impl Fn(&Key) -> bool) -> HashMap<Key, Cell> {
        self.counters
            .iter()
            .map(|(key, counted)| {
                let sketch = with_sketch(key)
                    .then(|| self.sketches.get(key).cloned().flatten().map(Merge::of))
                    .flatten();
                let cell = Cell {
                    counters: counted.counters,
                    sketch,
                };
                (key.clone(), cell)
            })
            .collect()
    }

    fn bytes(&self) -> usize {
        let groups: usize = self
            .counters
            .keys()
            .map(|(_, value)| GROUP_OVERHEAD + value.len())
            .sum();
        let sketches: usize = self
            .sketches
            .iter()
            .map(|((_, value), sketch)| value.len() + sketch.as_ref().map_or(0, Vec::len))
            .sum();
        groups + sketches
    }
}

struct Kept {
    /// The write count the span was scanned at.
    writes: u64,
    span: Span,
    bytes: usize,
}

/// Spans kept up to a byte budget (their groups' values and sketches, and an overhead per
/// group), the oldest dropped first.
#[derive(Default)]
pub(crate) struct SpanCache {
    budget: usize,
    kept: HashMap<SpanKey, Kept>,
    order: VecDeque<SpanKey>,
    bytes: usize,
}

impl SpanCache {
    /// A cache of at most `budget` bytes; 0 keeps nothing.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Whether anything is kept at all.
    pub(crate) fn keeps(&self) -> bool {
        self.budget > 0
    }

    /// The span of `key` if it was scanned at write count `writes`; taken out (the caller
    /// puts it back with what it added).
    pub(crate) fn take(&mut self, key: &SpanKey, writes: u64) -> Option<Span> {
        let kept = self.kept.remove(key)?;
        self.bytes -= kept.bytes;
        self.order.retain(|k| k != key);
        (kept.writes == writes).then_some(kept.span)
    }

    /// Keeps `span` of `key`, scanned at write count `writes`, if it fits the budget.
    pub(crate) fn put(&mut self, key: SpanKey, writes: u64, span: Span) {
        let bytes = span.bytes();
        if bytes > self.budget {
            return;
        }
        if let Some(old) = self.kept.remove(&key) {
            self.bytes -= old.bytes;
            self.order.retain(|k| *k != key);
        }
        while self.bytes + bytes > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.kept.remove(&oldest) {
                self.bytes -= old.bytes;
            }
        }
        self.bytes += bytes;
        self.order.push_back(key.clone());
        self.kept.insert(
            key,
            Kept {
                writes,
                span,
                bytes,
            },
        );
    }
}

#[cfg(test)]
impl SpanCache {
    /// Spans kept.
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }
}

#[cfg(test)]
mod tests;
