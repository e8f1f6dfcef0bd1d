use beacon_proto::insights::v1::{
    Comparison, Condition, DateRange, Filter, Filters, Operator, OrderBy, ReportDimension, filter,
};
use tonic::Code;

use super::*;

fn range(start: &str, end: &str) -> Option<DateRange> {
    Some(DateRange {
        start_date: start.into(),
        end_date: end.into(),
    })
}

fn by(dimension: Dimension) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Dimension(dimension as i32)),
    }
}

fn over(interval: Interval) -> ReportDimension {
    ReportDimension {
        kind: Some(report_dimension::Kind::Time(interval as i32)),
    }
}

fn condition(dimension: Dimension, operator: Operator, value: &str) -> Filter {
    Filter {
        kind: Some(filter::Kind::Condition(Condition {
            dimension: dimension as i32,
            operator: operator as i32,
            values: vec![value.into()],
            ignore_case: false,
            property: String::new(),
        })),
    }
}

fn request() -> RunReportRequest {
    RunReportRequest {
        date_range: range("2026-03-01", "2026-03-31"),
        ..Default::default()
    }
}

fn refused(req: RunReportRequest) -> (Code, String) {
    let status = tonic::Status::from(Plan::parse(&req).expect_err("refused"));
    (status.code(), status.message().to_owned())
}

#[test]
fn defaults_and_rows() {
    let plan = Plan::parse(&request()).expect("plan");
    assert_eq!(plan.metrics.len(), 7);
    assert_eq!((plan.offset, plan.limit), (0, 1_000));
    assert_eq!(plan.rows().expect("rows"), 0);
    let plan = Plan::parse(&RunReportRequest {
        dimensions: vec![over(Interval::Week), by(Dimension::Source)],
        metrics: vec![Metric::Visits as i32],
        filter: Some(condition(Dimension::Source, Operator::Contains, "o")),
        ..request()
    })
    .expect("plan");
    assert_eq!(plan.rows().expect("rows"), Dimension::Source as i32);
    assert_eq!(
        plan.sort,
        [
            Sort {
                key: SortKey::Time,
                descending: false
            },
            Sort {
                key: SortKey::Metric(Metric::Visits),
                descending: true
            }
        ]
    );
    // A filter on a visit dimension without grouping reads that dimension's rows.
    let plan = Plan::parse(&RunReportRequest {
        filter: Some(condition(Dimension::Country, Operator::Is, "DE")),
        ..request()
    })
    .expect("plan");
    assert_eq!(plan.rows().expect("rows"), Dimension::Country as i32);
}

#[test]
fn comparison_ranges() {
    let previous = |mode: ComparisonMode| {
        Plan::parse(&RunReportRequest {
            comparison: Some(Comparison {
                mode: mode as i32,
                date_range: None,
            }),
            ..request()
        })
        .expect("plan")
        .comparison
        .map(|r| (r.start.to_string(), r.end.to_string()))
    };
    assert_eq!(
        previous(ComparisonMode::PreviousPeriod),
        Some(("2026-01-29".into(), "2026-02-28".into()))
    );
    // 364 days earlier: Sunday 2026-03-01 matches Sunday 2025-03-02.
    assert_eq!(
        previous(ComparisonMode::YearOverYear),
        Some(("2025-03-02".into(), "2025-04-01".into()))
    );
    assert_eq!(previous(ComparisonMode::Unspecified), None);
}

#[test]
fn invalid_requests_name_the_field() {
    let cases: Vec<(RunReportRequest, &str)> = vec![
        (
            RunReportRequest {
                limit: 10_001,
                ..request()
            },
            "limit 10001 is above the maximum of 10,000",
        ),
        (
            RunReportRequest {
                dimensions: vec![ReportDimension { kind: None }],
                ..request()
            },
            "dimensions[0] is empty",
        ),
        (
            RunReportRequest {
                dimensions: vec![by(Dimension::Page)],
                order_by: vec![OrderBy {
                    key: Some(order_by::Key::DimensionIndex(1)),
                    descending: false,
                }],
                ..request()
            },
            "order_by[0].dimension_index 1 is not below the 1 dimensions",
        ),
        (
            RunReportRequest {
                comparison: Some(Comparison {
                    mode: ComparisonMode::PreviousPeriod as i32,
                    date_range: range("2026-01-01", "2026-01-02"),
                }),
                ..request()
            },
            "comparison.date_range is only for COMPARISON_MODE_CUSTOM",
        ),
        (
            RunReportRequest {
                comparison: Some(Comparison {
                    mode: ComparisonMode::Custom as i32,
                    date_range: range("2026-01-05", "2026-01-02"),
                }),
                ..request()
            },
            "comparison.date_range.start_date 2026-01-05 is after comparison.date_range.end_date",
        ),
        (
            RunReportRequest {
                metrics: vec![99],
                ..request()
            },
            "metrics[0] = 99 is not a metric",
        ),
        (
            RunReportRequest {
                metrics: vec![Metric::ConversionRate as i32],
                dimensions: vec![by(Dimension::Source)],
                ..request()
            },
            "group by DIMENSION_GOAL to ask for it",
        ),
    ];
    for (req, want) in cases {
        let (code, msg) = refused(req);
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        assert!(msg.contains(want), "{msg} lacks {want}");
    }
}

#[test]
fn what_the_rollups_cannot_answer_scans_the_event_store() {
    let both = Filter {
        kind: Some(filter::Kind::AllOf(Filters {
            filters: vec![
                condition(Dimension::Country, Operator::Is, "DE"),
                condition(Dimension::Source, Operator::Is, "Google"),
            ],
        })),
    };
    let cases: Vec<(RunReportRequest, &str)> = vec![
        (
            RunReportRequest {
                dimensions: vec![by(Dimension::Page), by(Dimension::Country)],
                ..request()
            },
            "two dimensions",
        ),
        (
            RunReportRequest {
                dimensions: vec![by(Dimension::Page)],
                filter: Some(condition(Dimension::Country, Operator::Is, "DE")),
                ..request()
            },
            "filtering by DIMENSION_COUNTRY while grouping by DIMENSION_PAGE",
        ),
        (
            RunReportRequest {
                filter: Some(both),
                ..request()
            },
            "the filter reads DIMENSION_SOURCE and DIMENSION_COUNTRY",
        ),
        (
            RunReportRequest {
                dimensions: vec![over(Interval::Hour)],
                filter: Some(condition(Dimension::Country, Operator::Is, "DE")),
                ..request()
            },
            "hourly points are kept for unfiltered totals only",
        ),
        (
            RunReportRequest {
                filter: Some(condition(Dimension::Page, Operator::Is, "/")),
                ..request()
            },
            "visit metrics filtered by DIMENSION_PAGE",
        ),
        (
            RunReportRequest {
                filter: Some(condition(Dimension::UtmSource, Operator::IsNot, "x")),
                ..request()
            },
            "keeps visits or events without DIMENSION_UTM_SOURCE",
        ),
        (
            RunReportRequest {
                metrics: vec![Metric::Visitors as i32],
                filter: Some(condition(Dimension::Goal, Operator::Is, "Signup")),
                ..request()
            },
            "a filter on DIMENSION_GOAL without grouping by it",
        ),
    ];
    for (req, why) in cases {
        let plan = Plan::parse(&req).expect("plan");
        assert_eq!(plan.route().expect("route"), Route::Events, "{why}");
    }
    // Goal rows come from the rollups only.
    let (code, msg) = refused(RunReportRequest {
        dimensions: vec![by(Dimension::Goal), by(Dimension::Country)],
        ..request()
    });
    assert_eq!(code, Code::Unimplemented, "{msg}");
    assert!(msg.contains("goal rows are read from the rollups"), "{msg}");
    // A group conversion rate needs a goal the filter requires.
    let (code, msg) = refused(RunReportRequest {
        metrics: vec![Metric::GroupConversionRate as i32],
        dimensions: vec![by(Dimension::Source)],
        ..request()
    });
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(msg.contains("METRIC_GROUP_CONVERSION_RATE"), "{msg}");
    // Event metrics filtered by page are sums of page rows.
    let plan = Plan::parse(&RunReportRequest {
        metrics: vec![Metric::Visitors as i32, Metric::Pageviews as i32],
        filter: Some(condition(Dimension::Page, Operator::Is, "/")),
        ..request()
    })
    .expect("plan");
    assert_eq!(plan.rows().expect("rows"), Dimension::Page as i32);
}

#[test]
fn visitors_are_needed_when_asked_for_or_ordered_by() {
    let plan = |metrics: &[Metric], order: Option<Metric>| {
        Plan::parse(&RunReportRequest {
            metrics: metrics.iter().map(|m| *m as i32).collect(),
            order_by: order
                .map(|m| OrderBy {
                    key: Some(order_by::Key::Metric(m as i32)),
                    descending: true,
                })
                .into_iter()
                .collect(),
            ..request()
        })
        .expect("plan")
    };
    assert!(
        plan(&[], None).needs_visitors(),
        "every metric, visitors among them"
    );
    assert!(!plan(&[Metric::Events, Metric::Visits], None).needs_visitors());
    assert!(plan(&[Metric::Events, Metric::Percentage], None).needs_visitors());
    assert!(plan(&[Metric::Events], Some(Metric::Visitors)).needs_visitors());
    assert!(!plan(&[Metric::Events], Some(Metric::Pageviews)).needs_visitors());
}
