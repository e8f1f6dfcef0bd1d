use beacon_proto::insights::v1::{
    Comparison, ComparisonMode, Condition, DateRange, Dimension, Filter, Filters, Interval,
    Operator, OrderBy, ReportDimension, RunReportRequest, filter, order_by, report_dimension,
};

use super::*;
use crate::testing::{Fixture, apply, fixture, hit, rollup};

fn tenant() -> Tenant {
    Tenant {
        id: "acme".into(),
        name: "acme".into(),
        time_zone: "UTC".into(),
        raw_retention_days: 0,
        goals: Vec::new(),
        currency: String::new(),
        domains: Vec::new(),
        site_key: String::new(),
    }
}

fn range(start: &str, end: &str) -> Option<DateRange> {
    Some(DateRange {
        start_date: start.into(),
        end_date: end.into(),
    })
}

fn over(interval: Interval) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Time(interval as i32)),
    }
}

fn by(dimension: Dimension) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Dimension(dimension as i32)),
    }
}

fn condition(operator: Operator, values: &[&str], ignore_case: bool) -> Filter {
    Filter {
        kind: Some(filter::Kind::Condition(Condition {
            dimension: Dimension::Source as i32,
            operator: operator as i32,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            ignore_case,
            property: String::new(),
        })),
    }
}

/// One visit per (instant, source), each by its own visitor, with its totals row.
async fn visits(f: &Fixture, seq: u64, at: &[(&str, &str)]) {
    let rows = at
        .iter()
        .enumerate()
        .flat_map(|(i, (at, source))| {
            let visitor = seq * 1_000 + i as u64;
            [
                hit(at, "UTC", Dimension::Unspecified, "", visitor),
                hit(at, "UTC", Dimension::Source, source, visitor),
            ]
        })
        .collect();
    apply(&f.store, seq, vec![rollup("acme", rows)]).await;
}

async fn report(f: &Fixture, req: RunReportRequest) -> RunReportResponse {
    f.insights.report(&tenant(), req).await.expect("report")
}

fn table(response: &RunReportResponse) -> Vec<(Vec<&str>, Vec<f64>)> {
    response
        .rows
        .iter()
        .map(|row| {
            (
                row.dimensions.iter().map(String::as_str).collect(),
                row.values.iter().map(|v| v.value).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn weeks_start_on_monday_and_months_on_the_first() {
    let f = fixture("weeks");
    visits(
        &f,
        1,
        &[
            ("2026-03-04T10:00:00Z", "Google"),
            ("2026-03-09T10:00:00Z", "Google"),
            ("2026-03-31T23:59:00Z", "Bing"),
            ("2026-04-02T00:01:00Z", "Google"),
        ],
    )
    .await;
    let series = |interval| RunReportRequest {
        date_range: range("2026-03-04", "2026-04-05"),
        metrics: vec![Metric::Visits as i32],
        dimensions: vec![over(interval)],
        ..Default::default()
    };
    let weeks = report(&f, series(Interval::Week)).await;
    assert_eq!(
        table(&weeks),
        [
            (vec!["2026-03-04"], vec![1.0]),
            (vec!["2026-03-09"], vec![1.0]),
            (vec!["2026-03-16"], vec![0.0]),
            (vec!["2026-03-23"], vec![0.0]),
            (vec!["2026-03-30"], vec![2.0]),
        ]
    );
    assert_eq!(weeks.total_rows, 5);
    assert_eq!(weeks.source, ReportSource::Rollups as i32);
    let months = report(&f, series(Interval::Month)).await;
    assert_eq!(
        table(&months),
        [
            (vec!["2026-03-04"], vec![3.0]),
            (vec!["2026-04-01"], vec![1.0])
        ]
    );
    // Month by source, newest month first.
    let req = RunReportRequest {
        dimensions: vec![over(Interval::Month), by(Dimension::Source)],
        order_by: vec![
            OrderBy {
                key: Some(order_by::Key::DimensionIndex(0)),
                descending: true,
            },
            OrderBy {
                key: Some(order_by::Key::DimensionIndex(1)),
                descending: false,
            },
        ],
        ..series(Interval::Month)
    };
    assert_eq!(
        table(&report(&f, req).await),
        [
            (vec!["2026-04-01", "Google"], vec![1.0]),
            (vec!["2026-03-04", "Bing"], vec![1.0]),
            (vec!["2026-03-04", "Google"], vec![2.0]),
        ]
    );
}

#[tokio::test]
async fn filters_order_and_pages() {
    let f = fixture("pages");
    let mut at = Vec::new();
    for (source, n) in [
        ("Google", 3),
        ("Bing", 2),
        ("Direct", 1),
        ("Hacker News", 4),
    ] {
        at.extend((0..n).map(|_| ("2026-03-02T10:00:00Z", source)));
    }
    visits(&f, 1, &at).await;
    // Shares of the day's visitors, the largest first: sorted after they are known.
    let shares = report(
        &f,
        RunReportRequest {
            date_range: range("2026-03-02", "2026-03-02"),
            metrics: vec![Metric::Percentage as i32],
            dimensions: vec![by(Dimension::Source)],
            limit: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        table(&shares),
        [
            (vec!["Hacker News"], vec![40.0]),
            (vec!["Google"], vec![30.0])
        ]
    );
    let any = Filter {
        kind: Some(filter::Kind::AnyOf(Filters {
            filters: vec![
                condition(Operator::Contains, &["OO"], true),
                condition(Operator::Is, &["Direct"], false),
            ],
        })),
    };
    let req = RunReportRequest {
        date_range: range("2026-03-02", "2026-03-02"),
        metrics: vec![Metric::Visitors as i32, Metric::Visits as i32],
        dimensions: vec![by(Dimension::Source)],
        filter: Some(any.clone()),
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    let page = report(&f, req.clone()).await;
    assert_eq!(page.total_rows, 2);
    assert_eq!(table(&page), [(vec!["Direct"], vec![1.0, 1.0])]);
    // Ordered by a counter: visitors are counted for the page's rows only, and still right.
    let by_visits = RunReportRequest {
        order_by: vec![OrderBy {
            key: Some(order_by::Key::Metric(Metric::Visits as i32)),
            descending: false,
        }],
        offset: 0,
        limit: 10,
        ..req.clone()
    };
    assert_eq!(
        table(&report(&f, by_visits).await),
        [
            (vec!["Direct"], vec![1.0, 1.0]),
            (vec!["Google"], vec![3.0, 3.0])
        ]
    );
    // The same filter without grouping: the visits of the kept sources.
    let totals = RunReportRequest {
        dimensions: vec![],
        limit: 0,
        offset: 0,
        ..req.clone()
    };
    assert_eq!(table(&report(&f, totals).await), [(vec![], vec![4.0, 4.0])]);
    let none = RunReportRequest {
        filter: Some(Filter {
            kind: Some(filter::Kind::NoneOf(Filters {
                filters: vec![any, condition(Operator::Matches, &["^Hack"], false)],
            })),
        }),
        limit: 0,
        offset: 0,
        ..req
    };
    assert_eq!(
        table(&report(&f, none).await),
        [(vec!["Bing"], vec![2.0, 2.0])]
    );
}

#[tokio::test]
async fn comparisons_match_places_and_values() {
    let f = fixture("compare");
    visits(
        &f,
        1,
        &[
            ("2026-03-01T10:00:00Z", "Google"),
            ("2026-03-04T10:00:00Z", "Google"),
            ("2026-03-08T10:00:00Z", "Google"),
            ("2026-03-08T11:00:00Z", "Bing"),
        ],
    )
    .await;
    let previous = Some(Comparison {
        mode: ComparisonMode::PreviousPeriod as i32,
        date_range: None,
    });
    let req = RunReportRequest {
        date_range: range("2026-03-05", "2026-03-08"),
        comparison: previous,
        metrics: vec![Metric::Visits as i32, Metric::BounceRate as i32],
        dimensions: vec![over(Interval::Day)],
        ..Default::default()
    };
    let series = report(&f, req.clone()).await;
    let range = series.comparison_range.clone().expect("comparison range");
    assert_eq!(
        (range.start_date.as_str(), range.end_date.as_str()),
        ("2026-03-01", "2026-03-04")
    );
    let last = series.rows.last().expect("row");
    assert_eq!(last.dimensions, ["2026-03-08"]);
    assert_eq!(last.comparison_dimensions, ["2026-03-04"]);
    assert_eq!(last.comparison_values[0].value, 1.0);
    assert_eq!(last.changes[0].change, Some(100.0));
    assert_eq!(last.changes[1].change, Some(0.0), "bounce rate: points");
    let first = &series.rows[0];
    assert_eq!(first.comparison_dimensions, ["2026-03-01"]);
    assert_eq!(first.changes[0].change, Some(-100.0));
    assert_eq!(series.rows[1].changes[0].change, None, "from nothing");

    let sources = RunReportRequest {
        dimensions: vec![by(Dimension::Source)],
        ..req
    };
    let rows = report(&f, sources).await.rows;
    let got: Vec<(&str, f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.dimensions[0].as_str(),
                r.values[0].value,
                r.comparison_values[0].value,
            )
        })
        .collect();
    assert_eq!(got, [("Bing", 1.0, 0.0), ("Google", 1.0, 2.0)]);
    assert_eq!(rows[1].changes[0].change, Some(-50.0));
}

#[tokio::test]
async fn a_month_is_compared_with_as_many_days() {
    let f = fixture("months");
    visits(
        &f,
        1,
        &[
            ("2026-01-28T10:00:00Z", "Google"),
            ("2026-01-29T10:00:00Z", "Google"),
            ("2026-02-28T10:00:00Z", "Bing"),
            ("2026-03-31T10:00:00Z", "Bing"),
        ],
    )
    .await;
    let req = RunReportRequest {
        date_range: range("2026-03-01", "2026-03-31"),
        comparison: Some(Comparison {
            mode: ComparisonMode::PreviousPeriod as i32,
            date_range: None,
        }),
        metrics: vec![Metric::Visits as i32],
        dimensions: vec![over(Interval::Month)],
        ..Default::default()
    };
    let reply = report(&f, req.clone()).await;
    let row = &reply.rows[0];
    assert_eq!(row.comparison_dimensions, ["2026-01-29"]);
    assert_eq!(
        row.comparison_values[0].value, 2.0,
        "January 29 to February 28"
    );
    assert_eq!(row.changes[0].change, Some(-50.0));
    // A custom range shorter than the report: the days it lacks compare with zeros.
    let custom = RunReportRequest {
        date_range: range("2026-03-30", "2026-03-31"),
        comparison: Some(Comparison {
            mode: ComparisonMode::Custom as i32,
            date_range: range("2026-02-28", "2026-02-28"),
        }),
        dimensions: vec![over(Interval::Day)],
        ..req
    };
    let rows = report(&f, custom).await.rows;
    assert_eq!(rows[0].comparison_dimensions, ["2026-02-28"]);
    assert_eq!(rows[0].comparison_values[0].value, 1.0);
    assert_eq!(rows[1].comparison_dimensions, [""]);
    assert_eq!(rows[1].comparison_values.len(), 1);
    assert_eq!(rows[1].comparison_values[0].value, 0.0);
}

/// An event of the event store: `visitor`'s event `name` on `page` at `at` (UTC), in the
/// visit that started at `visit`, from `country` and `source`.
fn stored(
    visitor: u64,
    (at, visit): (&str, &str),
    name: &str,
    page: &str,
    (country, source): (&str, &str),
) -> beacon_proto::pipeline::v1::EventRow {
    let ms = |text: &str| {
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", text)
            .expect("time")
            .in_tz("UTC")
            .expect("zoned")
            .timestamp()
            .as_millisecond()
    };
    let hour = |ms: i64| ms - ms.rem_euclid(3_600_000);
    let dims = [
        (Dimension::Page, page),
        (Dimension::Country, country),
        (Dimension::Source, source),
    ];
    beacon_proto::pipeline::v1::EventRow {
        timestamp_ms: ms(at),
        hour_ms: hour(ms(at)),
        local_date: at[..10].into(),
        visitor,
        visit_visitor: visitor,
        visit_start_ms: ms(visit),
        visit_hour_ms: hour(ms(visit)),
        visit_date: visit[..10].into(),
        name: name.into(),
        dimensions: dims.iter().map(|(d, _)| *d as i32).collect(),
        values: dims.iter().map(|(_, v)| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

fn is(dimension: Dimension, values: &[&str]) -> Filter {
    Filter {
        kind: Some(filter::Kind::Condition(Condition {
            dimension: dimension as i32,
            operator: Operator::Is as i32,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
            ignore_case: false,
            property: String::new(),
        })),
    }
}

#[tokio::test]
async fn reports_the_rollups_cannot_answer_scan_the_event_store() {
    let f = fixture("report-scan");
    let (de_google, de_direct, us) = (("DE", "Google"), ("DE", "Direct"), ("US", "Direct"));
    let one = "2026-03-01 10:00";
    let mut signup = stored(1, ("2026-03-01 10:06", one), "signup", "/b", de_google);
    signup.properties = vec!["plan\u{1f}pro".into()];
    let mut engaged = stored(1, ("2026-03-01 10:07", one), "engagement", "/b", de_google);
    (engaged.scroll_depth, engaged.engaged_ms) = (Some(80), Some(30_000));
    let two = "2026-03-01 11:00";
    let mut glance = stored(2, ("2026-03-01 11:01", two), "engagement", "/a", us);
    (glance.scroll_depth, glance.engaged_ms) = (Some(40), Some(10_000));
    let three = "2026-03-02 09:00";
    let events = vec![
        stored(1, (one, one), "pageview", "/a", de_google),
        stored(1, ("2026-03-01 10:05", one), "pageview", "/b", de_google),
        signup,
        engaged,
        stored(2, (two, two), "pageview", "/a", us),
        glance,
        stored(3, (three, three), "pageview", "/c", de_direct),
        stored(3, ("2026-03-02 09:10", three), "pageview", "/a", de_direct),
    ];
    let mut part = rollup("acme", Vec::new());
    part.events = events;
    apply(&f.store, 1, vec![part]).await;
    let metrics = |m: &[Metric]| m.iter().map(|m| *m as i32).collect::<Vec<_>>();
    let base = RunReportRequest {
        date_range: range("2026-03-01", "2026-03-02"),
        ..Default::default()
    };

    // Pages visited from Germany: a filter on another dimension than the grouped one.
    let reply = report(
        &f,
        RunReportRequest {
            metrics: metrics(&[Metric::Visitors, Metric::Pageviews, Metric::Visits]),
            dimensions: vec![by(Dimension::Page)],
            filter: Some(is(Dimension::Country, &["DE"])),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(reply.source, ReportSource::Events as i32);
    assert_eq!(
        reply.logic_versions.len(),
        1,
        "the version of the rows read"
    );
    assert_eq!(
        table(&reply),
        [
            (vec!["/a"], vec![2.0, 2.0, 2.0]),
            (vec!["/b"], vec![1.0, 1.0, 1.0]),
            (vec!["/c"], vec![1.0, 1.0, 1.0]),
        ]
    );

    // Two dimensions, with bounce rates (a visit of one event is a bounce).
    let reply = report(
        &f,
        RunReportRequest {
            metrics: metrics(&[Metric::Visitors, Metric::BounceRate]),
            dimensions: vec![by(Dimension::Country), by(Dimension::Source)],
            order_by: vec![OrderBy {
                key: Some(order_by::Key::DimensionIndex(1)),
                descending: true,
            }],
            ..base.clone()
        },
    )
    .await;
    assert_eq!(
        table(&reply),
        [
            (vec!["DE", "Google"], vec![1.0, 0.0]),
            (vec!["DE", "Direct"], vec![1.0, 0.0]),
            (vec!["US", "Direct"], vec![1.0, 100.0]),
        ]
    );

    // Exit pages: the last pageview of each visit.
    let reply = report(
        &f,
        RunReportRequest {
            metrics: metrics(&[Metric::Visits, Metric::Percentage]),
            dimensions: vec![by(Dimension::ExitPage)],
            ..base.clone()
        },
    )
    .await;
    assert_eq!(
        table(&reply),
        [
            (vec!["/a"], vec![2.0, 200.0 / 3.0]),
            (vec!["/b"], vec![1.0, 100.0 / 3.0]),
        ]
    );

    // Engagement: each visitor's deepest scroll and engaged time per page.
    let reply = report(
        &f,
        RunReportRequest {
            metrics: metrics(&[Metric::ScrollDepth, Metric::TimeOnPage, Metric::Events]),
            dimensions: vec![by(Dimension::Page)],
            order_by: vec![OrderBy {
                key: Some(order_by::Key::DimensionIndex(0)),
                descending: false,
            }],
            ..base.clone()
        },
    )
    .await;
    assert_eq!(
        table(&reply),
        [
            (vec!["/a"], vec![40.0, 10.0, 3.0]),
            (vec!["/b"], vec![80.0, 30.0, 2.0]),
            (vec!["/c"], vec![0.0, 0.0, 1.0]),
        ]
    );

    // Conversion per source: visitors who signed up over the source's visitors, by goal and
    // by property.
    let mut with_goal = tenant();
    with_goal.goals = vec![beacon_core::meta::Goal {
        name: "Signup".into(),
        kind: beacon_core::meta::GoalKind::EventName("signup".into()),
    }];
    let goal_filter = Filter {
        kind: Some(filter::Kind::AllOf(Filters {
            filters: vec![
                is(Dimension::Goal, &["Signup"]),
                Filter {
                    kind: Some(filter::Kind::Condition(Condition {
                        dimension: Dimension::Property as i32,
                        operator: Operator::Contains as i32,
                        values: vec!["PR".into()],
                        ignore_case: true,
                        property: "plan".into(),
                    })),
                },
            ],
        })),
    };
    let reply = f
        .insights
        .report(
            &with_goal,
            RunReportRequest {
                metrics: metrics(&[Metric::Visitors, Metric::GroupConversionRate]),
                dimensions: vec![by(Dimension::Source)],
                filter: Some(goal_filter),
                ..base.clone()
            },
        )
        .await
        .expect("group conversion");
    assert_eq!(table(&reply), [(vec!["Google"], vec![1.0, 100.0])]);

    // The same report one day later compares with the first day.
    let reply = report(
        &f,
        RunReportRequest {
            date_range: range("2026-03-02", "2026-03-02"),
            comparison: Some(Comparison {
                mode: ComparisonMode::PreviousPeriod as i32,
                date_range: None,
            }),
            metrics: metrics(&[Metric::Visitors]),
            dimensions: vec![by(Dimension::Page), over(Interval::Day)],
            filter: Some(is(Dimension::Country, &["DE"])),
            ..Default::default()
        },
    )
    .await;
    let compared: Vec<(&str, f64, f64)> = reply
        .rows
        .iter()
        .map(|r| {
            (
                r.dimensions[0].as_str(),
                r.values[0].value,
                r.comparison_values[0].value,
            )
        })
        .collect();
    assert_eq!(compared, [("/a", 1.0, 1.0), ("/c", 1.0, 0.0)]);
}
