//! Time helpers: tenant-local hour buckets.

use jiff::tz::TimeZone;
use jiff::{Timestamp, Unit, ZonedDateTime};

use crate::{Error, Result};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Parses a duration flag such as "60s", "2m 30s" or "PT1M" (for clap's `value_parser`).
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let signed: jiff::SignedDuration = text.parse().map_err(|err| {
        format!("{text:?} is not a duration such as \"60s\" or \"2m 30s\": {err}")
    })?;
    std::time::Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

/// Parses an IANA time zone name, naming it in the error.
pub fn time_zone(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).map_err(|err| {
        Error::InvalidArgument(format!(
            "time_zone {name:?} is not an IANA time zone: {err}"
        ))
    })
}

/// The tenant-local hour bucket of an instant: the UTC instant (Unix ms) of the local hour
/// boundary at or before it, and the local calendar date ("YYYY-MM-DD") of that hour.
///
/// Invariant: buckets start at local hour boundaries, so a UTC+5:30 tenant's buckets start at
/// :30 UTC, and a DST day has 23 or 25 buckets.
pub fn hour_bucket(timestamp_ms: i64, tz: &TimeZone) -> Result<(i64, String)> {
    let ts = Timestamp::from_millisecond(timestamp_ms)
        .map_err(|err| Error::InvalidArgument(format!("timestamp {timestamp_ms} ms: {err}")))?;
    let zoned: ZonedDateTime = ts.to_zoned_datetime(tz.clone());
    let hour = zoned
        .round(
            jiff::ZonedDateTimeRound::new()
                .smallest(Unit::Hour)
                .mode(jiff::RoundMode::Trunc),
        )
        .map_err(|err| Error::InvalidArgument(format!("timestamp {timestamp_ms} ms: {err}")))?;
    Ok((hour.timestamp().as_millisecond(), hour.date().to_string()))
}

/// The first local midnight at or after an instant (Unix ms), as a UTC instant: the start of
/// the next local date, or the instant itself when it is a midnight. Where a DST change skips
/// midnight, the day starts at the first local time that exists.
pub fn midnight_at_or_after(timestamp_ms: i64, tz: &TimeZone) -> Result<i64> {
    let invalid = |err: jiff::Error| {
        Error::InvalidArgument(format!("midnight after timestamp {timestamp_ms} ms: {err}"))
    };
    let before = Timestamp::from_millisecond(timestamp_ms.saturating_sub(1)).map_err(invalid)?;
    let date = before.to_zoned_datetime(tz.clone()).date();
    let midnight = date
        .tomorrow()
        .and_then(|next| next.to_zoned_datetime(tz.clone()))
        .map_err(invalid)?;
    Ok(midnight.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_friendly_and_iso_form() {
        use std::time::Duration;
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m 30s"), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("PT1M"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("timestamp").as_millisecond()
    }

    #[test]
    fn half_hour_zone_buckets_start_at_half_past() {
        let tz = time_zone("Asia/Kolkata").expect("tz");
        let (hour, date) = hour_bucket(ms("2026-03-01T18:45:00Z"), &tz).expect("bucket");
        assert_eq!(hour, ms("2026-03-01T18:30:00Z"));
        assert_eq!(date, "2026-03-02");
    }

    #[test]
    fn utc_buckets() {
        let tz = time_zone("UTC").expect("tz");
        let (hour, date) = hour_bucket(ms("2026-03-01T23:59:59Z"), &tz).expect("bucket");
        assert_eq!(hour, ms("2026-03-01T23:00:00Z"));
        assert_eq!(date, "2026-03-01");
    }

    #[test]
    fn dst_fall_back_has_two_one_oclock_buckets() {
        let tz = time_zone("America/New_York").expect("tz");
        let (a, _) = hour_bucket(ms("2026-11-01T05:10:00Z"), &tz).expect("bucket");
        let (b, _) = hour_bucket(ms("2026-11-01T06:10:00Z"), &tz).expect("bucket");
        assert_eq!(a, ms("2026-11-01T05:00:00Z"));
        assert_eq!(b, ms("2026-11-01T06:00:00Z"));
    }

    #[test]
    fn unknown_zone_is_named() {
        let err = time_zone("Mars/Olympus").expect_err("unknown");
        assert!(err.to_string().contains("Mars/Olympus"));
    }

    #[test]
    fn midnights_are_local_and_exist() {
        let sydney = time_zone("Australia/Sydney").expect("tz");
        // 10:00 local (UTC+11) on 1 March: the next midnight is 2 March 00:00 local.
        let next = midnight_at_or_after(ms("2026-02-28T23:00:00Z"), &sydney).expect("midnight");
        assert_eq!(next, ms("2026-03-01T13:00:00Z"));
        // A midnight is its own.
        assert_eq!(midnight_at_or_after(next, &sydney).expect("midnight"), next);
        assert_eq!(
            midnight_at_or_after(next + 1, &sydney).expect("midnight"),
            ms("2026-03-02T13:00:00Z")
        );
        // Santiago skips 00:00 when it moves to summer time (6 September 2026): that day
        // starts at 01:00 local, UTC-3.
        let santiago = time_zone("America/Santiago").expect("tz");
        let next = midnight_at_or_after(ms("2026-09-05T20:00:00Z"), &santiago).expect("midnight");
        assert_eq!(next, ms("2026-09-06T04:00:00Z"));
        let kathmandu = time_zone("Asia/Kathmandu").expect("tz");
        let next = midnight_at_or_after(ms("2026-03-01T12:00:00Z"), &kathmandu).expect("midnight");
        assert_eq!(next, ms("2026-03-01T18:15:00Z"));
    }
}
