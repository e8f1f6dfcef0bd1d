use beacon_proto::insights::v1::{DateRange, Interval, Metric, MetricValue};

use super::*;
use crate::shard::DuckShardStore;
use crate::testing::{TempDir, apply, hit, one_partition_store, rollup};

fn tenant(id: &str, tz: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: id.into(),
        time_zone: tz.into(),
        raw_retention_days: 0,
        goals: Vec::new(),
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

struct Fixture {
    _dir: TempDir,
    store: DuckShardStore,
    insights: Insights,
}

fn fixture(name: &str) -> Fixture {
    let dir = TempDir::new(name);
    let store = one_partition_store(&dir);
    let insights = Insights::new(Arc::new(store.clone()));
    Fixture {
        _dir: dir,
        store,
        insights,
    }
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
    assert!(message(err).contains("dimension is required"));
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
