//! W3C trace context across processes, so that one trace follows an event from the gateway to
//! the shard that applies it: `traceparent` (and `tracestate`) travel in the metadata of every
//! internal gRPC call and in the headers of every NATS log message.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer of [`crate::telemetry`] records them and
//! exports them over OTLP. Without an OTLP endpoint nothing is recorded, and no context is
//! sent. Messages that gather the work of several traces (a group-committed event batch, a
//! rollup of many events) continue the first trace among their inputs.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context of a message or call: W3C headers by name (`traceparent`, `tracestate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext(HashMap<String, String>);

impl TraceContext {
    /// The context of the current span; empty when the span is not recorded.
    pub fn current() -> Self {
        Self::of(&tracing::Span::current())
    }

    /// The context of `span`; empty when the span is not recorded.
    pub fn of(span: &tracing::Span) -> Self {
        let context = span.context();
        let mut headers = Self::default();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut headers);
        }
        headers
    }

    /// Whether there is a trace to continue.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers, to put on an outgoing message.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The context in `headers` of a received message (any name-value pairs).
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            headers
                .into_iter()
                .filter(|(name, _)| is_trace_header(name))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
                .collect(),
        )
    }

    /// A span named `name` that continues the first of `traces` and links the others; disabled
    /// (free) when none is traced. Its fields `partition`, `seq` and `count` may be recorded.
    pub fn span_of<'a>(
        name: &'static str,
        traces: impl IntoIterator<Item = &'a Self>,
    ) -> tracing::Span {
        let mut traced = traces.into_iter().filter(|trace| !trace.is_empty());
        let Some(first) = traced.next() else {
            return tracing::Span::none();
        };
        let span = tracing::info_span!(
            "traced",
            otel.name = name,
            partition = tracing::field::Empty,
            seq = tracing::field::Empty,
            count = tracing::field::Empty
        );
        first.parent(&span);
        traced.for_each(|other| other.link(&span));
        span
    }

    /// Makes `span` a child of this context (nothing when empty).
    pub fn parent(&self, span: &tracing::Span) {
        if self.is_empty() {
            return;
        }
        let context = TraceContextPropagator::new().extract(self);
        let _ = span.set_parent(context);
    }

    /// Links `span` to this context: the span's work includes this trace's (nothing when
    /// empty).
    pub fn link(&self, span: &tracing::Span) {
        if self.is_empty() {
            return;
        }
        let context = TraceContextPropagator::new().extract(self);
        span.add_link(context.span().span_context().clone());
    }
}

fn is_trace_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("traceparent") || name.eq_ignore_ascii_case("tracestate")
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Adds the current span's context to an outgoing gRPC call's metadata.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    for (name, value) in TraceContext::current().headers() {
        if let (Ok(name), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
            value.parse(),
        ) {
            metadata.insert(name, value);
        }
    }
}

/// The span of one incoming gRPC request (for `Server::trace_fn`): named after its method,
/// and a child of the caller's trace when the request carries one.
pub fn grpc_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let span =
        tracing::info_span!("grpc", otel.name = %path, otel.kind = "server", rpc.method = %path);
    let headers = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    TraceContext::from_headers(headers).parent(&span);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trace_headers_are_taken_whatever_their_case() {
        let context = TraceContext::from_headers([
            (
                "Traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("content-type", "application/grpc"),
        ]);
        let headers: Vec<(&str, &str)> = context.headers().collect();
        assert_eq!(
            headers,
            [(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )]
        );
    }

    #[test]
    fn without_a_recorded_span_nothing_is_sent() {
        assert!(TraceContext::current().is_empty());
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
    }
}
