use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use super::*;

const NOW: i64 = 1_790_000_000_000;

fn model(seed: u64, tenants: usize) -> TrafficModel {
    TrafficModel::new(TrafficConfig {
        seed,
        tenants,
        zipf_exponent: 1.1,
    })
}

fn live(model: &mut TrafficModel, count: usize) -> Vec<(usize, Event)> {
    (0..count)
        .map(|i| model.next_event(NOW + i as i64))
        .collect()
}

/// The ingest limits, checked the way the ingest service checks them.
fn assert_valid(event: &Event) {
    let chars = |s: &str| s.chars().count();
    assert!((1..=64).contains(&chars(&event.id)), "id {:?}", event.id);
    assert!(
        (1..=120).contains(&chars(&event.name)),
        "name {:?}",
        event.name
    );
    assert!(
        event.url.starts_with("https://") && chars(&event.url) <= 2000,
        "{}",
        event.url
    );
    assert!(!event.url.contains(char::is_whitespace), "{}", event.url);
    for text in [&event.referrer, &event.title, &event.user_agent] {
        assert!(chars(text) <= 2000, "{text}");
    }
    assert!(!event.user_agent.is_empty());
    assert!(
        event.client_ip.parse::<IpAddr>().is_ok(),
        "ip {:?}",
        event.client_ip
    );
    assert!(event.props.len() <= 30);
    for (key, value) in &event.props {
        assert!((1..=300).contains(&chars(key)), "{key}");
        match &value.kind {
            Some(prop_value::Kind::StringValue(s)) => assert!(chars(s) <= 2000),
            Some(prop_value::Kind::NumberValue(n)) => assert!(n.is_finite()),
            None => panic!("props[{key}] has no value"),
        }
    }
    if let Some(revenue) = &event.revenue {
        assert!(revenue.amount.is_finite() && revenue.amount > 0.0);
        assert!(
            revenue.currency.len() == 3 && revenue.currency.bytes().all(|b| b.is_ascii_uppercase())
        );
    }
    assert!(event.timestamp.is_some());
}

#[test]
fn a_seed_reproduces_the_same_traffic() {
    let (mut a, mut b, mut c) = (model(7, 50), model(7, 50), model(8, 50));
    assert_eq!(a.tenants(), b.tenants());
    let events = live(&mut a, 3000);
    assert_eq!(events, live(&mut b, 3000));
    assert_ne!(events, live(&mut c, 3000));
    assert_eq!(
        a.history(3, 500, NOW - 3_600_000, NOW),
        b.history(3, 500, NOW - 3_600_000, NOW)
    );
}

#[test]
fn tenant_volumes_are_zipf_skewed() {
    let mut m = model(1, 200);
    let weights: f64 = m.tenants().iter().map(|t| t.weight).sum();
    assert!((weights - 1.0).abs() < 1e-9);
    let mut counts = vec![0u64; 200];
    for (tenant, _) in live(&mut m, 100_000) {
        counts[tenant] += 1;
    }
    let top = counts[0] as f64 / 100_000.0;
    assert!((top - m.tenants()[0].weight).abs() < 0.01, "{top}");
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    let median = sorted[100].max(1);
    assert!(counts[0] > 50 * median, "top {} median {median}", counts[0]);
    assert_eq!(m.tenants()[42].id, "t00042");
}

#[test]
fn tenants_cover_every_time_zone() {
    let m = model(3, 16);
    let zones: HashSet<&str> = m.tenants().iter().map(|t| t.time_zone.as_str()).collect();
    assert_eq!(zones.len(), TIME_ZONES.len());
    for zone in zones {
        assert!(jiff::tz::TimeZone::get(zone).is_ok(), "{zone}");
    }
}

#[test]
fn events_pass_the_ingest_limits_and_ids_are_unique() {
    let mut m = model(11, 100);
    let mut ids = HashSet::new();
    for (tenant, event) in live(&mut m, 50_000) {
        assert_valid(&event);
        assert!(
            event
                .id
                .starts_with(&format!("{}-11-", m.tenants()[tenant].id))
        );
        assert!(ids.insert(event.id));
    }
    for event in m.history(0, 5000, NOW - 86_400_000, NOW) {
        assert_valid(&event);
        assert!(ids.insert(event.id));
    }
}

#[test]
fn traffic_looks_like_real_traffic() {
    let mut m = model(5, 20);
    let events = live(&mut m, 100_000);
    let count = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|(_, e)| f(e)).count();
    let pageviews = count(&|e| e.name == "pageview");
    assert!(pageviews > 80_000 && pageviews < 95_000, "{pageviews}");
    for name in [
        "Signup",
        "Purchase",
        "Outbound Link: Click",
        "File Download",
    ] {
        assert!(count(&|e| e.name == name) > 100, "{name}");
    }
    assert!(count(&|e| e.revenue.is_some()) == count(&|e| e.name == "Purchase"));
    let bots = count(&|e| e.user_agent.contains("bot") || e.user_agent.starts_with("curl"));
    assert!((500..5000).contains(&bots), "{bots}");
    assert!(count(&|e| e.referrer.contains("google.com")) > 5000);
    assert!(count(&|e| e.referrer.contains("news.ycombinator.com")) > 500);
    assert!(count(&|e| e.url.contains("utm_campaign=")) > 1000);
    assert!(count(&|e| e.client_ip.contains(':')) > 5000);
    assert!(count(&|e| e.url.contains("/products/")) > 1000);
}

#[test]
fn visitors_return_with_a_stable_identity() {
    let mut m = model(9, 10);
    let mut per_ip: HashMap<String, (HashSet<String>, u32)> = HashMap::new();
    let mut total = 0;
    for (_, event) in live(&mut m, 50_000).into_iter().filter(|(t, _)| *t == 0) {
        let entry = per_ip.entry(event.client_ip).or_default();
        entry.0.insert(event.user_agent);
        entry.1 += 1;
        total += 1;
    }
    let conflicts = per_ip.values().filter(|(uas, _)| uas.len() > 1).count();
    assert!(
        conflicts * 100 <= per_ip.len(),
        "{conflicts} of {}",
        per_ip.len()
    );
    assert!(
        per_ip.len() * 3 < total,
        "{} visitors for {total} events",
        per_ip.len()
    );
    assert!(per_ip.values().any(|(_, n)| *n > 30));
}

#[test]
fn history_is_sorted_complete_and_within_bounds() {
    let mut m = model(2, 30);
    let (start, end) = (NOW - 48 * 3_600_000, NOW - 600_000);
    for tenant in [0, 7, 29] {
        let events = m.history(tenant, 2000, start, end);
        assert_eq!(events.len(), 2000);
        let times: Vec<i64> = events.iter().filter_map(timestamp_ms).collect();
        assert_eq!(times.len(), 2000);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times.iter().all(|t| (start..end).contains(t)));
    }
    assert!(m.history(30, 10, start, end).is_empty());
    let flat = m.history(1, 5, NOW, NOW);
    assert!(flat.iter().all(|e| timestamp_ms(e) == Some(NOW)));
}

#[test]
fn history_follows_the_local_day() {
    let mut m = model(4, 8);
    let tenant = m
        .tenants()
        .iter()
        .position(|t| t.time_zone == "Asia/Tokyo")
        .unwrap_or(0);
    let offset = utc_offset_ms(&m.tenants()[tenant].time_zone, NOW);
    let mut hours = [0u32; 24];
    for event in m.history(tenant, 20_000, NOW - 7 * 86_400_000, NOW) {
        let ms = timestamp_ms(&event).unwrap_or(0);
        hours[((ms + offset).rem_euclid(86_400_000) / 3_600_000) as usize] += 1;
    }
    assert!(hours[14] > 3 * hours[3], "{hours:?}");
}

#[test]
fn a_million_events_are_generated_quickly() {
    let mut m = model(1, 1000);
    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..1_000_000 {
        let (_, event) = m.next_event(NOW + i);
        bytes += event.url.len();
    }
    let elapsed = started.elapsed();
    assert!(bytes > 0);
    // Generous: tests run unoptimised and in parallel with other tests.
    assert!(elapsed.as_secs_f64() < 20.0, "{elapsed:?}");
    println!("1M events in {elapsed:?}");
}
