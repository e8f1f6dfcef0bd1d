//! A GA4 Measurement Protocol body: its validation, with GA4's validation messages and limits,
//! and its events as Beacon events.

use std::collections::HashMap;

use beacon_proto::ingest::v1::{Event, PropValue, Revenue, prop_value};
use serde::Serialize;
use serde_json::{Map, Value};

/// Most events in one request.
pub const MAX_EVENTS: usize = 25;
/// Most parameters of one event, and most user properties of one request.
const MAX_PARAMS: usize = 25;
/// Longest event or parameter name.
const MAX_NAME: usize = 40;
/// Longest user property name and value.
const MAX_USER_PROPERTY_NAME: usize = 24;
const MAX_USER_PROPERTY_VALUE: usize = 36;
/// Longest parameter value, but for the page parameters below.
const MAX_VALUE: usize = 100;
/// Longest `client_id`.
const MAX_CLIENT_ID: usize = 256;

/// Event names GA4 reserves.
const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];
/// Name prefixes GA4 reserves for parameters and user properties.
const RESERVED_PREFIXES: &[&str] = &["google_", "ga_", "firebase_"];
/// User property names GA4 reserves.
const RESERVED_USER_PROPERTIES: &[&str] = &[
    "first_open_time",
    "first_visit_time",
    "last_deep_link_referrer",
    "user_id",
    "first_open_after_install",
];
/// Parameters GA4 uses for its own sessions and debugging, which Beacon has no use for.
const SKIPPED_PARAMS: &[&str] = &["session_id", "engagement_time_msec", "debug_mode", "items"];
/// The page of events that name none (a server's purchase, say): host `server`, page `/`.
pub const SERVER_PAGE: &str = "mp://server/";

/// One of GA4's validation messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationMessage {
    /// The path of the invalid field.
    pub field_path: String,
    /// What is wrong, and the limit.
    pub description: String,
    /// GA4's code: VALUE_INVALID, VALUE_REQUIRED, NAME_INVALID, NAME_RESERVED,
    /// VALUE_OUT_OF_BOUNDS or EXCEEDED_MAX_ENTITIES.
    pub validation_code: &'static str,
}

fn message(field_path: &str, description: String, code: &'static str) -> ValidationMessage {
    ValidationMessage {
        field_path: field_path.to_owned(),
        description,
        validation_code: code,
    }
}

/// Oldest event time taken, as Beacon's ingest and GA4 take it: 72 hours.
const MAX_AGE_MS: i64 = 72 * 3_600_000;
/// Latest event time taken: 5 minutes ahead, as ingest takes it.
const MAX_AHEAD_MS: i64 = 5 * 60_000;
/// Largest purchase value ingest takes.
const MAX_VALUE_AMOUNT: f64 = 1e9;

/// The tenant a request's events go to, and the time it arrived: what the events are checked
/// against, so that the debug endpoint refuses all that ingest would.
#[derive(Debug, Clone, Copy)]
pub struct Stream<'a> {
    /// The measurement id: the tenant's id.
    pub measurement_id: &'a str,
    /// The tenant's currency; empty when none is set.
    pub currency: &'a str,
    /// Now, Unix milliseconds.
    pub now_ms: i64,
}

/// A request's events as Beacon events, or GA4's validation messages for all it got wrong.
pub fn events(body: &[u8], stream: Stream<'_>) -> Result<Vec<Event>, Vec<ValidationMessage>> {
    let root: Map<String, Value> = serde_json::from_slice(body).map_err(|err| {
        vec![message(
            "",
            format!("Unable to parse Measurement Protocol JSON payload. {err}"),
            "VALUE_INVALID",
        )]
    })?;
    let mut messages = Vec::new();
    let client_id = client_id(&root, &mut messages);
    user_properties(&root, &mut messages);
    let request_micros = micros(
        root.get("timestamp_micros"),
        "timestamp_micros",
        &mut messages,
    );
    let list = match root.get("events") {
        Some(Value::Array(list)) if !list.is_empty() => list.as_slice(),
        _ => {
            messages.push(message(
                "events",
                "Unable to find non-empty parameter [events] value in request.".into(),
                "VALUE_REQUIRED",
            ));
            &[]
        }
    };
    if list.len() > MAX_EVENTS {
        messages.push(message(
            "events",
            format!(
                "Too many events in request: [{}], the limit is [{MAX_EVENTS}].",
                list.len()
            ),
            "EXCEEDED_MAX_ENTITIES",
        ));
    }
    let ip_override = root
        .get("ip_override")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !ip_override.is_empty() && ip_override.parse::<std::net::IpAddr>().is_err() {
        messages.push(message(
            "ip_override",
            format!("Parameter [ip_override] with value [{ip_override}] is not an IP address."),
            "VALUE_INVALID",
        ));
    }
    let context = Context {
        stream,
        client_id: client_id.unwrap_or_default(),
        ip_override,
        request_micros,
    };
    let events: Vec<Event> = list
        .iter()
        .enumerate()
        .filter_map(|(index, value)| context.event(index, value, &mut messages))
        .collect();
    if messages.is_empty() {
        Ok(events)
    } else {
        Err(messages)
    }
}

fn client_id<'a>(
    root: &'a Map<String, Value>,
    messages: &mut Vec<ValidationMessage>,
) -> Option<&'a str> {
    if root.contains_key("app_instance_id") || root.contains_key("firebase_app_id") {
        messages.push(message(
            "app_instance_id",
            "App streams (firebase_app_id, app_instance_id) are not supported; send the web \
             stream's client_id."
                .into(),
            "VALUE_INVALID",
        ));
    }
    match root.get("client_id") {
        Some(Value::String(id)) if !id.is_empty() => {
            if id.chars().count() > MAX_CLIENT_ID {
                messages.push(message(
                    "client_id",
                    format!("Parameter [client_id] is longer than the limit of [{MAX_CLIENT_ID}]."),
                    "VALUE_OUT_OF_BOUNDS",
                ));
            }
            Some(id)
        }
        _ => {
            messages.push(message(
                "client_id",
                "Unable to find non-empty parameter [client_id] value in request.".into(),
                "VALUE_REQUIRED",
            ));
            None
        }
    }
}

fn user_properties(root: &Map<String, Value>, messages: &mut Vec<ValidationMessage>) {
    let Some(properties) = root.get("user_properties") else {
        return;
    };
    let Some(properties) = properties.as_object() else {
        messages.push(message(
            "user_properties",
            "user_properties must be an object.".into(),
            "VALUE_INVALID",
        ));
        return;
    };
    if properties.len() > MAX_PARAMS {
        messages.push(message(
            "user_properties",
            format!(
                "Too many user properties: [{}], the limit is [{MAX_PARAMS}].",
                properties.len()
            ),
            "EXCEEDED_MAX_ENTITIES",
        ));
    }
    for (name, value) in properties {
        let path = "user_properties";
        if RESERVED_USER_PROPERTIES.contains(&name.as_str()) || reserved_prefix(name) {
            messages.push(message(
                path,
                format!("User property name [{name}] is reserved."),
                "NAME_RESERVED",
            ));
        } else if let Some(problem) = name_problem(name, MAX_USER_PROPERTY_NAME) {
            messages.push(message(
                path,
                format!("User property has invalid name [{name}]. {problem}"),
                "NAME_INVALID",
            ));
        }
        let length = value.get("value").map(text_length).unwrap_or_default();
        if length > MAX_USER_PROPERTY_VALUE {
            messages.push(message(
                path,
                format!(
                    "User property [{name}] has a value of length [{length}], the limit is \
                     [{MAX_USER_PROPERTY_VALUE}]."
                ),
                "VALUE_OUT_OF_BOUNDS",
            ));
        }
    }
}

fn reserved_prefix(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What is wrong with an event, parameter or user property name, if anything.
fn name_problem(name: &str, limit: usize) -> Option<String> {
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("Names must start with an alphabetic character.".into())
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Some("Names may only contain alphanumeric characters and underscores.".into())
    } else if name.chars().count() > limit {
        Some(format!("Names must be at most [{limit}] characters long."))
    } else {
        None
    }
}

fn text_length(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        other => other.to_string().chars().count(),
    }
}

/// Unix microseconds: absent, or a whole number (as JSON number or text).
fn micros(value: Option<&Value>, path: &str, messages: &mut Vec<ValidationMessage>) -> Option<i64> {
    let value = value?;
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    if parsed.is_none() {
        messages.push(message(
            path,
            format!("Parameter [{path}] must be whole Unix microseconds, got [{value}]."),
            "VALUE_INVALID",
        ));
    }
    parsed
}

/// What every event of a request shares.
struct Context<'a> {
    stream: Stream<'a>,
    client_id: &'a str,
    /// The visitor's address, which GA4 takes for the location.
    ip_override: &'a str,
    request_micros: Option<i64>,
}

impl Context<'_> {
    /// Event `index` of the request as a Beacon event, recording what is wrong with it.
    fn event(
        &self,
        index: usize,
        value: &Value,
        messages: &mut Vec<ValidationMessage>,
    ) -> Option<Event> {
        let before = messages.len();
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name.is_empty() {
            messages.push(message(
                "events",
                format!("Event at index: [{index}] has no name."),
                "VALUE_REQUIRED",
            ));
        } else if RESERVED_EVENTS.contains(&name) {
            messages.push(message(
                "events",
                format!("Event at index: [{index}] has name [{name}] which is reserved."),
                "NAME_RESERVED",
            ));
        } else if let Some(problem) = name_problem(name, MAX_NAME) {
            messages.push(message(
                "events",
                format!("Event at index: [{index}] has invalid name [{name}]. {problem}"),
                "NAME_INVALID",
            ));
        }
        let empty = Map::new();
        let params = match value.get("params") {
            None => &empty,
            Some(Value::Object(params)) => params,
            Some(_) => {
                messages.push(message(
                    "events.params",
                    format!("Event at index: [{index}] has params that are not an object."),
                    "VALUE_INVALID",
                ));
                &empty
            }
        };
        let micros = micros(
            value.get("timestamp_micros"),
            "events.timestamp_micros",
            messages,
        )
        .or(self.request_micros);
        if let Some(m) = micros {
            self.check_time(index, m, messages);
        }
        let mut event = Event {
            name: if name == "page_view" {
                "pageview".into()
            } else {
                name.into()
            },
            visitor_id: self.client_id.into(),
            client_ip: self.ip_override.into(),
            timestamp: micros.map(|m| prost_types::Timestamp {
                seconds: m.div_euclid(1_000_000),
                nanos: (m.rem_euclid(1_000_000) * 1_000) as i32,
            }),
            ..Event::default()
        };
        self.params(index, params, &mut event, messages);
        if name == "purchase" {
            self.check_revenue(index, &event, messages);
        }
        if name == "page_view" && event.url.is_empty() {
            messages.push(message(
                "events.params",
                format!(
                    "Event at index: [{index}] is a page_view without parameter \
                     [page_location], which Beacon needs for its page."
                ),
                "VALUE_REQUIRED",
            ));
        }
        if event.url.is_empty() {
            event.url = SERVER_PAGE.into();
        }
        // Without a time of its own, a resent event cannot be told from a new one.
        if let Some(m) = micros {
            event.id = self.event_id(index, name, m);
        }
        (messages.len() == before).then_some(event)
    }

    /// An event time ingest would refuse: older than 72 hours, or more than 5 minutes ahead.
    fn check_time(&self, index: usize, micros: i64, messages: &mut Vec<ValidationMessage>) {
        let ms = micros.div_euclid(1_000);
        let problem = if ms < self.stream.now_ms - MAX_AGE_MS {
            "is more than 72 hours old"
        } else if ms > self.stream.now_ms + MAX_AHEAD_MS {
            "is more than 5 minutes in the future"
        } else {
            return;
        };
        messages.push(message(
            "timestamp_micros",
            format!("Event at index: [{index}] has timestamp_micros [{micros}], which {problem}."),
            "VALUE_OUT_OF_BOUNDS",
        ));
    }

    /// A purchase's revenue ingest would refuse: another currency than the tenant's, or an
    /// amount outside 0 to 10⁹.
    fn check_revenue(&self, index: usize, event: &Event, messages: &mut Vec<ValidationMessage>) {
        let Some(revenue) = &event.revenue else {
            return;
        };
        if revenue.currency != self.stream.currency {
            let wanted = if self.stream.currency.is_empty() {
                "the tenant has none (AdminService.SetCurrency)".to_owned()
            } else {
                format!("the tenant's is [{}]", self.stream.currency)
            };
            messages.push(message(
                "events.params",
                format!(
                    "Event at index: [{index}] has currency [{}], but {wanted}.",
                    revenue.currency
                ),
                "VALUE_INVALID",
            ));
        }
        if !(0.0..=MAX_VALUE_AMOUNT).contains(&revenue.amount) {
            messages.push(message(
                "events.params",
                format!(
                    "Event at index: [{index}] has value [{}], outside 0 to [{MAX_VALUE_AMOUNT}].",
                    revenue.amount
                ),
                "VALUE_OUT_OF_BOUNDS",
            ));
        }
    }

    /// An id that a resent request repeats: the stream, visitor, time, position and name.
    fn event_id(&self, index: usize, name: &str, micros: i64) -> String {
        let key = format!(
            "{}\u{1f}{}\u{1f}{micros}\u{1f}{index}\u{1f}{name}",
            self.stream.measurement_id, self.client_id
        );
        let hash = blake3::hash(key.as_bytes()).to_hex();
        format!("mp-{}", &hash[..40])
    }

    fn params(
        &self,
        index: usize,
        params: &Map<String, Value>,
        event: &mut Event,
        messages: &mut Vec<ValidationMessage>,
    ) {
        let path = "events.params";
        if params.len() > MAX_PARAMS {
            messages.push(message(
                path,
                format!(
                    "Event at index: [{index}] has [{}] parameters, the limit is [{MAX_PARAMS}].",
                    params.len()
                ),
                "EXCEEDED_MAX_ENTITIES",
            ));
        }
        let mut props = HashMap::new();
        let mut amount = None;
        let mut currency = None;
        for (name, value) in params {
            if name == "firebase_conversion" || reserved_prefix(name) {
                messages.push(message(
                    path,
                    format!("Event at index: [{index}] has parameter [{name}] which is reserved."),
                    "NAME_RESERVED",
                ));
                continue;
            }
            if let Some(problem) = name_problem(name, MAX_NAME) {
                messages.push(message(
                    path,
                    format!(
                        "Event at index: [{index}] has invalid parameter name [{name}]. {problem}"
                    ),
                    "NAME_INVALID",
                ));
                continue;
            }
            if SKIPPED_PARAMS.contains(&name.as_str()) {
                continue;
            }
            let limit = match name.as_str() {
                "page_location" => 1000,
                "page_referrer" => 420,
                "page_title" => 300,
                _ => MAX_VALUE,
            };
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    messages.push(message(
                        path,
                        format!(
                            "Event at index: [{index}] has parameter [{name}] whose value is not \
                             a string, number or boolean."
                        ),
                        "VALUE_INVALID",
                    ));
                    continue;
                }
            };
            let length = text.chars().count();
            if length > limit {
                messages.push(message(
                    path,
                    format!(
                        "Event at index: [{index}] has parameter [{name}] with a value of length \
                         [{length}], the limit is [{limit}]."
                    ),
                    "VALUE_OUT_OF_BOUNDS",
                ));
                continue;
            }
            match name.as_str() {
                "page_location" => {
                    if url::Url::parse(&text).is_err() {
                        messages.push(message(
                            path,
                            format!(
                                "Event at index: [{index}] has parameter [page_location] with \
                                 value [{text}], which is not an absolute URL."
                            ),
                            "VALUE_INVALID",
                        ));
                    }
                    event.url = text;
                }
                "page_referrer" => event.referrer = text,
                "page_title" => event.title = text,
                "currency" => currency = Some(text),
                "value" if value.is_number() => amount = value.as_f64(),
                _ => {
                    let kind = match value.as_f64() {
                        Some(n) => prop_value::Kind::NumberValue(n),
                        None => prop_value::Kind::StringValue(text),
                    };
                    props.insert(name.clone(), PropValue { kind: Some(kind) });
                }
            }
        }
        // GA4's other shop events (view_item, add_to_cart, ...) carry a value too: only a
        // purchase is revenue; elsewhere value and currency stay properties.
        let purchase = event.name == "purchase";
        event.revenue = match (amount, currency) {
            (Some(amount), Some(currency)) if purchase => Some(Revenue { amount, currency }),
            (Some(amount), Some(currency)) => {
                props.insert("value".into(), number(amount));
                props.insert("currency".into(), text(currency));
                None
            }
            (Some(amount), None) => {
                props.insert("value".into(), number(amount));
                None
            }
            (None, Some(currency)) => {
                props.insert("currency".into(), text(currency));
                None
            }
            (None, None) => None,
        };
        event.props = props;
    }
}

fn number(value: f64) -> PropValue {
    PropValue {
        kind: Some(prop_value::Kind::NumberValue(value)),
    }
}

fn text(value: String) -> PropValue {
    PropValue {
        kind: Some(prop_value::Kind::StringValue(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z, a tenant in EUR.
    const STREAM: Stream<'static> = Stream {
        measurement_id: "shop",
        currency: "EUR",
        now_ms: 1_700_000_000_000,
    };

    fn codes(body: serde_json::Value) -> Vec<&'static str> {
        match events(body.to_string().as_bytes(), STREAM) {
            Ok(_) => Vec::new(),
            Err(messages) => messages.iter().map(|m| m.validation_code).collect(),
        }
    }

    #[test]
    fn page_views_map_to_pageviews_with_the_client_as_visitor() {
        let body = serde_json::json!({"client_id": "1.2", "timestamp_micros": 1_700_000_000_000_000_i64,
            "events": [{"name": "page_view", "params": {"page_location": "https://a.example/x",
            "page_title": "X", "session_id": "9", "plan": "pro", "n": 2}}]});
        let events = events(body.to_string().as_bytes(), STREAM).expect("valid");
        let event = &events[0];
        assert_eq!(
            (event.name.as_str(), event.url.as_str()),
            ("pageview", "https://a.example/x")
        );
        assert_eq!(event.visitor_id, "1.2");
        assert_eq!(event.props.len(), 2, "session_id is GA4's own");
        assert!(
            event.id.starts_with("mp-"),
            "a timestamped event gets a repeatable id"
        );
        let again = super::events(body.to_string().as_bytes(), STREAM).expect("valid");
        assert_eq!(again[0].id, event.id);
    }

    #[test]
    fn value_with_currency_is_revenue_and_pageless_events_are_the_servers() {
        let body = serde_json::json!({"client_id": "1.2",
            "events": [{"name": "purchase", "params": {"value": 20.5, "currency": "EUR"}}]});
        let events = events(body.to_string().as_bytes(), STREAM).expect("valid");
        assert_eq!(events[0].revenue.as_ref().map(|r| r.amount), Some(20.5));
        assert_eq!(events[0].url, SERVER_PAGE);
        assert!(
            events[0].id.is_empty(),
            "without a time, a resend cannot be recognized"
        );
    }

    #[test]
    fn only_purchases_are_revenue_and_ingest_limits_are_checked_first() {
        let body = serde_json::json!({"client_id": "1.2",
            "events": [{"name": "add_to_cart", "params": {"value": 29, "currency": "EUR"}}]});
        let events = events(body.to_string().as_bytes(), STREAM).expect("valid");
        assert!(events[0].revenue.is_none());
        assert_eq!(
            events[0].props.len(),
            2,
            "value and currency stay properties"
        );
        let purchase = |currency: &str, value: f64| {
            serde_json::json!({"client_id": "1.2", "events": [{"name": "purchase",
                "params": {"value": value, "currency": currency}}]})
        };
        assert_eq!(codes(purchase("USD", 29.0)), ["VALUE_INVALID"]);
        assert_eq!(codes(purchase("EUR", 2e9)), ["VALUE_OUT_OF_BOUNDS"]);
        let old = (STREAM.now_ms - 73 * 3_600_000) * 1_000;
        assert_eq!(
            codes(
                serde_json::json!({"client_id": "1", "timestamp_micros": old, "events": [{"name": "a"}]})
            ),
            ["VALUE_OUT_OF_BOUNDS"]
        );
        assert_eq!(
            codes(
                serde_json::json!({"client_id": "1", "ip_override": "nope", "events": [{"name": "a"}]})
            ),
            ["VALUE_INVALID"]
        );
    }

    #[test]
    fn limits_have_ga4_codes() {
        let event = |name: &str| serde_json::json!({"name": name});
        let many: Vec<_> = (0..26).map(|_| event("a")).collect();
        assert_eq!(
            codes(serde_json::json!({"client_id": "1", "events": many})),
            ["EXCEEDED_MAX_ENTITIES"]
        );
        assert_eq!(
            codes(serde_json::json!({"client_id": "1", "events": []})),
            ["VALUE_REQUIRED"]
        );
        assert_eq!(
            codes(serde_json::json!({"client_id": "1", "events": [event("a-b")]})),
            ["NAME_INVALID"]
        );
        assert_eq!(
            codes(serde_json::json!({"client_id": "1", "events": [event(&"a".repeat(41))]})),
            ["NAME_INVALID"]
        );
        assert_eq!(
            codes(
                serde_json::json!({"client_id": "1", "events": [{"name": "a", "params": {"ga_x": 1}}]})
            ),
            ["NAME_RESERVED"]
        );
        assert_eq!(
            codes(
                serde_json::json!({"client_id": "1", "user_properties": {"tier": {"value": "x".repeat(37)}}, "events": [event("a")]})
            ),
            ["VALUE_OUT_OF_BOUNDS"]
        );
        assert_eq!(
            codes(serde_json::json!({"client_id": "1", "events": [{"name": "page_view"}]})),
            ["VALUE_REQUIRED"]
        );
        assert_eq!(codes(serde_json::json!([1])), ["VALUE_INVALID"]);
    }
}
