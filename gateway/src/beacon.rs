//! Plausible-compatible HTTP beacons: `POST /api/event` with a JSON body (`name`, `url`,
//! `domain`, `referrer`, `props`, `revenue`, `interactive`, or their one-letter forms; `sd` and
//! `e` of an `engagement` event; with Plausible's hash-routing flag `h` the URL's fragment
//! joins the page), the key in
//! `Authorization: Bearer`, `X-Beacon-Key` or `?key=`, the visitor's `User-Agent` and
//! `X-Forwarded-For` headers. Answers `202 ok` once the event is durable. Also serves the
//! browser tracker that sends them, `GET /js/beacon.js` (built from `web/tracker/`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use beacon_core::MAX_BODY_BYTES;
use beacon_proto::ingest::v1::{
    Engagement, Event, PropValue, Revenue, SendEventsRequest, prop_value,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpConnectInfo;

use crate::proxy::IngestProxy;

/// The beacon route.
pub fn router(ingest: IngestProxy) -> axum::Router {
    axum::Router::new()
        .route("/api/event", post(event))
        .route("/js/beacon.js", get(tracker))
        .with_state(ingest)
}

/// The browser tracker, minified by `web/build.mjs` (CI fails when it drifts from its source).
const TRACKER: &str = include_str!("../assets/beacon.js");

async fn tracker() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        TRACKER,
    )
        .into_response()
}

/// A Plausible Events API body.
#[derive(Debug, Deserialize)]
struct Body {
    #[serde(alias = "n")]
    name: String,
    #[serde(alias = "u")]
    url: String,
    #[serde(default, alias = "d")]
    domain: Option<String>,
    #[serde(default, alias = "r")]
    referrer: Option<String>,
    #[serde(default, alias = "p", alias = "m")]
    props: Option<Value>,
    #[serde(default, alias = "$")]
    revenue: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    timestamp: Option<Value>,
    /// An engagement report's deepest scroll, percent.
    #[serde(default, rename = "sd")]
    scroll_depth: Option<u32>,
    /// An engagement report's engaged time, milliseconds.
    #[serde(default, rename = "e")]
    engaged_ms: Option<u64>,
    /// `false` for an event the visitor did not cause (it ends no bounce).
    #[serde(default, alias = "i")]
    interactive: Option<bool>,
    /// Plausible's hash-based routing (`1`): the URL's fragment is part of the page.
    #[serde(default, rename = "h")]
    hash_routing: Option<Value>,
}

/// An HTTP refusal: its status and message.
pub(crate) type Rejection = (StatusCode, String);

async fn event(State(ingest): State<IngestProxy>, request: Request) -> Response {
    match handle(&ingest, request).await {
        Ok(()) => (StatusCode::ACCEPTED, "ok").into_response(),
        Err((status, error)) => (status, Json(json!({ "error": error }))).into_response(),
    }
}

async fn handle(ingest: &IngestProxy, request: Request) -> Result<(), Rejection> {
    let (parts, body) = request.into_parts();
    let metadata = tonic::metadata::MetadataMap::from_headers(parts.headers.clone());
    let keyed = has_key(&metadata, parts.uri.query());
    let client_ip = client_of(ingest, &parts, &metadata);
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body: larger than the limit of {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let (event, domain) = to_event(&bytes, &parts.headers)?;
    let keys = match (keyed, domain) {
        (false, Some(domains)) => site_keys(ingest, &domains, client_ip).await?,
        _ => vec![key_of(&metadata, parts.uri.query(), "ingest")?],
    };
    for key in keys {
        send(ingest, event.clone(), &key, client_ip).await?;
    }
    Ok(())
}

/// The site keys of the registered domains among `domains` (Plausible's comma-separated
/// list); a refusal when none is registered.
async fn site_keys(
    ingest: &IngestProxy,
    domains: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Vec<String>, Rejection> {
    let mut keys = Vec::new();
    for domain in domains.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let key = ingest
            .guard
            .site_key(domain, client_ip)
            .await
            .map_err(|status| (http_status(status.code()), status.message().to_owned()))?;
        keys.extend(key);
    }
    if keys.is_empty() {
        return Err((
            StatusCode::UNAUTHORIZED,
            format!(
                "domain: {domains:?} is no registered site (AdminService.SetDomains), and no key \
                 was sent"
            ),
        ));
    }
    Ok(keys)
}

/// Sends `event` with ingest key `key`; a refusal names the field and the limit.
async fn send(
    ingest: &IngestProxy,
    event: Event,
    key: &str,
    client_ip: Option<std::net::IpAddr>,
) -> Result<(), Rejection> {
    let mut grpc = tonic::Request::new(SendEventsRequest {
        events: vec![event],
    });
    let auth = MetadataValue::try_from(format!("Bearer {key}")).map_err(|_| {
        (
            StatusCode::UNAUTHORIZED,
            "the key has invalid characters".to_owned(),
        )
    })?;
    grpc.metadata_mut().insert("authorization", auth);
    let reply = ingest
        .send(grpc, client_ip)
        .await
        .map_err(|status| (http_status(status.code()), status.message().to_owned()))?
        .into_inner();
    match reply.results.first() {
        Some(result) if !result.error.is_empty() => {
            Err((StatusCode::BAD_REQUEST, result.error.clone()))
        }
        _ => Ok(()),
    }
}

/// The address of the client that sent an HTTP request, as the edge resolves it.
pub(crate) fn client_of(
    ingest: &IngestProxy,
    parts: &axum::http::request::Parts,
    metadata: &tonic::metadata::MetadataMap,
) -> Option<std::net::IpAddr> {
    let peer = parts
        .extensions
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip());
    ingest.guard.edge.client(peer, metadata)
}

/// The parameters of a query string (none when absent).
pub(crate) fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a request carries a key, in a header or in `?key=`.
fn has_key(metadata: &tonic::metadata::MetadataMap, query: Option<&str>) -> bool {
    metadata.contains_key("authorization")
        || metadata.contains_key("x-beacon-key")
        || query.is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes()).any(|(name, _)| name == "key")
        })
}

/// The `kind` key of an HTTP request: the headers gRPC requests use
/// (`beacon_core::auth::request_key`), else `?key=` (`navigator.sendBeacon` and download links
/// cannot set headers).
pub(crate) fn key_of(
    metadata: &tonic::metadata::MetadataMap,
    query: Option<&str>,
    kind: &str,
) -> Result<String, Rejection> {
    if metadata.contains_key("authorization") || metadata.contains_key("x-beacon-key") {
        return beacon_core::auth::request_key(metadata)
            .map_err(|err| (StatusCode::UNAUTHORIZED, err.to_string()));
    }
    query_params(query).get("key").cloned().ok_or_else(|| {
        (
            StatusCode::UNAUTHORIZED,
            format!(
                "missing {kind} key: send \"Authorization: Bearer <key>\", \"X-Beacon-Key\" or \
                 ?key="
            ),
        )
    })
}

/// The event of a beacon body, and the body's `domain`.
fn to_event(bytes: &[u8], headers: &HeaderMap) -> Result<(Event, Option<String>), Rejection> {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, msg);
    let body: Body =
        serde_json::from_slice(bytes).map_err(|err| bad(format!("malformed JSON body: {err}")))?;
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let domain = body.domain.clone();
    let hashed = body
        .hash_routing
        .as_ref()
        .is_some_and(|h| h.as_bool() == Some(true) || h.as_u64().is_some_and(|n| n > 0));
    let event = Event {
        id: body.id.unwrap_or_default(),
        url: if hashed {
            hash_page(&body.url)
        } else {
            body.url
        },
        referrer: body.referrer.unwrap_or_default(),
        title: String::new(),
        user_agent,
        client_ip: String::new(),
        timestamp: body.timestamp.map(timestamp).transpose().map_err(bad)?,
        props: body
            .props
            .map(props)
            .transpose()
            .map_err(bad)?
            .unwrap_or_default(),
        revenue: body.revenue.map(revenue).transpose().map_err(bad)?,
        engagement: (body.name == "engagement").then(|| Engagement {
            scroll_depth: body.scroll_depth.unwrap_or_default(),
            engaged_ms: body.engaged_ms.unwrap_or_default(),
        }),
        name: body.name,
        visitor_id: String::new(),
        non_interactive: body.interactive == Some(false),
    };
    Ok((event, domain))
}

/// The URL of a page of a hash-routed site: its fragment joins the path ("/#/pricing"),
/// percent-encoded, which the page dimension decodes. Other URLs are kept as they are.
fn hash_page(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    let Some(fragment) = url.fragment().map(str::to_owned) else {
        return raw.to_owned();
    };
    let path = format!("{}%23{fragment}", url.path());
    url.set_fragment(None);
    url.set_path(&path);
    url.to_string()
}

fn props(value: Value) -> Result<HashMap<String, PropValue>, String> {
    let value = match value {
        // Plausible's script sends props as a JSON-encoded string.
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|err| format!("props: not a JSON object ({err})"))?,
        other => other,
    };
    let Value::Object(map) = value else {
        return Err("props: must be an object of strings and numbers".into());
    };
    map.into_iter()
        .map(|(key, value)| {
            let kind = match value {
                Value::String(s) => prop_value::Kind::StringValue(s),
                Value::Number(n) => prop_value::Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
                Value::Bool(b) => prop_value::Kind::StringValue(b.to_string()),
                _ => return Err(format!("props[{key:?}]: must be a string or a number")),
            };
            Ok((key, PropValue { kind: Some(kind) }))
        })
        .collect()
}

fn revenue(value: Value) -> Result<Revenue, String> {
    let currency = value
        .get("currency")
        .and_then(Value::as_str)
        .ok_or("revenue.currency: required, an ISO 4217 code")?
        .to_owned();
    let amount = match value.get("amount") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("revenue.amount: {s:?} is not a number"))?,
        _ => return Err("revenue.amount: required, a number".into()),
    };
    Ok(Revenue { amount, currency })
}

fn timestamp(value: Value) -> Result<prost_types::Timestamp, String> {
    let ms = match &value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("timestamp: {n} is not whole Unix milliseconds"))?,
        Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .map_err(|err| format!("timestamp: {s:?} is not RFC 3339 ({err})"))?
            .as_millisecond(),
        _ => return Err("timestamp: must be RFC 3339 text or Unix milliseconds".into()),
    };
    Ok(prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

/// The HTTP status of a gRPC code.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_short_names_and_string_props() {
        let body = br#"{"n":"pageview","u":"https://a.example/x","d":"a.example","r":"https://google.com/","p":"{\"plan\":\"pro\",\"n\":2}"}"#;
        let (event, _) = to_event(body, &HeaderMap::new()).expect("valid");
        assert_eq!(event.name, "pageview");
        assert_eq!(event.referrer, "https://google.com/");
        assert_eq!(event.props.len(), 2);
    }

    #[test]
    fn malformed_json_is_named() {
        let (status, msg) = to_event(b"{not json", &HeaderMap::new()).expect_err("bad");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(msg.starts_with("malformed JSON body"), "{msg}");
        let (_, msg) =
            to_event(br#"{"url":"https://a.example/"}"#, &HeaderMap::new()).expect_err("bad");
        assert!(msg.contains("missing field `name`"), "{msg}");
    }

    #[test]
    fn nested_props_are_rejected() {
        let body = br#"{"name":"x","url":"https://a.example/","props":{"a":{"b":1}}}"#;
        let (_, msg) = to_event(body, &HeaderMap::new()).expect_err("bad");
        assert_eq!(msg, "props[\"a\"]: must be a string or a number");
    }

    #[test]
    fn hash_routed_pages_keep_their_fragment_and_interactive_false_is_kept() {
        let body = br#"{"n":"pageview","u":"https://a.example/app?utm_source=x#/pricing","d":"a.example","h":1}"#;
        let (event, _) = to_event(body, &HeaderMap::new()).expect("valid");
        assert_eq!(event.url, "https://a.example/app%23/pricing?utm_source=x");
        assert!(!event.non_interactive);
        let body = br#"{"n":"autoplay","u":"https://a.example/#/x","d":"a.example","i":false}"#;
        let (event, _) = to_event(body, &HeaderMap::new()).expect("valid");
        assert_eq!(
            event.url, "https://a.example/#/x",
            "no h: the fragment is not a page"
        );
        assert!(event.non_interactive);
    }

    #[test]
    fn revenue_accepts_string_amounts() {
        let body = br#"{"name":"buy","url":"https://a.example/","revenue":{"currency":"EUR","amount":"12.5"}}"#;
        let (event, _) = to_event(body, &HeaderMap::new()).expect("valid");
        assert_eq!(event.revenue.map(|r| r.amount), Some(12.5));
    }
}
