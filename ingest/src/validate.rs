//! Input limits. Every rejection names the field and the limit.

use beacon_proto::ingest::v1::{Engagement, Event, prop_value};

pub use beacon_core::MAX_BODY_BYTES;
/// Most events in one call.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// The per-event limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest event id, characters.
    pub id: usize,
    /// Longest event name, characters.
    pub name: usize,
    /// Longest url, referrer, title or user agent, characters.
    pub text: usize,
    /// Most props per event.
    pub props: usize,
    /// Longest prop key, characters.
    pub prop_key: usize,
    /// Longest prop string value, characters.
    pub prop_value: usize,
    /// Oldest accepted timestamp, milliseconds before now.
    pub max_age_ms: i64,
    /// Oldest accepted timestamp of an imported event, milliseconds before now.
    pub max_import_age_ms: i64,
    /// Furthest accepted timestamp, milliseconds after now.
    pub max_future_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            id: 64,
            name: 120,
            text: 2000,
            props: 30,
            prop_key: 300,
            prop_value: 2000,
            max_age_ms: 72 * 3600 * 1000,
            max_import_age_ms: 3660 * 24 * 3600 * 1000,
            max_future_ms: 5 * 60 * 1000,
        }
    }
}

/// Checks the batch size.
pub fn check_batch(len: usize) -> Result<(), String> {
    if len == 0 {
        return Err("events: the batch is empty; send 1 to 1000 events".into());
    }
    if len > MAX_BATCH_EVENTS {
        return Err(format!(
            "events: {len} events in one call, the limit is {MAX_BATCH_EVENTS}"
        ));
    }
    Ok(())
}

/// How events arrive: live (`SendEvents`) or as history (`ImportEvents`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live traffic: timestamps at most 72 hours old, the time of receipt when absent.
    Live,
    /// Imported history: a timestamp is required and may be up to ten years old.
    Import,
}

impl Limits {
    /// Checks one event and returns its timestamp in Unix milliseconds (`now_ms` when absent).
    pub fn check(&self, event: &Event, now_ms: i64) -> Result<i64, String> {
        self.check_as(event, now_ms, Mode::Live)
    }

    /// Checks one event arriving as `mode` and returns its timestamp in Unix milliseconds.
    pub fn check_as(&self, event: &Event, now_ms: i64, mode: Mode) -> Result<i64, String> {
        self.check_text("id", &event.id, self.id)?;
        if event.name.trim().is_empty() {
            return Err(
                "name: required, 1 to 120 characters (\"pageview\" or a custom name)".into(),
            );
        }
        self.check_text("name", &event.name, self.name)?;
        self.check_url(&event.url)?;
        self.check_text("referrer", &event.referrer, self.text)?;
        self.check_text("title", &event.title, self.text)?;
        self.check_text("user_agent", &event.user_agent, self.text)?;
        self.check_text("client_ip", &event.client_ip, 64)?;
        self.check_text("visitor_id", &event.visitor_id, 256)?;
        self.check_props(event)?;
        if let Some(revenue) = &event.revenue {
            check_revenue(revenue.amount, &revenue.currency)?;
        }
        if let Some(engagement) = &event.engagement {
            check_engagement(&event.name, engagement)?;
        }
        self.check_timestamp(event, now_ms, mode)
    }

    fn check_text(&self, field: &str, value: &str, limit: usize) -> Result<(), String> {
        let chars = value.chars().count();
        if chars > limit {
            return Err(format!("{field}: {chars} characters, the limit is {limit}"));
        }
        Ok(())
    }

    fn check_url(&self, url: &str) -> Result<(), String> {
        if url.is_empty() {
            return Err("url: required, an absolute URL of at most 2000 characters".into());
        }
        self.check_text("url", url, self.text)?;
        url::Url::parse(url)
            .map(|_| ())
            .map_err(|err| format!("url: {url:?} is not an absolute URL ({err})"))
    }

    fn check_props(&self, event: &Event) -> Result<(), String> {
        if event.props.len() > self.props {
            return Err(format!(
                "props: {} properties, the limit is {}",
                event.props.len(),
                self.props
            ));
        }
        for (key, value) in &event.props {
            if key.is_empty() {
                return Err("props: empty property key".into());
            }
            self.check_text("props key", key, self.prop_key)?;
            if key.chars().any(char::is_control) {
                return Err(format!(
                    "props key {key:?}: control characters are not allowed"
                ));
            }
            match value.kind.as_ref() {
                Some(prop_value::Kind::StringValue(text)) => {
                    self.check_text(&format!("props[{key:?}]"), text, self.prop_value)?;
                }
                Some(prop_value::Kind::NumberValue(number)) if !number.is_finite() => {
                    return Err(format!("props[{key:?}]: the number must be finite"));
                }
                Some(prop_value::Kind::NumberValue(_)) => {}
                None => return Err(format!("props[{key:?}]: a string or a number is required")),
            }
        }
        Ok(())
    }

    fn check_timestamp(&self, event: &Event, now_ms: i64, mode: Mode) -> Result<i64, String> {
        let Some(ts) = &event.timestamp else {
            return match mode {
                Mode::Live => Ok(now_ms),
                Mode::Import => Err("timestamp: required for imported events".into()),
            };
        };
        let ms = ts
            .seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(i64::from(ts.nanos) / 1_000_000))
            .ok_or_else(|| format!("timestamp: {}s is out of range", ts.seconds))?;
        if mode == Mode::Live && ms < now_ms - self.max_age_ms {
            return Err(format!(
                "timestamp: {} is more than 72 hours old, the limit for live ingest; load older \
                 events with ImportEvents (`beacon import`)",
                display_ms(ms)
            ));
        }
        if mode == Mode::Import && ms < now_ms - self.max_import_age_ms {
            return Err(format!(
                "timestamp: {} is more than 3660 days old, the limit for imports",
                display_ms(ms)
            ));
        }
        if ms > now_ms + self.max_future_ms {
            return Err(format!(
                "timestamp: {} is more than 5 minutes in the future, the limit",
                display_ms(ms)
            ));
        }
        Ok(ms)
    }
}

/// Largest revenue amount of one event.
const MAX_REVENUE: f64 = 1e9;

fn check_revenue(amount: f64, currency: &str) -> Result<(), String> {
    if !amount.is_finite() || !(0.0..=MAX_REVENUE).contains(&amount) {
        return Err(format!(
            "revenue.amount: {amount} is not a number from 0 to 1,000,000,000"
        ));
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "revenue.currency: {currency:?} is not an ISO 4217 code of 3 capital letters"
        ));
    }
    Ok(())
}

/// Longest engaged time one engagement report may state, milliseconds: a day.
const MAX_ENGAGED_MS: u64 = 86_400_000;

/// An engagement report belongs to an "engagement" event and states a percentage and a time
/// within bounds.
fn check_engagement(name: &str, engagement: &Engagement) -> Result<(), String> {
    if name != "engagement" {
        return Err(format!(
            "engagement: only events named \"engagement\" carry it, not {name:?}"
        ));
    }
    if engagement.scroll_depth > 100 {
        return Err(format!(
            "engagement.scroll_depth: {} is above 100 (percent)",
            engagement.scroll_depth
        ));
    }
    if engagement.engaged_ms > MAX_ENGAGED_MS {
        return Err(format!(
            "engagement.engaged_ms: {} is above the limit of 86,400,000 (a day)",
            engagement.engaged_ms
        ));
    }
    Ok(())
}

fn display_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_proto::ingest::v1::PropValue;

    const NOW: i64 = 1_790_000_000_000;

    fn event() -> Event {
        Event {
            name: "pageview".into(),
            url: "https://shop.example/a".into(),
            ..Default::default()
        }
    }

    fn err(event: &Event) -> String {
        Limits::default()
            .check(event, NOW)
            .expect_err("must be rejected")
    }

    #[test]
    fn accepts_a_minimal_event_at_now() {
        assert_eq!(Limits::default().check(&event(), NOW), Ok(NOW));
    }

    #[test]
    fn names_field_and_limit() {
        let mut e = event();
        e.name = "x".repeat(121);
        assert_eq!(err(&e), "name: 121 characters, the limit is 120");
        let mut e = event();
        e.url = format!("https://a.example/{}", "p".repeat(2000));
        assert!(err(&e).starts_with("url: 2018 characters, the limit is 2000"));
        let mut e = event();
        e.referrer = "r".repeat(2001);
        assert_eq!(err(&e), "referrer: 2001 characters, the limit is 2000");
    }

    #[test]
    fn props_limits() {
        let mut e = event();
        for i in 0..31 {
            e.props.insert(
                format!("k{i}"),
                PropValue {
                    kind: Some(prop_value::Kind::NumberValue(1.0)),
                },
            );
        }
        assert_eq!(err(&e), "props: 31 properties, the limit is 30");
        let mut e = event();
        e.props.insert(
            "k".repeat(301),
            PropValue {
                kind: Some(prop_value::Kind::StringValue("v".into())),
            },
        );
        assert_eq!(err(&e), "props key: 301 characters, the limit is 300");
        let mut e = event();
        e.props.insert(
            "k".into(),
            PropValue {
                kind: Some(prop_value::Kind::StringValue("v".repeat(2001))),
            },
        );
        assert_eq!(err(&e), "props[\"k\"]: 2001 characters, the limit is 2000");
        let mut e = event();
        e.props.insert(
            "a\u{1f}b".into(),
            PropValue {
                kind: Some(prop_value::Kind::StringValue("v".into())),
            },
        );
        assert_eq!(
            err(&e),
            "props key \"a\\u{1f}b\": control characters are not allowed"
        );
    }

    #[test]
    fn revenue_limits() {
        for amount in [-1.0, 1e9 + 1.0, f64::NAN] {
            let mut e = event();
            e.revenue = Some(beacon_proto::ingest::v1::Revenue {
                amount,
                currency: "EUR".into(),
            });
            assert!(
                err(&e).starts_with("revenue.amount: ")
                    && err(&e).ends_with("is not a number from 0 to 1,000,000,000"),
                "{}",
                err(&e)
            );
        }
    }

    #[test]
    fn engagement_limits() {
        let mut e = event();
        e.engagement = Some(Engagement {
            scroll_depth: 50,
            engaged_ms: 1_000,
        });
        assert_eq!(
            err(&e),
            "engagement: only events named \"engagement\" carry it, not \"pageview\""
        );
        e.name = "engagement".into();
        assert_eq!(Limits::default().check(&e, NOW), Ok(NOW));
        e.engagement = Some(Engagement {
            scroll_depth: 101,
            engaged_ms: 0,
        });
        assert_eq!(
            err(&e),
            "engagement.scroll_depth: 101 is above 100 (percent)"
        );
        e.engagement = Some(Engagement {
            scroll_depth: 0,
            engaged_ms: 86_400_001,
        });
        assert_eq!(
            err(&e),
            "engagement.engaged_ms: 86400001 is above the limit of 86,400,000 (a day)"
        );
    }

    #[test]
    fn timestamp_window() {
        let mut e = event();
        e.timestamp = Some(prost_types::Timestamp {
            seconds: (NOW - 73 * 3600 * 1000) / 1000,
            nanos: 0,
        });
        assert!(err(&e).contains("more than 72 hours old"));
        e.timestamp = Some(prost_types::Timestamp {
            seconds: (NOW + 6 * 60 * 1000) / 1000,
            nanos: 0,
        });
        assert!(err(&e).contains("more than 5 minutes in the future"));
    }

    #[test]
    fn batch_limits() {
        assert!(check_batch(1000).is_ok());
        assert_eq!(
            check_batch(1001).expect_err("too many"),
            "events: 1001 events in one call, the limit is 1000"
        );
        assert!(check_batch(0).is_err());
    }

    #[test]
    fn url_must_be_absolute() {
        let mut e = event();
        e.url = "/relative".into();
        assert!(err(&e).starts_with("url: \"/relative\" is not an absolute URL"));
    }
}
