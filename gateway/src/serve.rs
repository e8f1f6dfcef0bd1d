//! Wiring the public port: gRPC + gRPC-web + CORS + HTTP beacons on one listener.

use beacon_core::MAX_BODY_BYTES;
use beacon_core::auth::Registry;
use beacon_core::backends::Backends;
use beacon_core::deadletter::DeadLetters;
use beacon_core::grpc::with_health_and_reflection;
use beacon_proto::admin::v1::admin_service_server::AdminServiceServer;
use beacon_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use beacon_proto::ingest::v1::ingest_service_server::IngestServiceServer;
use beacon_proto::insights::v1::insights_service_client::InsightsServiceClient;
use beacon_proto::insights::v1::insights_service_server::InsightsServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tower_http::cors::CorsLayer;

use crate::admin::Admin;
use crate::guard::Guard;
use crate::proxy::{IngestProxy, InsightsProxy, channel};
use crate::{GatewayArgs, GatewayError, beacon};

const SERVICES: &[&str] = &[
    "beacon.ingest.v1.IngestService",
    "beacon.insights.v1.InsightsService",
    "beacon.admin.v1.AdminService",
];

/// Builds the public services and serves them until `shutdown`.
pub async fn serve(
    args: GatewayArgs,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let registry = Registry::new(backends.tenants.clone());
    let guard = Guard::new(registry.clone(), &args)?;
    let ingest = IngestProxy {
        guard: guard.clone(),
        upstream: IngestServiceClient::new(channel(&args.ingest_urls)?)
            .max_encoding_message_size(MAX_BODY_BYTES * 2),
    };
    let insights = InsightsProxy {
        guard,
        upstream: InsightsServiceClient::new(channel(&args.query_urls)?),
    };
    let admin = Admin {
        registry,
        token: args.admin_token.clone(),
        dead_letters: DeadLetters::new(backends.dead_letters.clone()),
        events: backends.events.clone(),
        rollups: backends.rollups.clone(),
        partitions: backends.partitions,
    };
    let routes = Routes::new(
        IngestServiceServer::new(ingest.clone()).max_decoding_message_size(MAX_BODY_BYTES),
    )
    .add_service(InsightsServiceServer::new(insights))
    .add_service(AdminServiceServer::new(admin));
    let routes = with_health_and_reflection(routes, SERVICES).await?;
    // gRPC-web is translated for the gRPC routes only: the layer refuses other HTTP/1 requests.
    let router = routes
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        .merge(beacon::router(ingest));
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, "gateway listening (gRPC, gRPC-web, HTTP beacons)");
    Server::builder()
        .accept_http1(true)
        .layer(CorsLayer::permissive())
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
        .map_err(|source| GatewayError::Serve { addr, source })
}
