//! Traffic that puts sessionization to the test, an oracle for it, and arrival orders.
//!
//! The traffic has sessions whose gaps sit at the 30-minute boundary (29:59, 30:00, 30:00.001),
//! sessions that cross local midnight, sessions that start with a custom event, visitors who
//! never pause for up to 40 hours, and bots. The oracle shares no code with Beacon: it sorts each
//! visitor's events by time, cuts sessions where two events are more than 30 minutes apart or at
//! the first local midnight 12 hours after a session's start, and counts visits, bounces and duration on
//! the local date of a session's first event, events, pageviews and visitors on each event's
//! own date.

use std::collections::{BTreeMap, BTreeSet};

use beacon_proto::ingest::v1::Event;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::client::Counts;
use crate::traffic::{TenantSpec, Traffic, USER_AGENTS, local_date, visit_ends_by};

/// A crawler's agent: a bot by any logic version.
pub const BOT_AGENT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
/// An agent naming neither a browser nor an operating system (a lobby screen reloading a page):
/// a visitor under logic version 2, a bot from version 3 on.
pub const MONITOR_AGENT: &str = "LiveBoard/7 (lobby screen)";

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// Session idle time.
const IDLE: i64 = 30 * MINUTE;

/// The order events reach Beacon in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By timestamp (then id).
    Time,
    /// One visitor after another, each visitor's events by time: what an SDK flushing stored
    /// sessions, an import or a delayed server produces.
    VisitorByVisitor,
    /// Shuffled at random.
    Shuffled,
}

/// Milliseconds of an event's timestamp.
pub fn event_ms(event: &Event) -> i64 {
    event
        .timestamp
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// `events` in `order`.
pub fn arrange(events: &[Event], order: Order, seed: u64) -> Vec<Event> {
    let mut out = events.to_vec();
    match order {
        Order::Time => out.sort_by(|a, b| (event_ms(a), &a.id).cmp(&(event_ms(b), &b.id))),
        Order::VisitorByVisitor => {
            out.sort_by(|a, b| {
                (&a.client_ip, &a.user_agent, event_ms(a), &a.id).cmp(&(
                    &b.client_ip,
                    &b.user_agent,
                    event_ms(b),
                    &b.id,
                ))
            });
        }
        Order::Shuffled => out.shuffle(&mut StdRng::seed_from_u64(seed)),
    }
    out
}

/// A visitor: address and agent.
type Visitor<'a> = (&'a str, &'a str);

/// The events that count of each visitor (address and agent), each visitor's by time (then
/// id): bots' events (agents in `bots`) and `engagement` reports left out.
pub fn by_visitor<'e>(events: &'e [Event], bots: &[&str]) -> BTreeMap<Visitor<'e>, Vec<&'e Event>> {
    let mut out: BTreeMap<Visitor<'e>, Vec<&'e Event>> = BTreeMap::new();
    for event in events
        .iter()
        .filter(|e| !bots.contains(&e.user_agent.as_str()) && e.name != "engagement")
    {
        out.entry((&event.client_ip, &event.user_agent))
            .or_default()
            .push(event);
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| (event_ms(a), &a.id).cmp(&(event_ms(b), &b.id)));
    }
    out
}

/// The logic version whose rules [`oracle`] applies.
pub const LOGIC_VERSION: u32 = 7;

/// The daily numbers of `events` for a tenant in `time_zone`; agents in `bots` are bots, and
/// `engagement` events count nowhere.
pub fn oracle(time_zone: &str, events: &[Event], bots: &[&str]) -> BTreeMap<String, Counts> {
    oracle_with(LOGIC_VERSION, time_zone, events, bots)
}

/// [`oracle`] with the rules of logic version `version`: before 6, a visit of fewer than two
/// pageviews is a bounce (from 6, of one event); before 7, no midnight ends a visit.
pub fn oracle_with(
    version: u32,
    time_zone: &str,
    events: &[Event],
    bots: &[&str],
) -> BTreeMap<String, Counts> {
    let mut days: BTreeMap<String, (Counts, BTreeSet<Visitor<'_>>)> = BTreeMap::new();
    for (visitor, list) in by_visitor(events, bots) {
        // (first event, last event, events, pageviews) of the open session.
        let mut session: Option<(i64, i64, u64, u64)> = None;
        let close = |days: &mut BTreeMap<_, (Counts, BTreeSet<_>)>, (start, end, events, views)| {
            let day = &mut days.entry(local_date(start, time_zone)).or_default().0;
            day.visits += 1;
            day.bounces += u64::from(if version >= 6 { events < 2 } else { views < 2 });
            day.duration_ms += (end - start) as u64;
        };
        for event in list {
            let ms = event_ms(event);
            let pageview = event.name == "pageview";
            session = match session {
                Some((start, end, events, views))
                    if ms - end <= IDLE
                        && (version < 7 || ms < visit_ends_by(start, time_zone)) =>
                {
                    Some((start, ms, events + 1, views + u64::from(pageview)))
                }
                previous => {
                    if let Some(previous) = previous {
                        close(&mut days, previous);
                    }
                    Some((ms, ms, 1, u64::from(pageview)))
                }
            };
            let (day, seen) = days.entry(local_date(ms, time_zone)).or_default();
            day.events += 1;
            day.pageviews += u64::from(pageview);
            seen.insert(visitor);
        }
        if let Some(last) = session {
            close(&mut days, last);
        }
    }
    days.into_iter()
        .map(|(date, (mut counts, seen))| {
            counts.visitors = seen.len() as u64;
            (date, counts)
        })
        .collect()
}

/// Traffic of `visitors` visitors between 60 hours and 15 minutes before `now_ms`, in time
/// order, with the oracle's numbers (bots: [`BOT_AGENT`]).
pub fn tricky(seed: u64, tenant: &TenantSpec, visitors: usize, now_ms: i64) -> Traffic {
    let events = tricky_events(
        seed,
        tenant,
        visitors,
        (now_ms - 60 * HOUR, now_ms - 15 * MINUTE),
        &[],
    );
    let expected = oracle(&tenant.time_zone, &events, &[BOT_AGENT]);
    Traffic {
        tenant: tenant.clone(),
        events,
        expected,
    }
}

/// The events of [`tricky`] traffic between `window.0` and `window.1`, in time order; visitors
/// take their agent from `agents` first (one each, in turn, every seventh visitor), then from
/// real browsers, with a crawler every twentieth.
pub fn tricky_events(
    seed: u64,
    tenant: &TenantSpec,
    visitors: usize,
    window: (i64, i64),
    agents: &[&str],
) -> Vec<Event> {
    let (from, to) = window;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let midnights = local_midnights(&tenant.time_zone, from + 2 * HOUR, to - HOUR);
    let span = (to - from).max(4 * HOUR);
    for v in 0..visitors {
        let ip = format!("10.7.{}.{}", v / 256, v % 256);
        let agent = match (v % 20, v % 7) {
            (0, _) => BOT_AGENT,
            (_, 3) if !agents.is_empty() => agents[v / 7 % agents.len()],
            _ => USER_AGENTS[v % USER_AGENTS.len()],
        };
        if v % 100 == 25 {
            marathon(&mut rng, (tenant, &ip, agent), window, &mut events);
            continue;
        }
        let mut start = match (v % 4, midnights.is_empty()) {
            // A quarter of the visitors start a few minutes before a local midnight.
            (0, false) => midnights[v % midnights.len()] - rng.random_range(MINUTE..20 * MINUTE),
            _ => from + rng.random_range(0..span - 3 * HOUR),
        };
        for _ in 0..rng.random_range(1..=3) {
            let mut ms = start;
            for j in 0..rng.random_range(1..=6usize) {
                if ms > to {
                    break;
                }
                // A fifth of the sessions start with a custom event.
                let pageview = if j == 0 {
                    !rng.random_bool(0.2)
                } else {
                    rng.random_bool(0.7)
                };
                events.push(event(tenant, events.len(), ms, pageview, &ip, agent));
                ms += gap(&mut rng);
            }
            start = ms + rng.random_range(IDLE + 1..4 * HOUR);
        }
    }
    arrange(&events, Order::Time, 0)
}

/// A visitor who never pauses 30 minutes for up to 40 hours of `window`: their visits end at
/// local midnights, not at a pause.
fn marathon(
    rng: &mut StdRng,
    (tenant, ip, agent): (&TenantSpec, &str, &str),
    (from, to): (i64, i64),
    events: &mut Vec<Event>,
) {
    let mut ms = from + rng.random_range(0..(to - from).max(HOUR) / 4);
    let end = (ms + 40 * HOUR).min(to);
    while ms <= end {
        let pageview = rng.random_bool(0.7);
        events.push(event(tenant, events.len(), ms, pageview, ip, agent));
        ms += rng.random_range(MINUTE..IDLE);
    }
}

/// The gap to a visitor's next event: often right at the idle time, on either side.
fn gap(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..10) {
        0 => IDLE,
        1 => IDLE + 1,
        2 => IDLE - 1000,
        3 => IDLE + 1000,
        _ => rng.random_range(20_000..10 * MINUTE),
    }
}

/// The instants of local midnight in `tz` between `from` and `to`.
fn local_midnights(tz: &str, from: i64, to: i64) -> Vec<i64> {
    let Ok(zone) = jiff::tz::TimeZone::get(tz) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Ok(start) = jiff::Timestamp::from_millisecond(from) else {
        return out;
    };
    let mut day = start.to_zoned_datetime(zone.clone()).date();
    loop {
        let Ok(midnight) = day.to_zoned_datetime(zone.clone()) else {
            break;
        };
        let ms = midnight.timestamp().as_millisecond();
        if ms > to {
            break;
        }
        if ms >= from {
            out.push(ms);
        }
        match day.tomorrow() {
            Ok(next) => day = next,
            Err(_) => break,
        }
    }
    out
}

fn event(tenant: &TenantSpec, n: usize, ms: i64, pageview: bool, ip: &str, agent: &str) -> Event {
    let path = ["/", "/pricing", "/docs", "/blog"][n % 4];
    Event {
        id: format!("{}-{n}", tenant.id),
        name: if pageview { "pageview" } else { "signup" }.into(),
        url: format!("https://{}.example{path}", tenant.id),
        referrer: String::new(),
        title: String::new(),
        user_agent: agent.into(),
        client_ip: ip.into(),
        timestamp: Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }),
        props: Default::default(),
        revenue: None,
        engagement: None,
        visitor_id: String::new(),
        non_interactive: false,
    }
}

/// `traffic` as another tenant's: the same events under ids of `tenant`.
pub fn retarget(traffic: &Traffic, tenant: &TenantSpec) -> Traffic {
    let prefix = format!("{}-", traffic.tenant.id);
    let events = traffic
        .events
        .iter()
        .map(|event| Event {
            id: event.id.replacen(&prefix, &format!("{}-", tenant.id), 1),
            ..event.clone()
        })
        .collect();
    Traffic {
        tenant: tenant.clone(),
        events,
        expected: traffic.expected.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64, ip: &str, name: &str, id: &str) -> Event {
        let spec = TenantSpec {
            id: "t".into(),
            time_zone: "UTC".into(),
        };
        Event {
            id: id.into(),
            ..event(&spec, 0, ms, name == "pageview", ip, USER_AGENTS[0])
        }
    }

    #[test]
    fn sessions_split_strictly_after_thirty_minutes() {
        let day = 1_790_000_000_000 - 1_790_000_000_000 % (24 * HOUR) + HOUR;
        let events = [
            at(day, "a", "signup", "1"),
            at(day + IDLE, "a", "pageview", "2"),
            at(day + 2 * IDLE + 1, "a", "pageview", "3"),
            at(day, "b", "pageview", "4"),
        ];
        let counts = oracle("UTC", &events, &[]);
        let only = counts.values().next().expect("one day");
        assert_eq!(only.visits, 3);
        assert_eq!(only.bounces, 2, "a signup and a pageview are two events");
        assert_eq!(only.duration_ms, IDLE as u64);
        assert_eq!((only.events, only.pageviews, only.visitors), (4, 3, 2));
    }

    #[test]
    fn a_visit_ends_at_the_first_midnight_twelve_hours_after_its_start() {
        let midnight = 1_790_000_000_000 - 1_790_000_000_000 % (24 * HOUR);
        // From 20:00 for 40 hours, every 20 minutes: 12 hours after 20:00 is 08:00, so the
        // first visit lasts until the second midnight, and the next one from there.
        let events: Vec<Event> = (0..120)
            .map(|i| {
                let ms = midnight - 4 * HOUR + i * 20 * MINUTE;
                at(ms, "a", "pageview", &i.to_string())
            })
            .collect();
        let days = oracle("UTC", &events, &[]);
        let visits: Vec<u64> = days.values().map(|c| c.visits).collect();
        assert_eq!(visits, [1, 0, 1], "{days:?}");
        let first = days.values().next().expect("a day");
        assert_eq!(first.duration_ms as i64, 28 * HOUR - 20 * MINUTE);
        assert_eq!(
            crate::traffic::visit_ends_by(midnight - 12 * HOUR, "UTC"),
            midnight
        );
        assert_eq!(
            crate::traffic::visit_ends_by(midnight - 12 * HOUR + 1, "UTC"),
            midnight + 24 * HOUR
        );
    }

    #[test]
    fn orders_hold_the_same_events() {
        let spec = TenantSpec {
            id: "t".into(),
            time_zone: "Asia/Kathmandu".into(),
        };
        let traffic = tricky(3, &spec, 200, 1_790_000_000_000);
        let sorted = |order| {
            let mut ids: Vec<String> = arrange(&traffic.events, order, 9)
                .into_iter()
                .map(|e| e.id)
                .collect();
            ids.sort();
            ids
        };
        let time = sorted(Order::Time);
        assert_eq!(time, sorted(Order::VisitorByVisitor));
        assert_eq!(time, sorted(Order::Shuffled));
        assert!(
            traffic.expected.len() >= 2,
            "several local days: {:?}",
            traffic.expected.keys()
        );
    }
}
