//! The event store: one row per counted event (and engagement report), with its visit's
//! dimensions, in the `events` table of the shard, under generations like the rollups.

use ::duckdb::types::Value;
use ::duckdb::{Appender, params};
use beacon_proto::insights::v1::Dimension;
use beacon_proto::pipeline::v1::EventRow;

use super::cell::Stamp;

/// The event store's column of each dimension it keeps; `None` for those it derives
/// (exit page), groups apart (goals, properties) or does not have.
pub fn column(dimension: Dimension) -> Option<&'static str> {
    Some(match dimension {
        Dimension::Page => "page",
        Dimension::EntryPage => "entry_page",
        Dimension::Source => "source",
        Dimension::Country => "country",
        Dimension::Device => "device",
        Dimension::Browser => "browser",
        Dimension::Os => "os",
        Dimension::Channel => "channel",
        Dimension::UtmSource => "utm_source",
        Dimension::UtmMedium => "utm_medium",
        Dimension::UtmCampaign => "utm_campaign",
        Dimension::EventName => "name",
        Dimension::Hostname => "hostname",
        Dimension::Region => "region",
        Dimension::City => "city",
        Dimension::Referrer => "referrer",
        Dimension::UtmTerm => "utm_term",
        Dimension::UtmContent => "utm_content",
        Dimension::Unspecified | Dimension::Goal | Dimension::Property | Dimension::ExitPage => {
            return None;
        }
    })
}

/// The dimensions an `EventRow` may carry values of, in the table's column order (the event
/// name is its own field).
const STORED: [Dimension; 17] = [
    Dimension::Page,
    Dimension::Hostname,
    Dimension::EntryPage,
    Dimension::Source,
    Dimension::Channel,
    Dimension::Referrer,
    Dimension::Country,
    Dimension::Region,
    Dimension::City,
    Dimension::Device,
    Dimension::Browser,
    Dimension::Os,
    Dimension::UtmSource,
    Dimension::UtmMedium,
    Dimension::UtmCampaign,
    Dimension::UtmTerm,
    Dimension::UtmContent,
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
            .filter(|d| STORED.contains(d));
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
    let [
        page,
        hostname,
        entry,
        source,
        channel,
        referrer,
        country,
        region,
        city,
        device,
        browser,
        os,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
    ] = STORED.map(value);
    let properties = if row.properties.is_empty() {
        Value::Null
    } else {
        Value::List(row.properties.iter().cloned().map(Value::Text).collect())
    };
    appender.append_row(params![
        tenant,
        stamp.gen_id,
        stamp.version,
        Value::Date32(day),
        row.hour_ms,
        row.timestamp_ms,
        row.visitor,
        row.visit_visitor,
        row.visit_start_ms,
        row.visit_hour_ms,
        Value::Date32(visit_day),
        row.name,
        page,
        hostname,
        entry,
        source,
        channel,
        referrer,
        country,
        region,
        city,
        device,
        browser,
        os,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        properties,
        row.revenue_micros,
        row.scroll_depth,
        row.engaged_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)),
    ])
}
