//! beacon-aggregator: consumes the event log partition by partition, stores raw events,
//! enriches and sessionizes them, and publishes rollup deltas to the rollup log.
//!
//! Every accepted event counts exactly once across crashes: the workers keep sequence
//! watermarks that make replays silent, and [`Processor`] holds the deterministic logic.

use beacon_core::backends::Backends;
use tokio_util::sync::CancellationToken;

mod args;
pub mod cap;
pub mod enrich;
mod error;
mod owner;
pub mod processor;
pub mod restate;
mod rollup;
mod session;
mod worker;

pub use args::AggregatorArgs;
pub use error::AggregatorError;
use owner::Owner;
pub use processor::{Prepared, Processor};

/// Version of the processing logic, stamped on every rollup batch. Bump it whenever a change
/// alters the rollups computed from the same raw events.
///
/// 2: dimension values are capped in length and per-day cardinality, paths are percent-decoded.
/// 3: a user agent in which neither a browser nor an operating system is recognized is a bot.
/// 4: `engagement` events (Plausible's tracker) are not counted and neither start nor extend
///    visits; new dimensions: event name, hostname, region, city, referrer URL, utm_term and
///    utm_content.
/// 5: custom properties; revenue counters (revenue in the currency stamped at ingest).
/// 6: a visit of two events or more is not a bounce (before: of two pageviews or more); every
///    counted event and engagement report is also kept in the event store (`EventRow`).
/// 7: a visit ends at the first local midnight at least 12 hours after its first event, so a
///    visitor who never pauses 30 minutes has one visit a day, not one for ever.
pub const LOGIC_VERSION: u32 = 7;
/// The oldest logic version the aggregator can still apply (`--logic-version`).
pub const OLDEST_LOGIC_VERSION: u32 = 2;

/// Runs a worker for every partition whose lease this process holds (of those
/// `--aggregator-partitions` names, or all) until `shutdown` is cancelled; then flushes,
/// snapshots, releases the leases and returns.
///
/// When one worker fails (other than by being fenced), the others are stopped (flushing and
/// snapshotting) and the error is returned.
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
        snapshot_interval: args.snapshot_interval,
        logic_version: args.logic_version,
        restate_events_per_tick: args.restate_events_per_tick,
        retention_every: args.retention_every,
        hold: args.hold,
    };
    tracing::info!(partitions = ?partitions, flush_interval = ?args.flush_interval, snapshot_interval = ?args.snapshot_interval, hold = ?args.hold, "aggregator starting");
    let result = Owner::new(backends, raw, timing, shutdown)
        .run(&partitions)
        .await;
    tracing::info!("aggregator stopped");
    result
}
