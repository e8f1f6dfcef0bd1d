//! An oracle for reports, sharing no code with Beacon: it cuts each visitor's events into
//! sessions (30 minutes idle), gives every session the attributes of its first event through a
//! classifier the test writes out by hand, and adds up the numbers of any grouping and filter.
//!
//! Definitions it follows: an event counts on its own local date, a visit (with its bounce
//! and duration) on the local date of its first event; a visit dimension's value is its first
//! event's; an event carries the values of its visit; pages, event names and hostnames are
//! event dimensions, with no visits of their own; `engagement` events count nowhere.

use std::collections::{BTreeMap, BTreeSet};

use beacon_proto::ingest::v1::{Event, prop_value};
use beacon_proto::insights::v1::Dimension;
use jiff::civil::Date;

use crate::client::Counts;
use crate::sessions::{by_visitor, event_ms};
use crate::traffic::{local_date, visit_ends_by};

const IDLE_MS: i64 = 30 * 60_000;

/// The visit dimensions of a session, from its first event.
pub type Classify = dyn Fn(&Event) -> BTreeMap<Dimension, String>;

/// The dimensions each event has a value of its own for.
pub const EVENT_DIMENSIONS: [Dimension; 3] =
    [Dimension::Page, Dimension::EventName, Dimension::Hostname];

/// What one event contributes.
#[derive(Debug, Clone)]
struct EventFact {
    date: Date,
    visitor: usize,
    /// Values of [`EVENT_DIMENSIONS`].
    dims: BTreeMap<Dimension, String>,
    /// Custom properties: numbers written as Rust writes an `f64` ("2", "2.5").
    props: BTreeMap<String, String>,
    pageview: bool,
    session: usize,
}

/// What one visit contributes.
#[derive(Debug, Clone)]
struct SessionFact {
    date: Date,
    attributes: BTreeMap<Dimension, String>,
    events: u64,
    duration_ms: u64,
    /// The page of its last pageview.
    exit: Option<String>,
}

/// Every event and visit of a tenant's traffic.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    events: Vec<EventFact>,
    sessions: Vec<SessionFact>,
}

/// Time points: width of a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// Local dates.
    Day,
    /// Weeks from Monday, the first cut to the range's start.
    Week,
    /// Months, the first cut to the range's start.
    Month,
}

/// Which events and visits count: a test on one dimension's value.
pub struct Keep<'a> {
    /// The dimension tested.
    pub dimension: Dimension,
    /// With [`Dimension::Property`], the property's key; an event without it never passes.
    pub property: Option<&'a str>,
    /// The test; a visit without the dimension (no UTM parameters) never passes.
    pub test: &'a dyn Fn(&str) -> bool,
}

/// A report's grouping.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grouping {
    /// Time points, if any.
    pub time: Option<Grain>,
    /// A dimension, if any.
    pub dimension: Option<Dimension>,
    /// With [`Dimension::Property`], the property's key.
    pub property: Option<&'static str>,
}

impl Facts {
    /// The facts of `events` in `time_zone`; agents in `bots` are bots and count nowhere.
    pub fn of(time_zone: &str, events: &[Event], bots: &[&str], classify: &Classify) -> Self {
        let mut facts = Facts::default();
        let date = |ms: i64| -> Date { local_date(ms, time_zone).parse().expect("date") };
        for (visitor, list) in by_visitor(events, bots).into_values().enumerate() {
            let (mut last_ms, mut ends_by) = (i64::MIN, i64::MIN);
            for event in list {
                let ms = event_ms(event);
                let pageview = event.name == "pageview";
                if facts.sessions.is_empty()
                    || last_ms == i64::MIN
                    || ms - last_ms > IDLE_MS
                    || ms >= ends_by
                {
                    ends_by = visit_ends_by(ms, time_zone);
                    facts.sessions.push(SessionFact {
                        date: date(ms),
                        attributes: classify(event),
                        events: 0,
                        duration_ms: 0,
                        exit: None,
                    });
                } else if let Some(session) = facts.sessions.last_mut() {
                    session.duration_ms += (ms - last_ms) as u64;
                }
                last_ms = ms;
                let session = facts.sessions.len() - 1;
                facts.sessions[session].events += 1;
                if pageview {
                    facts.sessions[session].exit = Some(path(&event.url));
                }
                let dims = BTreeMap::from([
                    (Dimension::Page, path(&event.url)),
                    (Dimension::EventName, event.name.clone()),
                    (Dimension::Hostname, host(&event.url)),
                ]);
                let props = event
                    .props
                    .iter()
                    .filter_map(|(key, value)| {
                        let text = match value.kind.as_ref()? {
                            prop_value::Kind::StringValue(text) => text.clone(),
                            prop_value::Kind::NumberValue(number) => number.to_string(),
                        };
                        Some((key.clone(), text))
                    })
                    .collect();
                facts.events.push(EventFact {
                    date: date(ms),
                    visitor,
                    dims,
                    props,
                    pageview,
                    session,
                });
            }
        }
        facts
    }

    /// The report over `[start, end]`: numbers per (time label, dimension value), empty keys
    /// for what is not grouped; only groups with an event or a visit.
    pub fn report(
        &self,
        start: Date,
        end: Date,
        grouping: Grouping,
        keep: Option<&Keep<'_>>,
    ) -> BTreeMap<(String, String), Counts> {
        let in_range = |date: Date| date >= start && date <= end;
        let label = |date: Date| label(grouping.time, start, date);
        let by_event = |d: Dimension| EVENT_DIMENSIONS.contains(&d) || d == Dimension::Property;
        let session_passes = |session: &SessionFact| match keep {
            None => true,
            Some(keep) if by_event(keep.dimension) => true,
            Some(keep) => session
                .attributes
                .get(&keep.dimension)
                .is_some_and(|v| (keep.test)(v)),
        };
        let value_of = |session: &SessionFact, event: Option<&EventFact>| -> Option<String> {
            match grouping.dimension {
                None => Some(String::new()),
                Some(Dimension::Property) => {
                    event.and_then(|e| e.props.get(grouping.property.unwrap_or_default()).cloned())
                }
                Some(d) if by_event(d) => event.and_then(|e| e.dims.get(&d).cloned()),
                Some(d) => session.attributes.get(&d).cloned(),
            }
        };
        let mut out: BTreeMap<(String, String), (Counts, BTreeSet<usize>)> = BTreeMap::new();
        for session in &self.sessions {
            if !in_range(session.date) || !session_passes(session) {
                continue;
            }
            let Some(value) = value_of(session, None) else {
                continue;
            };
            let counts = &mut out.entry((label(session.date), value)).or_default().0;
            counts.visits += 1;
            // A bounce is a visit of one event.
            counts.bounces += u64::from(session.events < 2);
            counts.duration_ms += session.duration_ms;
        }
        for event in &self.events {
            let session = &self.sessions[event.session];
            let event_passes = match keep {
                Some(keep) if keep.dimension == Dimension::Property => event
                    .props
                    .get(keep.property.unwrap_or_default())
                    .is_some_and(|v| (keep.test)(v)),
                Some(keep) if by_event(keep.dimension) => event
                    .dims
                    .get(&keep.dimension)
                    .is_some_and(|v| (keep.test)(v)),
                _ => true,
            };
            if !in_range(event.date) || !session_passes(session) || !event_passes {
                continue;
            }
            let Some(value) = value_of(session, Some(event)) else {
                continue;
            };
            let (counts, visitors) = out.entry((label(event.date), value)).or_default();
            counts.events += 1;
            counts.pageviews += u64::from(event.pageview);
            visitors.insert(event.visitor);
        }
        out.into_iter()
            .map(|(key, (mut counts, visitors))| {
                counts.visitors = visitors.len() as u64;
                (key, counts)
            })
            .collect()
    }
}

/// A field of an event as the event store's reports read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// A dimension of the event or of its visit.
    Dimension(Dimension),
    /// A custom property of the event.
    Property(&'a str),
    /// The last page viewed in the event's visit.
    ExitPage,
}

/// An event with its visit, as a filter of the event store sees it.
pub struct Seen<'f> {
    facts: &'f Facts,
    event: &'f EventFact,
}

impl Seen<'_> {
    /// The event's value of `field`, if it has one.
    pub fn get(&self, field: Field<'_>) -> Option<String> {
        let session = &self.facts.sessions[self.event.session];
        match field {
            Field::Dimension(d) if EVENT_DIMENSIONS.contains(&d) => {
                self.event.dims.get(&d).cloned()
            }
            Field::Dimension(d) => session.attributes.get(&d).cloned(),
            Field::Property(key) => self.event.props.get(key).cloned(),
            Field::ExitPage => session.exit.clone(),
        }
    }
}

impl Facts {
    /// A report over `[start, end]` as the event store answers it: grouped by `time` and the
    /// values of `fields` (joined by U+001E), counting the events `pass` keeps on their own
    /// dates, and each visit, on the date it started, once in every group where one of its
    /// events passes. Events without a value of a grouped field are in no group.
    pub fn scan(
        &self,
        (start, end): (Date, Date),
        time: Option<Grain>,
        fields: &[Field<'_>],
        pass: &dyn Fn(&Seen<'_>) -> bool,
    ) -> BTreeMap<(String, String), Counts> {
        let in_range = |date: Date| date >= start && date <= end;
        let label = |date: Date| label(time, start, date);
        let mut out: BTreeMap<(String, String), (Counts, BTreeSet<usize>)> = BTreeMap::new();
        let mut visits: BTreeSet<(usize, String, String)> = BTreeSet::new();
        for event in &self.events {
            let seen = Seen { facts: self, event };
            if !pass(&seen) {
                continue;
            }
            let Some(values) = fields
                .iter()
                .map(|f| seen.get(*f))
                .collect::<Option<Vec<String>>>()
            else {
                continue;
            };
            let key = values.join("\u{1e}");
            if in_range(event.date) {
                let (counts, visitors) = out.entry((label(event.date), key.clone())).or_default();
                counts.events += 1;
                counts.pageviews += u64::from(event.pageview);
                visitors.insert(event.visitor);
            }
            let session = &self.sessions[event.session];
            if in_range(session.date)
                && visits.insert((event.session, label(session.date), key.clone()))
            {
                let counts = &mut out.entry((label(session.date), key)).or_default().0;
                counts.visits += 1;
                counts.bounces += u64::from(session.events < 2);
                counts.duration_ms += session.duration_ms;
            }
        }
        out.into_iter()
            .map(|(key, (mut counts, visitors))| {
                counts.visitors = visitors.len() as u64;
                (key, counts)
            })
            .collect()
    }
}

/// The label of `date`'s time point: itself, its week's Monday or its month's first day, not
/// before `start`; empty without time points.
fn label(time: Option<Grain>, start: Date, date: Date) -> String {
    match time {
        None => String::new(),
        Some(Grain::Day) => date.to_string(),
        Some(Grain::Week) => {
            let monday = date
                .checked_sub(
                    jiff::Span::new().days(i64::from(date.weekday().to_monday_zero_offset())),
                )
                .expect("monday");
            monday.max(start).to_string()
        }
        Some(Grain::Month) => date.first_of_month().max(start).to_string(),
    }
}

/// The host of a URL, lowercase.
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The path of a URL: what follows the host, up to `?` or `#`; "/" when empty.
fn path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        "/".into()
    } else {
        path.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path("https://a.example/x/y?utm_source=z#top"), "/x/y");
        assert_eq!(path("https://a.example"), "/");
        assert_eq!(path("https://a.example?x=1"), "/");
        assert_eq!(host("https://A.example?x=1"), "a.example");
        assert_eq!(host("https://a.example/p"), "a.example");
    }
}
