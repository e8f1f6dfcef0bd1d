//! GA4 Measurement Protocol: `POST /mp/collect?measurement_id=<tenant>&api_secret=<server key>`
//! with GA4's JSON body (`client_id`, up to 25 `events` with `params`, `user_properties`,
//! `timestamp_micros`, `ip_override`), and `POST /debug/mp/collect`, which validates the same
//! body and answers GA4's `validationMessages` without counting anything.
//!
//! The measurement id is the tenant's id and the API secret one of its server keys. Each event
//! counts for the visitor its `client_id` names (`Event.visitor_id`); a `purchase`'s `value`
//! in `currency` is revenue. The body is checked against everything ingest checks (times,
//! the tenant's currency), so the debug endpoint refuses all that would be refused. Unlike GA4, which answers
//! 2xx and drops what it cannot take, `/mp/collect` refuses an invalid request as a whole with
//! `400` and the validation messages, and answers `204` once every event is durable.

mod payload;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use beacon_proto::ingest::v1::{Event, SendEventsRequest};
use serde_json::json;
use tonic::metadata::MetadataValue;

use payload::ValidationMessage;

use crate::beacon::{client_of, http_status, query_params};
use crate::proxy::IngestProxy;

/// Largest body GA4 takes, bytes.
pub const MAX_BODY_BYTES: usize = 130_000;

/// The Measurement Protocol routes.
pub fn router(ingest: IngestProxy) -> axum::Router {
    axum::Router::new()
        .route("/mp/collect", post(collect))
        .route("/debug/mp/collect", post(debug))
        .with_state(ingest)
}

/// Why a request was not taken.
enum Refusal {
    /// Authentication or a backend: an HTTP status and a message.
    Http(StatusCode, String),
    /// The body: GA4's validation messages.
    Invalid(StatusCode, Vec<ValidationMessage>),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Http(status, error) => (status, Json(json!({ "error": error }))).into_response(),
            Self::Invalid(status, messages) => {
                (status, Json(json!({ "validationMessages": messages }))).into_response()
            }
        }
    }
}

async fn collect(State(ingest): State<IngestProxy>, request: Request) -> Response {
    match take(&ingest, request).await {
        Ok((events, sender)) => match send(&ingest, events, sender).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(refusal) => refusal.into_response(),
        },
        Err(refusal) => refusal.into_response(),
    }
}

async fn debug(State(ingest): State<IngestProxy>, request: Request) -> Response {
    let messages = match take(&ingest, request).await {
        Ok(_) => Vec::new(),
        Err(Refusal::Invalid(_, messages)) => messages,
        Err(refusal) => return refusal.into_response(),
    };
    Json(json!({ "validationMessages": messages })).into_response()
}

/// Who sends: the API secret and the connection's address.
struct Sender {
    key: String,
    client_ip: Option<std::net::IpAddr>,
}

/// Authenticates a request and turns its body into events.
async fn take(ingest: &IngestProxy, request: Request) -> Result<(Vec<Event>, Sender), Refusal> {
    let (parts, body) = request.into_parts();
    let query = query_params(parts.uri.query());
    let param = |name: &str| {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| {
                Refusal::Http(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "{name}: required in the query string (measurement_id: the tenant id; \
                     api_secret: one of its server keys)"
                    ),
                )
            })
    };
    let (measurement_id, key) = (param("measurement_id")?, param("api_secret")?);
    let metadata = tonic::metadata::MetadataMap::from_headers(parts.headers.clone());
    let client_ip = client_of(ingest, &parts, &metadata);
    let tenant = ingest
        .guard
        .server_tenant(&key, client_ip)
        .await
        .map_err(|status| Refusal::Http(http_status(status.code()), status.message().to_owned()))?;
    if tenant.id != measurement_id {
        return Err(Refusal::Http(
            StatusCode::FORBIDDEN,
            format!(
                "measurement_id: {measurement_id:?} is not the tenant of this api_secret; use \
                 the tenant id"
            ),
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            Refusal::Invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                vec![ValidationMessage {
                    field_path: String::new(),
                    description: format!(
                        "The request body is larger than [{MAX_BODY_BYTES}] bytes."
                    ),
                    validation_code: "VALUE_OUT_OF_BOUNDS",
                }],
            )
        })?;
    let stream = payload::Stream {
        measurement_id: &measurement_id,
        currency: &tenant.currency,
        now_ms: beacon_core::time::now_ms(),
    };
    let events = payload::events(&bytes, stream)
        .map_err(|messages| Refusal::Invalid(StatusCode::BAD_REQUEST, messages))?;
    Ok((events, Sender { key, client_ip }))
}

/// Sends `events` with the sender's server key; events ingest refused become validation
/// messages (the others count).
async fn send(ingest: &IngestProxy, events: Vec<Event>, sender: Sender) -> Result<(), Refusal> {
    let mut grpc = tonic::Request::new(SendEventsRequest { events });
    let auth = MetadataValue::try_from(format!("Bearer {}", sender.key)).map_err(|_| {
        Refusal::Http(
            StatusCode::UNAUTHORIZED,
            "api_secret: has characters a key cannot have".into(),
        )
    })?;
    grpc.metadata_mut().insert("authorization", auth);
    let reply = ingest
        .send(grpc, sender.client_ip)
        .await
        .map_err(|status| Refusal::Http(http_status(status.code()), status.message().to_owned()))?
        .into_inner();
    let refused: Vec<ValidationMessage> = reply
        .results
        .iter()
        .enumerate()
        .filter(|(_, result)| !result.error.is_empty())
        .map(|(index, result)| ValidationMessage {
            field_path: "events".into(),
            description: format!("Event at index: [{index}] was refused: {}", result.error),
            validation_code: "VALUE_INVALID",
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Refusal::Invalid(StatusCode::BAD_REQUEST, refused))
    }
}
