//! The gateway: Beacon's one public port. It serves gRPC and gRPC-web (with CORS) for the
//! ingest and insights APIs and Plausible-compatible HTTP beacons (`POST /api/event`),
//! authenticates API keys, applies per-tenant rate limits and a per-address limit on failed
//! authentication, bounds requests in time and connections in number, and forwards to ingest
//! and query replicas. The admin API has its own listener, never the public port. Internal
//! services are never exposed directly.

mod admin;
mod beacon;
mod conn;
mod dashboard;
mod edge;
mod error;
mod export;
mod guard;
mod mp;
mod proxy;
mod route;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;

use beacon_core::backends::Backends;
use beacon_proto::ingest::v1::ingest_service_server::IngestService;
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
    /// Address of the admin API (tenants, keys, dead letters) and `/metrics`; keep it private.
    #[arg(
        long = "admin-listen",
        env = "BEACON_ADMIN_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub admin_listen: SocketAddr,
    /// Token for the admin API: at least 24 characters; the gateway refuses to start without.
    #[arg(
        long = "admin-token",
        env = "BEACON_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed (comma-separated CIDR ranges, such as
    /// "10.0.0.0/8"); the client is the rightmost address that is not one of them. Nobody's
    /// when empty: the client is the TCP peer.
    #[arg(
        long = "trusted-proxies",
        env = "BEACON_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNetwork>,
    /// Longest time one request may take, body included ("30s").
    #[arg(
        long = "request-timeout",
        env = "BEACON_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = beacon_core::time::parse_duration
    )]
    pub request_timeout: Duration,
    /// Most connections open at once on each listener; more wait to be accepted.
    #[arg(
        long = "max-connections",
        env = "BEACON_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,
    /// Failed authentications one address may make per second (bursts of ten times that)
    /// before it is refused for ten seconds.
    #[arg(
        long = "failed-auth-per-second",
        env = "BEACON_FAILED_AUTH_PER_SECOND",
        default_value_t = 20
    )]
    pub failed_auth_per_second: u32,
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

/// Services of other roles running in the gateway's process, called without a network hop.
#[derive(Clone, Default)]
pub struct InProcess {
    /// The ingest service (`beacon standalone`): admitted events go to it directly instead of
    /// over gRPC to `--ingest-url`.
    pub ingest: Option<Arc<dyn IngestService>>,
}

/// Serves the public port on `public` and the admin API on `admin` until `shutdown`, then
/// drains open requests. Refuses to start with a missing or weak admin token.
pub async fn run(
    args: GatewayArgs,
    backends: Backends,
    in_process: InProcess,
    (public, admin): (TcpListener, TcpListener),
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    serve::serve(args, backends, in_process, (public, admin), shutdown).await
}
