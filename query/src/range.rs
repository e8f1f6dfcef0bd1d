//! Request validation of date ranges and limits, and the days and local hours of a range.

use beacon_proto::insights::v1::DateRange;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::QueryError;
use crate::shard::Time;

/// Longest date range a request may ask for, in days (both ends included).
pub const MAX_DAYS: i64 = 1_100;
/// Breakdown rows returned when the request's limit is 0.
pub const DEFAULT_LIMIT: u32 = 10;
/// Most breakdown rows a request may ask for.
pub const MAX_LIMIT: u32 = 1_000;

const HOUR_MS: i64 = 3_600_000;
const EPOCH: Date = Date::constant(1970, 1, 1);

/// A validated, inclusive range of local calendar dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First day.
    pub start: Date,
    /// Last day, inclusive.
    pub end: Date,
}

/// Validates a request's date range: required, "YYYY-MM-DD" dates, start <= end, at most
/// [`MAX_DAYS`] days.
pub fn parse(range: Option<&DateRange>) -> Result<Range, QueryError> {
    parse_field(range, "date_range")
}

/// [`parse`], naming the range `field` in errors.
pub fn parse_field(range: Option<&DateRange>, field: &str) -> Result<Range, QueryError> {
    let range = range.ok_or_else(|| QueryError::invalid(format!("{field} is required")))?;
    let start = parse_date(&format!("{field}.start_date"), &range.start_date)?;
    let end = parse_date(&format!("{field}.end_date"), &range.end_date)?;
    if start > end {
        return Err(QueryError::invalid(format!(
            "{field}.start_date {start} is after {field}.end_date {end}"
        )));
    }
    let days = end.duration_since(start).as_secs() / 86_400 + 1;
    if days > MAX_DAYS {
        return Err(QueryError::invalid(format!(
            "{field} spans {days} days; at most 1,100 days are allowed"
        )));
    }
    Ok(Range { start, end })
}

fn parse_date(field: &str, text: &str) -> Result<Date, QueryError> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    let invalid = |why: String| {
        QueryError::invalid(format!(
            "{field} {text:?} is not a date in YYYY-MM-DD form{why}"
        ))
    };
    if !shaped {
        return Err(invalid(String::new()));
    }
    text.parse::<Date>()
        .map_err(|err| invalid(format!(": {err}")))
}

/// The breakdown row limit: 0 means [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`].
pub fn limit(limit: u32) -> Result<u32, QueryError> {
    match limit {
        0 => Ok(DEFAULT_LIMIT),
        1..=MAX_LIMIT => Ok(limit),
        _ => Err(QueryError::invalid(format!(
            "limit {limit} is above the maximum of 1,000"
        ))),
    }
}

/// Days since 1970-01-01 of `date`.
pub fn epoch_day(date: Date) -> i64 {
    date.since(EPOCH)
        .map_or(0, |span| i64::from(span.get_days()))
}

/// The date `days` after 1970-01-01.
pub fn from_epoch_day(days: i64) -> Date {
    EPOCH
        .checked_add(jiff::Span::new().days(days))
        .unwrap_or(EPOCH)
}

impl Range {
    /// Days in the range, both ends included.
    pub fn days(&self) -> i64 {
        epoch_day(self.end) - epoch_day(self.start) + 1
    }

    /// The range moved by `days` (negative: earlier).
    pub fn shifted(&self, days: i64) -> Self {
        Self {
            start: from_epoch_day(epoch_day(self.start) + days),
            end: from_epoch_day(epoch_day(self.end) + days),
        }
    }
}

/// Every day of the range, in order.
pub fn days(range: &Range) -> Result<Vec<Date>, QueryError> {
    let mut out = Vec::new();
    let mut day = range.start;
    while day <= range.end {
        out.push(day);
        day = day.tomorrow().map_err(|err| {
            QueryError::invalid(format!("date_range.end_date {}: {err}", range.end))
        })?;
    }
    Ok(out)
}

/// The time points of the range in `tz`, in order: each point's group time (as
/// [`crate::metrics::Sums::time`]) and label ("YYYY-MM-DDTHH:00" for hours, else its first
/// date). Weeks start on Monday and months on the 1st, the first cut to the range's start.
pub fn points(range: &Range, time: Time, tz: &TimeZone) -> Result<Vec<(i64, String)>, QueryError> {
    if time == Time::Hour {
        return Ok(hours(range, tz)?
            .into_iter()
            .map(|h| (h.hour_ms, h.label))
            .collect());
    }
    let starts = |day: &Date| match time {
        Time::Hour | Time::Day => true,
        Time::Week => day.weekday() == jiff::civil::Weekday::Monday,
        Time::Month => day.day() == 1,
    };
    Ok(days(range)?
        .into_iter()
        .filter(|day| *day == range.start || starts(day))
        .map(|day| (epoch_day(day), day.to_string()))
        .collect())
}

/// One local hour of a range: the UTC instant of its start and its "YYYY-MM-DDTHH:00" label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hour {
    /// Bucket start, Unix milliseconds (the key rollups use).
    pub hour_ms: i64,
    /// Local start of the hour.
    pub label: String,
}

/// Every local hour bucket of the range in `tz`, in time order: 24 per day, 23 or 25 on DST
/// days, starting at local hour boundaries (":30 UTC" for a UTC+5:30 zone).
pub fn hours(range: &Range, tz: &TimeZone) -> Result<Vec<Hour>, QueryError> {
    let mut out = Vec::new();
    for day in days(range)? {
        day_hours(day, tz, &mut out)?;
    }
    Ok(out)
}

fn day_hours(day: Date, tz: &TimeZone, out: &mut Vec<Hour>) -> Result<(), QueryError> {
    let midnight = day.to_zoned_datetime(tz.clone()).map_err(|err| {
        QueryError::invalid(format!("day {day} in the tenant's time zone: {err}"))
    })?;
    let (mut hour_ms, mut date) =
        beacon_core::time::hour_bucket(midnight.timestamp().as_millisecond(), tz)?;
    let want = day.to_string();
    // A local day has at most 25 hour buckets; the bound only guards against a broken zone.
    for _ in 0..26 {
        if date != want {
            break;
        }
        out.push(Hour {
            hour_ms,
            label: label(hour_ms, tz)?,
        });
        let (next_ms, next_date) = beacon_core::time::hour_bucket(hour_ms + HOUR_MS, tz)?;
        // Truncation may land on an earlier boundary after a 30-minute shift; step past it.
        (hour_ms, date) = if next_ms > hour_ms {
            (next_ms, next_date)
        } else {
            beacon_core::time::hour_bucket(hour_ms + 2 * HOUR_MS, tz)?
        };
    }
    Ok(())
}

fn label(hour_ms: i64, tz: &TimeZone) -> Result<String, QueryError> {
    let ts = jiff::Timestamp::from_millisecond(hour_ms)
        .map_err(|err| QueryError::invalid(format!("hour {hour_ms} ms: {err}")))?;
    Ok(ts
        .to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%dT%H:00")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> DateRange {
        DateRange {
            start_date: start.into(),
            end_date: end.into(),
        }
    }

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>()
            .expect("timestamp")
            .as_millisecond()
    }

    fn tz(name: &str) -> TimeZone {
        beacon_core::time::time_zone(name).expect("time zone")
    }

    fn err(result: Result<Range, QueryError>) -> String {
        result.expect_err("invalid").to_string()
    }

    #[test]
    fn validates_dates_naming_the_field() {
        assert!(err(parse(None)).contains("date_range is required"));
        let msg = err(parse(Some(&range("2026-13-01", "2026-12-31"))));
        assert!(
            msg.contains("date_range.start_date \"2026-13-01\""),
            "{msg}"
        );
        let msg = err(parse(Some(&range("2026-01-01", "2026/01/02"))));
        assert!(
            msg.contains("date_range.end_date \"2026/01/02\" is not a date in YYYY-MM-DD form"),
            "{msg}"
        );
        let msg = err(parse(Some(&range("2026-01-02", "2026-01-01"))));
        assert!(
            msg.contains("start_date 2026-01-02 is after date_range.end_date 2026-01-01"),
            "{msg}"
        );
    }

    #[test]
    fn limits_the_span() {
        // 2024 is a leap year: 2024-01-01 ..= 2027-01-04 is 366 + 365 + 365 + 4 = 1,100 days.
        assert!(parse(Some(&range("2024-01-01", "2027-01-04"))).is_ok());
        let msg = err(parse(Some(&range("2024-01-01", "2027-01-05"))));
        assert!(
            msg.contains("date_range spans 1101 days; at most 1,100"),
            "{msg}"
        );
    }

    #[test]
    fn limit_defaults_and_caps() {
        assert_eq!(limit(0).expect("default"), 10);
        assert_eq!(limit(1_000).expect("max"), 1_000);
        let msg = limit(1_001).expect_err("too many").to_string();
        assert!(
            msg.contains("limit 1001 is above the maximum of 1,000"),
            "{msg}"
        );
    }

    #[test]
    fn enumerates_days() {
        let r = parse(Some(&range("2026-02-27", "2026-03-02"))).expect("range");
        let got: Vec<String> = days(&r)
            .expect("days")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
        );
    }

    #[test]
    fn half_hour_zone_hours_start_at_half_past_utc() {
        let r = parse(Some(&range("2026-03-02", "2026-03-02"))).expect("range");
        let hours = hours(&r, &tz("Asia/Kolkata")).expect("hours");
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[0].hour_ms, ms("2026-03-01T18:30:00Z"));
        assert_eq!(hours[0].label, "2026-03-02T00:00");
        assert_eq!(hours[23].label, "2026-03-02T23:00");
        assert_eq!(hours[23].hour_ms, ms("2026-03-02T17:30:00Z"));
    }

    #[test]
    fn dst_days_have_25_and_23_hours() {
        let ny = tz("America/New_York");
        let fall = parse(Some(&range("2026-11-01", "2026-11-01"))).expect("range");
        let hours_fall = hours(&fall, &ny).expect("hours");
        assert_eq!(hours_fall.len(), 25);
        assert_eq!(hours_fall[1].label, "2026-11-01T01:00");
        assert_eq!(hours_fall[2].label, "2026-11-01T01:00");
        assert_eq!(hours_fall[2].hour_ms - hours_fall[1].hour_ms, HOUR_MS);
        let spring = parse(Some(&range("2026-03-08", "2026-03-08"))).expect("range");
        let hours_spring = hours(&spring, &ny).expect("hours");
        assert_eq!(hours_spring.len(), 23);
        assert_eq!(hours_spring[2].label, "2026-03-08T03:00");
    }

    #[test]
    fn consecutive_days_tile_time() {
        let r = parse(Some(&range("2026-10-31", "2026-11-02"))).expect("range");
        let hours = hours(&r, &tz("America/New_York")).expect("hours");
        assert_eq!(hours.len(), 24 + 25 + 24);
        assert!(
            hours
                .windows(2)
                .all(|w| w[1].hour_ms - w[0].hour_ms == HOUR_MS)
        );
    }
}
