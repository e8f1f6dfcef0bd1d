//! The read of a [`ShardQuery`]: filtered scans, cells added up per group here, then the
//! groups ordered and paged. Sketches are read and merged only for the groups returned when
//! the order does not need every group's visitors.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use ::duckdb::types::Value;
use ::duckdb::{Connection, params};
use beacon_proto::insights::v1::{Dimension, Metric};

use super::cell::{COUNTERS, Cell, EVENTS};
use super::open::lock;
use super::settled::{Key, Span, SpanCache, SpanKey};
use super::sketch::Merge;
use super::writes::Writes;
use super::{Answer, Page, Recent, RecentQuery, ShardQuery, Sort, SortKey, Time, schema};
use crate::error::ShardFailure;
use crate::metrics::{self, Sums};
use crate::range::{epoch_day, from_epoch_day};
use jiff::civil::Date;

/// Most bytes of visitor sketches one read may hold (the rows of a dimension over the range).
const MAX_READ_SKETCH_BYTES: usize = 512 << 20;

/// Where a read finds and keeps the sums of its tenant's settled days.
pub(crate) struct Kept<'a> {
    /// The shard's kept spans.
    pub spans: &'a Mutex<SpanCache>,
    /// The shard's writes.
    pub writes: &'a Mutex<Writes>,
}

/// The groups of `tenant`'s rows matching `query`; `dimension` is the query's, checked.
///
/// Paged by counters alone, the read takes two scans: counters of every group first, then the
/// sketches of the page's groups only, so memory grows with the groups' counters, not their
/// sketches. Paged by visitors, highest first, it merges the sketches of the groups that can
/// make the page only ([`top_by_visitors`]). Otherwise every group's sketches are merged, and
/// a read that would hold more than [`MAX_READ_SKETCH_BYTES`] of them fails, naming the limit.
pub(crate) fn sums(
    conn: &Connection,
    tenant: &str,
    dimension: i16,
    query: &ShardQuery,
    kept: Kept<'_>,
) -> Result<Answer, ShardFailure> {
    let mut versions = BTreeSet::new();
    let read = Read {
        conn,
        tenant,
        dimension,
        query,
        kept,
    };
    let by_visitors = |sort: &Sort| sort.key == SortKey::Metric(Metric::Visitors);
    let (groups, total) = match &query.page {
        Some(page)
            if query.visitors
                && page
                    .sort
                    .first()
                    .is_some_and(|s| by_visitors(s) && s.descending) =>
        {
            top_by_visitors(&read, &mut versions, page)?
        }
        Some(page) if query.visitors && !page.sort.iter().any(by_visitors) => {
            let counted = read.scan(&mut versions, Sketches::None)?;
            let total = counted.len();
            let mut page_groups = paged(all(&counted, false)?, page);
            let wanted: HashSet<Key> = page_groups
                .iter()
                .map(|s| (s.time, s.key.clone()))
                .collect();
            let sketches = read.scan(&mut versions, Sketches::Of(&wanted))?;
            for sums in &mut page_groups {
                if let Some(merge) = sketches
                    .get(&(sums.time, sums.key.clone()))
                    .and_then(|cell| cell.sketch.as_ref())
                {
                    sums.visitors = merge.count()?;
                }
            }
            (page_groups, total)
        }
        page => {
            let sketches = if query.visitors {
                Sketches::All
            } else {
                Sketches::None
            };
            let groups = all(&read.scan(&mut versions, sketches)?, query.visitors)?;
            let total = groups.len();
            match page {
                Some(page) => (paged(groups, page), total),
                None => (groups, total),
            }
        }
    };
    Ok(Answer {
        groups,
        total,
        logic_versions: versions.into_iter().collect(),
    })
}

/// Groups merged per scan at first when ranking by visitors, at least; later scans take four
/// times as many as the one before.
const FIRST_MERGES: usize = 32;

/// The page of groups ranked by visitors, highest first, and the count of every group.
///
/// A group's visitors are at most its events (every visitor a row records came with an event
/// of that row), so the groups are merged in order of their events, a round at a time, until
/// the page's last group has more visitors than any group left could show: most of a large
/// tenant's pages are never merged. The estimate shown for a group stays within
/// [`most_visitors`] of its events.
fn top_by_visitors(
    read: &Read<'_>,
    versions: &mut BTreeSet<u32>,
    page: &Page,
) -> Result<(Vec<Sums>, usize), ShardFailure> {
    let counted = read.scan(versions, Sketches::None)?;
    let wanted = page.offset + page.limit;
    let mut left: Vec<(i64, &Key)> = counted
        .iter()
        .map(|(key, cell)| (cell.counters[EVENTS], key))
        .collect();
    // Most events first; popped from the end.
    left.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
    let mut best: Vec<Sums> = Vec::new();
    let mut round = FIRST_MERGES.max(2 * wanted);
    while let Some(&(events, _)) = left.last() {
        let settled = wanted.checked_sub(1).is_none_or(|last| {
            best.get(last)
                .is_some_and(|l| most_visitors(events) < l.visitors)
        });
        if settled {
            break;
        }
        let take: HashSet<Key> = left
            .drain(left.len().saturating_sub(round)..)
            .map(|(_, key)| key.clone())
            .collect();
        let cells = read.scan(versions, Sketches::Of(&take))?;
        for key in &take {
            if let Some(cell) = cells.get(key) {
                let mut sums = cell.sums(key.1.clone(), true)?;
                sums.time = key.0;
                best.push(sums);
            }
        }
        sort(&mut best, &page.sort);
        best.truncate(wanted);
        round *= 4;
    }
    let page_groups = best.into_iter().skip(page.offset).collect();
    Ok((page_groups, counted.len()))
}

/// The highest visitor estimate a group of `events` events can show: at most one visitor per
/// event, and the sketch's estimate within an eighth (plus 8) of the true count, which is more
/// than 15 times its standard error of 0.8 % (below about 1,500 visitors it is exact).
fn most_visitors(events: i64) -> u64 {
    let events = u64::try_from(events).unwrap_or(0);
    events + events / 8 + 8
}

/// Which groups' sketches a scan reads.
enum Sketches<'a> {
    /// None: counters only.
    None,
    /// These groups'.
    Of(&'a HashSet<Key>),
    /// Every group's.
    All,
}

impl Sketches<'_> {
    fn of(&self, key: &Key) -> bool {
        match self {
            Sketches::None => false,
            Sketches::Of(keys) => keys.contains(key),
            Sketches::All => true,
        }
    }
}

struct Read<'a> {
    conn: &'a Connection,
    tenant: &'a str,
    dimension: i16,
    query: &'a ShardQuery,
    kept: Kept<'a>,
}

impl Read<'_> {
    /// The cells of every group added up, sketches kept only for the groups `sketches`
    /// selects; the rows' logic versions are added to `versions`. The settled days come from
    /// a kept span where there is one, and are kept for the next read: a read without one
    /// scans the whole range once and keeps the settled days' part of it (DuckDB plans each
    /// statement anew, about a millisecond, so one scan instead of up to three).
    fn scan(
        &self,
        versions: &mut BTreeSet<u32>,
        sketches: Sketches<'_>,
    ) -> Result<HashMap<Key, Cell>, ShardFailure> {
        let (start, end) = (self.query.start, self.query.end);
        let Some((key, writes)) = self.settled() else {
            return self.scan_days(start, end, versions, &sketches);
        };
        let after = key.through.tomorrow().ok().filter(|day| *day <= end);
        let taken = lock(self.kept.spans).take(&key, writes);
        let (span, fresh) = match taken {
            Some(mut span) => {
                self.complete(&mut span, &key, &sketches)?;
                (span, None)
            }
            None => {
                let split = after.map_or(i64::MAX, epoch_day);
                let [settled, fresh] = self.scan_split(start, end, split, &sketches)?;
                (span_of(settled, &sketches)?, Some(fresh))
            }
        };
        versions.extend(span.versions.iter().copied());
        let mut cells = span.cells(|key| sketches.of(key));
        lock(self.kept.spans).put(key, writes, span);
        let fresh = match (fresh, after) {
            (Some(fresh), _) => fresh,
            (None, Some(after)) => {
                let [fresh, _] = self.scan_split(after, end, i64::MAX, &sketches)?;
                fresh
            }
            (None, None) => Part::default(),
        };
        versions.extend(fresh.versions);
        for (key, cell) in fresh.cells {
            add_to(&mut cells, key, cell);
        }
        Ok(cells)
    }

    /// Reads into a kept `span` of `key` the sketches `sketches` selects that it lacks.
    fn complete(
        &self,
        span: &mut Span,
        key: &SpanKey,
        sketches: &Sketches<'_>,
    ) -> Result<(), ShardFailure> {
        let (start, through) = (self.query.start, key.through);
        match sketches {
            Sketches::Of(wanted) => {
                let missing = span.missing(wanted);
                if !missing.is_empty() {
                    let read = Sketches::Of(&missing);
                    let cells = self.scan_days(start, through, &mut span.versions, &read)?;
                    span.keep_sketches(cells, |key| missing.contains(key))?;
                }
            }
            Sketches::All if !span.every_sketch => {
                let cells = self.scan_days(start, through, &mut span.versions, sketches)?;
                span.keep_sketches(cells, |_| true)?;
                span.every_sketch = true;
            }
            Sketches::None | Sketches::All => {}
        }
        Ok(())
    }

    /// The span of settled days this read can take from (or keep in) the shard's spans: the
    /// days before the first day of the tenant's newest write, up to the read's last, and the
    /// number of the last write that changed them. `None` when nothing is kept, the read
    /// filters values, or no day of the read is settled.
    fn settled(&self) -> Option<(SpanKey, u64)> {
        let kept = &self.kept;
        if self.query.keep.is_some() || !lock(kept.spans).keeps() {
            return None;
        }
        let (start, end) = (day_of(self.query.start)?, day_of(self.query.end)?);
        let writes = lock(kept.writes);
        let through = match writes.newest_from_day(self.tenant) {
            Some(newest) => end.min(newest.saturating_sub(1)),
            None => end,
        };
        if through < start {
            return None;
        }
        let key = SpanKey {
            tenant: self.tenant.to_owned(),
            dimension: self.dimension,
            start: self.query.start,
            through: from_epoch_day(i64::from(through)),
            group: self.query.group,
            shift_days: self.query.shift_days,
        };
        Some((key, writes.of_days(self.tenant, through)))
    }

    /// One scan of the days from `from` to `to`: the cells of every group added up,
    /// sketches kept only for the groups `sketches` selects; the rows' logic versions are
    /// added to `versions`.
    fn scan_days(
        &self,
        from: Date,
        to: Date,
        versions: &mut BTreeSet<u32>,
        sketches: &Sketches<'_>,
    ) -> Result<HashMap<Key, Cell>, ShardFailure> {
        let [part, _] = self.scan_split(from, to, i64::MAX, sketches)?;
        versions.extend(part.versions);
        Ok(part.cells)
    }

    /// One scan of the days from `from` to `to`, as [`Read::scan_days`], its rows parted by
    /// their local day: those before `split` (days since 1970-01-01) first, the others second.
    fn scan_split(
        &self,
        from: Date,
        to: Date,
        split: i64,
        sketches: &Sketches<'_>,
    ) -> Result<[Part; 2], ShardFailure> {
        let query = self.query;
        let hours = query.group.time == Some(Time::Hour);
        let start_day = epoch_day(query.start);
        let mut parts: [Part; 2] = Default::default();
        let sql = schema::select(hours, !matches!(sketches, Sketches::None));
        let mut statement = self.conn.prepare_cached(&sql)?;
        let mut rows = statement.query(params![
            self.tenant,
            self.dimension,
            date_value(from),
            date_value(to)
        ])?;
        let mut held = 0usize;
        while let Some(row) = rows.next()? {
            let value: Option<String> = if query.group.value || query.keep.is_some() {
                Some(row.get(1)?)
            } else {
                None
            };
            if let (Some(keep), Some(value)) = (&query.keep, &value)
                && !keep.accepts(value)
            {
                continue;
            }
            let shift = query.shift_days;
            let time = match query.group.time {
                None => 0,
                Some(Time::Hour) => row.get(0)?,
                Some(width) => {
                    bucket(width, row.get::<_, i64>(0)? + shift, start_day + shift) - shift
                }
            };
            let key = (
                time,
                if query.group.value {
                    value.unwrap_or_default()
                } else {
                    String::new()
                },
            );
            let day: i64 = row.get(schema::SELECT_DAY)?;
            let part = &mut parts[usize::from(day >= split)];
            let version: i32 = row.get(2 + COUNTERS + 1)?;
            part.versions.insert(u32::try_from(version).unwrap_or(0));
            let cell = if sketches.of(&key) {
                Cell::read(row, 2)?
            } else {
                Cell::read_counters(row, 2)?
            };
            held += cell.sketch.as_ref().map_or(0, |s| s.held_bytes());
            if held > MAX_READ_SKETCH_BYTES {
                return Err(ShardFailure::Budget(format!(
                    "the query reads more than {} MiB of visitor sketches; choose a shorter \
                     date range or fewer groups",
                    MAX_READ_SKETCH_BYTES >> 20
                )));
            }
            match part.cells.get_mut(&key) {
                Some(sum) => sum.add(cell),
                None => {
                    part.cells.insert(key, cell);
                }
            }
        }
        Ok(parts)
    }
}

/// `date`'s days since 1970-01-01, as DuckDB's DATE counts them.
fn day_of(date: Date) -> Option<i32> {
    i32::try_from(epoch_day(date)).ok()
}

/// `date` as a DuckDB DATE.
fn date_value(date: Date) -> Value {
    // Dates of a read lie in years 1 to 9999: their days since 1970 fit an i32.
    Value::Date32(day_of(date).unwrap_or(i32::MAX))
}

/// The cells and the logic versions of some of a scan's rows.
#[derive(Default)]
struct Part {
    cells: HashMap<Key, Cell>,
    versions: BTreeSet<u32>,
}

/// The span of settled days scanned as `part`: every group's counters, and the sketches
/// `sketches` selects.
fn span_of(part: Part, sketches: &Sketches<'_>) -> Result<Span, ShardFailure> {
    let counters = part
        .cells
        .iter()
        .map(|(key, cell)| {
            let counted = Cell {
                counters: cell.counters,
                sketch: None,
            };
            (key.clone(), counted)
        })
        .collect();
    let mut span = Span {
        counters,
        versions: part.versions,
        every_sketch: matches!(sketches, Sketches::All),
        ..Span::default()
    };
    span.keep_sketches(part.cells, |key| sketches.of(key))?;
    Ok(span)
}

/// The realtime view of `tenant`'s rows between `query.from_ms` and `query.to_ms`.
pub(crate) fn recent(
    conn: &Connection,
    tenant: &str,
    query: &RecentQuery,
) -> Result<Recent, ShardFailure> {
    let mut statement = conn.prepare_cached(&schema::select_recent())?;
    let mut rows = statement.query(params![tenant, query.from_ms, query.to_ms])?;
    let mut held = 0usize;
    let mut minutes: HashMap<i64, Cell> = HashMap::new();
    let (mut pages, mut sources): (HashMap<String, Cell>, HashMap<String, Cell>) =
        Default::default();
    while let Some(row) = rows.next()? {
        let minute: i64 = row.get(0)?;
        let dimension: i16 = row.get(1)?;
        let value: String = row.get(2)?;
        let cell = Cell::read(row, 3)?;
        held += cell.sketch.as_ref().map_or(0, |s| s.held_bytes());
        if held > MAX_READ_SKETCH_BYTES {
            return Err(ShardFailure::Budget(format!(
                "the realtime view reads more than {} MiB of visitor sketches",
                MAX_READ_SKETCH_BYTES >> 20
            )));
        }
        let into = match i32::from(dimension) {
            0 => {
                add_to(&mut minutes, minute, cell);
                continue;
            }
            d if d == Dimension::Page as i32 => &mut pages,
            _ => &mut sources,
        };
        add_to(into, value, cell);
    }
    // The current visitors: the sketches of the last minutes merged once more.
    let mut current: Option<Merge> = None;
    let last = minutes
        .iter()
        .filter(|(minute, _)| **minute >= query.current_from_ms);
    for sketch in last.filter_map(|(_, cell)| cell.sketch.clone()) {
        match &mut current {
            Some(merge) => merge.add(sketch),
            None => current = Some(sketch),
        }
    }
    let top = |cells: HashMap<String, Cell>| -> Result<Vec<Sums>, ShardFailure> {
        let mut out = cells
            .into_iter()
            .map(|(value, cell)| cell.sums(value, true))
            .collect::<Result<Vec<_>, _>>()?;
        let by_visitors = Sort {
            key: SortKey::Metric(Metric::Visitors),
            descending: true,
        };
        sort(&mut out, &[by_visitors]);
        out.truncate(query.limit);
        Ok(out)
    };
    Ok(Recent {
        minutes: minutes
            .into_iter()
            .map(|(minute, cell)| {
                let mut sums = cell.sums(String::new(), true)?;
                sums.time = minute;
                Ok(sums)
            })
            .collect::<Result<_, ShardFailure>>()?,
        current_visitors: current.map(|merge| merge.count()).transpose()?.unwrap_or(0),
        pages: top(pages)?,
        sources: top(sources)?,
    })
}

/// Adds `cell` to the cell of `key` in `cells`.
fn add_to<K: std::hash::Hash + Eq>(cells: &mut HashMap<K, Cell>, key: K, cell: Cell) {
    match cells.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut known) => known.get_mut().add(cell),
        std::collections::hash_map::Entry::Vacant(vacant) => {
            vacant.insert(cell);
        }
    }
}

/// The group time of a row's time `raw` (an hour's milliseconds, or a day): weeks start on
/// Monday and months on the 1st, neither before the query's first day.
fn bucket(width: Time, raw: i64, start_day: i64) -> i64 {
    match width {
        Time::Hour | Time::Day => raw,
        // 1970-01-01 was a Thursday: Monday is 3 days before it.
        Time::Week => (raw - (raw + 3).rem_euclid(7)).max(start_day),
        Time::Month => epoch_day(from_epoch_day(raw).first_of_month()).max(start_day),
    }
}

fn all(groups: &HashMap<Key, Cell>, visitors: bool) -> Result<Vec<Sums>, ShardFailure> {
    groups
        .iter()
        .map(|((time, value), cell)| {
            let mut sums = cell.sums(value.clone(), visitors)?;
            sums.time = *time;
            Ok(sums)
        })
        .collect()
}

/// Orders `groups` by the page's keys, then time and value; keeps the page.
fn paged(mut groups: Vec<Sums>, page: &Page) -> Vec<Sums> {
    sort(&mut groups, &page.sort);
    groups
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect()
}

/// Orders `groups` by `keys`, then by time and value, ascending.
pub fn sort(groups: &mut [Sums], keys: &[Sort]) {
    groups.sort_by(|a, b| {
        keys.iter()
            .map(|sort| {
                let order = match sort.key {
                    SortKey::Metric(metric) => {
                        metrics::value(metric, a).total_cmp(&metrics::value(metric, b))
                    }
                    SortKey::Time => a.time.cmp(&b.time),
                    SortKey::Value(0) => a.key.cmp(&b.key),
                    SortKey::Value(i) => {
                        let nth =
                            |key: &str| key.split(super::KEY_SEPARATOR).nth(i).map(str::to_owned);
                        nth(&a.key).cmp(&nth(&b.key))
                    }
                };
                if sort.descending {
                    order.reverse()
                } else {
                    order
                }
            })
            .find(|o| *o != Ordering::Equal)
            .unwrap_or_else(|| (a.time, &a.key).cmp(&(b.time, &b.key)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> i64 {
        epoch_day(text.parse().expect("date"))
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first_cut_to_the_start() {
        let start = day("2026-03-04"); // a Wednesday
        assert_eq!(bucket(Time::Week, day("2026-03-06"), start), start);
        assert_eq!(
            bucket(Time::Week, day("2026-03-15"), start),
            day("2026-03-09")
        );
        assert_eq!(
            bucket(Time::Week, day("2026-03-16"), start),
            day("2026-03-16")
        );
        assert_eq!(bucket(Time::Month, day("2026-03-31"), start), start);
        assert_eq!(
            bucket(Time::Month, day("2026-04-30"), start),
            day("2026-04-01")
        );
        assert_eq!(from_epoch_day(day("2024-02-29")).to_string(), "2024-02-29");
    }
}
