//! beacon-aggregator: consumes the event log partition by partition, stores raw events,
//! enriches and sessionizes them, and publishes rollup deltas to the rollup log.
//!
//! Every accepted event counts exactly once across crashes: the workers keep sequence
//! watermarks that make replays silent, and [`Processor`] holds the deterministic logic.

use std::collections::HashMap;

use beacon_core::backends::Backends;
use beacon_core::consumer::Lane;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod args;
pub mod cap;
pub mod enrich;
mod error;
pub mod processor;
pub mod restate;
mod rollup;
mod session;
mod worker;

pub use args::AggregatorArgs;
pub use error::AggregatorError;
pub use processor::{Prepared, Processor};

/// Version of the processing logic, stamped on every rollup batch. Bump it whenever a change
/// alters the rollups computed from the same raw events.
///
/// 2: dimension values are capped in length and per-day cardinality, paths are percent-decoded.
/// 3: a user agent in which neither a browser nor an operating system is recognized is a bot.
pub const LOGIC_VERSION: u32 = 3;
/// The oldest logic version the aggregator can still apply (`--logic-version`).
pub const OLDEST_LOGIC_VERSION: u32 = 2;

/// Runs one worker per owned partition until `shutdown` is cancelled; then flushes, snapshots and returns.
///
/// When one worker fails, the others are stopped (flushing and snapshotting) and the first error
/// is returned.
pub async fn run(
    args: AggregatorArgs,
    backends: Backends,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    let partitions = args.partitions(backends.partitions)?;
    let raw = backends.open_raw_store().await.map_err(|err| {
        AggregatorError::backend(
            format!("opening the raw store in {}", backends.data_dir.display()),
            err,
        )
    })?;
    let timing = worker::Settings {
        flush_interval: args.flush_interval(),
        snapshot_interval: args.snapshot_interval(),
        logic_version: args.logic_version,
        restate_events_per_tick: args.restate_events_per_tick,
        retention_every: args.retention_every,
    };
    tracing::info!(partitions = ?partitions, flush_interval_ms = args.flush_interval_ms, snapshot_interval_s = args.snapshot_interval_s, "aggregator starting");
    let stop = shutdown.child_token();
    let mut workers = JoinSet::new();
    let mut owners = HashMap::new();
    for partition in partitions {
        let lane = Lane::new(
            "aggregator",
            partition,
            backends.dead_letters.clone(),
            stop.clone(),
        );
        let task = worker::run_partition(lane, timing, backends.clone(), raw.clone());
        owners.insert(workers.spawn(task).id(), partition);
    }
    let mut first_error = None;
    while let Some(joined) = workers.join_next_with_id().await {
        let (partition, failure) = match joined {
            Ok((_, Ok(()))) => continue,
            Ok((id, Err(err))) => (owners.get(&id).copied(), err),
            Err(err) => {
                let partition = owners.get(&err.id()).copied();
                let reason = if err.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                let failure = AggregatorError::Worker {
                    partition: partition.unwrap_or_default(),
                    reason: reason.to_owned(),
                };
                (partition, failure)
            }
        };
        tracing::error!(partition, error = %failure, "partition worker failed; stopping the aggregator");
        stop.cancel();
        first_error.get_or_insert(failure);
    }
    tracing::info!("aggregator stopped");
    first_error.map_or(Ok(()), Err)
}
