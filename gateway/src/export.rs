//! CSV export of any report: `POST /api/report.csv` with the proto3 JSON form of a
//! `RunReportRequest` as its body, or `GET /api/report.csv?request=<the same JSON>` for a
//! download link; the read key in `Authorization: Bearer`, `X-Beacon-Key` or `?key=`. The
//! report runs through the public `InsightsService` like a gRPC call (same admission, routing
//! and deadline), so the export can never disagree with the API.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use beacon_core::MAX_BODY_BYTES;
use beacon_proto::insights::v1::insights_service_server::InsightsService;
use beacon_proto::insights::v1::{
    Metric, ReportDimension, RunReportRequest, RunReportResponse, report_dimension,
};
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpConnectInfo;

use crate::beacon::{Rejection, http_status, key_of, query_params};
use crate::proxy::InsightsProxy;

/// The export route.
pub fn router(insights: InsightsProxy) -> axum::Router {
    axum::Router::new()
        .route("/api/report.csv", get(export).post(export))
        .with_state(insights)
}

async fn export(State(insights): State<InsightsProxy>, request: Request) -> Response {
    match handle(&insights, request).await {
        Ok(csv) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"report.csv\"",
                ),
            ],
            csv,
        )
            .into_response(),
        Err((status, error)) => (status, error).into_response(),
    }
}

/// Reads the key and the report request, runs the report, and writes it as CSV.
async fn handle(insights: &InsightsProxy, request: Request) -> Result<String, Rejection> {
    let (parts, body) = request.into_parts();
    let metadata = tonic::metadata::MetadataMap::from_headers(parts.headers.clone());
    let key = key_of(&metadata, parts.uri.query(), "read")?;
    let params = query_params(parts.uri.query());
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg);
    let json = match params.get("request") {
        Some(json) => json.clone().into_bytes(),
        None => axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body: larger than the limit of {MAX_BODY_BYTES} bytes"),
                )
            })?
            .to_vec(),
    };
    let report: RunReportRequest = if json.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(
            "the report request is missing: send the JSON form of RunReportRequest as the body \
             or as ?request="
                .into(),
        ));
    } else {
        serde_json::from_slice(&json).map_err(|err| {
            bad(format!(
                "the report request is not a RunReportRequest: {err}"
            ))
        })?
    };
    let mut grpc = tonic::Request::new(report.clone());
    let auth = MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
        (
            StatusCode::UNAUTHORIZED,
            "the key has invalid characters".to_owned(),
        )
    })?;
    grpc.metadata_mut().insert("authorization", auth);
    for name in ["x-forwarded-for", "grpc-timeout"] {
        if let Some(value) = metadata.get(name) {
            grpc.metadata_mut().insert(name, value.clone());
        }
    }
    if let Some(info) = parts.extensions.get::<TcpConnectInfo>() {
        grpc.extensions_mut().insert(info.clone());
    }
    let reply = insights
        .run_report(grpc)
        .await
        .map_err(|status| (http_status(status.code()), status.message().to_owned()))?
        .into_inner();
    Ok(csv(&report, &reply))
}

/// The report as CSV: a header line, then one line per row; with a comparison, the compared
/// group's dimensions, its metrics and the changes follow.
pub fn csv(request: &RunReportRequest, reply: &RunReportResponse) -> String {
    // An empty list asks for the seven metrics of every group, in enum order.
    let asked: Vec<i32> = if request.metrics.is_empty() {
        (Metric::Visitors as i32..=Metric::ViewsPerVisit as i32).collect()
    } else {
        request.metrics.clone()
    };
    let mut metrics: Vec<String> = Vec::with_capacity(asked.len());
    for name in asked.into_iter().map(metric_name) {
        if !metrics.contains(&name) {
            metrics.push(name);
        }
    }
    let dimensions: Vec<String> = request.dimensions.iter().map(dimension_name).collect();
    let compared = reply.comparison_range.is_some();
    let mut header: Vec<String> = dimensions.clone();
    header.extend(metrics.iter().cloned());
    if compared {
        header.extend(dimensions.iter().map(|d| format!("comparison_{d}")));
        header.extend(metrics.iter().map(|m| format!("comparison_{m}")));
        header.extend(metrics.iter().map(|m| format!("change_{m}")));
    }
    let mut out = line(header.iter().map(String::as_str));
    for row in &reply.rows {
        let mut cells: Vec<String> = row.dimensions.clone();
        cells.extend(row.values.iter().map(|v| v.value.to_string()));
        if compared {
            cells.extend(row.comparison_dimensions.iter().cloned());
            cells.extend(row.comparison_values.iter().map(|v| v.value.to_string()));
            cells.extend(
                row.changes
                    .iter()
                    .map(|c| c.change.map(|x| x.to_string()).unwrap_or_default()),
            );
        }
        out.push_str(&line(cells.iter().map(String::as_str)));
    }
    out
}

/// One CSV line of `cells`, CRLF-terminated.
fn line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let mut out = cells.map(cell).collect::<Vec<_>>().join(",");
    out.push_str("\r\n");
    out
}

/// A CSV cell (RFC 4180), and safe to open in a spreadsheet: a value that would start a
/// formula (`=`, `+`, `-`, `@`, tab, carriage return) gets a leading `'`. Numbers are written
/// by Beacon and never need it.
fn cell(value: &str) -> String {
    let number = value.parse::<f64>().is_ok();
    let guarded = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') if !number => format!("'{value}"),
        _ => value.to_owned(),
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// A metric's column name: `visitors`, `bounce_rate`, ….
fn metric_name(raw: i32) -> String {
    Metric::try_from(raw)
        .map(|m| {
            m.as_str_name()
                .trim_start_matches("METRIC_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| raw.to_string())
}

/// A dimension's column name: `source`, `time_day`, `property_plan`, ….
fn dimension_name(dimension: &ReportDimension) -> String {
    match &dimension.kind {
        Some(report_dimension::Kind::Dimension(raw)) => {
            beacon_proto::insights::v1::Dimension::try_from(*raw)
                .map(|d| {
                    d.as_str_name()
                        .trim_start_matches("DIMENSION_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_else(|_| raw.to_string())
        }
        Some(report_dimension::Kind::Time(raw)) => {
            beacon_proto::insights::v1::Interval::try_from(*raw)
                .map(|i| {
                    format!(
                        "time_{}",
                        i.as_str_name()
                            .trim_start_matches("INTERVAL_")
                            .to_ascii_lowercase()
                    )
                })
                .unwrap_or_else(|_| raw.to_string())
        }
        Some(report_dimension::Kind::Property(key)) => format!("property_{key}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use beacon_proto::insights::v1::{DateRange, MetricChange, MetricValue, ReportRow};

    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_disarmed() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-12.5"), "-12.5");
        assert_eq!(cell("@evil"), "'@evil");
    }

    #[test]
    fn an_empty_report_has_every_column() {
        let request = RunReportRequest {
            dimensions: vec![ReportDimension {
                kind: Some(report_dimension::Kind::Time(2)),
            }],
            ..Default::default()
        };
        assert_eq!(
            csv(&request, &RunReportResponse::default()),
            "time_day,visitors,visits,pageviews,events,bounce_rate,visit_duration,\
             views_per_visit\r\n"
        );
    }

    #[test]
    fn comparison_columns_follow() {
        let request: RunReportRequest = serde_json::from_str(
            r#"{"dateRange":{"startDate":"2026-03-01","endDate":"2026-03-02"},
                "metrics":["METRIC_VISITS"],
                "dimensions":[{"dimension":"DIMENSION_SOURCE"}],
                "comparison":{"mode":"COMPARISON_MODE_PREVIOUS_PERIOD"}}"#,
        )
        .expect("proto3 JSON");
        let reply = RunReportResponse {
            rows: vec![ReportRow {
                dimensions: vec!["Google".into()],
                values: vec![MetricValue {
                    metric: Metric::Visits as i32,
                    value: 3.0,
                }],
                comparison_dimensions: vec!["Google".into()],
                comparison_values: vec![MetricValue {
                    metric: Metric::Visits as i32,
                    value: 0.0,
                }],
                changes: vec![MetricChange {
                    metric: Metric::Visits as i32,
                    change: None,
                }],
            }],
            comparison_range: Some(DateRange::default()),
            ..Default::default()
        };
        assert_eq!(
            csv(&request, &reply),
            "source,visits,comparison_source,comparison_visits,change_visits\r\n\
             Google,3,Google,0,\r\n"
        );
    }
}
