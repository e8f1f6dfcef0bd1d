//! The gateway: Beacon's one public port. It serves gRPC and gRPC-web (with CORS) for the
//! ingest, insights and admin APIs and Plausible-compatible HTTP beacons (`POST /api/event`),
//! authenticates API keys, applies per-tenant rate limits, and forwards to ingest and query
//! replicas. Internal services are never exposed directly.

mod admin;
mod beacon;
mod error;
mod guard;
mod proxy;
mod serve;

use std::net::SocketAddr;

use beacon_core::backends::Backends;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::GatewayError;

/// Gateway flags; each has an environment-variable fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Public address (gRPC, gRPC-web and HTTP beacons).
    #[arg(
        id = "gateway_listen",
        long = "listen",
        env = "BEACON_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Ingest replicas (comma-separated URLs).
    #[arg(
        long = "ingest-url",
        env = "BEACON_INGEST_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001"
    )]
    pub ingest_urls: Vec<String>,
    /// Query replicas (comma-separated URLs).
    #[arg(
        long = "query-url",
        env = "BEACON_QUERY_URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7003"
    )]
    pub query_urls: Vec<String>,
    /// Token for the admin API; the admin API is disabled without one.
    #[arg(
        long = "admin-token",
        env = "BEACON_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Events per second one tenant may send (sustained; bursts of the same size).
    #[arg(
        long = "tenant-events-per-second",
        env = "BEACON_TENANT_EVENTS_PER_SECOND",
        default_value_t = 100_000
    )]
    pub events_per_second: u32,
    /// Insights requests per second one tenant may make.
    #[arg(
        long = "tenant-queries-per-second",
        env = "BEACON_TENANT_QUERIES_PER_SECOND",
        default_value_t = 200
    )]
    pub queries_per_second: u32,
}

/// Serves the public port on `listener` until `shutdown`, then drains open requests.
pub async fn run(
    args: GatewayArgs,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    serve::serve(args, backends, listener, shutdown).await
}
