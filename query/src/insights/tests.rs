use beacon_proto::insights::v1::{DateRange, Interval, Metric, MetricValue};
use beacon_proto::pipeline::v1::{RollupRow, TenantRollup};

use super::*;
use crate::shard::DuckShardStore;
use crate::testing::{apply, fixture, hit, rollup};

fn tenant(id: &str, tz: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: id.into(),
        time_zone: tz.into(),
        raw_retention_days: 0,
        goals: Vec::new(),
        currency: String::new(),
        domains: Vec::new(),
        site_key: String::new(),
    }
}

fn dates(start: &str, end: &str) -> Option<DateRange> {
    Some(DateRange {
        start_date: start.into(),
        end_date: end.into(),
    })
}

fn value(values: &[MetricValue], metric: Metric) -> f64 {
    values
        .iter()
        .find(|v| v.metric == metric as i32)
        .map(|v| v.value)
        .expect("metric present")
}

fn pageviews(point: &TimeseriesPoint) -> f64 {
    value(&point.values, Metric::Pageviews)
}

/// Applies totals-only visits of `tenant` at the instants `at`, one visitor each.
async fn visits(store: &DuckShardStore, seq: u64, tenant: &Tenant, at: &[&str]) {
    let hits = at
        .iter()
        .enumerate()
        .map(|(i, at)| {
            hit(
                at,
                &tenant.time_zone,
                Dimension::Unspecified,
                "",
                i as u64 + seq * 1000,
            )
        })
        .collect();
    apply(store, seq, vec![rollup(&tenant.id, hits)]).await;
}

#[tokio::test]
async fn half_hour_zone_days_and_hours() {
    let f = fixture("kolkata");
    let t = tenant("kolkata", "Asia/Kolkata");
    // 23:50 local on March 1st, and 00:15 local on March 2nd.
    visits(
        &f.store,
        1,
        &t,
        &["2026-03-01T18:20:00Z", "2026-03-01T18:45:00Z"],
    )
    .await;

    let req = GetTimeseriesRequest {
        date_range: dates("2026-03-01", "2026-03-02"),
        interval: Interval::Day as i32,
        metrics: vec![Metric::Pageviews as i32],
    };
    let days = f.insights.timeseries(&t, req).await.expect("days").points;
    let got: Vec<(&str, f64)> = days
        .iter()
        .map(|p| (p.label.as_str(), pageviews(p)))
        .collect();
    assert_eq!(got, [("2026-03-01", 1.0), ("2026-03-02", 1.0)]);

    let req = GetTimeseriesRequest {
        date_range: dates("2026-03-02", "2026-03-02"),
        interval: Interval::Hour as i32,
        metrics: vec![],
    };
    let hours = f.insights.timeseries(&t, req).await.expect("hours").points;
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[0].label, "2026-03-02T00:00");
    assert_eq!(pageviews(&hours[0]), 1.0);
    assert_eq!(hours[0].values.len(), 7);
    assert!(hours[1..].iter().all(|p| pageviews(p) == 0.0));

    let req = GetAggregateRequest {
        date_range: dates("2026-03-02", "2026-03-02"),
        metrics: vec![],
    };
    let totals = f.insights.aggregate(&t, req).await.expect("aggregate");
    let got: Vec<f64> = totals.values.iter().map(|v| v.value).collect();
    assert_eq!(got, [1.0, 1.0, 1.0, 1.0, 100.0, 0.0, 1.0]);
}

#[tokio::test]
async fn dst_fall_back_day_has_25_hours() {
    let f = fixture("newyork");
    let t = tenant("ny", "America/New_York");
    // 01:10 EDT and 01:10 EST: the same local hour twice.
    visits(
        &f.store,
        1,
        &t,
        &[
            "2026-11-01T05:10:00Z",
            "2026-11-01T06:10:00Z",
            "2026-11-01T06:20:00Z",
        ],
    )
    .await;
    let req = GetTimeseriesRequest {
        date_range: dates("2026-11-01", "2026-11-01"),
        interval: Interval::Hour as i32,
        metrics: vec![Metric::Pageviews as i32],
    };
    let hours = f.insights.timeseries(&t, req).await.expect("hours").points;
    assert_eq!(hours.len(), 25);
    assert_eq!(
        (hours[1].label.as_str(), pageviews(&hours[1])),
        ("2026-11-01T01:00", 1.0)
    );
    assert_eq!(
        (hours[2].label.as_str(), pageviews(&hours[2])),
        ("2026-11-01T01:00", 2.0)
    );
    assert_eq!(hours[24].label, "2026-11-01T23:00");
}

#[tokio::test]
async fn visitors_over_a_range_are_not_summed_per_hour() {
    let f = fixture("unique");
    let t = tenant("unique", "UTC");
    let hits = [
        "2026-03-01T10:00:00Z",
        "2026-03-01T11:00:00Z",
        "2026-03-02T12:00:00Z",
    ]
    .iter()
    .map(|at| hit(at, "UTC", Dimension::Unspecified, "", 42))
    .collect();
    apply(&f.store, 1, vec![rollup("unique", hits)]).await;
    let req = GetAggregateRequest {
        date_range: dates("2026-03-01", "2026-03-02"),
        metrics: vec![Metric::Visitors as i32, Metric::Visits as i32],
    };
    let totals = f.insights.aggregate(&t, req).await.expect("aggregate");
    assert_eq!(value(&totals.values, Metric::Visitors), 1.0);
    assert_eq!(value(&totals.values, Metric::Visits), 3.0);
}

#[tokio::test]
async fn tenant_without_shard_answers_zeros() {
    let f = fixture("empty");
    let t = tenant("newcomer", "Europe/Paris");
    let req = GetAggregateRequest {
        date_range: dates("2026-03-01", "2026-03-31"),
        metrics: vec![],
    };
    let totals = f.insights.aggregate(&t, req).await.expect("aggregate");
    assert_eq!(totals.values.len(), 7);
    assert!(totals.values.iter().all(|v| v.value == 0.0));
    let req = GetTimeseriesRequest {
        date_range: dates("2026-03-01", "2026-03-31"),
        interval: Interval::Unspecified as i32,
        metrics: vec![],
    };
    assert_eq!(
        f.insights
            .timeseries(&t, req)
            .await
            .expect("series")
            .points
            .len(),
        31
    );
    let req = GetBreakdownRequest {
        date_range: dates("2026-03-01", "2026-03-31"),
        dimension: Dimension::Page as i32,
        metrics: vec![],
        limit: 0,
    };
    assert!(
        f.insights
            .breakdown(&t, req)
            .await
            .expect("breakdown")
            .rows
            .is_empty()
    );
}

#[tokio::test]
async fn breakdown_orders_by_first_metric_then_value_and_limits() {
    let f = fixture("breakdown");
    let t = tenant("shop", "UTC");
    let at = "2026-03-01T10:00:00Z";
    let mut hits = Vec::new();
    for (page, visitors) in [("/a", 2u64), ("/z", 4), ("/m", 4), ("/q", 1)] {
        for v in 0..visitors {
            hits.push(hit(at, "UTC", Dimension::Page, page, v));
        }
    }
    // A repeat visitor on /q: more pageviews, not more visitors.
    for _ in 0..5 {
        hits.push(hit(at, "UTC", Dimension::Page, "/q", 0));
    }
    hits.push(hit(at, "UTC", Dimension::Country, "NZ", 9));
    apply(&f.store, 1, vec![rollup("shop", hits)]).await;

    let req = |metrics: Vec<i32>, limit| GetBreakdownRequest {
        date_range: dates("2026-03-01", "2026-03-01"),
        dimension: Dimension::Page as i32,
        metrics,
        limit,
    };
    let rows = f
        .insights
        .breakdown(&t, req(vec![], 3))
        .await
        .expect("breakdown")
        .rows;
    let got: Vec<(&str, f64)> = rows
        .iter()
        .map(|r| (r.value.as_str(), value(&r.values, Metric::Visitors)))
        .collect();
    assert_eq!(got, [("/m", 4.0), ("/z", 4.0), ("/a", 2.0)]);
    assert_eq!(rows[0].values.len(), 7);

    let rows = f
        .insights
        .breakdown(&t, req(vec![Metric::Pageviews as i32], 0))
        .await
        .expect("breakdown")
        .rows;
    let got: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(got, ["/q", "/m", "/z", "/a"]);
    assert_eq!(rows[0].values.len(), 1);
}

#[tokio::test]
async fn aggregate_reports_bot_events() {
    let f = fixture("bots");
    let t = tenant("bots", "UTC");
    let mut row = hit("2026-03-01T10:00:00Z", "UTC", Dimension::Unspecified, "", 1);
    row.bot_events = 6;
    apply(&f.store, 1, vec![rollup("bots", vec![row])]).await;
    let req = GetAggregateRequest {
        date_range: dates("2026-03-01", "2026-03-01"),
        metrics: vec![Metric::Events as i32],
    };
    let totals = f.insights.aggregate(&t, req).await.expect("aggregate");
    assert_eq!(totals.bot_events, 6);
    assert_eq!(
        totals.values,
        vec![MetricValue {
            metric: Metric::Events as i32,
            value: 1.0
        }]
    );
}

#[tokio::test]
async fn validation_names_field_and_limit() {
    let f = fixture("validation");
    let t = tenant("v", "UTC");
    let message = |err: QueryError| err.to_string();

    let err = f
        .insights
        .aggregate(&t, GetAggregateRequest::default())
        .await
        .expect_err("no range");
    assert!(message(err).contains("date_range is required"));

    let req = GetTimeseriesRequest {
        date_range: dates("2026-03-01", "2026-03-01"),
        interval: 9,
        metrics: vec![],
    };
    let err = f.insights.timeseries(&t, req).await.expect_err("interval");
    assert!(message(err).contains("interval 9"));

    let breakdown = |dimension, limit| GetBreakdownRequest {
        date_range: dates("2026-03-01", "2026-03-01"),
        dimension,
        metrics: vec![],
        limit,
    };
    let err = f
        .insights
        .breakdown(&t, breakdown(0, 10))
        .await
        .expect_err("dimension");
    assert!(message(err).contains("dimension 0 is not a dimension: use DIMENSION_PAGE (1)"));
    let err = f
        .insights
        .breakdown(&t, breakdown(77, 10))
        .await
        .expect_err("dimension");
    assert!(message(err).contains("dimension 77"));
    let err = f
        .insights
        .breakdown(&t, breakdown(1, 1_001))
        .await
        .expect_err("limit");
    assert!(message(err).contains("limit 1001 is above the maximum of 1,000"));

    let req = GetAggregateRequest {
        date_range: dates("2020-01-01", "2026-01-01"),
        metrics: vec![],
    };
    let err = f.insights.aggregate(&t, req).await.expect_err("span");
    assert!(message(err).contains("at most 1,100 days"));
}

/// 2026-03-02T10:30:20Z, the realtime tests' now.
fn realtime_now() -> i64 {
    1_772_447_420_000
}

fn minute_row(at: &str, dimension: Dimension, value: &str, visitor: u64) -> RollupRow {
    let ms = at
        .parse::<jiff::Timestamp>()
        .expect("instant")
        .as_millisecond();
    RollupRow {
        hour_ms: ms - ms.rem_euclid(60_000),
        dimension: dimension as i32,
        value: value.into(),
        pageviews: 1,
        events: 1,
        visitors: vec![visitor],
        ..RollupRow::default()
    }
}

#[tokio::test]
async fn realtime_counts_the_last_minutes() {
    let f = fixture("realtime");
    let t = tenant("live", "Asia/Kolkata");
    assert_eq!(
        jiff::Timestamp::from_millisecond(realtime_now())
            .expect("now")
            .to_string(),
        "2026-03-02T10:30:20Z"
    );
    let mut recent = Vec::new();
    for (at, visitor, page, source) in [
        ("2026-03-02T10:30:05Z", 1, "/a", "Google"),
        ("2026-03-02T10:27:00Z", 2, "/b", "Google"),
        ("2026-03-02T10:26:59Z", 3, "/b", "Direct / None"),
        ("2026-03-02T10:20:00Z", 4, "/c", "Bing"),
        ("2026-03-02T09:59:59Z", 5, "/old", "Bing"),
    ] {
        recent.push(minute_row(at, Dimension::Unspecified, "", visitor));
        recent.push(minute_row(at, Dimension::Page, page, visitor));
        recent.push(minute_row(at, Dimension::Source, source, visitor));
    }
    let part = TenantRollup {
        recent,
        ..rollup(&t.id, vec![])
    };
    apply(&f.store, 1, vec![part]).await;
    let insights = f.insights.clone().with_clock(realtime_now);
    let view = insights
        .realtime(&t, GetRealtimeRequest { limit: 2 })
        .await
        .expect("realtime");
    assert_eq!(view.current_visitors, 3, "visitors of 10:26 to 10:30");
    assert_eq!(view.minutes.len(), 30);
    // 10:30 UTC is 16:00 in Kolkata; the series starts at 10:01 UTC.
    let last = view.minutes.last().expect("minute");
    assert_eq!(
        (last.label.as_str(), last.visitors),
        ("2026-03-02T16:00", 1)
    );
    assert_eq!(view.minutes[0].label, "2026-03-02T15:31");
    let busy: Vec<(&str, u64)> = view
        .minutes
        .iter()
        .filter(|m| m.pageviews > 0)
        .map(|m| (m.label.as_str(), m.pageviews))
        .collect();
    assert_eq!(
        busy,
        [
            ("2026-03-02T15:50", 1),
            ("2026-03-02T15:56", 1),
            ("2026-03-02T15:57", 1),
            ("2026-03-02T16:00", 1)
        ]
    );
    let top = |rows: &[BreakdownRow]| -> Vec<(String, f64)> {
        rows.iter()
            .map(|r| (r.value.clone(), value(&r.values, Metric::Visitors)))
            .collect()
    };
    assert_eq!(
        top(&view.top_pages),
        [("/b".into(), 2.0), ("/a".into(), 1.0)]
    );
    assert_eq!(
        top(&view.top_sources),
        [("Google".into(), 2.0), ("Bing".into(), 1.0)]
    );
    let err = insights
        .realtime(&t, GetRealtimeRequest { limit: 101 })
        .await
        .expect_err("limit");
    assert!(
        err.to_string()
            .contains("limit 101 is above the maximum of 100"),
        "{err}"
    );
}
