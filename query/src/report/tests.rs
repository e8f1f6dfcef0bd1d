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
