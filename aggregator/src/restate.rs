//! The restatement engine: a tenant's rollups of a range of local dates recomputed from the raw
//! store, in time order, by the same [`Processor`] live traffic goes through.
//!
//! A [`Replay`] reads the tenant's raw events in (timestamp, event id) order and folds them into
//! a processor of its own. It starts [`WARMUP_MS`] before the range so that sessions crossing
//! the range's start are rebuilt (their events inside the range count under the session's
//! entry page and source); only events of the range's local dates emit deltas, and only rows of
//! those dates are kept, so a session that started before the range keeps its visit, bounce and
//! duration on its own (unrestated) day. Only raw events first seen at or before the cut
//! position, and not held back from sessionizing then, are replayed: the others reach the
//! restated generation as live changes.

use std::collections::{HashSet, VecDeque};

use beacon_core::raw::{Origin, RawEvent, RawStore};
use beacon_proto::pipeline::v1::{DeleteFilter, LoggedEvent, RestatementJob, TenantRollup};
use jiff::civil::Date;
use prost::Message;

use crate::AggregatorError;
use crate::processor::Processor;

/// A job's stage is published once its deltas may encode to this many bytes: three times a
/// live rollup's limit, because the query role applies each message in one transaction and
/// stages have no freshness to keep (a third as many transactions cut the time DuckDB spent
/// applying a 200,000-event replay from 0.70 to 0.46 s); still below the log's 1 MiB message
/// limit.
pub const STAGE_BYTES: usize = 768 * 1024;

/// How long before the range the replay starts, so that sessions open at the range's start are
/// rebuilt. With the zone's slack the replay starts at or before the local midnight a day before
/// the range: from logic version 7, a visit ends at the first local midnight 12 hours after its
/// start ([`crate::session::LONG_VISIT_MS`]), so one the replay picks up mid-way (from its
/// first event after the replay's start, within 30 minutes of it) ends by the range's first
/// midnight at the latest, where time order ends it too, and every session of the range is
/// rebuilt as time order made it. Before version 7, a session that had already lasted longer
/// than this when the range began was seen from the warm-up's start only.
pub const WARMUP_MS: i64 = 24 * HOUR_MS;
/// How long after the range the replay goes on, so sessions that start inside it and end
/// after it are complete.
pub const AFTER_MS: i64 = 24 * HOUR_MS;
/// Raw events read per scan.
const PAGE: usize = 4096;
/// One hour, milliseconds.
const HOUR_MS: i64 = 3_600_000;
/// Largest distance of a time zone from UTC, with room: a local date lies within these bounds
/// of its UTC date.
const ZONE_SLACK_MS: i64 = 15 * HOUR_MS;

/// A range of local dates, inclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateRange {
    /// First local date.
    pub first: Date,
    /// Last local date.
    pub last: Date,
}

impl DateRange {
    /// The range named by two "YYYY-MM-DD" dates.
    pub fn parse(first: &str, last: &str) -> Result<Self, AggregatorError> {
        let date = |field: &str, text: &str| {
            text.parse::<Date>().map_err(|err| {
                AggregatorError::Config(format!("{field} {text:?} is not a YYYY-MM-DD date: {err}"))
            })
        };
        let range = Self {
            first: date("first date", first)?,
            last: date("last date", last)?,
        };
        if range.first > range.last {
            return Err(AggregatorError::Config(format!(
                "first date {first} is after last date {last}"
            )));
        }
        Ok(range)
    }

    /// Event times that can fall on the range's local dates in some zone, with the warm-up
    /// before and a day after (a session that starts on the last date may go on past it, and
    /// its visit, bounce and duration belong to the range): `[from, to)`, Unix milliseconds.
    pub fn scan_bounds(&self) -> (i64, i64) {
        // Dates at the ends of the calendar have no timestamp: they stand for "ever".
        let utc_ms = |date: Date| {
            jiff::tz::TimeZone::UTC
                .to_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
                .map_or(
                    if date.year() < 1970 {
                        i64::MIN / 4
                    } else {
                        i64::MAX / 4
                    },
                    |ts| ts.as_millisecond(),
                )
        };
        let next = self.last.tomorrow().unwrap_or(self.last);
        (
            utc_ms(self.first) - ZONE_SLACK_MS - WARMUP_MS,
            utc_ms(next) + ZONE_SLACK_MS + AFTER_MS,
        )
    }

    fn contains(&self, local_date: &str) -> bool {
        local_date
            .parse::<Date>()
            .is_ok_and(|d| self.first <= d && d <= self.last)
    }

    /// Whether a local date is the range's or later: its events emit (rows after the range are
    /// dropped, but a session that started inside it is extended by them).
    fn reaches(&self, local_date: &str) -> bool {
        local_date.parse::<Date>().is_ok_and(|d| self.first <= d)
    }
}

/// The UTC date of `ms`, moved by `days`.
fn utc_date(ms: i64, days: i64) -> Date {
    let date = jiff::Timestamp::from_millisecond(ms)
        .map(|ts| ts.to_zoned_datetime(jiff::tz::TimeZone::UTC).date())
        .unwrap_or(Date::constant(1970, 1, 1));
    date.checked_add(jiff::Span::new().days(days))
        .unwrap_or(date)
}

/// The local dates a tenant's raw events can fall on in any zone: from the day before the
/// earliest event's UTC date to the day after the latest's; `today` alone when there are none.
pub async fn history_range(
    raw: &dyn RawStore,
    tenant: &str,
    now_ms: i64,
) -> beacon_core::Result<DateRange> {
    let bounds = raw.bounds(tenant).await?;
    let (first, last) = bounds.unwrap_or((now_ms, now_ms));
    Ok(DateRange {
        first: utc_date(first, -1),
        last: utc_date(last, 1),
    })
}

/// `range` without the dates whose raw events may have expired under a retention of
/// `kept_days` (0: none expire); `None` when nothing is left.
pub fn within_retention(range: DateRange, kept_days: u32, now_ms: i64) -> Option<DateRange> {
    if kept_days == 0 {
        return Some(range);
    }
    // A local date lies within a day of its UTC date: the first whole date kept is two days
    // after the UTC date of the cutoff.
    let cutoff = now_ms - i64::from(kept_days) * 86_400_000;
    let first = range.first.max(utc_date(cutoff, 2));
    (first <= range.last).then_some(DateRange {
        first,
        last: range.last,
    })
}

/// Whether a raw event matches a delete filter: every set field does.
fn matches(filter: &DeleteFilter, event: &LoggedEvent) -> bool {
    if filter.everything {
        return true;
    }
    let url = url::Url::parse(&event.url).ok();
    let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default();
    let path = url.as_ref().map(url::Url::path).unwrap_or_default();
    let set = |field: &str| !field.is_empty();
    (!set(&filter.hostname) || host.eq_ignore_ascii_case(&filter.hostname))
        && (!set(&filter.page) || path.contains(&filter.page))
        && (!set(&filter.referrer) || event.referrer.contains(&filter.referrer))
        && (!set(&filter.user_agent) || event.user_agent.contains(&filter.user_agent))
}

/// Deletes a tenant's raw events of `range`'s local dates that match `filter`; returns how many.
pub async fn delete_matching(
    raw: &dyn RawStore,
    tenant: &str,
    range: &DateRange,
    filter: &DeleteFilter,
) -> beacon_core::Result<u64> {
    let (from, to) = range.scan_bounds();
    let (mut after, mut deleted) = (None, 0);
    loop {
        let page = raw.scan(tenant, from, to, after.clone(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(deleted);
        };
        after = Some((last.timestamp_ms, last.event_id.clone()));
        let keys: Vec<(i64, String)> = page
            .iter()
            .filter(|raw| {
                LoggedEvent::decode(raw.payload.clone())
                    .is_ok_and(|event| deleted_by(filter, range, &event))
            })
            .map(|raw| (raw.timestamp_ms, raw.event_id.clone()))
            .collect();
        deleted += raw.delete(tenant, &keys).await?;
        if page.len() < PAGE {
            return Ok(deleted);
        }
    }
}

/// Whether a deletion of `range` by `filter` removes `event`.
pub fn deleted_by(filter: &DeleteFilter, range: &DateRange, event: &LoggedEvent) -> bool {
    local_date_of(event).is_some_and(|d| range.first <= d && d <= range.last)
        && matches(filter, event)
}

/// The local date of an event in its stamped zone.
pub(crate) fn local_date_of(event: &LoggedEvent) -> Option<Date> {
    let zone = beacon_core::time::time_zone(&event.time_zone).ok()?;
    let (_, date) = beacon_core::time::hour_bucket(event.timestamp_ms, &zone).ok()?;
    date.parse().ok()
}

/// The page of `tenant`'s raw events within `bounds` after `after`.
async fn read(
    raw: &dyn RawStore,
    tenant: String,
    (from, to): (i64, i64),
    after: Option<(i64, String)>,
) -> Result<Vec<RawEvent>, AggregatorError> {
    raw.scan(&tenant, from, to, after, PAGE)
        .await
        .map_err(|err| AggregatorError::backend(format!("reading raw events of {tenant}"), err))
}

/// One tenant's replay, resumable from a checkpoint.
pub struct Replay {
    tenant: String,
    range: DateRange,
    bounds: (i64, i64),
    cut: Origin,
    /// Events at or before the cut still held back when the job started: they reach the
    /// generation live.
    held: HashSet<Origin>,
    processor: Processor,
    /// Zone that replaces each event's own, when set (a time-zone change).
    time_zone: Option<String>,
    /// The last event folded.
    cursor: Option<(i64, String)>,
    /// Events read but not folded yet, after `cursor`.
    buffer: VecDeque<RawEvent>,
    /// The last event read into `buffer`.
    read_to: Option<(i64, String)>,
    /// Whether the last read came back short: nothing is left after `read_to`.
    exhausted: bool,
    events: u64,
    /// Events read that were first seen after the cut (they reach the generation live).
    after_cut: u64,
    done: bool,
}

impl Replay {
    /// The replay of a job: from its checkpoint when it has one, else from the start.
    pub fn of(job: &RestatementJob) -> Result<Self, AggregatorError> {
        let range = DateRange::parse(&job.first_date, &job.last_date)?;
        let mut processor = Processor::with_version(job.logic_version).historical();
        if let Some(checkpoint) = job.checkpoint.clone() {
            processor.restore(checkpoint)?;
        }
        let cursor = job
            .has_cursor
            .then(|| (job.cursor_ms, job.cursor_event_id.clone()));
        Ok(Self {
            tenant: job.tenant_id.clone(),
            bounds: (job.from_ms, job.to_ms),
            range,
            cut: Origin {
                seq: job.cut_seq,
                index: job.cut_index,
            },
            held: job
                .held
                .iter()
                .map(|at| Origin {
                    seq: at.seq,
                    index: at.index,
                })
                .collect(),
            processor,
            time_zone: (!job.time_zone.is_empty()).then(|| job.time_zone.clone()),
            read_to: cursor.clone(),
            cursor,
            buffer: VecDeque::new(),
            exhausted: false,
            events: job.events,
            after_cut: 0,
            done: false,
        })
    }

    /// Folds at most `limit` raw events, stopping early once the pending deltas may encode to
    /// `max_pending` bytes; marks the replay done after the last event. Returns the events
    /// folded.
    ///
    /// Events are read a page ([`PAGE`] events) ahead: the next page is read while the
    /// buffered ones are folded, so reading and folding overlap, and a page cut short by
    /// `limit` or `max_pending` is not read again.
    pub async fn step(
        &mut self,
        raw: &dyn RawStore,
        limit: usize,
        max_pending: usize,
    ) -> Result<usize, AggregatorError> {
        if self.done {
            return Ok(0);
        }
        if self.buffer.is_empty() && !self.exhausted {
            let page = read(raw, self.tenant.clone(), self.bounds, self.read_to.clone()).await?;
            self.buffered(page);
        }
        let limit = limit.max(1);
        let folded = if self.exhausted || self.buffer.len() > limit {
            self.fold(limit, max_pending)
        } else {
            let next = read(raw, self.tenant.clone(), self.bounds, self.read_to.clone());
            // The read is polled first: it is under way while the events fold.
            let (page, folded) = tokio::join!(next, async { self.fold(limit, max_pending) });
            match page {
                Ok(page) => self.buffered(page),
                // The next step reads it again, and reports a lasting failure.
                Err(err) => {
                    tracing::debug!(tenant = %self.tenant, error = %err, "reading ahead failed")
                }
            }
            folded
        };
        self.done = self.exhausted && self.buffer.is_empty();
        Ok(folded)
    }

    /// Appends a page read after `read_to`.
    fn buffered(&mut self, page: Vec<RawEvent>) {
        self.exhausted = page.len() < PAGE;
        if let Some(last) = page.last() {
            self.read_to = Some((last.timestamp_ms, last.event_id.clone()));
        }
        self.buffer.extend(page);
    }

    /// Folds buffered events: at most `limit`, and none once the pending deltas may encode to
    /// `max_pending` bytes.
    fn fold(&mut self, limit: usize, max_pending: usize) -> usize {
        let mut folded = 0;
        while folded < limit && self.processor.pending_size_bound() < max_pending {
            let Some(event) = self.buffer.pop_front() else {
                break;
            };
            folded += 1;
            self.events += 1;
            if event.origin > self.cut || self.held.contains(&event.origin) {
                self.after_cut += 1;
            } else {
                self.fold_one(&event);
            }
            self.cursor = Some((event.timestamp_ms, event.event_id));
        }
        folded
    }

    /// Folds one raw event first seen before the cut.
    fn fold_one(&mut self, event: &RawEvent) {
        let Ok(mut logged) = LoggedEvent::decode(event.payload.clone()) else {
            tracing::warn!(tenant = %self.tenant, event_id = %event.event_id, "undecodable raw event skipped");
            return;
        };
        if let Some(zone) = &self.time_zone {
            logged.time_zone.clone_from(zone);
        }
        let Ok(prepared) = self.processor.prepare(&logged) else {
            return;
        };
        let emit = self.range.reaches(prepared.local_date());
        self.processor.apply(prepared, emit);
    }

    /// Events read since this replay was made that were first seen after the cut.
    pub fn after_cut(&self) -> u64 {
        self.after_cut
    }

    /// Whether every raw event of the range was replayed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Upper bound of the encoded size of the deltas not taken yet, bytes.
    pub fn pending_size_bound(&self) -> usize {
        self.processor.pending_size_bound()
    }

    /// Takes the deltas so far, keeping only rows of the range's dates.
    pub fn take_parts(&mut self) -> Vec<TenantRollup> {
        let range = &self.range;
        let mut parts = self.processor.take_rollups();
        for part in &mut parts {
            part.rows.retain(|row| range.contains(&row.local_date));
            part.events.retain(|row| range.contains(&row.local_date));
        }
        parts.retain(|part| !part.rows.is_empty() || !part.events.is_empty());
        parts
    }

    /// Records the replay's position and state in `job` (call after taking and publishing the
    /// parts: pending deltas are not part of a checkpoint).
    pub fn checkpoint(&self, job: &mut RestatementJob) {
        if let Some((ms, id)) = &self.cursor {
            job.has_cursor = true;
            job.cursor_ms = *ms;
            job.cursor_event_id = id.clone();
        }
        job.events = self.events;
        job.checkpoint = Some(self.processor.snapshot(0, 0));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn bounds_cover_every_zone_and_the_warm_up() {
        let range = DateRange::parse("2026-03-01", "2026-03-02").expect("range");
        let (from, to) = range.scan_bounds();
        let day = |s: &str| {
            s.parse::<jiff::Timestamp>()
                .expect("instant")
                .as_millisecond()
        };
        assert_eq!(
            from,
            day("2026-03-01T00:00:00Z") - ZONE_SLACK_MS - WARMUP_MS
        );
        assert_eq!(to, day("2026-03-03T00:00:00Z") + ZONE_SLACK_MS + AFTER_MS);
        assert!(range.contains("2026-03-02") && !range.contains("2026-03-03"));
        let err = DateRange::parse("2026-03-02", "2026-03-01").expect_err("reversed");
        assert!(err.to_string().contains("after"), "{err}");
    }

    /// Replays the whole store in steps of `limit` events with parts cut at `max_pending`
    /// bytes; returns the summed (pageviews, visits, bounces, duration) of the totals rows,
    /// the events read and those after the cut.
    async fn replay_all(
        raw: &dyn RawStore,
        job: &RestatementJob,
        limit: usize,
        max_pending: usize,
    ) -> ([i64; 4], u64, u64) {
        let mut replay = Replay::of(job).expect("replay");
        let mut sums = [0; 4];
        let mut add = |parts: Vec<TenantRollup>| {
            let rows = parts.into_iter().flat_map(|part| part.rows);
            for row in rows.filter(|row| row.dimension == 0) {
                let values = [row.pageviews, row.visits, row.bounces, row.duration_ms];
                for (sum, value) in sums.iter_mut().zip(values) {
                    *sum += value;
                }
            }
        };
        let mut steps = 0;
        while !replay.is_done() {
            steps += 1;
            assert!(steps < 100_000, "the replay does not end");
            replay.step(raw, limit, max_pending).await.expect("step");
            if replay.pending_size_bound() >= max_pending {
                add(replay.take_parts());
            }
        }
        add(replay.take_parts());
        let mut done = job.clone();
        replay.checkpoint(&mut done);
        (sums, done.events, replay.after_cut())
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    /// A raw store in a file of its own, deleted with the returned guard.
    fn raw_store(name: &str) -> (beacon_core::raw::embedded::EmbeddedRawStore, TempFile) {
        let path = std::env::temp_dir().join(format!(
            "beacon-{name}-{}-{}.redb",
            std::process::id(),
            beacon_core::time::now_ms()
        ));
        let raw = beacon_core::raw::embedded::EmbeddedRawStore::open(&path).expect("raw store");
        (raw, TempFile(path))
    }

    /// Deletes its file when dropped.
    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn ms(instant: &str) -> i64 {
        instant
            .parse::<jiff::Timestamp>()
            .expect("instant")
            .as_millisecond()
    }

    /// (visits, pageviews) of each source on `date`, from rollup parts.
    fn sources_on(parts: &[TenantRollup], date: &str) -> BTreeMap<String, (i64, i64)> {
        let mut out = BTreeMap::new();
        let rows = parts.iter().flat_map(|part| &part.rows);
        let source = beacon_proto::insights::v1::Dimension::Source as i32;
        for row in rows.filter(|row| row.dimension == source && row.local_date == date) {
            let sums: &mut (i64, i64) = out.entry(row.value.clone()).or_default();
            sums.0 += row.visits;
            sums.1 += row.pageviews;
        }
        out
    }

    /// Every local date's sources of `events` processed in time order, and those a restatement
    /// of `date` alone replays from the raw store, under logic `version`.
    async fn live_and_restated(
        events: &[LoggedEvent],
        date: &str,
        version: u32,
    ) -> (BTreeMap<String, (i64, i64)>, BTreeMap<String, (i64, i64)>) {
        let mut live = Processor::with_version(version);
        for event in events {
            live.process(event, true).expect("process");
        }
        let live = sources_on(&live.take_rollups(), date);
        let (raw, _file) = raw_store("long-visit");
        let stored: Vec<RawEvent> = events
            .iter()
            .enumerate()
            .map(|(i, logged)| RawEvent {
                tenant_id: logged.tenant_id.clone(),
                event_id: logged.event_id.clone(),
                timestamp_ms: logged.timestamp_ms,
                origin: Origin {
                    seq: i as u64 + 1,
                    index: 0,
                },
                payload: logged.encode_to_vec().into(),
            })
            .collect();
        raw.insert(&stored).await.expect("insert");
        let range = DateRange::parse(date, date).expect("range");
        let (from_ms, to_ms) = range.scan_bounds();
        let job = RestatementJob {
            tenant_id: "acme".into(),
            first_date: date.into(),
            last_date: date.into(),
            logic_version: version,
            cut_seq: u64::MAX,
            cut_index: u32::MAX,
            from_ms,
            to_ms,
            ..RestatementJob::default()
        };
        let mut replay = Replay::of(&job).expect("replay");
        while !replay.is_done() {
            replay
                .step(&raw, usize::MAX, usize::MAX)
                .await
                .expect("step");
        }
        (live, sources_on(&replay.take_parts(), date))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restatement_counts_a_visitor_who_never_pauses_as_time_order_does() {
        // Every 20 minutes for six days, from Google, Bing or nowhere in turn, in a zone 8:45
        // ahead of UTC; and a visitor with one short visit a day.
        let event = |visitor: u64, i: usize, ts: i64, referrer: &str| LoggedEvent {
            tenant_id: "acme".into(),
            event_id: format!("{visitor}-{i}"),
            name: "pageview".into(),
            timestamp_ms: ts,
            url: format!("https://acme.test/{}", i % 5),
            referrer: referrer.into(),
            user_agent: CHROME.into(),
            visitor,
            time_zone: "Australia/Eucla".into(),
            ..LoggedEvent::default()
        };
        let referrers = ["https://www.google.com/", "https://www.bing.com/", ""];
        let start = ms("2026-03-01T05:30:00Z");
        let mut events: Vec<LoggedEvent> = (0..6 * 72)
            .map(|i| event(1, i, start + i as i64 * 20 * 60_000, referrers[i % 3]))
            .collect();
        events.extend((0..6).map(|day| event(2, day, start + day as i64 * 86_400_000, "")));
        events.sort_by_key(|e| e.timestamp_ms);
        let (live, restated) = live_and_restated(&events, "2026-03-04", crate::LOGIC_VERSION).await;
        assert_eq!(restated, live);
        assert_eq!(
            live.values().map(|sums| sums.0).sum::<i64>(),
            2,
            "one visit of each visitor on the day: {live:?}"
        );
        // Before logic version 7 the visit lasted six days, and a restatement rebuilt it from
        // its warm-up's first event, under another source.
        let (live, restated) = live_and_restated(&events, "2026-03-04", 6).await;
        assert_ne!(restated, live);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_steps_and_small_parts_fold_every_event_once() {
        let (raw, _file) = raw_store("replay");
        // 9,000 pageviews of 300 visitors over three days: more than two pages.
        let start = "2026-03-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .expect("instant")
            .as_millisecond();
        let events: Vec<RawEvent> = (0..9_000u32)
            .map(|i| {
                let logged = LoggedEvent {
                    tenant_id: "acme".into(),
                    event_id: format!("e{i}"),
                    name: "pageview".into(),
                    timestamp_ms: start + i64::from(i) * 28_800,
                    url: format!("https://acme.test/{}", i % 7),
                    user_agent: CHROME.into(),
                    visitor: u64::from(i % 300),
                    time_zone: "UTC".into(),
                    ..LoggedEvent::default()
                };
                RawEvent {
                    tenant_id: "acme".into(),
                    event_id: logged.event_id.clone(),
                    timestamp_ms: logged.timestamp_ms,
                    origin: Origin {
                        seq: u64::from(i / 100 + 1),
                        index: i % 100,
                    },
                    payload: logged.encode_to_vec().into(),
                }
            })
            .collect();
        raw.insert(&events).await.expect("insert");
        let range = DateRange::parse("2026-03-01", "2026-03-03").expect("range");
        let (from_ms, to_ms) = range.scan_bounds();
        let job = RestatementJob {
            tenant_id: "acme".into(),
            first_date: "2026-03-01".into(),
            last_date: "2026-03-03".into(),
            logic_version: crate::LOGIC_VERSION,
            // Events of messages after 80 arrive live.
            cut_seq: 80,
            cut_index: u32::MAX,
            from_ms,
            to_ms,
            ..RestatementJob::default()
        };
        let whole = replay_all(&raw, &job, usize::MAX, usize::MAX).await;
        let small = replay_all(&raw, &job, 7, 4_096).await;
        assert_eq!(whole.1, 9_000);
        assert_eq!(whole.2, 1_000, "events after the cut");
        assert_eq!(whole.0[0], 8_000, "pageviews before the cut");
        assert_eq!(small, whole);
    }
}
