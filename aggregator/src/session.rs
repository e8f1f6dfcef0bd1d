//! Sessions: a visitor's events belong to one visit until 30 minutes pass without activity, or
//! (from logic version 7) until the first local midnight at least 12 hours after its first
//! event.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::Session;
use hashbrown::HashSet;
use hashbrown::hash_map::{Entry, EntryRef, HashMap as FastMap};

use crate::AggregatorError;

/// Idle time that ends a session.
pub const SESSION_IDLE_MS: i64 = 30 * 60 * 1000;
/// How long a visit lasts at least before a local midnight ends it (logic version 7 on): a visit
/// ends at the first local midnight this long after its first event, so a visitor who never
/// pauses has a visit a day. A replay that starts a local day or more before a midnight cuts
/// every visit at that midnight where time order does, whatever it missed before its start
/// (see `restate`).
pub const LONG_VISIT_MS: i64 = 12 * 60 * 60 * 1000;
/// How far behind its tenant's newest event an event may arrive and still be sessionized as
/// time order would: sessions stay open this much longer than the idle time. Later events are
/// counted at once and their days recomputed in time order (see `Processor`).
pub const LATE_AFTER_MS: i64 = 5 * 60 * 1000;
/// Sessions one tenant may hold (closed ones are dropped every few thousand events). A visitor
/// who starts a session beyond it is counted (a visit, a bounce) but not remembered, so their
/// next event starts another visit; such sessions are counted in [`Sessions::overflow`].
pub const MAX_SESSIONS_PER_TENANT: usize = 100_000;

/// One visit in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Earliest event time.
    pub start_ms: i64,
    /// Latest event time.
    pub end_ms: i64,
    /// Pageviews so far.
    pub pageviews: u32,
    /// Events so far (pageviews included).
    pub events: u32,
    /// How many of them were non-interactive: a visit ends its bounce with a second
    /// interactive event.
    pub passive: u32,
    /// The visitor hash the session started under (it may continue under the next local
    /// date's hash).
    pub first_visitor: u64,
    /// Hour bucket of the session start.
    pub hour_ms: i64,
    /// Local date of that bucket.
    pub local_date: String,
    /// The first local midnight at least [`LONG_VISIT_MS`] after the start, Unix milliseconds
    /// (`i64::MAX` before logic version 7): no event at or after it joins the session.
    pub ends_by_ms: i64,
    /// Session dimensions, fixed at the start. Values are shared between the sessions that
    /// hold them (see [`Sessions`]), so a session costs a pointer per dimension; a boxed
    /// slice keeps no spare room (the list it is collected from has room for 18 pairs).
    pub dims: Box<[(Dimension, Arc<str>)]>,
}

impl SessionState {
    /// Open sessions can still be joined; closed ones never again, since the watermark only
    /// grows. A session stays open [`LATE_AFTER_MS`] past its idle time, so that an event up to
    /// that late still finds it.
    pub fn is_open(&self, watermark_ms: i64) -> bool {
        self.end_ms.saturating_add(SESSION_IDLE_MS + LATE_AFTER_MS) >= watermark_ms
    }

    /// Whether an event at `ts` joins this session.
    pub fn accepts(&self, ts: i64, watermark_ms: i64) -> bool {
        self.is_open(watermark_ms)
            && ts >= self.start_ms.saturating_sub(SESSION_IDLE_MS)
            && ts <= self.end_ms.saturating_add(SESSION_IDLE_MS)
            && ts < self.ends_by_ms
    }
}

/// What an event did to its visitor's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// The event started a new session.
    Started,
    /// The event joined the open session.
    Joined {
        /// How much longer the session got, milliseconds.
        extended_ms: i64,
        /// The event ended the session's bounce: it was its second event (its second pageview
        /// before logic version 6).
        no_longer_bounce: bool,
    },
}

/// One event of a visitor, as sessionization sees it.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Visitor hash.
    pub visitor: u64,
    /// Event time.
    pub ts: i64,
    /// Whether it is a pageview.
    pub pageview: bool,
    /// Whether a second event of any kind ends a bounce (logic version 6), not only a second
    /// pageview.
    pub bounce_by_events: bool,
    /// Whether the visitor caused it: a non-interactive event never ends a bounce.
    pub interactive: bool,
}

/// The sessions of a partition, by tenant and visitor.
#[derive(Debug, Default)]
pub struct Sessions {
    by_tenant: FastMap<String, FastMap<u64, SessionState>>,
    /// Sessions not remembered because their tenant held its cap.
    overflow: u64,
    /// One copy of every dimension value held by a session. Values are capped in length and
    /// (for sender-chosen dimensions) in number per tenant and day, so this stays small however
    /// many sessions share them.
    values: HashSet<Arc<str>>,
}

impl Sessions {
    /// Sessionizes one event against `watermark_ms` (the highest event time seen before it).
    /// `start` builds the session the event starts, if it starts one.
    ///
    /// A new session replaces the visitor's previous one, unless it is closed already (an event
    /// older than the watermark by more than the idle time): nothing can join it, so the open
    /// session is kept instead.
    pub fn track(
        &mut self,
        hit: Hit<'_>,
        watermark_ms: i64,
        start: impl FnOnce() -> SessionState,
    ) -> (Visit, Cow<'_, SessionState>) {
        let visitors = match self.by_tenant.entry_ref(hit.tenant_id) {
            EntryRef::Occupied(occupied) => occupied.into_mut(),
            EntryRef::Vacant(vacant) => vacant.insert(FastMap::default()),
        };
        // The cap counts every session held: which ones are held depends only on the events
        // and the cleanup cadence, both part of the snapshot, so the outcome is deterministic.
        if visitors.len() >= MAX_SESSIONS_PER_TENANT && !visitors.contains_key(&hit.visitor) {
            self.overflow += 1;
            return (Visit::Started, Cow::Owned(start()));
        }
        match visitors.entry(hit.visitor) {
            Entry::Occupied(occupied) if occupied.get().accepts(hit.ts, watermark_ms) => {
                let session = occupied.into_mut();
                let visit = join(session, hit);
                (visit, Cow::Borrowed(session))
            }
            entry => {
                let mut session = start();
                if !session.is_open(watermark_ms) {
                    return (Visit::Started, Cow::Owned(session));
                }
                for (_, value) in &mut session.dims {
                    *value = intern(&mut self.values, value);
                }
                let held = match entry {
                    Entry::Occupied(occupied) => {
                        let held = occupied.into_mut();
                        *held = session;
                        held
                    }
                    Entry::Vacant(vacant) => vacant.insert(session),
                };
                (Visit::Started, Cow::Borrowed(held))
            }
        }
    }

    /// Moves the open session of visitor hash `from` to `to`, unless `to` has an open one:
    /// the same person under the next local date's salt, continuing a visit across midnight.
    pub fn carry(&mut self, tenant: &str, (from, to): (u64, u64), watermark_ms: i64) {
        let Some(visitors) = self.by_tenant.get_mut(tenant) else {
            return;
        };
        let open = |s: Option<&SessionState>| s.is_some_and(|s| s.is_open(watermark_ms));
        if from == to || open(visitors.get(&to)) || !open(visitors.get(&from)) {
            return;
        }
        if let Some(session) = visitors.remove(&from) {
            visitors.insert(to, session);
        }
    }

    /// The session held for a visitor, open or not.
    pub fn get(&self, tenant: &str, visitor: u64) -> Option<&SessionState> {
        self.by_tenant.get(tenant)?.get(&visitor)
    }

    /// Drops closed sessions, given each tenant's watermark. Safe at any time: closed sessions
    /// are never joined.
    pub fn cleanup(&mut self, watermarks: &HashMap<String, i64>) {
        self.by_tenant.retain(|tenant, visitors| {
            let watermark_ms = watermark_of(watermarks, tenant);
            visitors.retain(|_, session| session.is_open(watermark_ms));
            !visitors.is_empty()
        });
        self.values.retain(|value| Arc::strong_count(value) > 1);
    }

    /// Sessions not remembered because their tenant held its cap, since the start.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.by_tenant.values().map(FastMap::len).sum()
    }

    /// Every session held (closed ones not dropped yet included, since they count toward the
    /// cap), ordered by (tenant, visitor).
    pub fn to_proto(&self) -> Vec<Session> {
        self.sorted()
            .into_iter()
            .map(|(tenant, visitor, s)| session_proto(tenant, visitor, s))
            .collect()
    }

    /// Appends what [`Sessions::to_proto`] returns to `out` as entries of protobuf field
    /// `field`, one session at a time; returns how many.
    pub fn encode_sorted(&self, field: u32, out: &mut Vec<u8>) -> usize {
        let sorted = self.sorted();
        for &(tenant, visitor, s) in &sorted {
            prost::encoding::message::encode(field, &session_proto(tenant, visitor, s), out);
        }
        sorted.len()
    }

    fn sorted(&self) -> Vec<(&str, u64, &SessionState)> {
        let mut sorted: Vec<_> = self
            .by_tenant
            .iter()
            .flat_map(|(tenant, visitors)| {
                visitors
                    .iter()
                    .map(move |(visitor, s)| (tenant.as_str(), *visitor, s))
            })
            .collect();
        sorted.sort_unstable_by_key(|&(tenant, visitor, _)| (tenant, visitor));
        sorted
    }

    /// Rebuilds the sessions of a snapshot.
    pub fn from_proto(partition: u32, sessions: Vec<Session>) -> Result<Self, AggregatorError> {
        let mut out = Self::default();
        for session in sessions {
            let tenant = session.tenant_id.clone();
            let visitor = session.visitor;
            let mut state = session_state(partition, session)?;
            for (_, value) in &mut state.dims {
                *value = intern(&mut out.values, value);
            }
            out.by_tenant
                .entry(tenant)
                .or_default()
                .insert(visitor, state);
        }
        Ok(out)
    }
}

/// The shared copy of `value`.
fn intern(values: &mut HashSet<Arc<str>>, value: &Arc<str>) -> Arc<str> {
    match values.get(value) {
        Some(shared) => shared.clone(),
        None => {
            values.insert(value.clone());
            value.clone()
        }
    }
}

/// The watermark of a tenant without events yet: every session is open against it.
pub const NO_WATERMARK: i64 = i64::MIN;

/// A tenant's watermark.
fn watermark_of(watermarks: &HashMap<String, i64>, tenant: &str) -> i64 {
    watermarks.get(tenant).copied().unwrap_or(NO_WATERMARK)
}

fn join(session: &mut SessionState, hit: Hit<'_>) -> Visit {
    let mut extended_ms = 0;
    if hit.ts > session.end_ms {
        extended_ms += hit.ts - session.end_ms;
        session.end_ms = hit.ts;
    }
    if hit.ts < session.start_ms {
        extended_ms += session.start_ms - hit.ts;
        session.start_ms = hit.ts;
    }
    session.events = session.events.saturating_add(1);
    if !hit.interactive {
        session.passive = session.passive.saturating_add(1);
    }
    if hit.pageview {
        session.pageviews = session.pageviews.saturating_add(1);
    }
    let no_longer_bounce = if hit.bounce_by_events {
        hit.interactive && session.events.saturating_sub(session.passive) == 2
    } else {
        hit.pageview && session.pageviews == 2
    };
    Visit::Joined {
        extended_ms,
        no_longer_bounce,
    }
}

fn session_proto(tenant: &str, visitor: u64, s: &SessionState) -> Session {
    Session {
        tenant_id: tenant.to_owned(),
        visitor,
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        pageviews: s.pageviews,
        events: s.events,
        passive: s.passive,
        first_visitor: if s.first_visitor == visitor {
            0
        } else {
            s.first_visitor
        },
        hour_ms: s.hour_ms,
        local_date: s.local_date.clone(),
        ends_by_ms: if s.ends_by_ms == i64::MAX {
            0
        } else {
            s.ends_by_ms
        },
        dimension_values: s.dims.iter().map(|(_, v)| v.to_string()).collect(),
        dimension_kinds: s.dims.iter().map(|(d, _)| *d as i32).collect(),
    }
}

fn session_state(partition: u32, s: Session) -> Result<SessionState, AggregatorError> {
    let corrupt = |reason: String| AggregatorError::CorruptSnapshot { partition, reason };
    if s.dimension_kinds.len() != s.dimension_values.len() {
        return Err(corrupt(format!(
            "session of tenant {:?} visitor {} has {} dimension kinds but {} values",
            s.tenant_id,
            s.visitor,
            s.dimension_kinds.len(),
            s.dimension_values.len()
        )));
    }
    let mut dims = Vec::with_capacity(s.dimension_kinds.len());
    for (kind, value) in s.dimension_kinds.iter().zip(s.dimension_values) {
        let dim = Dimension::try_from(*kind).map_err(|_| {
            corrupt(format!(
                "session of tenant {:?} has unknown dimension {kind}",
                s.tenant_id
            ))
        })?;
        dims.push((dim, Arc::from(value)));
    }
    Ok(SessionState {
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        pageviews: s.pageviews,
        events: if s.events == 0 {
            s.pageviews.max(1)
        } else {
            s.events
        },
        passive: s.passive,
        first_visitor: if s.first_visitor == 0 {
            s.visitor
        } else {
            s.first_visitor
        },
        hour_ms: s.hour_ms,
        local_date: s.local_date,
        ends_by_ms: if s.ends_by_ms == 0 {
            i64::MAX
        } else {
            s.ends_by_ms
        },
        dims: dims.into_boxed_slice(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1000;

    fn state(ts: i64) -> SessionState {
        SessionState {
            start_ms: ts,
            end_ms: ts,
            pageviews: 1,
            events: 1,
            passive: 0,
            first_visitor: 7,
            hour_ms: ts,
            local_date: "2026-01-01".into(),
            ends_by_ms: i64::MAX,
            dims: [(Dimension::Country, "DE".into())].into(),
        }
    }

    fn hit(ts: i64) -> Hit<'static> {
        Hit {
            tenant_id: "acme",
            visitor: 7,
            ts,
            pageview: true,
            bounce_by_events: true,
            interactive: true,
        }
    }

    #[test]
    fn joins_within_idle_time_and_splits_after() {
        let mut sessions = Sessions::default();
        let (visit, _) = sessions.track(hit(0), 0, || state(0));
        assert_eq!(visit, Visit::Started);
        let (visit, s) = sessions.track(hit(10 * MIN), 0, || state(10 * MIN));
        assert_eq!(
            visit,
            Visit::Joined {
                extended_ms: 10 * MIN,
                no_longer_bounce: true
            }
        );
        assert_eq!((s.start_ms, s.end_ms, s.pageviews), (0, 10 * MIN, 2));
        let (visit, _) = sessions.track(hit(41 * MIN), 10 * MIN, || state(41 * MIN));
        assert_eq!(visit, Visit::Started);
    }

    #[test]
    fn no_event_joins_at_or_after_the_visits_end() {
        let mut sessions = Sessions::default();
        let ending = |ts: i64| SessionState {
            ends_by_ms: 20 * MIN,
            ..state(ts)
        };
        sessions.track(hit(0), 0, || ending(0));
        let (visit, _) = sessions.track(hit(19 * MIN), 0, || ending(19 * MIN));
        assert!(matches!(visit, Visit::Joined { .. }));
        let (visit, s) = sessions.track(hit(20 * MIN), 19 * MIN, || state(20 * MIN));
        assert_eq!((visit, s.start_ms), (Visit::Started, 20 * MIN));
    }

    #[test]
    fn a_tenant_holds_at_most_its_cap_of_open_sessions() {
        let mut sessions = Sessions::default();
        let visitor = |v: u64, ts: i64| Hit {
            tenant_id: "flood",
            visitor: v,
            ts,
            pageview: true,
            bounce_by_events: true,
            interactive: true,
        };
        for v in 0..MAX_SESSIONS_PER_TENANT as u64 {
            sessions.track(visitor(v, 0), 0, || state(0));
        }
        let (visit, _) = sessions.track(visitor(u64::MAX, MIN), MIN, || state(MIN));
        assert_eq!(visit, Visit::Started, "counted");
        assert_eq!(sessions.overflow(), 1, "but not remembered");
        assert_eq!(sessions.len(), MAX_SESSIONS_PER_TENANT);
        let (visit, _) = sessions.track(visitor(7, 2 * MIN), 2 * MIN, || state(2 * MIN));
        assert!(
            matches!(visit, Visit::Joined { .. }),
            "held sessions still join"
        );
        // Once the closed sessions are dropped, a new visitor finds room again.
        let late = 36 * MIN;
        sessions.cleanup(&HashMap::from([("flood".to_owned(), late)]));
        sessions.track(visitor(u64::MAX - 1, late), late, || state(late));
        assert_eq!(sessions.overflow(), 1);
        assert_eq!(sessions.len(), 2, "visitor 7's session and the new one");
        sessions.track(hit(0), 0, || state(0));
        assert_eq!(
            sessions.overflow(),
            1,
            "other tenants have caps of their own"
        );
    }

    #[test]
    fn sessions_share_their_dimension_values() {
        let mut sessions = Sessions::default();
        let first = sessions.track(hit(0), 0, || state(0)).1.dims[0].1.clone();
        let other = Hit {
            visitor: 8,
            ..hit(MIN)
        };
        let second = sessions.track(other, MIN, || state(MIN)).1.dims[0]
            .1
            .clone();
        assert!(Arc::ptr_eq(&first, &second), "one copy of \"DE\"");
        drop((first, second));
        sessions.cleanup(&HashMap::from([("acme".to_owned(), 100 * MIN)]));
        assert_eq!(sessions.len(), 0);
        assert!(
            sessions.values.is_empty(),
            "values no session holds are dropped"
        );
    }

    #[test]
    fn closed_by_watermark() {
        let mut sessions = Sessions::default();
        sessions.track(hit(0), 0, || state(0));
        // Another visitor moved the watermark past the idle time and the lateness allowed: the
        // session is closed.
        let (visit, _) = sessions.track(hit(20 * MIN), 36 * MIN, || state(20 * MIN));
        assert_eq!(visit, Visit::Started);
    }

    #[test]
    fn dead_on_arrival_session_keeps_the_open_one() {
        let mut sessions = Sessions::default();
        sessions.track(hit(100 * MIN), 100 * MIN, || state(100 * MIN));
        let (visit, _) = sessions.track(hit(0), 100 * MIN, || state(0));
        assert_eq!(visit, Visit::Started);
        let (visit, _) = sessions.track(hit(101 * MIN), 100 * MIN, || state(101 * MIN));
        assert!(matches!(visit, Visit::Joined { extended_ms, .. } if extended_ms == MIN));
    }

    #[test]
    fn snapshot_round_trip_and_cleanup() {
        let mut sessions = Sessions::default();
        sessions.track(hit(0), 0, || state(0));
        sessions.track(
            Hit {
                visitor: 8,
                ..hit(40 * MIN)
            },
            0,
            || state(40 * MIN),
        );
        let watermarks = HashMap::from([("acme".to_owned(), 40 * MIN)]);
        let proto = sessions.to_proto();
        assert_eq!(
            proto.len(),
            2,
            "the closed session is saved until it is dropped"
        );
        let restored = Sessions::from_proto(0, proto.clone()).expect("restore");
        assert_eq!(restored.to_proto(), proto);
        sessions.cleanup(&watermarks);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.to_proto().len(), 1);
    }

    #[test]
    fn corrupt_snapshot_is_named() {
        let mut proto = Sessions::default();
        proto.track(hit(0), 0, || state(0));
        let mut saved = proto.to_proto();
        saved[0].dimension_values.clear();
        let err = Sessions::from_proto(3, saved).expect_err("corrupt");
        assert!(err.to_string().contains("partition 3"), "{err}");
    }
}
