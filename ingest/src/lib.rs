//! The ingest role: validates events, authenticates the tenant by its ingest key, turns the client
//! IP into geo fields and a visitor hash (then drops it), and answers only once the event log has
//! acknowledged the events. It does no other processing.

mod error;
mod geo;
mod publisher;
mod service;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use beacon_core::backends::Backends;
use beacon_proto::ingest::v1::ingest_service_server::IngestServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::IngestError;
pub use geo::GeoIp;
pub use publisher::Publisher;
pub use service::IngestService;
pub use validate::{Limits, MAX_BATCH_EVENTS, MAX_BODY_BYTES};

/// Ingest flags; each has an environment-variable fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Address of the internal ingest gRPC API.
    #[arg(
        id = "ingest_listen",
        long = "ingest-listen",
        env = "BEACON_INGEST_LISTEN",
        default_value = "127.0.0.1:7001"
    )]
    pub listen: SocketAddr,
    /// MaxMind database (GeoLite2/GeoIP2 Country or City) used to turn IPs into places.
    #[arg(long = "geoip-db", env = "BEACON_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// How long events wait to be group-committed with others of their partition ("2ms").
    #[arg(
        long = "linger",
        env = "BEACON_LINGER",
        default_value = "2ms",
        value_parser = beacon_core::time::parse_duration
    )]
    pub linger: Duration,
}

/// Serves the ingest API on `listener` until `shutdown`, then finishes the publishes in flight.
pub async fn run(
    args: IngestArgs,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let service = Arc::new(IngestService::new(&args, &backends)?);
    serve(service, backends, listener, shutdown).await
}

/// Serves `service` on `listener` until `shutdown`, then finishes the publishes in flight. The
/// same service may also be called in process (the standalone's gateway does).
pub async fn serve(
    service: Arc<IngestService>,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let publisher = service.publisher();
    let routes = tonic::service::Routes::new(
        IngestServiceServer::from_arc(service)
            .max_decoding_message_size(MAX_BODY_BYTES)
            .max_encoding_message_size(usize::MAX),
    );
    beacon_core::grpc::serve(
        listener,
        routes,
        &["beacon.ingest.v1.IngestService"],
        &backends.tls,
        shutdown,
    )
    .await?;
    publisher.close(Duration::from_secs(10)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linger_is_a_duration_with_its_unit() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: IngestArgs,
        }
        let parse = |flags: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(["beacon"].iter().chain(flags)).map(|c| c.args)
        };
        assert_eq!(
            parse(&[]).expect("default").linger,
            Duration::from_millis(2)
        );
        let set = parse(&["--linger", "20ms"]).expect("set");
        assert_eq!(set.linger, Duration::from_millis(20));
        assert!(
            parse(&["--linger", "2"]).is_err(),
            "a number without a unit"
        );
    }
}
