//! Reproducible traffic with the numbers it must produce, computed independently of Beacon.

use std::collections::{BTreeMap, BTreeSet};

use beacon_proto::ingest::v1::{Event, PropValue, prop_value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::Counts;

/// Real browser user agents (no bots).
pub const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
];

const PATHS: &[&str] = &[
    "/",
    "/pricing",
    "/blog/launch",
    "/docs",
    "/signup",
    "/about",
];
const REFERRERS: &[&str] = &[
    "",
    "https://www.google.com/",
    "https://news.ycombinator.com/item?id=1",
    "https://t.co/abc",
    "",
];

/// A tenant to generate traffic for.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    /// Tenant id.
    pub id: String,
    /// IANA time zone.
    pub time_zone: String,
}

/// One tenant's events, in timestamp order, and the daily numbers they must produce.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The tenant.
    pub tenant: TenantSpec,
    /// Events sorted by timestamp.
    pub events: Vec<Event>,
    /// Expected numbers per local date.
    pub expected: BTreeMap<String, Counts>,
}

impl Traffic {
    /// First and last local dates with traffic.
    pub fn date_range(&self) -> (String, String) {
        let first = self.expected.keys().next().cloned().unwrap_or_default();
        let last = self
            .expected
            .keys()
            .next_back()
            .cloned()
            .unwrap_or_default();
        (first, last)
    }

    /// Sum of the expected numbers, except visitors (not additive across days).
    pub fn total_events(&self) -> u64 {
        self.expected.values().map(|c| c.events).sum()
    }
}

/// Local calendar date of `ms` in `tz`.
pub fn local_date(ms: i64, tz: &str) -> String {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| ts.to_zoned_datetime(zone).date().to_string())
        .unwrap_or_default()
}

/// When a visit that started at `start_ms` ends at the latest, in zone `tz`: the first local
/// midnight at least 12 hours later (events at or after it start another visit).
pub fn visit_ends_by(start_ms: i64, tz: &str) -> i64 {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    let twelve_hours_later = start_ms + 12 * 3_600_000;
    let Ok(at) = jiff::Timestamp::from_millisecond(twelve_hours_later) else {
        return i64::MAX;
    };
    let local = at.to_zoned_datetime(zone.clone());
    let day_start = |date: jiff::civil::Date| {
        date.to_zoned_datetime(zone.clone())
            .map_or(i64::MAX, |midnight| midnight.timestamp().as_millisecond())
    };
    let today = day_start(local.date());
    if today == twelve_hours_later {
        return today;
    }
    local.date().tomorrow().map_or(i64::MAX, day_start)
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// About `events` events for `tenant`, visitors with 1 to 3 visits at least two hours apart, each
/// visit 1 to 6 events a few minutes apart, all between 60 hours and 10 minutes before `now_ms`.
pub fn generate(seed: u64, tenant: &TenantSpec, events: usize, now_ms: i64) -> Traffic {
    let mut rng = StdRng::seed_from_u64(seed ^ fxhash(&tenant.id));
    let hour = 3_600_000i64;
    let mut out = Vec::with_capacity(events);
    let mut visitor = 0u32;
    let mut days: BTreeMap<String, (Counts, BTreeSet<u32>)> = BTreeMap::new();
    while out.len() < events {
        visitor += 1;
        let ip = format!(
            "10.{}.{}.{}",
            (visitor >> 16) & 255,
            (visitor >> 8) & 255,
            visitor & 255
        );
        let ua = USER_AGENTS[rng.random_range(0..USER_AGENTS.len())];
        let mut start = now_ms - 60 * hour + rng.random_range(0..10 * hour);
        for _ in 0..rng.random_range(1..=3) {
            if start > now_ms - hour || out.len() >= events {
                break;
            }
            let session_date = local_date(start, &tenant.time_zone);
            days.entry(session_date.clone()).or_default().0.visits += 1;
            let mut ts = start;
            let (mut count, mut last) = (0, start);
            for j in 0..rng.random_range(1..=6usize) {
                if out.len() >= events {
                    break;
                }
                let pageview = j == 0 || rng.random_bool(0.7);
                count += 1;
                last = ts;
                let day = days.entry(local_date(ts, &tenant.time_zone)).or_default();
                day.0.events += 1;
                day.0.pageviews += u64::from(pageview);
                day.1.insert(visitor);
                out.push(make_event(
                    &mut rng,
                    tenant,
                    out.len(),
                    ts,
                    pageview,
                    j == 0,
                    &ip,
                    ua,
                ));
                ts += rng.random_range(30_000..300_000);
            }
            let session = &mut days.entry(session_date).or_default().0;
            // A bounce is a visit of one event.
            session.bounces += u64::from(count < 2);
            session.duration_ms += (last - start) as u64;
            start = ts + 2 * hour + rng.random_range(0..8 * hour);
        }
    }
    out.sort_by_key(|e| e.timestamp.map(|t| (t.seconds, t.nanos)));
    let expected = days
        .into_iter()
        .map(|(date, (mut counts, visitors))| {
            counts.visitors = visitors.len() as u64;
            (date, counts)
        })
        .collect();
    Traffic {
        tenant: tenant.clone(),
        events: out,
        expected,
    }
}

#[allow(clippy::too_many_arguments)]
fn make_event(
    rng: &mut StdRng,
    tenant: &TenantSpec,
    n: usize,
    ts: i64,
    pageview: bool,
    landing: bool,
    ip: &str,
    ua: &str,
) -> Event {
    let path = PATHS[rng.random_range(0..PATHS.len())];
    let mut props = std::collections::HashMap::new();
    if !pageview {
        props.insert(
            "plan".to_owned(),
            PropValue {
                kind: Some(prop_value::Kind::StringValue("pro".into())),
            },
        );
    }
    Event {
        id: format!("{}-{n}", tenant.id),
        name: if pageview {
            "pageview".into()
        } else {
            "signup".into()
        },
        url: format!("https://{}.example{path}", tenant.id),
        referrer: if landing {
            REFERRERS[rng.random_range(0..REFERRERS.len())].into()
        } else {
            String::new()
        },
        title: String::new(),
        user_agent: ua.into(),
        client_ip: ip.into(),
        timestamp: Some(timestamp(ts)),
        props,
        revenue: None,
        engagement: None,
        visitor_id: String::new(),
        non_interactive: false,
    }
}

fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_reproducible_and_counts_add_up() {
        let spec = TenantSpec {
            id: "t1".into(),
            time_zone: "Asia/Kolkata".into(),
        };
        let now = 1_790_000_000_000;
        let a = generate(7, &spec, 500, now);
        let b = generate(7, &spec, 500, now);
        assert_eq!(a.events, b.events);
        assert_eq!(a.events.len(), 500);
        assert_eq!(a.total_events(), 500);
        assert!(
            a.expected
                .values()
                .all(|c| c.visitors > 0 && c.pageviews <= c.events)
        );
    }
}
