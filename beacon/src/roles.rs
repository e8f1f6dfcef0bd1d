//! One role per process (cluster mode). Each stops gracefully on SIGINT or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use beacon_aggregator::AggregatorArgs;
use beacon_core::backends::{BackendArgs, Backends};
use beacon_gateway::{GatewayArgs, InProcess};
use beacon_ingest::IngestArgs;
use beacon_query::QueryArgs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGINT or SIGTERM.
pub fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        beacon_core::shutdown::signal().await;
        tracing::info!("shutdown requested");
        child.cancel();
    });
    token
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn open(args: &BackendArgs) -> anyhow::Result<Backends> {
    Backends::open(args).await.context("opening backends")
}

/// `beacon ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestCommand {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    ingest: IngestArgs,
}

impl IngestCommand {
    /// Runs the ingest role until a signal.
    pub async fn run(self) -> anyhow::Result<()> {
        let backends = open(&self.backend).await?;
        let listener = bind(self.ingest.listen).await?;
        beacon_ingest::run(self.ingest, backends, listener, signal_token()).await?;
        Ok(())
    }
}

/// `beacon aggregator`.
#[derive(Debug, clap::Args)]
pub struct AggregatorCommand {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    aggregator: AggregatorArgs,
    /// Address of the health and reflection gRPC endpoint.
    #[arg(
        id = "aggregator_listen",
        long = "aggregator-listen",
        env = "BEACON_AGGREGATOR_LISTEN",
        default_value = "127.0.0.1:7002"
    )]
    listen: SocketAddr,
}

impl AggregatorCommand {
    /// Runs the aggregator role until a signal.
    pub async fn run(self) -> anyhow::Result<()> {
        let backends = open(&self.backend).await?;
        let listener = bind(self.listen).await?;
        let token = signal_token();
        let tls = backends.tls.clone();
        let health = beacon_core::grpc::serve(
            listener,
            tonic::service::Routes::default(),
            &[],
            &tls,
            token.clone(),
        );
        // When the workers stop (failure included), stop the health endpoint too, so the process
        // exits instead of reporting SERVING while nothing is consumed.
        let work = async {
            let result = beacon_aggregator::run(self.aggregator, backends, token.clone()).await;
            token.cancel();
            result
        };
        let (health, work) = tokio::join!(health, work);
        work?;
        health?;
        Ok(())
    }
}

/// `beacon query`.
#[derive(Debug, clap::Args)]
pub struct QueryCommand {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    query: QueryArgs,
}

impl QueryCommand {
    /// The backend flags.
    #[cfg(test)]
    pub fn backend(&self) -> &BackendArgs {
        &self.backend
    }

    /// Runs the query role until a signal.
    pub async fn run(self) -> anyhow::Result<()> {
        let backends = open(&self.backend).await?;
        let listener = bind(self.query.listen).await?;
        beacon_query::run(self.query, backends, listener, signal_token()).await?;
        Ok(())
    }
}

/// `beacon gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayCommand {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
}

impl GatewayCommand {
    /// Runs the gateway until a signal.
    pub async fn run(self) -> anyhow::Result<()> {
        let backends = open(&self.backend).await?;
        let listener = bind(self.gateway.listen).await?;
        let admin = bind(self.gateway.admin_listen).await?;
        beacon_gateway::run(
            self.gateway,
            backends,
            InProcess::default(),
            (listener, admin),
            signal_token(),
        )
        .await?;
        Ok(())
    }
}
