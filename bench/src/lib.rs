//! Beacon's load generator and benchmarks.
//!
//! `beacon-bench` starts what it needs (nats-server, `beacon standalone`, one process per role),
//! runs each scenario and prints one table: every figure beside a baseline measured in the same
//! run, and their ratio. These machines are noisy: only same-run ratios mean something.

pub mod procs;
pub mod retry;
pub mod send;
pub mod tenants;
pub mod traffic;

mod availability;
mod baseline;
mod freshness;
mod ingest;
mod query;
mod report;
mod reprocess;

use std::time::Duration;

pub use report::Table;

/// `beacon-bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A small run (well under 3 minutes) that exercises every scenario; used by CI.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the traffic model.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Events sent in each ingest run (default: 40,000 quick, 1,000,000 full).
    #[arg(long)]
    pub events: Option<u64>,
    /// Tenants in the traffic model (default: 50 quick, 1,000 full).
    #[arg(long)]
    pub tenants: Option<usize>,
    /// Steady rate of the freshness run, events/s (default: 5,000 quick, 20,000 full).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Calls in flight during the ingest runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Events of the largest tenant's month in the dashboard rows (default: 100,000 quick,
    /// 10,000,000 full).
    #[arg(long)]
    pub largest_tenant_events: Option<usize>,
    /// Run one scenario only (to profile it).
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub only: Scenario,
}

/// The scenarios of `beacon-bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Every scenario.
    All,
    /// Ingest throughput, standalone and cluster (with the JetStream baseline).
    Ingest,
    /// Ingest throughput of the standalone only (with the JetStream baseline).
    Standalone,
    /// Freshness lag.
    Freshness,
    /// Dashboard latency and tenant scale.
    Query,
    /// Reprocessing rate.
    Reprocess,
    /// Errors during a rolling restart, and failover time.
    Availability,
}

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Traffic seed.
    pub seed: u64,
    /// Events per ingest run.
    pub events: u64,
    /// Tenants.
    pub tenants: usize,
    /// Freshness load, events/s.
    pub rate: u64,
    /// How long the loaded freshness run lasts.
    pub freshness_for: Duration,
    /// Freshness probes of the idle phase (the loaded phase sends as many as fit in its time).
    pub probes: usize,
    /// Calls in flight.
    pub concurrency: usize,
    /// Events of the largest tenant's month of history.
    pub largest_tenant_events: usize,
    /// Events of the median tenant's month of history.
    pub median_tenant_events: usize,
    /// Dashboards requested per latency measurement.
    pub query_requests: usize,
    /// Least time each dashboard latency measurement through the gateway lasts.
    pub dashboard_for: Duration,
    /// Dashboards the raw-scan baseline computes per latency measurement (each one scans the
    /// tenant's whole month).
    pub raw_requests: usize,
    /// Tenants loaded for the tenant-scale rows: the baseline count, then the measured one.
    pub scale_tenants: (usize, usize),
    /// Events of each tenant loaded for the tenant-scale rows.
    pub scale_events_per_tenant: usize,
    /// Events of the month the reprocessing row replays.
    pub reprocess_events: usize,
}

impl Plan {
    /// The plan `args` ask for.
    pub fn from_args(args: &BenchArgs) -> Self {
        let quick = args.quick;
        Self {
            seed: args.seed,
            events: args
                .events
                .unwrap_or(if quick { 40_000 } else { 1_000_000 }),
            tenants: args.tenants.unwrap_or(if quick { 50 } else { 1_000 }),
            rate: args.rate.unwrap_or(if quick { 5_000 } else { 20_000 }),
            freshness_for: Duration::from_secs(if quick { 8 } else { 60 }),
            probes: 500,
            concurrency: args.concurrency,
            largest_tenant_events: args.largest_tenant_events.unwrap_or(if quick {
                100_000
            } else {
                10_000_000
            }),
            median_tenant_events: if quick { 2_000 } else { 30_000 },
            query_requests: if quick { 48 } else { 480 },
            raw_requests: if quick { 48 } else { 32 },
            dashboard_for: Duration::from_secs(if quick { 3 } else { 10 }),
            scale_tenants: if quick {
                (200, 5_000)
            } else {
                (1_000, 100_000)
            },
            scale_events_per_tenant: 10,
            reprocess_events: if quick { 200_000 } else { 2_000_000 },
        }
    }
}

/// Runs the scenarios asked for and prints the table.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args);
    let mut table = Table::new(&plan);
    let wanted = |scenario: Scenario| args.only == Scenario::All || args.only == scenario;
    let cluster = wanted(Scenario::Ingest);
    if cluster || args.only == Scenario::Standalone {
        ingest_rows(&plan, &mut table, cluster).await?;
    }
    if wanted(Scenario::Freshness) {
        freshness::run(&plan, &mut table).await?;
    }
    if wanted(Scenario::Query) {
        query::run(&plan, &mut table).await?;
        query::scale::run(&plan, &mut table).await?;
        query::recompute::run(&plan, &mut table).await?;
    }
    if wanted(Scenario::Reprocess) {
        reprocess::run(&plan, &mut table).await?;
    }
    if wanted(Scenario::Availability) {
        availability::run(&plan, &mut table).await?;
    }
    table.print();
    Ok(())
}

/// The ingest rows, beside the bare JetStream publish rate; the cluster's too if `cluster`.
async fn ingest_rows(plan: &Plan, table: &mut Table, cluster: bool) -> anyhow::Result<()> {
    let measured = baseline::jetstream_publish(plan).await?;
    let baseline = measured.events_per_s;
    table.throughput(
        "JetStream async publish, one message per event (bare async-nats)",
        baseline,
        baseline,
    );
    let mut modes = vec![(
        "standalone",
        ingest::standalone(plan, table, measured.nats_cpu_per_million).await?,
    )];
    if cluster {
        modes.push((
            "cluster",
            ingest::cluster(plan, table, measured.nats_cpu_per_million).await?,
        ));
    }
    for (mode, rates) in modes {
        // The label says the batch size as measured: partial batches sent after waiting a
        // second make it smaller than the 100 the sender asks for.
        let calls = format!("{:.1} events per gRPC call", rates.events_per_call);
        table.throughput(
            &format!("ingest acknowledged, {mode} (first byte to last ack; {calls})"),
            rates.acknowledged,
            baseline,
        );
        table.throughput(
            &format!("ingest end to end, {mode} (first byte to rollups applied; {calls})"),
            rates.applied,
            baseline,
        );
    }
    Ok(())
}
