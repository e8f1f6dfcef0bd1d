//! Wiring the two listeners. The public port: gRPC and gRPC-web for ingest and insights, HTTP
//! beacons, CORS on those only, health, and reflection limited to the public protos. The admin
//! listener: the admin API, health, reflection and `/metrics`. Both bound requests in time and
//! connections in number.

use std::sync::Arc;

use beacon_core::MAX_BODY_BYTES;
use beacon_core::auth::Registry;
use beacon_core::backends::Backends;
use beacon_core::deadletter::DeadLetters;
use beacon_core::grpc::{
    metrics_text, with_health_and_reflection, with_public_health_and_reflection,
};
use beacon_proto::admin::v1::admin_service_server::AdminServiceServer;
use beacon_proto::ingest::v1::ingest_service_server::IngestServiceServer;
use beacon_proto::insights::v1::insights_service_server::InsightsServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::admin::Admin;
use crate::guard::Guard;
use crate::proxy::{IngestProxy, IngestRoute, InsightsProxy};
use crate::route::{Probe, Upstreams};
use crate::{GatewayArgs, GatewayError, InProcess, beacon, conn, dashboard, edge, export, mp};

/// The services of the public port.
const PUBLIC_SERVICES: &[&str] = &[
    "beacon.ingest.v1.IngestService",
    "beacon.insights.v1.InsightsService",
];
/// The proto packages reflection describes on the public port.
const PUBLIC_PACKAGES: &[&str] = &["beacon.ingest.v1", "beacon.insights.v1"];
/// The service of the admin listener.
const ADMIN_SERVICE: &str = "beacon.admin.v1.AdminService";
/// Requests served at once on one connection.
const PER_CONNECTION: usize = 256;
/// HTTP/2 pings to find dead peers, and how long a ping may go unanswered.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(30);
/// Connections are closed (gracefully) after this long, so none holds its permit for ever.
const MAX_CONNECTION_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Builds the services and serves both listeners until `shutdown`.
pub async fn serve(
    args: GatewayArgs,
    backends: Backends,
    in_process: InProcess,
    (public, admin): (TcpListener, TcpListener),
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let token = edge::admin_token(args.admin_token.as_deref())?;
    let registry = Registry::new(backends.tenants.clone());
    let guard = Guard::new(registry.clone(), &args)?;
    let ingest_route = match in_process.ingest {
        Some(service) => IngestRoute::InProcess(service),
        None => {
            let replicas = Arc::new(Upstreams::new(
                "ingest",
                &args.ingest_urls,
                Probe::Health("beacon.ingest.v1.IngestService"),
                &backends.tls,
            )?);
            tokio::spawn(replicas.clone().watch(shutdown.clone()));
            IngestRoute::Replicas(replicas)
        }
    };
    let query_replicas = Arc::new(Upstreams::new(
        "query",
        &args.query_urls,
        Probe::Partitions(backends.partitions),
        &backends.tls,
    )?);
    tokio::spawn(query_replicas.clone().watch(shutdown.clone()));
    let ingest = IngestProxy {
        guard: guard.clone(),
        route: ingest_route,
        timeout: args.request_timeout,
    };
    let insights = InsightsProxy {
        guard,
        upstream: query_replicas,
        partitions: backends.partitions,
        timeout: args.request_timeout,
    };
    let insights_http = insights.clone();
    let api = Routes::new(
        IngestServiceServer::new(ingest.clone()).max_decoding_message_size(MAX_BODY_BYTES),
    )
    .add_service(InsightsServiceServer::new(insights));
    let api =
        with_public_health_and_reflection(api, PUBLIC_SERVICES, PUBLIC_PACKAGES, &shutdown).await?;
    // gRPC-web is translated for the gRPC routes only: the layer refuses other HTTP/1 requests.
    let public_router = api
        .into_axum_router()
        .layer(tonic_web::GrpcWebLayer::new())
        .merge(beacon::router(ingest.clone()))
        .merge(mp::router(ingest))
        .merge(dashboard::router())
        .merge(export::router(insights_http))
        .layer(browser_cors());
    let admin_api = Admin {
        registry,
        token,
        dead_letters: DeadLetters::new(backends.dead_letters.clone()),
        events: backends.events.clone(),
        rollups: backends.rollups.clone(),
        partitions: backends.partitions,
        jobs: beacon_core::jobs::Jobs::new(backends.snapshots.clone(), backends.partitions),
        snapshots: backends.snapshots.clone(),
    };
    let admin_router = with_health_and_reflection(
        Routes::new(AdminServiceServer::new(admin_api)),
        &[ADMIN_SERVICE],
        &shutdown,
    )
    .await?
    .into_axum_router()
    .route("/metrics", axum::routing::get(metrics_text));
    tokio::try_join!(
        serve_on("public", public, public_router, &args, shutdown.clone()),
        serve_on("admin", admin, admin_router, &args, shutdown),
    )?;
    Ok(())
}

/// CORS for what browsers call (the two APIs over gRPC-web and the beacon endpoint); health
/// and reflection get no CORS headers, so pages cannot call them.
fn browser_cors() -> CorsLayer {
    CorsLayer::permissive().allow_origin(AllowOrigin::predicate(|_, parts| {
        let path = parts.uri.path();
        path == "/api/event"
            || path == "/api/report.csv"
            || PUBLIC_SERVICES
                .iter()
                .any(|s| path.starts_with(&format!("/{s}/")))
    }))
}

/// Serves `router` on `listener` with the request timeout and connection cap of `args`.
async fn serve_on(
    name: &'static str,
    listener: TcpListener,
    router: axum::Router,
    args: &GatewayArgs,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, listener = name, max_connections = args.max_connections, timeout_s = args.request_timeout.as_secs_f64(), "gateway listening");
    Server::builder()
        .trace_fn(beacon_core::trace::grpc_span)
        .accept_http1(true)
        .timeout(args.request_timeout)
        .concurrency_limit_per_connection(PER_CONNECTION)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .max_connection_age(MAX_CONNECTION_AGE)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(
            conn::incoming(listener, args.max_connections),
            beacon_core::grpc::draining(shutdown),
        )
        .await
        .map_err(|source| GatewayError::Serve { addr, source })
}
