//! `beacon accept-log`: the operator's decision about a log that consumers refused to go on
//! with (created anew, trimmed past their positions, or gone backwards): take it as it is. The
//! refusing aggregators (event log) or query replicas (rollup log) of the partitions go on
//! within seconds: on a log created anew from its start, past trimmed messages, or after the
//! end the log has now. The other way out is a rebuild from the raw store (see the README).

use beacon_core::backends::{BackendArgs, Backends};

/// Whose log is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consumer {
    /// The aggregators, consumers of the event log.
    Aggregator,
    /// The query replicas, consumers of the rollup log.
    Query,
}

/// `beacon accept-log` flags.
#[derive(Debug, clap::Args)]
pub struct AcceptLogArgs {
    /// The role whose consumers go on.
    #[arg(long, value_enum)]
    role: Consumer,
    /// The partitions (comma-separated); all when not given.
    #[arg(id = "accept_partition", long = "partition", value_delimiter = ',')]
    partitions: Vec<u32>,
    /// Where Beacon keeps its state (the same flags as the roles).
    #[command(flatten)]
    backend: BackendArgs,
}

/// Records the decision for every partition named and prints what was accepted.
pub async fn run(args: AcceptLogArgs) -> anyhow::Result<()> {
    let backends = Backends::open(&args.backend).await?;
    let (role, log) = match args.role {
        Consumer::Aggregator => ("aggregator", backends.events.clone()),
        Consumer::Query => ("query", backends.rollups.clone()),
    };
    let partitions = match args.partitions.as_slice() {
        [] => (0..backends.partitions).collect(),
        named => named.to_vec(),
    };
    for partition in partitions {
        anyhow::ensure!(
            partition < backends.partitions,
            "--partition: {partition} is not below the partition count {}",
            backends.partitions
        );
        let taken =
            beacon_core::accept::accept(backends.snapshots.as_ref(), role, partition, log.as_ref())
                .await?;
        println!(
            "{}",
            serde_json::json!({
                "role": role,
                "partition": partition,
                "log": taken.identity,
                "end": taken.end,
            })
        );
    }
    Ok(())
}
