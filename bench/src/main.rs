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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("beacon-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(beacon_bench::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("beacon-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
