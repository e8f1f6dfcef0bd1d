//! The processing logic: from logged events to rollup deltas, deterministically.
//!
//! The same event sequence always gives the same deltas and state, so a crash and replay, or a
//! reprocessing job reading the raw store, reproduces the same numbers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::iter;
use std::sync::Arc;

use beacon_core::time::{hour_bucket, midnight_at_or_after, time_zone};
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::{
    AggregatorSnapshot, DirtyDays, EventRow, LoggedEvent, TenantRollup,
};
use jiff::tz::TimeZone;

use crate::cap::{Admitted, cap_length};
use crate::enrich::{self, Enricher, PageUrl, UserAgent};
use crate::rollup::{Counters, PendingRollups};
use crate::session::{
    Hit, LATE_AFTER_MS, LONG_VISIT_MS, NO_WATERMARK, SessionState, Sessions, Visit,
};
use crate::{AggregatorError, LOGIC_VERSION};

/// One minute, milliseconds: the realtime view's bucket.
const MINUTE_MS: i64 = 60_000;
/// Events older than this behind their tenant's newest add no realtime minutes.
const RECENT_MS: i64 = 2 * 3_600_000;

/// Closed sessions are dropped after this many events.
const CLEANUP_EVERY: u32 = 4096;

/// Field number of `AggregatorSnapshot.sessions` (proto/beacon/pipeline/v1).
const SNAPSHOT_SESSIONS_FIELD: u32 = 4;

/// Event name of pageviews.
pub const PAGEVIEW: &str = "pageview";
/// Event name of the engagement reports Plausible's tracker sends (scroll depth, engaged time);
/// from logic version 4 they are not counted.
pub const ENGAGEMENT: &str = "engagement";

/// Sessions, watermarks and pending deltas of one partition (or of one reprocessing run).
///
/// Sessions expire against their tenant's watermark (the highest event time of the tenant seen
/// so far), so a tenant's numbers depend on its own events only, never on other tenants sharing
/// the partition.
///
/// Events are sessionized as they arrive. In time order (up to [`LATE_AFTER_MS`] behind the
/// tenant's newest event) that is exact. An event later than that, or one earlier than its
/// visitor's open session, may belong to a session already counted differently: it is counted
/// at once, and its local date is marked dirty ([`Processor::take_dirty`]) so that the day is
/// recomputed in time order from the raw store.
#[derive(Debug)]
pub struct Processor {
    /// The logic version it applies.
    version: u32,
    sessions: Sessions,
    /// Highest event time seen in the partition.
    watermark_ms: i64,
    /// Highest event time seen per tenant.
    watermarks: HashMap<String, i64>,
    pending: PendingRollups,
    /// Values counted under their own name, per (tenant, local day, dimension).
    admitted: Admitted,
    enricher: Enricher,
    zones: HashMap<String, TimeZone>,
    since_cleanup: u32,
    /// Local dates that received events out of order, per tenant.
    dirty: BTreeMap<String, BTreeSet<String>>,
    /// Whether the deltas include the realtime view's minutes (live processing, not replays).
    recent: bool,
}

impl Default for Processor {
    fn default() -> Self {
        Self::with_version(LOGIC_VERSION)
    }
}

/// An event that passed validation, with its hour bucket: applying it cannot fail.
#[derive(Debug)]
pub struct Prepared<'a> {
    event: &'a LoggedEvent,
    hour_ms: i64,
    local_date: String,
    tz: TimeZone,
}

impl Prepared<'_> {
    /// The event.
    pub fn event(&self) -> &LoggedEvent {
        self.event
    }

    /// When ingest received the event, Unix milliseconds.
    pub fn received_ms(&self) -> i64 {
        self.event.received_ms
    }

    /// The tenant-local date of the event, "YYYY-MM-DD".
    pub fn local_date(&self) -> &str {
        &self.local_date
    }
}

impl Processor {
    /// An empty state applying the current logic ([`LOGIC_VERSION`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state applying logic `version` (2 to 6; see [`LOGIC_VERSION`]).
    pub fn with_version(version: u32) -> Self {
        Self {
            version,
            sessions: Sessions::default(),
            watermark_ms: 0,
            watermarks: HashMap::new(),
            pending: PendingRollups::default(),
            admitted: Admitted::default(),
            enricher: Enricher::default(),
            zones: HashMap::new(),
            since_cleanup: 0,
            dirty: BTreeMap::new(),
            recent: true,
        }
    }

    /// The same processor without the realtime view's minutes: for replays of history.
    pub fn historical(mut self) -> Self {
        self.recent = false;
        self
    }

    /// The logic version it applies.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Processes one event: [`Processor::prepare`], then [`Processor::apply`]. On error the
    /// state is unchanged.
    pub fn process(&mut self, event: &LoggedEvent, emit: bool) -> Result<(), AggregatorError> {
        let prepared = self.prepare(event)?;
        self.apply(prepared, emit);
        Ok(())
    }

    /// Validates an event (time zone, timestamp) and finds its hour bucket, without changing
    /// the state.
    pub fn prepare<'a>(&mut self, event: &'a LoggedEvent) -> Result<Prepared<'a>, AggregatorError> {
        let invalid = |reason: String| AggregatorError::InvalidEvent {
            tenant_id: event.tenant_id.clone(),
            event_id: event.event_id.clone(),
            reason,
        };
        let tz = self
            .zone(&event.time_zone)
            .map_err(|err| invalid(err.to_string()))?;
        let (hour_ms, local_date) =
            hour_bucket(event.timestamp_ms, &tz).map_err(|err| invalid(err.to_string()))?;
        Ok(Prepared {
            event,
            hour_ms,
            local_date,
            tz,
        })
    }

    /// Folds a prepared event into the state; with `emit`, also into the pending deltas (without,
    /// only the state changes: its deltas were published before).
    pub fn apply(&mut self, prepared: Prepared<'_>, emit: bool) {
        let event = prepared.event;
        let hour = (prepared.hour_ms, prepared.local_date.as_str());
        let agent = self.enricher.user_agent(&event.user_agent);
        let watermark_ms = self.advance_watermark(&event.tenant_id, event.timestamp_ms);
        if is_bot(&agent, event, self.version) {
            if emit {
                let bot = Counters {
                    bot_events: 1,
                    ..Counters::default()
                };
                self.pending
                    .tenant(&event.tenant_id)
                    .add(hour, Dimension::Unspecified, "", bot);
            }
            return;
        }
        if let (true, Some(previous)) = (self.version >= 6, event.previous_visitor) {
            let pair = (previous, event.visitor);
            self.sessions.carry(&event.tenant_id, pair, watermark_ms);
        }
        let mut page = enrich::url::parse(&event.url);
        page.path = cap_length(page.path);
        if self.version >= 4 && event.name == ENGAGEMENT {
            // A report without its measures (as senders made them before version 6) is none.
            if let (true, Some(engagement)) = (emit && self.version >= 6, event.engagement) {
                self.emit_engagement(&prepared, (&agent, &page), engagement, watermark_ms);
            }
            return;
        }
        let tenant = event.tenant_id.as_str();
        let mut event_dims = vec![(Dimension::Page, page.path.clone())];
        if self.version >= 4 {
            event_dims.push((Dimension::EventName, cap_length(event.name.clone())));
            event_dims.push((Dimension::Hostname, cap_length(page.host.clone())));
        }
        let mut event_dims: Vec<(Dimension, String)> = event_dims
            .into_iter()
            .map(|(dim, value)| {
                let kept = self.admitted.admit(tenant, hour.1, dim, &value).to_owned();
                (dim, kept)
            })
            .collect();
        if self.version >= 5 {
            for (_, value) in enrich::properties(event) {
                let kept = match self
                    .admitted
                    .admit(tenant, hour.1, Dimension::Property, &value)
                {
                    // One row for every pair past the cap, whatever its key: keys are the
                    // senders' too.
                    crate::cap::OTHER => {
                        enrich::property_value(crate::cap::OTHER, crate::cap::OTHER)
                    }
                    _ => value,
                };
                event_dims.push((Dimension::Property, kept));
            }
        }
        let hit = Hit {
            tenant_id: tenant,
            visitor: event.visitor,
            ts: event.timestamp_ms,
            pageview: event.name == PAGEVIEW,
            bounce_by_events: self.version >= 6,
            interactive: !event.non_interactive,
        };
        if self.out_of_order(hit, watermark_ms) {
            self.dirty
                .entry(tenant.to_owned())
                .or_default()
                .insert(prepared.local_date.clone());
        }
        let admitted = &mut self.admitted;
        let version = self.version;
        let tz = &prepared.tz;
        let start = || new_session(event, (&agent, &page), (hour, tz), admitted, version);
        let (visit, session) = self.sessions.track(hit, watermark_ms, start);
        if emit {
            let deltas = Deltas {
                hit,
                hour,
                event_dims: &event_dims,
                // Realtime minutes for events of the last two hours of their tenant only
                // (not for imports of history through the live path).
                recent: self.recent
                    && event.timestamp_ms >= watermark_ms.max(event.timestamp_ms) - RECENT_MS,
                revenue_micros: event
                    .revenue
                    .as_ref()
                    .filter(|r| self.version >= 5 && r.currency == event.currency)
                    .map(|revenue| (revenue.amount * 1e6).round() as i64),
            };
            let stored = (self.version >= 6).then(|| {
                let mut row = event_row(&prepared, session.as_ref());
                row.revenue_micros = deltas.revenue_micros;
                for (dim, value) in &event_dims {
                    match dim {
                        Dimension::Property => row.properties.push(value.clone()),
                        // The row keeps the name itself.
                        Dimension::EventName => {}
                        _ => {
                            row.dimensions.push(*dim as i32);
                            row.values.push(value.clone());
                        }
                    }
                }
                row
            });
            emit_deltas(&mut self.pending, deltas, visit, session.as_ref());
            if let Some(row) = stored {
                self.pending.tenant(tenant).add_event(row);
            }
        }
        self.maybe_cleanup();
    }

    /// Adds an engagement report to the event store's rows, under the visit of its visitor it
    /// would join (or, without one, a visit of its own that is not counted anywhere).
    fn emit_engagement(
        &mut self,
        prepared: &Prepared<'_>,
        (agent, page): (&UserAgent, &PageUrl),
        engagement: beacon_proto::ingest::v1::Engagement,
        watermark_ms: i64,
    ) {
        let event = prepared.event;
        let open = self
            .sessions
            .get(&event.tenant_id, event.visitor)
            .filter(|s| s.accepts(event.timestamp_ms, watermark_ms));
        let mut row = match open {
            Some(session) => event_row(prepared, session),
            None => {
                let dims = enrich::session_dimensions(event, agent, page, self.version)
                    .into_iter()
                    .map(|(dim, value)| (dim, Arc::from(value)))
                    .collect();
                let alone = SessionState {
                    start_ms: event.timestamp_ms,
                    end_ms: event.timestamp_ms,
                    pageviews: 0,
                    events: 0,
                    passive: 0,
                    first_visitor: event.visitor,
                    hour_ms: prepared.hour_ms,
                    local_date: prepared.local_date.clone(),
                    ends_by_ms: i64::MAX,
                    dims,
                };
                event_row(prepared, &alone)
            }
        };
        row.dimensions.push(Dimension::Page as i32);
        row.values.push(page.path.clone());
        row.dimensions.push(Dimension::Hostname as i32);
        row.values.push(cap_length(page.host.clone()));
        row.scroll_depth = Some(engagement.scroll_depth);
        row.engaged_ms = Some(engagement.engaged_ms);
        self.pending.tenant(&event.tenant_id).add_event(row);
    }

    /// Whether sessionizing `hit` now may differ from time order: it is more than
    /// [`LATE_AFTER_MS`] behind its tenant's newest event, or earlier than its visitor's open
    /// session (which then started too late, with the wrong entry page and source).
    fn out_of_order(&self, hit: Hit<'_>, watermark_ms: i64) -> bool {
        if watermark_ms != NO_WATERMARK && hit.ts < watermark_ms.saturating_sub(LATE_AFTER_MS) {
            return true;
        }
        self.sessions
            .get(hit.tenant_id, hit.visitor)
            .is_some_and(|s| s.is_open(watermark_ms) && hit.ts < s.start_ms)
    }

    /// Tenants with dirty dates.
    pub fn dirty_tenants(&self) -> Vec<String> {
        self.dirty.keys().cloned().collect()
    }

    /// Takes a tenant's dirty local dates, ascending.
    pub fn take_dirty(&mut self, tenant: &str) -> Vec<String> {
        self.dirty
            .remove(tenant)
            .map(|dates| dates.into_iter().collect())
            .unwrap_or_default()
    }

    /// Takes the pending deltas, in a deterministic order.
    pub fn take_rollups(&mut self) -> Vec<TenantRollup> {
        self.pending.take()
    }

    /// Whether deltas are pending.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Upper bound of the encoded size of the pending tenant parts, bytes.
    pub fn pending_size_bound(&self) -> usize {
        self.pending.size_bound()
    }

    /// Highest event time seen in the partition, Unix milliseconds.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Sessions not remembered because their tenant held its cap, since the start.
    pub fn session_overflow(&self) -> u64 {
        self.sessions.overflow()
    }

    /// Number of sessions held (open ones, and closed ones not yet dropped).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The state as a snapshot taken after event-log sequence `seq`. Pending deltas are not part
    /// of it: snapshot right after publishing them.
    pub fn snapshot(&self, partition: u32, seq: u64) -> AggregatorSnapshot {
        AggregatorSnapshot {
            sessions: self.sessions.to_proto(),
            ..self.snapshot_but_sessions(partition, seq)
        }
    }

    /// [`Processor::snapshot`] on event log `event_log`, encoded, and the number of sessions
    /// in it. The sessions are encoded one at a time, so the state is never held whole as
    /// protobuf beside itself (28 MiB at the full ingest benchmark's peak).
    pub fn encoded_snapshot(&self, partition: u32, seq: u64, event_log: &str) -> (Vec<u8>, usize) {
        let head = AggregatorSnapshot {
            event_log: event_log.to_owned(),
            ..self.snapshot_but_sessions(partition, seq)
        };
        let mut bytes = prost::Message::encode_to_vec(&head);
        // A repeated field's entries may follow the other fields: decoding gathers them.
        let sessions = self
            .sessions
            .encode_sorted(SNAPSHOT_SESSIONS_FIELD, &mut bytes);
        (bytes, sessions)
    }

    fn snapshot_but_sessions(&self, partition: u32, seq: u64) -> AggregatorSnapshot {
        AggregatorSnapshot {
            partition,
            event_seq: seq,
            watermark_ms: self.watermark_ms,
            sessions: Vec::new(),
            tenant_watermarks_ms: self.watermarks.clone(),
            admitted: self.admitted.to_proto(),
            since_cleanup: self.since_cleanup,
            dirty: self
                .dirty
                .iter()
                .map(|(tenant, dates)| DirtyDays {
                    tenant_id: tenant.clone(),
                    local_dates: dates.iter().cloned().collect(),
                })
                .collect(),
            // The worker records which log the sequence is on, and what it holds back.
            event_log: String::new(),
            held: Vec::new(),
            log_clock_ms: 0,
        }
    }

    /// Replaces the state with a snapshot's; pending deltas are dropped.
    pub fn restore(&mut self, snapshot: AggregatorSnapshot) -> Result<(), AggregatorError> {
        self.sessions = Sessions::from_proto(snapshot.partition, snapshot.sessions)?;
        self.watermark_ms = snapshot.watermark_ms;
        self.watermarks = snapshot.tenant_watermarks_ms;
        self.admitted = Admitted::from_proto(snapshot.admitted);
        self.pending = PendingRollups::default();
        self.since_cleanup = snapshot.since_cleanup;
        self.dirty = snapshot
            .dirty
            .into_iter()
            .map(|days| (days.tenant_id, days.local_dates.into_iter().collect()))
            .collect();
        Ok(())
    }

    fn zone(&mut self, name: &str) -> beacon_core::Result<TimeZone> {
        if let Some(tz) = self.zones.get(name) {
            return Ok(tz.clone());
        }
        let tz = time_zone(name)?;
        self.zones.insert(name.to_owned(), tz.clone());
        Ok(tz)
    }

    /// Moves the tenant's and the partition's watermark to `ts`; returns the tenant's watermark
    /// before it.
    fn advance_watermark(&mut self, tenant: &str, ts: i64) -> i64 {
        self.watermark_ms = self.watermark_ms.max(ts);
        match self.watermarks.get_mut(tenant) {
            Some(watermark) => {
                let before = *watermark;
                *watermark = before.max(ts);
                before
            }
            None => {
                self.watermarks.insert(tenant.to_owned(), ts);
                NO_WATERMARK
            }
        }
    }

    fn maybe_cleanup(&mut self) {
        self.since_cleanup += 1;
        if self.since_cleanup >= CLEANUP_EVERY {
            self.since_cleanup = 0;
            self.sessions.cleanup(&self.watermarks);
            self.admitted.prune(&self.watermarks);
        }
    }
}

/// Whether `event`, whose agent is `agent`, is a bot's under logic `version`: from version 3 on,
/// an agent in which neither a browser nor an operating system can be recognized is one too
/// (monitors and scripts that name only themselves). A visitor the sender stated (a server
/// reporting for its users, whose events may carry no browser) is a bot only by its agent.
pub fn is_bot(agent: &UserAgent, event: &LoggedEvent, version: u32) -> bool {
    if event.visitor_stated {
        return !event.user_agent.trim().is_empty() && agent.bot;
    }
    agent.bot
        || (version >= 3 && agent.browser == enrich::ua::UNKNOWN && agent.os == enrich::ua::UNKNOWN)
}

/// The session `event` starts under logic `version` in zone `tz`; its open-ended dimensions
/// pass the cardinality cap of the session's day.
fn new_session(
    event: &LoggedEvent,
    (agent, page): (&UserAgent, &PageUrl),
    (hour, tz): ((i64, &str), &TimeZone),
    admitted: &mut Admitted,
    version: u32,
) -> SessionState {
    let dims = enrich::session_dimensions(event, agent, page, version)
        .into_iter()
        .map(|(dim, value)| {
            let kept = admitted.admit(&event.tenant_id, hour.1, dim, &value);
            (dim, Arc::from(kept))
        })
        .collect();
    SessionState {
        start_ms: event.timestamp_ms,
        end_ms: event.timestamp_ms,
        pageviews: u32::from(event.name == PAGEVIEW),
        events: 1,
        passive: u32::from(event.non_interactive),
        first_visitor: event.visitor,
        hour_ms: hour.0,
        local_date: hour.1.to_owned(),
        ends_by_ms: visit_ends_by(event.timestamp_ms, tz, version),
        dims,
    }
}

/// When a visit starting at `start_ms` ends at the latest under logic `version`: the first local
/// midnight at least [`LONG_VISIT_MS`] later from version 7 on, never before.
fn visit_ends_by(start_ms: i64, tz: &TimeZone, version: u32) -> i64 {
    if version < 7 {
        return i64::MAX;
    }
    // Only instants beyond jiff's range (year ±9999) have no midnight: they never end.
    midnight_at_or_after(start_ms.saturating_add(LONG_VISIT_MS), tz).unwrap_or(i64::MAX)
}

/// The event store's row of `prepared` in `session`, with the session's dimensions (the
/// event's own are added by the caller).
fn event_row(prepared: &Prepared<'_>, session: &SessionState) -> EventRow {
    let event = prepared.event;
    let (dimensions, values) = session
        .dims
        .iter()
        .map(|(dim, value)| (*dim as i32, value.to_string()))
        .unzip();
    EventRow {
        timestamp_ms: event.timestamp_ms,
        hour_ms: prepared.hour_ms,
        local_date: prepared.local_date.clone(),
        visitor: event.visitor,
        visit_visitor: session.first_visitor,
        visit_start_ms: session.start_ms,
        visit_hour_ms: session.hour_ms,
        visit_date: session.local_date.clone(),
        name: cap_length(event.name.clone()),
        dimensions,
        values,
        non_interactive: event.non_interactive,
        ..EventRow::default()
    }
}

/// What one event adds to the deltas besides its session.
struct Deltas<'a> {
    hit: Hit<'a>,
    /// The event's hour bucket and local date.
    hour: (i64, &'a str),
    /// The event's own dimensions.
    event_dims: &'a [(Dimension, String)],
    /// Whether to add the realtime view's minute too.
    recent: bool,
    /// The event's revenue, millionths of the tenant's currency.
    revenue_micros: Option<i64>,
}

/// The deltas of one event: the session's at the session hour, the event's at the event hour
/// (under the session's dimensions and the event's own), and with `recent` the event's minute
/// (totals, page and source).
fn emit_deltas(
    pending: &mut PendingRollups,
    event: Deltas<'_>,
    visit: Visit,
    session: &SessionState,
) {
    let Deltas {
        hit,
        hour,
        event_dims,
        recent,
        revenue_micros,
    } = event;
    let mut deltas = pending.tenant(hit.tenant_id);
    let targets = || {
        iter::once((Dimension::Unspecified, "")).chain(session.dims.iter().map(|(d, v)| (*d, &**v)))
    };
    let session_delta = match visit {
        Visit::Started => Counters {
            visits: 1,
            bounces: 1,
            ..Counters::default()
        },
        Visit::Joined {
            extended_ms,
            no_longer_bounce,
        } => Counters {
            duration_ms: extended_ms,
            bounces: -i64::from(no_longer_bounce),
            ..Counters::default()
        },
    };
    if session_delta != Counters::default() {
        let session_hour = (session.hour_ms, session.local_date.as_str());
        for (dim, value) in targets() {
            deltas.add(session_hour, dim, value, session_delta);
        }
    }
    let event_delta = Counters {
        events: 1,
        pageviews: i64::from(hit.pageview),
        revenue_micros: revenue_micros.unwrap_or(0),
        revenue_events: i64::from(revenue_micros.is_some()),
        ..Counters::default()
    };
    let own = event_dims.iter().map(|(d, v)| (*d, v.as_str()));
    for (dim, value) in targets().chain(own) {
        deltas.add_seen(hour, dim, value, event_delta, hit.visitor);
    }
    if recent {
        let minute = hit.ts - hit.ts.rem_euclid(MINUTE_MS);
        let page = event_dims.iter().find(|(d, _)| *d == Dimension::Page);
        let source = session
            .dims
            .iter()
            .find(|(d, _)| *d == Dimension::Source)
            .map(|(d, v)| (*d, v.to_string()));
        let views = iter::once((Dimension::Unspecified, String::new()))
            .chain(page.cloned())
            .chain(source);
        for (dim, value) in views {
            deltas.add_recent(minute, dim, &value, event_delta, hit.visitor);
        }
    }
}

#[cfg(test)]
#[path = "processor_tests.rs"]
mod tests;
