//! The event store: one row per counted event (and engagement report), with its visit's
//! dimensions, in the `events` table of the shard, under generations like the rollups.

use ::duckdb::Appender;
use ::duckdb::types::ToSql;
use ::duckdb::types::Value;
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::EventRow;

use super::cell::Stamp;

/// The event store's column of each dimension it keeps; `None` for those it derives
/// (exit page), groups apart (goals, properties) or does not have.
pub fn column(dimension: Dimension) -> Option<&'static str> {
    if dimension == Dimension::EventName {
        return Some("name");
    }
    COLUMNS
        .iter()
        .find(|(d, _)| *d == dimension)
        .map(|(_, column)| *column)
}

/// The dimensions an `EventRow` may carry values of and their columns, in the table's column
/// order (the event name is a field of its own).
const COLUMNS: [(Dimension, &str); 17] = [
    (Dimension::Page, "page"),
    (Dimension::Hostname, "hostname"),
    (Dimension::EntryPage, "entry_page"),
    (Dimension::Source, "source"),
    (Dimension::Channel, "channel"),
    (Dimension::Referrer, "referrer"),
    (Dimension::Country, "country"),
    (Dimension::Region, "region"),
    (Dimension::City, "city"),
    (Dimension::Device, "device"),
    (Dimension::Browser, "browser"),
    (Dimension::Os, "os"),
    (Dimension::UtmSource, "utm_source"),
    (Dimension::UtmMedium, "utm_medium"),
    (Dimension::UtmCampaign, "utm_campaign"),
    (Dimension::UtmTerm, "utm_term"),
    (Dimension::UtmContent, "utm_content"),
];

/// Checks an event row's dimensions: known, stored ones, aligned with their values. Returns
/// what is wrong.
pub(crate) fn check(row: &EventRow) -> Result<(), String> {
    if row.dimensions.len() != row.values.len() {
        return Err(format!(
            "has {} dimensions but {} values",
            row.dimensions.len(),
            row.values.len()
        ));
    }
    for raw in &row.dimensions {
        let known = Dimension::try_from(*raw)
            .ok()
            .filter(|d| COLUMNS.iter().any(|(stored, _)| stored == d));
        if known.is_none() {
            return Err(format!("dimension {raw} is not one the event store keeps"));
        }
    }
    if let Some(bad) = row
        .properties
        .iter()
        .find(|p| beacon_core::property::split(p).is_none())
    {
        return Err(format!("property {bad:?} is not key\\u{{1f}}value"));
    }
    Ok(())
}

/// Appends one event row, its (local day, visit day) since 1970-01-01 given.
pub(crate) fn append(
    appender: &mut Appender<'_>,
    tenant: &str,
    stamp: Stamp,
    row: &EventRow,
    (day, visit_day): (i32, i32),
) -> ::duckdb::Result<()> {
    let value = |dimension: Dimension| {
        row.dimensions
            .iter()
            .position(|d| *d == dimension as i32)
            .map(|i| row.values[i].as_str())
    };
    let dimensions: Vec<Option<&str>> = COLUMNS.iter().map(|(d, _)| value(*d)).collect();
    let properties = if row.properties.is_empty() {
        Value::Null
    } else {
        Value::List(row.properties.iter().cloned().map(Value::Text).collect())
    };
    let (day, visit_day) = (Value::Date32(day), Value::Date32(visit_day));
    let engaged_ms = row
        .engaged_ms
        .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let mut columns: Vec<&dyn ToSql> = vec![
        &tenant,
        &stamp.gen_id,
        &stamp.version,
        &day,
        &row.hour_ms,
        &row.timestamp_ms,
        &row.visitor,
        &row.visit_visitor,
        &row.visit_start_ms,
        &row.visit_hour_ms,
        &visit_day,
        &row.name,
    ];
    columns.extend(dimensions.iter().map(|v| v as &dyn ToSql));
    columns.extend([
        &properties as &dyn ToSql,
        &row.revenue_micros,
        &row.scroll_depth,
        &engaged_ms,
        &row.non_interactive,
    ]);
    appender.append_row(columns.as_slice())
}
