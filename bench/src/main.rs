//! The `beacon-bench` binary: the benchmarks, kept out of the `beacon` binary so that the load
//! generator and the test harness never ship with Beacon.

use std::process::ExitCode;

use clap::Parser;

/// Runs the benchmarks and prints every figure beside a same-run baseline.
#[derive(Debug, Parser)]
#[command(name = "beacon-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: beacon_bench::BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    beacon_core::shutdown::run_main("beacon-bench", beacon_bench::run(cli.args))
}
