//! Serving gRPC: every role exposes its services plus gRPC health and server reflection.

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;

use crate::error::ResultExt;
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

/// Adds gRPC health (`grpc.health.v1`, every name in `services` and the empty name reported
/// SERVING) and server reflection (every Beacon proto) to `routes`.
pub async fn with_health_and_reflection(routes: Routes, services: &[&str]) -> Result<Routes> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in services.iter().copied().chain([""]) {
        reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(beacon_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| Error::backend("building gRPC reflection", err))?;
    Ok(routes.add_service(health).add_service(reflection))
}

/// Serves `routes` (with health and reflection) on `listener` until `shutdown` is cancelled,
/// then drains open requests.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    services: &[&str],
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .context(|| "reading listener address".into())?;
    let routes = with_health_and_reflection(routes, services).await?;
    tracing::info!(%addr, ?services, "gRPC listening");
    Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
        .context(|| format!("serving gRPC on {addr}"))
}
