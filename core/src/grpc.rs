//! Serving gRPC: every role exposes its services plus gRPC health and server reflection.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::error::ResultExt;
use crate::tls::Tls;
use crate::{Error, Result};

/// The client's address: the first `x-forwarded-for` entry, else the TCP peer.
pub fn client_ip<T>(request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
    forwarded_for(request.metadata()).or_else(|| request.remote_addr().map(|addr| addr.ip()))
}

/// The first address of an `x-forwarded-for` header, when it parses.
pub fn forwarded_for(metadata: &tonic::metadata::MetadataMap) -> Option<std::net::IpAddr> {
    metadata
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse().ok())
}

/// Whether a failed call may be made again on another replica or gateway: UNAVAILABLE;
/// CANCELLED, which reaches a caller that did not cancel only when the connection closed under
/// the call; or INTERNAL "h2 protocol error", the HTTP/2 connection breaking mid-call (a
/// process exiting). The call may have been done or not: only calls safe to repeat (reads,
/// events that all carry ids) are repeated.
pub fn worth_another(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => true,
        tonic::Code::Internal => status.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

/// Longest time an internal request may take (the gateway's own limit is shorter by default).
const INTERNAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often the health status is recomputed.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The protos of `packages` (and the well-known types they use), as an encoded descriptor set.
fn descriptor_set_of(packages: &[&str]) -> Result<Vec<u8>> {
    use prost::Message;
    let mut set = prost_types::FileDescriptorSet::decode(beacon_proto::FILE_DESCRIPTOR_SET)
        .map_err(|err| Error::Corrupt(format!("Beacon's descriptor set: {err}")))?;
    set.file.retain(|file| {
        let package = file.package();
        package.starts_with("google.protobuf") || packages.contains(&package)
    });
    Ok(set.encode_to_vec())
}

/// Adds gRPC health (see [`with_health_and_reflection`]) and server reflection limited to
/// `services` and the protos of `packages` to `routes`: what a public port may show of Beacon.
pub async fn with_public_health_and_reflection(
    routes: Routes,
    services: &[&'static str],
    packages: &[&str],
    shutdown: &CancellationToken,
) -> Result<Routes> {
    let encoded = descriptor_set_of(packages)?;
    let health = health_service(services, shutdown).await;
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&encoded)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for service in services {
        reflection = reflection.with_service_name(*service);
    }
    let reflection = reflection
        .build_v1()
        .map_err(|err| Error::backend("building gRPC reflection", err))?;
    Ok(routes.add_service(health).add_service(reflection))
}

/// A health service for `services` and the empty name, kept in line with the process's health,
/// and NOT_SERVING for good once `shutdown` is cancelled.
async fn health_service(
    services: &[&str],
    shutdown: &CancellationToken,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let names: Vec<String> = services
        .iter()
        .copied()
        .chain([""])
        .map(str::to_owned)
        .collect();
    set_status(&reporter, &names, tonic_health::ServingStatus::Serving).await;
    tokio::spawn(watch_health(reporter, names, shutdown.clone()));
    health
}

/// Adds gRPC health (`grpc.health.v1`: every name in `services` and the empty name, SERVING
/// while the process has no stalled partition and no failing store, NOT_SERVING otherwise, see
/// [`crate::observe::Health`], and NOT_SERVING from the moment `shutdown` is cancelled) and
/// server reflection (every Beacon proto) to `routes`.
pub async fn with_health_and_reflection(
    routes: Routes,
    services: &[&str],
    shutdown: &CancellationToken,
) -> Result<Routes> {
    let health = health_service(services, shutdown).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(beacon_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| Error::backend("building gRPC reflection", err))?;
    Ok(routes.add_service(health).add_service(reflection))
}

async fn set_status(
    reporter: &tonic_health::server::HealthReporter,
    names: &[String],
    status: tonic_health::ServingStatus,
) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// Keeps the reported status in line with the process's health, logging every change; turns
/// it NOT_SERVING for good when `shutdown` is cancelled.
async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    names: Vec<String>,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut interval = tokio::time::interval(HEALTH_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                tracing::info!(services = ?names, "shutting down: NOT_SERVING");
                set_status(&reporter, &names, tonic_health::ServingStatus::NotServing).await;
                return;
            }
            _ = interval.tick() => {}
        }
        let problems = crate::observe::health().problems();
        if problems.is_empty() != serving {
            serving = problems.is_empty();
            let status = if serving {
                tracing::info!(services = ?names, "healthy again: SERVING");
                tonic_health::ServingStatus::Serving
            } else {
                tracing::error!(services = ?names, ?problems, "unhealthy: NOT_SERVING");
                tonic_health::ServingStatus::NotServing
            };
            set_status(&reporter, &names, status).await;
        }
    }
}

/// The Prometheus text of every metric of the process (`GET /metrics`).
pub async fn metrics_text() -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::observe::render(),
    )
}

/// How long a listener keeps serving after shutdown begins, answering health checks with
/// NOT_SERVING: health checkers and client-side balancers see it leave before it stops
/// accepting connections.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves [`DRAIN_GRACE`] after `shutdown` is cancelled: when a listener stops accepting
/// and drains its open requests.
pub async fn draining(shutdown: CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(DRAIN_GRACE).await;
}

/// Serves `routes` (with health and reflection, and `GET /metrics`) on `listener` until
/// `shutdown` is cancelled; then answers NOT_SERVING for [`DRAIN_GRACE`], stops accepting and
/// drains open requests. Meant for internal ports only: over TLS when `tls` has a certificate.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    tls: &Tls,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .context(|| "reading listener address".into())?;
    let routes = with_health_and_reflection(routes, services, &shutdown).await?;
    let router = routes
        .into_axum_router()
        .route("/metrics", axum::routing::get(metrics_text));
    let mut server = Server::builder();
    let secure = tls.server();
    tracing::info!(%addr, ?services, tls = secure.is_some(), "gRPC and /metrics listening");
    if let Some(config) = secure {
        server = server
            .tls_config(config)
            .map_err(|err| Error::backend(format!("TLS of the gRPC port {addr}"), err))?;
    }
    server
        .trace_fn(crate::trace::grpc_span)
        .accept_http1(true)
        .timeout(INTERNAL_TIMEOUT)
        .add_routes(Routes::from(router))
        // Small replies must not wait for Nagle's algorithm (a 40 ms stall against the
        // caller's delayed acknowledgement on every one-packet answer).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            draining(shutdown),
        )
        .await
        .context(|| format!("serving gRPC on {addr}"))
}

#[cfg(test)]
mod tests {
    use tonic::Status;

    #[test]
    fn broken_connections_are_worth_another_replica_other_failures_not() {
        assert!(super::worth_another(&Status::unavailable("restarting")));
        assert!(super::worth_another(&Status::cancelled(
            "connection closed"
        )));
        assert!(super::worth_another(&Status::internal(
            "h2 protocol error: http2 error"
        )));
        assert!(!super::worth_another(&Status::internal("a shard failed")));
        assert!(!super::worth_another(&Status::invalid_argument(
            "bad field"
        )));
    }
}
