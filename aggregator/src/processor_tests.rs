//! Unit tests of [`super::Processor`].

use super::*;
use beacon_proto::pipeline::v1::RollupRow;

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const MIN: i64 = 60_000;
/// 2026-03-01T10:00:00Z.
const T0: i64 = 1_772_359_200_000;
const HOUR: i64 = 3_600_000;

fn ev(visitor: u64, ts: i64, name: &str, path: &str) -> LoggedEvent {
    LoggedEvent {
        tenant_id: "acme".into(),
        event_id: format!("{visitor}-{ts}-{name}-{path}"),
        name: name.into(),
        timestamp_ms: ts,
        received_ms: ts,
        url: format!("https://acme.test{path}"),
        referrer: "https://www.google.com/".into(),
        user_agent: CHROME.into(),
        country: "DE".into(),
        visitor,
        time_zone: "UTC".into(),
        ..LoggedEvent::default()
    }
}

fn pv(visitor: u64, ts: i64, path: &str) -> LoggedEvent {
    ev(visitor, ts, PAGEVIEW, path)
}

fn run(events: &[LoggedEvent]) -> Vec<TenantRollup> {
    let mut p = Processor::new();
    for e in events {
        p.process(e, true).expect("process");
    }
    p.take_rollups()
}

/// Sum of the rows of (dimension, value) over all hours and batches.
fn total(rollups: &[TenantRollup], dim: Dimension, value: &str) -> Counters {
    let mut sum = Counters::default();
    let rows = rollups.iter().flat_map(|t| &t.rows);
    for r in rows.filter(|r| r.dimension == dim as i32 && r.value == value) {
        sum.pageviews += r.pageviews;
        sum.events += r.events;
        sum.visits += r.visits;
        sum.bounces += r.bounces;
        sum.duration_ms += r.duration_ms;
        sum.bot_events += r.bot_events;
    }
    sum
}

fn totals(rollups: &[TenantRollup]) -> Counters {
    total(rollups, Dimension::Unspecified, "")
}

fn rows_of(rollups: &[TenantRollup], dim: Dimension) -> Vec<&RollupRow> {
    rollups
        .iter()
        .flat_map(|t| &t.rows)
        .filter(|r| r.dimension == dim as i32)
        .collect()
}

#[test]
fn single_pageview_is_a_bounce() {
    let out = run(&[pv(1, T0, "/")]);
    let c = totals(&out);
    assert_eq!(
        (c.visits, c.bounces, c.pageviews, c.events, c.duration_ms),
        (1, 1, 1, 1, 0)
    );
    assert_eq!(total(&out, Dimension::Source, "Google").visits, 1);
    assert_eq!(total(&out, Dimension::Channel, "Organic Search").bounces, 1);
    assert_eq!(total(&out, Dimension::Page, "/").pageviews, 1);
    assert_eq!(
        total(&out, Dimension::Page, "/").visits,
        0,
        "PAGE carries event metrics only"
    );
}

#[test]
fn second_pageview_ends_the_bounce_and_adds_duration() {
    let out = run(&[
        pv(1, T0, "/"),
        pv(1, T0 + 5 * MIN, "/pricing"),
        ev(1, T0 + 7 * MIN, "signup", "/pricing"),
    ]);
    let c = totals(&out);
    assert_eq!((c.visits, c.bounces, c.pageviews, c.events), (1, 0, 2, 3));
    assert_eq!(c.duration_ms, 7 * MIN);
    let entry = total(&out, Dimension::EntryPage, "/");
    assert_eq!(
        (entry.visits, entry.bounces, entry.duration_ms, entry.events),
        (1, 0, 7 * MIN, 3)
    );
    assert_eq!(total(&out, Dimension::Page, "/pricing").events, 2);
}

#[test]
fn thirty_minutes_of_idle_splits_the_session() {
    let out = run(&[
        pv(1, T0, "/"),
        pv(1, T0 + 30 * MIN, "/a"),
        pv(1, T0 + 61 * MIN, "/b"),
    ]);
    let c = totals(&out);
    assert_eq!(c.visits, 2);
    assert_eq!(
        c.bounces, 1,
        "the first visit has two pageviews, the second one"
    );
    assert_eq!(c.duration_ms, 30 * MIN);
    assert_eq!(total(&out, Dimension::EntryPage, "/b").visits, 1);
}

#[test]
fn session_metrics_stay_in_the_session_hour() {
    // Starts at 10:50, continues at 11:10: visit, bounce and duration belong to 10:00.
    let out = run(&[pv(1, T0 + 50 * MIN, "/"), pv(1, T0 + 70 * MIN, "/a")]);
    let total_rows = rows_of(&out, Dimension::Unspecified);
    let at = |hour: i64| {
        total_rows
            .iter()
            .find(|r| r.hour_ms == hour)
            .map(|r| (r.visits, r.bounces, r.duration_ms, r.pageviews))
    };
    assert_eq!(at(T0), Some((1, 0, 20 * MIN, 1)));
    assert_eq!(at(T0 + HOUR), Some((0, 0, 0, 1)));
}

#[test]
fn late_event_updates_its_own_hour() {
    let late = T0 - 5 * HOUR;
    let out = run(&[pv(1, T0, "/"), pv(2, T0 + MIN, "/"), pv(1, late, "/old")]);
    let total_rows = rows_of(&out, Dimension::Unspecified);
    let old = total_rows
        .iter()
        .find(|r| r.hour_ms == late)
        .expect("late hour row");
    assert_eq!((old.visits, old.pageviews, old.bounces), (1, 1, 1));
    assert_eq!(totals(&out).visits, 3);
}

#[test]
fn late_event_does_not_break_the_open_session() {
    let out = run(&[
        pv(1, T0, "/"),
        pv(1, T0 - 3 * HOUR, "/old"),
        pv(1, T0 + 10 * MIN, "/next"),
    ]);
    let c = totals(&out);
    assert_eq!(
        c.visits, 2,
        "the late event is its own visit; the open one continues"
    );
    assert_eq!(c.duration_ms, 10 * MIN);
}

#[test]
fn event_slightly_out_of_order_joins_and_extends_the_start() {
    let out = run(&[
        pv(1, T0, "/"),
        pv(1, T0 + 10 * MIN, "/b"),
        pv(1, T0 - 2 * MIN, "/a"),
    ]);
    let c = totals(&out);
    assert_eq!((c.visits, c.bounces, c.pageviews), (1, 0, 3));
    assert_eq!(c.duration_ms, 12 * MIN);
}

#[test]
fn bots_count_only_as_bot_events() {
    let mut bot = pv(9, T0, "/");
    bot.user_agent =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)".into();
    let mut empty = pv(10, T0, "/");
    empty.user_agent = String::new();
    let out = run(&[bot, empty]);
    let c = totals(&out);
    assert_eq!(
        c,
        Counters {
            bot_events: 2,
            ..Counters::default()
        }
    );
    assert_eq!(out[0].rows.len(), 1, "only the TOTAL row");
    assert!(out[0].rows[0].visitors.is_empty());
}

#[test]
fn half_hour_zone_buckets() {
    let mut e = pv(1, T0 + 45 * MIN, "/");
    e.time_zone = "Asia/Kolkata".into();
    let out = run(&[e]);
    let row = rows_of(&out, Dimension::Unspecified)[0];
    assert_eq!(
        row.hour_ms,
        T0 + 30 * MIN,
        "10:45Z is 16:15 IST; the 16:00 IST bucket starts at 10:30Z"
    );
    assert_eq!(row.local_date, "2026-03-01");
}

#[test]
fn visitors_are_deduplicated_per_bucket() {
    let out = run(&[
        pv(1, T0, "/"),
        pv(1, T0 + MIN, "/"),
        pv(2, T0 + 2 * MIN, "/"),
    ]);
    let row = out[0]
        .rows
        .iter()
        .find(|r| r.dimension == Dimension::Page as i32 && r.value == "/")
        .expect("page row");
    assert_eq!(row.visitors, vec![1, 2]);
}

#[test]
fn invalid_time_zone_leaves_the_state_unchanged() {
    let mut p = Processor::new();
    let mut e = pv(1, T0, "/");
    e.time_zone = "Mars/Olympus".into();
    let err = p.process(&e, true).expect_err("invalid zone");
    assert!(err.to_string().contains("Mars/Olympus"), "{err}");
    assert!(!p.has_pending());
    assert_eq!((p.watermark_ms(), p.session_count()), (0, 0));
}

#[test]
fn silent_processing_changes_state_only() {
    let mut p = Processor::new();
    p.process(&pv(1, T0, "/"), false).expect("process");
    assert!(!p.has_pending());
    p.process(&pv(1, T0 + MIN, "/a"), true).expect("process");
    let c = totals(&p.take_rollups());
    assert_eq!(
        (c.visits, c.bounces, c.pageviews, c.duration_ms),
        (0, -1, 1, MIN)
    );
}

fn stream() -> Vec<LoggedEvent> {
    let mut events = Vec::new();
    for i in 0..400i64 {
        let visitor = (i % 37) as u64;
        let ts = T0 + i * 97_000 + (i % 5) * 13_000 - (i % 7) * 60_000;
        let path = ["/", "/a", "/b", "/c"][(i % 4) as usize];
        let name = if i % 6 == 0 { "signup" } else { PAGEVIEW };
        let mut e = ev(visitor, ts, name, path);
        if i % 11 == 0 {
            e.referrer = "https://news.example.org/".into();
        }
        events.push(e);
    }
    events
}

#[test]
fn same_input_gives_same_output() {
    let events = stream();
    assert_eq!(run(&events), run(&events));
}

#[test]
fn snapshot_and_restore_mid_stream_gives_the_same_deltas() {
    let events = stream();
    let whole = run(&events);
    for cut in [1, 57, 200, 399] {
        let mut first = Processor::new();
        let mut deltas = Vec::new();
        for e in &events[..cut] {
            first.process(e, true).expect("process");
        }
        deltas.extend(first.take_rollups());
        let snapshot = first.snapshot(0, cut as u64);
        let bytes = prost::Message::encode_to_vec(&snapshot);
        let decoded: AggregatorSnapshot = prost::Message::decode(bytes.as_slice()).expect("decode");
        let mut second = Processor::new();
        second.restore(decoded).expect("restore");
        for e in &events[cut..] {
            second.process(e, true).expect("process");
        }
        deltas.extend(second.take_rollups());
        for dim in [
            Dimension::Unspecified,
            Dimension::EntryPage,
            Dimension::Page,
            Dimension::Source,
        ] {
            for value in ["", "/", "/a", "/b", "/c", "Google", "news.example.org"] {
                assert_eq!(
                    total(&deltas, dim, value),
                    total(&whole, dim, value),
                    "cut {cut} {dim:?} {value}"
                );
            }
        }
    }
}

#[test]
fn other_tenants_do_not_close_sessions() {
    let mut other = pv(5, T0 + 3 * HOUR, "/");
    other.tenant_id = "globex".into();
    let out = run(&[pv(1, T0, "/"), other, pv(1, T0 + 20 * MIN, "/a")]);
    let acme = out.iter().find(|t| t.tenant_id == "acme").expect("acme");
    let c = totals(std::slice::from_ref(acme));
    assert_eq!((c.visits, c.bounces, c.duration_ms), (1, 0, 20 * MIN));
}

#[test]
fn values_are_capped_in_length_and_per_day_cardinality() {
    use crate::cap::{MAX_VALUE_BYTES, MAX_VALUES_PER_DAY, OTHER};
    let extra = 200;
    let events: Vec<LoggedEvent> = (0..MAX_VALUES_PER_DAY + extra)
        .map(|n| {
            let mut e = pv(n as u64, T0 + n as i64, &format!("/{n}{}", "ü".repeat(900)));
            e.url
                .push_str(&format!("?utm_campaign={n}{}", "c".repeat(3000)));
            e
        })
        .collect();
    let out = run(&events);
    let rows: Vec<&RollupRow> = out.iter().flat_map(|t| &t.rows).collect();
    assert!(rows.iter().all(|r| r.value.len() <= MAX_VALUE_BYTES));
    let pages = rows_of(&out, Dimension::Page);
    assert_eq!(
        pages.len(),
        MAX_VALUES_PER_DAY + 1,
        "the admitted pages and (other)"
    );
    assert_eq!(total(&out, Dimension::Page, OTHER).pageviews, extra as i64);
    assert_eq!(
        total(&out, Dimension::UtmCampaign, OTHER).visits,
        extra as i64
    );
    assert_eq!(totals(&out).pageviews, (MAX_VALUES_PER_DAY + extra) as i64);
    // The next day starts with room again.
    let next_day = pv(1, T0 + 24 * HOUR, "/fresh");
    let out = run(&[events[..MAX_VALUES_PER_DAY].to_vec(), vec![next_day]].concat());
    assert_eq!(total(&out, Dimension::Page, "/fresh").pageviews, 1);
}

#[test]
fn the_encoded_snapshot_decodes_to_the_snapshot() {
    let mut p = Processor::new();
    for e in &stream()[..200] {
        p.process(e, true).expect("process");
    }
    for visitor in [9, 3] {
        let mut other = pv(visitor, T0, "/b");
        other.tenant_id = "beta".into();
        p.process(&other, true).expect("process");
    }
    let (bytes, sessions) = p.encoded_snapshot(2, 200, "events-a");
    let decoded: AggregatorSnapshot = prost::Message::decode(bytes.as_slice()).expect("decode");
    let expected = AggregatorSnapshot {
        event_log: "events-a".into(),
        ..p.snapshot(2, 200)
    };
    assert!(sessions > 2, "{sessions}");
    assert_eq!(sessions, expected.sessions.len());
    assert_eq!(decoded, expected);
}

#[test]
fn admission_survives_a_snapshot() {
    use crate::cap::{MAX_VALUES_PER_DAY, OTHER};
    let mut p = Processor::new();
    for n in 0..MAX_VALUES_PER_DAY {
        p.process(&pv(1, T0 + n as i64, &format!("/p{n}")), true)
            .expect("process");
    }
    let snapshot = p.snapshot(0, 9);
    let mut restored = Processor::new();
    restored.restore(snapshot).expect("restore");
    restored
        .process(&pv(1, T0 + HOUR, "/late-new"), true)
        .expect("process");
    let out = restored.take_rollups();
    assert_eq!(total(&out, Dimension::Page, OTHER).pageviews, 1);
}

#[test]
fn logic_version_three_counts_unrecognizable_agents_as_bots() {
    let screen = LoggedEvent {
        user_agent: "LiveBoard/7 (lobby screen)".into(),
        ..pv(1, T0, "/")
    };
    for (version, human) in [(2, true), (3, false)] {
        let mut p = Processor::with_version(version);
        p.process(&screen, true).expect("process");
        let counted = totals(&p.take_rollups());
        assert_eq!(counted.pageviews == 1, human, "version {version}");
        assert_eq!(counted.bot_events == 1, !human, "version {version}");
    }
}

#[test]
fn out_of_order_events_mark_their_day_dirty() {
    let mut p = Processor::new();
    p.process(&pv(1, T0 + 2 * HOUR, "/"), true)
        .expect("process");
    p.process(&pv(2, T0 + 2 * HOUR - 4 * MIN, "/"), true)
        .expect("within the allowed lateness");
    assert!(p.dirty_tenants().is_empty(), "slightly late is still exact");
    p.process(&pv(3, T0, "/"), true).expect("late");
    // Earlier than the visitor's open session: its start (entry page, source) was wrong.
    p.process(&pv(1, T0 + 2 * HOUR - MIN, "/"), true)
        .expect("earlier than the session");
    assert_eq!(p.dirty_tenants(), ["acme"]);
    assert_eq!(p.take_dirty("acme"), ["2026-03-01"]);
    assert!(p.dirty_tenants().is_empty());
}

#[test]
fn version_4_counts_event_names_and_hosts_and_ignores_engagement() {
    let events = [
        pv(1, T0, "/"),
        ev(1, T0 + MIN, ENGAGEMENT, "/"),
        ev(1, T0 + 2 * MIN, "signup", "/"),
        // 40 minutes later: an engagement report alone neither extends nor starts a visit.
        ev(1, T0 + 42 * MIN, ENGAGEMENT, "/"),
    ];
    let out = run(&events);
    let c = totals(&out);
    assert_eq!((c.visits, c.events, c.duration_ms), (1, 2, 2 * MIN));
    assert_eq!(total(&out, Dimension::EventName, "pageview").events, 1);
    assert_eq!(total(&out, Dimension::EventName, "signup").events, 1);
    assert_eq!(total(&out, Dimension::EventName, ENGAGEMENT).events, 0);
    assert_eq!(total(&out, Dimension::Hostname, "acme.test").pageviews, 1);
    assert_eq!(total(&out, Dimension::Referrer, "google.com").visits, 1);
    assert_eq!(total(&out, Dimension::Region, "(unknown)").visits, 1);

    let mut v3 = Processor::with_version(3);
    for e in &events {
        v3.process(e, true).expect("process");
    }
    let out = v3.take_rollups();
    assert_eq!(
        totals(&out).events,
        4,
        "version 3 counted engagement reports"
    );
    assert!(rows_of(&out, Dimension::EventName).is_empty());
}

#[test]
fn custom_properties_are_rows_of_key_and_value() {
    use beacon_proto::ingest::v1::{PropValue, prop_value::Kind};
    let mut signup = ev(1, T0, "signup", "/");
    signup.props.insert(
        "plan".into(),
        PropValue {
            kind: Some(Kind::StringValue("pro".into())),
        },
    );
    signup.props.insert(
        "seats".into(),
        PropValue {
            kind: Some(Kind::NumberValue(2.5)),
        },
    );
    let out = run(&[pv(1, T0, "/"), signup]);
    let sep = beacon_core::property::SEPARATOR;
    assert_eq!(
        total(&out, Dimension::Property, &format!("plan{sep}pro")).events,
        1
    );
    assert_eq!(
        total(&out, Dimension::Property, &format!("seats{sep}2.5")).events,
        1
    );
    assert_eq!(rows_of(&out, Dimension::Property).len(), 2);
}

#[test]
fn version_6_ends_a_bounce_with_any_second_event() {
    let out = run(&[
        ev(1, T0, "signup", "/"),
        pv(1, T0 + MIN, "/pricing"),
        pv(2, T0, "/"),
    ]);
    let c = totals(&out);
    assert_eq!(
        (c.visits, c.bounces),
        (2, 1),
        "only visitor 2's lone pageview"
    );
    let mut v5 = Processor::with_version(5);
    for e in [ev(1, T0, "signup", "/"), pv(1, T0 + MIN, "/pricing")] {
        v5.process(&e, true).expect("process");
    }
    assert_eq!(totals(&v5.take_rollups()).bounces, 1, "one pageview");
}

#[test]
fn non_interactive_events_end_no_bounce() {
    let passive = |visitor: u64, ts: i64| LoggedEvent {
        non_interactive: true,
        ..ev(visitor, ts, "autoplay", "/")
    };
    let out = run(&[
        pv(1, T0, "/"),
        passive(1, T0 + MIN),
        // A visit whose first event is passive ends its bounce with its second interactive one.
        passive(2, T0),
        pv(2, T0 + MIN, "/"),
        pv(3, T0, "/"),
        passive(3, T0 + MIN),
        ev(3, T0 + 2 * MIN, "signup", "/"),
    ]);
    let c = totals(&out);
    assert_eq!(
        (c.visits, c.bounces, c.events),
        (3, 2, 7),
        "visitors 1 and 2 bounced"
    );
}

#[test]
fn version_6_keeps_every_event_with_its_visit() {
    let mut engagement = ev(1, T0 + 2 * MIN, ENGAGEMENT, "/pricing");
    engagement.engagement = Some(beacon_proto::ingest::v1::Engagement {
        scroll_depth: 70,
        engaged_ms: 9_000,
    });
    let mut signup = ev(1, T0 + 3 * MIN, "signup", "/pricing");
    signup.props.insert(
        "plan".into(),
        beacon_proto::ingest::v1::PropValue {
            kind: Some(beacon_proto::ingest::v1::prop_value::Kind::StringValue(
                "pro".into(),
            )),
        },
    );
    let out = run(&[
        pv(1, T0, "/"),
        pv(1, T0 + MIN, "/pricing"),
        engagement,
        // A report without its measures, as older senders made them: no row.
        ev(1, T0 + 2 * MIN, ENGAGEMENT, "/pricing"),
        signup,
    ]);
    let events: Vec<_> = out.iter().flat_map(|t| &t.events).collect();
    assert_eq!(events.len(), 4, "three events and the engagement report");
    for row in &events {
        assert_eq!((row.visitor, row.visit_start_ms), (1, T0), "one visit");
        assert_eq!(row.visit_date, "2026-03-01");
        assert!(
            !row.dimensions.contains(&(Dimension::EventName as i32)),
            "the name is a field of its own"
        );
        let value = |d: Dimension| {
            let at = row.dimensions.iter().position(|x| *x == d as i32)?;
            Some(row.values[at].as_str())
        };
        assert_eq!(value(Dimension::Country), Some("DE"));
        assert_eq!(value(Dimension::EntryPage), Some("/"));
    }
    assert_eq!(
        (
            events[2].name.as_str(),
            events[2].scroll_depth,
            events[2].engaged_ms
        ),
        (ENGAGEMENT, Some(70), Some(9_000))
    );
    assert_eq!(events[3].properties, ["plan\u{1f}pro"]);
    assert_eq!(totals(&out).events, 3, "engagement reports are not counted");
}

#[test]
fn version_6_continues_a_visit_under_the_next_dates_hash() {
    // Visitor 1 becomes visitor 2 at local midnight: the event after it carries both.
    let mut after = pv(2, T0 + 10 * MIN, "/pricing");
    after.previous_visitor = Some(1);
    let out = run(&[pv(1, T0, "/"), after.clone()]);
    let c = totals(&out);
    assert_eq!(
        (c.visits, c.bounces, c.duration_ms),
        (1, 0, 10 * MIN),
        "one visit"
    );
    let events: Vec<_> = out.iter().flat_map(|t| &t.events).collect();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.visitor, e.visit_visitor, e.visit_start_ms))
            .collect::<Vec<_>>(),
        [(1, 1, T0), (2, 1, T0)],
        "the visit keeps its first hash"
    );
    // Without the previous hash, or under version 5, they are two visits.
    after.previous_visitor = None;
    assert_eq!(totals(&run(&[pv(1, T0, "/"), after.clone()])).visits, 2);
    after.previous_visitor = Some(1);
    let mut v5 = Processor::with_version(5);
    for e in [pv(1, T0, "/"), after] {
        v5.process(&e, true).expect("process");
    }
    assert_eq!(totals(&v5.take_rollups()).visits, 2);
}
