//! beacon-query: the query role.
//!
//! It consumes the rollup log of the partitions it serves, applies the rollups of each
//! partition to that partition's DuckDB shard file exactly once, several messages per
//! transaction ([`apply`], [`shard`]), and answers the Insights gRPC API ([`insights`],
//! [`service`]).
//!
//! Invariants: one writer per shard file (this process); DuckDB never runs on the async
//! runtime; the watermark of every partition lives in the shard, in the same transaction as the
//! data it protects; the tenant of every query comes only from its read key.

use std::sync::Arc;

use beacon_core::auth::Registry;
use beacon_core::backends::Backends;
use beacon_core::consumer::Lane;
use beacon_core::shutdown::Tasks;
use beacon_proto::insights::v1::insights_service_server::InsightsServiceServer;
use beacon_proto::pipeline::v1::replica_service_server::ReplicaServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod apply;
mod args;
pub mod cache;
mod error;
mod expire;
pub mod filter;
pub mod insights;
pub mod metrics;
pub mod range;
pub mod report;
pub mod service;
pub mod serving;
pub mod shard;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use args::QueryArgs;
pub use error::QueryError;
pub use insights::Insights;
pub use service::InsightsApi;
pub use serving::Serving;
pub use shard::{
    Applied, DuckShardStore, EventPosition, Refused, RollupMessage, ShardStore, ValidRollup,
};

/// The gRPC service name the query role serves.
pub const SERVICE_NAME: &str = "beacon.insights.v1.InsightsService";

/// Applies the rollup log to the shards and serves InsightsService on `listener` until `shutdown`.
///
/// Shards live in `<data_dir>/shards/partition.<p>.duckdb`; each consumer resumes after its
/// shard's watermark. On shutdown the server drains open requests and every consumer finishes
/// its current batch before this returns.
pub async fn run(
    args: QueryArgs,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), QueryError> {
    let partitions = args.partitions(backends.partitions)?;
    let tls = backends.tls.clone();
    let replica = args.replica()?;
    let store = DuckShardStore::new(
        backends.data_dir.join("shards"),
        backends.partitions,
        args.shard_memory,
    )?
    .with_settled_cache(args.settled_cache);
    let shared: Arc<dyn ShardStore> = Arc::new(store.clone());

    let consumers = Tasks::new(shutdown.child_token());
    for &partition in partitions.iter() {
        let lane = Lane::new(
            "query",
            partition,
            backends.dead_letters.clone(),
            consumers.token().clone(),
        )
        .with_decisions(backends.snapshots.clone());
        let consumer = apply::Consumer::new(
            lane,
            backends.rollups.clone(),
            shared.clone(),
            backends.snapshots.clone(),
            &replica,
        )
        .with_rebuild(apply::Rebuild {
            tenants: backends.tenants.clone(),
            jobs: beacon_core::jobs::Jobs::new(backends.snapshots.clone(), backends.partitions),
        });
        consumers.spawn(consumer.run());
    }
    consumers.spawn(expire::run(
        store.clone(),
        backends.tenants.clone(),
        (partitions.clone(), backends.partitions),
        consumers.token().clone(),
    ));
    tracing::info!(
        ?partitions,
        replica,
        shard_memory = args.shard_memory,
        result_cache = args.result_cache,
        settled_cache = args.settled_cache,
        "query role started"
    );

    let serving = Serving::new(
        &replica,
        backends.partitions,
        partitions,
        args.max_serve_lag,
        shutdown.clone(),
    );
    let api = InsightsApi::new(
        Registry::new(backends.tenants.clone()),
        Insights::new(shared).with_cache(args.result_cache),
        serving.clone(),
    );
    let routes = tonic::service::Routes::new(InsightsServiceServer::new(api))
        .add_service(ReplicaServiceServer::new(serving));
    let served = beacon_core::grpc::serve(listener, routes, &[SERVICE_NAME], &tls, shutdown).await;

    // The server stops on shutdown or on error; the consumers stop with it either way.
    consumers.token().cancel();
    consumers.drain().await;
    store.close().await?;
    tracing::info!("query role stopped");
    Ok(served?)
}
