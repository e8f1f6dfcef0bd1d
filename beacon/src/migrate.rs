//! `beacon migrate`: applies the Cassandra raw store's versioned schema (keyspace with its
//! replication, tables, time-window compaction). Safe to run again.

use beacon_core::backends::CassandraArgs;
use beacon_core::raw::cassandra::CassandraRawStore;

/// `beacon migrate` flags.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    cassandra: CassandraArgs,
}

/// Connects, applies the schema, prints the keyspace and its schema version.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let Some(config) = args.cassandra.config() else {
        anyhow::bail!(
            "beacon migrate applies the Cassandra schema: give --cassandra-contact-points \
             (or CASSANDRA_CONTACT_POINTS)"
        );
    };
    let store = CassandraRawStore::connect(&config).await?;
    let version = store.migrate(&config.replication).await?;
    println!(
        "{}",
        serde_json::json!({
            "keyspace": store.keyspace(),
            "schema_version": version,
            "replication": config.replication.to_cql(),
        })
    );
    Ok(())
}
