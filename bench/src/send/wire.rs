//! What goes on the wire: a gRPC codec that sends an already encoded request (so a retry
//! resends the same bytes without re-encoding or cloning events), and the JSON body of an HTTP
//! beacon.

use beacon_proto::ingest::v1::{Event, SendEventsRequest, SendEventsResponse, prop_value};
use bytes::{BufMut, Bytes};
use prost::Message;
use serde_json::{Map, Value};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Path of `IngestService.SendEvents`.
pub const SEND_EVENTS_PATH: &str = "/beacon.ingest.v1.IngestService/SendEvents";

/// Path of `IngestService.ImportEvents`, whose request and answer are encoded as
/// `SendEvents`' are.
pub const IMPORT_EVENTS_PATH: &str = "/beacon.ingest.v1.IngestService/ImportEvents";

/// Encodes a batch once, ready to be sent (and resent) as is.
pub fn encode_batch(events: Vec<Event>) -> Bytes {
    SendEventsRequest { events }.encode_to_vec().into()
}

/// Sends pre-encoded `SendEventsRequest` bytes and decodes a `SendEventsResponse`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = SendEventsResponse;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

/// Copies encoded bytes into the frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// Decodes the ingest response.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = SendEventsResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<SendEventsResponse>, Status> {
        SendEventsResponse::decode(src)
            .map(Some)
            .map_err(|err| Status::internal(format!("decoding SendEventsResponse: {err}")))
    }
}

/// The Plausible Events API body of `event`, with Beacon's `id` and `timestamp` (Unix
/// milliseconds) extensions. User agent and address travel as headers.
pub fn beacon_body(event: &Event) -> Vec<u8> {
    let mut body = Map::new();
    body.insert("name".into(), Value::from(event.name.as_str()));
    body.insert("url".into(), Value::from(event.url.as_str()));
    if !event.referrer.is_empty() {
        body.insert("referrer".into(), Value::from(event.referrer.as_str()));
    }
    if !event.props.is_empty() {
        let props = event
            .props
            .iter()
            .filter_map(|(key, value)| {
                let value = match value.kind.as_ref()? {
                    prop_value::Kind::StringValue(s) => Value::from(s.as_str()),
                    prop_value::Kind::NumberValue(n) => Value::from(*n),
                };
                Some((key.clone(), value))
            })
            .collect();
        body.insert("props".into(), Value::Object(props));
    }
    if let Some(revenue) = &event.revenue {
        let mut value = Map::new();
        value.insert("amount".into(), Value::from(revenue.amount));
        value.insert("currency".into(), Value::from(revenue.currency.as_str()));
        body.insert("revenue".into(), Value::Object(value));
    }
    if !event.id.is_empty() {
        body.insert("id".into(), Value::from(event.id.as_str()));
    }
    if let Some(ts) = event.timestamp {
        let ms = ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000;
        body.insert("timestamp".into(), Value::from(ms));
    }
    // Serialising a map of strings and finite numbers cannot fail.
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_proto::ingest::v1::{PropValue, Revenue};

    #[test]
    fn beacon_body_is_plausible_json_with_extensions() {
        let event = Event {
            id: "t1-1-7".into(),
            name: "Purchase".into(),
            url: "https://t1.example/checkout".into(),
            referrer: "https://t1.example/cart".into(),
            props: [(
                "quantity".to_owned(),
                PropValue {
                    kind: Some(prop_value::Kind::NumberValue(2.0)),
                },
            )]
            .into(),
            revenue: Some(Revenue {
                amount: 12.5,
                currency: "EUR".into(),
            }),
            timestamp: Some(crate::traffic::timestamp(1_790_000_000_123)),
            ..Default::default()
        };
        let body: Value = serde_json::from_slice(&beacon_body(&event)).unwrap_or_default();
        assert_eq!(body["name"], "Purchase");
        assert_eq!(body["referrer"], "https://t1.example/cart");
        assert_eq!(body["props"]["quantity"], 2.0);
        assert_eq!(body["revenue"]["currency"], "EUR");
        assert_eq!(body["id"], "t1-1-7");
        assert_eq!(body["timestamp"], 1_790_000_000_123i64);
        let bare = Event {
            name: "pageview".into(),
            url: "https://t1.example/".into(),
            ..Default::default()
        };
        let body: Value = serde_json::from_slice(&beacon_body(&bare)).unwrap_or_default();
        assert!(body.get("referrer").is_none() && body.get("props").is_none());
    }
}
