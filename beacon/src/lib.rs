//! The `beacon` command line: `standalone` runs every role in one process; `ingest`,
//! `aggregator`, `query` and `gateway` run one role each (cluster mode); `admin` manages tenants.

mod accept_log;
mod admin;
mod arenas;
mod deadletters;
mod health;
mod import;
mod migrate;
mod reprocess;
mod roles;
mod standalone;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Beacon: a self-hostable analytics backend.
#[derive(Debug, Parser)]
#[command(name = "beacon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every role in one process on a local data folder, no external services.
    Standalone(Box<standalone::StandaloneArgs>),
    /// The ingest role.
    Ingest(roles::IngestCommand),
    /// The aggregator role.
    Aggregator(roles::AggregatorCommand),
    /// The query role.
    Query(roles::QueryCommand),
    /// The public gateway.
    Gateway(roles::GatewayCommand),
    /// Tenants and keys, through the gateway's admin API.
    Admin(admin::AdminArgs),
    /// Dead letters (what failed after it was accepted): list, show, replay, drop.
    Deadletters(deadletters::DeadLettersArgs),
    /// Applies the Cassandra raw store's schema.
    Migrate(migrate::MigrateArgs),
    /// Loads history (NDJSON of Plausible Events API bodies or of the proto's JSON form).
    Import(import::ImportArgs),
    /// Recomputes rollups from the raw store (a logic change, late data) and follows the jobs.
    Reprocess(reprocess::ReprocessArgs),
    /// Reads a tenant's insights with a read key.
    Stats(stats::StatsArgs),
    /// Checks that a role is serving (for container health checks).
    Health(health::HealthArgs),
    /// Lets the consumers of a log they refused (created anew, trimmed past them, gone
    /// backwards) go on with it as it is.
    AcceptLog(accept_log::AcceptLogArgs),
}

/// Variables of flags that were renamed when they became durations, with their new names: a
/// deployment still setting one would otherwise run with the default without a word.
const RENAMED: [(&str, &str); 3] = [
    ("BEACON_FLUSH_INTERVAL_MS", "BEACON_FLUSH_INTERVAL=1s"),
    ("BEACON_SNAPSHOT_INTERVAL_S", "BEACON_SNAPSHOT_INTERVAL=30s"),
    ("BEACON_LINGER_MS", "BEACON_LINGER=2ms"),
];

/// The first renamed variable set in `env`, said as an error naming its new form.
fn renamed_variable(env: impl Fn(&str) -> bool) -> Option<String> {
    RENAMED.iter().find(|(old, _)| env(old)).map(|(old, new)| {
        format!("{old} is no longer read: set {new} (a duration with its unit) instead")
    })
}

/// Parses the command line, runs the command, and reports failure on stderr.
pub fn main() -> ExitCode {
    if let Some(err) = renamed_variable(|name| std::env::var_os(name).is_some()) {
        eprintln!("beacon: {err}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if matches!(cli.command, Command::Standalone(_)) {
        arenas::cap();
    }
    beacon_core::shutdown::run_main("beacon", run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Admin(args) => admin::run(args).await,
        Command::Deadletters(args) => deadletters::run(args).await,
        Command::Reprocess(args) => reprocess::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Health(args) => health::run(args).await,
        Command::AcceptLog(args) => accept_log::run(args).await,
        Command::Stats(args) => stats::run(args).await,
        command => {
            let _telemetry = beacon_core::telemetry::init(service_name(&command));
            match command {
                Command::Standalone(args) => standalone::run(*args).await,
                Command::Ingest(cmd) => cmd.run().await,
                Command::Aggregator(cmd) => cmd.run().await,
                Command::Query(cmd) => cmd.run().await,
                Command::Gateway(cmd) => cmd.run().await,
                Command::Admin(_)
                | Command::Deadletters(_)
                | Command::Reprocess(_)
                | Command::Import(_)
                | Command::Migrate(_)
                | Command::Health(_)
                | Command::AcceptLog(_)
                | Command::Stats(_) => Ok(()),
            }
        }
    }
}

/// The name a long-running command reports its traces and metrics under.
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::Ingest(_) => "beacon-ingest",
        Command::Aggregator(_) => "beacon-aggregator",
        Command::Query(_) => "beacon-query",
        Command::Gateway(_) => "beacon-gateway",
        _ => "beacon",
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn a_renamed_variable_is_refused_naming_its_new_form() {
        assert_eq!(super::renamed_variable(|_| false), None);
        let err = super::renamed_variable(|name| name == "BEACON_LINGER_MS").expect("refused");
        assert!(err.contains("BEACON_LINGER=2ms"), "{err}");
    }

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn flags_of_the_same_field_name_stay_apart() {
        let cli = super::Cli::try_parse_from([
            "beacon",
            "query",
            "--tls-ca",
            "mesh.pem",
            "--cassandra-tls-ca",
            "cassandra.pem",
        ])
        .expect("parses");
        let super::Command::Query(query) = cli.command else {
            panic!("not the query command");
        };
        let backend = query.backend();
        assert_eq!(backend.tls.tls_ca.as_deref(), Some("mesh.pem".as_ref()));
        assert_eq!(
            backend.cassandra.tls_ca.as_deref(),
            Some("cassandra.pem".as_ref())
        );
    }
}
