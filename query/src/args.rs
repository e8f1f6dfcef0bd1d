//! Command-line flags of the query role.

use crate::QueryError;

/// Flags of the query role. Every flag has an environment-variable fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Address of the internal Insights gRPC API.
    #[arg(
        id = "query_listen",
        long = "query-listen",
        env = "BEACON_QUERY_LISTEN",
        default_value = "127.0.0.1:7003"
    )]
    pub listen: std::net::SocketAddr,
    /// Memory limit of each shard file's DuckDB instance (one per partition), in bytes
    /// ("32MB", "128MiB"): its buffer pool, which holds the pages reads and writes touched;
    /// pages past it are read from the file again. At least 32MB: with 16MB DuckDB failed
    /// checkpoints for want of memory under the benchmark's load, which stops the instance.
    #[arg(
        long = "shard-memory",
        env = "BEACON_SHARD_MEMORY",
        default_value = "32MB",
        value_parser = parse_shard_memory
    )]
    pub shard_memory: u64,
    /// Bytes of answers each replica keeps until their tenant's rows change ("64MiB"): the
    /// same dashboard asked again between two writes is not computed again. "0" keeps none.
    #[arg(
        long = "result-cache",
        env = "BEACON_RESULT_CACHE",
        default_value = "64MiB",
        value_parser = beacon_core::backends::parse_bytes
    )]
    pub result_cache: u64,
    /// Bytes of settled days' sums each replica keeps ("64MiB"): a month's dashboard read
    /// under live traffic then scans the days written since, not the whole month. "0" keeps
    /// none.
    #[arg(
        long = "settled-cache",
        env = "BEACON_SETTLED_CACHE",
        default_value = "64MiB",
        value_parser = beacon_core::backends::parse_bytes
    )]
    pub settled_cache: u64,
    /// Partitions whose rollups this instance applies (comma-separated); all when empty.
    #[arg(
        id = "query_partitions",
        long = "query-partitions",
        env = "BEACON_QUERY_PARTITIONS",
        value_delimiter = ','
    )]
    pub own_partitions: Vec<u32>,
    /// Largest lag behind a partition's rollup log at which this replica still answers reads of
    /// the partition's tenants ("15s"); beyond it, or before its shard caught up after a start,
    /// it answers UNAVAILABLE and gateways ask another replica.
    #[arg(
        long = "max-serve-lag",
        env = "BEACON_MAX_SERVE_LAG",
        default_value = "15s",
        value_parser = beacon_core::time::parse_duration
    )]
    pub max_serve_lag: std::time::Duration,
    /// This replica's name, unique among the query replicas: the rollup log is trimmed only
    /// below the lowest position any replica recorded (1 to 64 characters of [a-z0-9_-]). By
    /// default the host name (`HOSTNAME`), else "query".
    #[arg(long = "replica-id", env = "BEACON_REPLICA_ID")]
    pub replica_id: Option<String>,
}

/// Least `--shard-memory`, in megabytes: DuckDB needs room to checkpoint the pages it wrote.
const MIN_SHARD_MEGABYTES: u64 = 32;

/// Parses `--shard-memory`, refusing less than [`MIN_SHARD_MEGABYTES`].
fn parse_shard_memory(text: &str) -> Result<u64, String> {
    let bytes = beacon_core::backends::parse_bytes(text)?;
    if bytes < MIN_SHARD_MEGABYTES * 1_000_000 {
        return Err(format!(
            "{text:?} is below the least a shard's DuckDB instance needs, {MIN_SHARD_MEGABYTES}MB"
        ));
    }
    Ok(bytes)
}

impl QueryArgs {
    /// This replica's name: `--replica-id`, else the host name made a valid id, else "query".
    pub fn replica(&self) -> Result<String, QueryError> {
        let id = match &self.replica_id {
            Some(id) => id.clone(),
            None => std::env::var("HOSTNAME")
                .ok()
                .map(|host| {
                    host.to_ascii_lowercase()
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '_' {
                                c
                            } else {
                                '-'
                            }
                        })
                        .take(64)
                        .collect::<String>()
                })
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| "query".to_owned()),
        };
        beacon_core::auth::validate_tenant_id(&id)
            .map_err(|err| QueryError::invalid(format!("--replica-id {id:?}: {err}")))?;
        Ok(id)
    }

    /// The partitions to consume, ascending and without repeats: `own_partitions`, or every
    /// partition of `0..partitions` when it is empty.
    pub fn partitions(&self, partitions: u32) -> Result<Vec<u32>, QueryError> {
        if self.own_partitions.is_empty() {
            return Ok((0..partitions).collect());
        }
        let mut own = self.own_partitions.clone();
        own.sort_unstable();
        own.dedup();
        if let Some(bad) = own.iter().find(|&&p| p >= partitions) {
            return Err(QueryError::invalid(format!(
                "--query-partitions: partition {bad} is out of range 0..{partitions}"
            )));
        }
        Ok(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(own: Vec<u32>) -> QueryArgs {
        QueryArgs {
            listen: ([127, 0, 0, 1], 0).into(),
            shard_memory: 64_000_000,
            result_cache: 0,
            settled_cache: 0,
            own_partitions: own,
            max_serve_lag: std::time::Duration::from_secs(15),
            replica_id: None,
        }
    }

    #[test]
    fn a_bad_memory_limit_is_refused_naming_it() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            query: QueryArgs,
        }
        let err = Cli::try_parse_from(["beacon", "--shard-memory", "lots"])
            .err()
            .expect("refused");
        let err = err.to_string();
        assert!(
            err.contains("--shard-memory") && err.contains("\"lots\""),
            "{err}"
        );
        let err = Cli::try_parse_from(["beacon", "--shard-memory", "16MB"])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--shard-memory") && err.contains("\"16MB\"") && err.contains("32MB"),
            "{err}"
        );
        let cli = Cli::try_parse_from(["beacon", "--shard-memory", "128MiB"]).expect("parsed");
        assert_eq!(cli.query.shard_memory, 128 << 20);
    }

    #[test]
    fn all_partitions_when_empty() {
        assert_eq!(
            args(vec![]).partitions(3).expect("partitions"),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn own_partitions_sorted_and_checked() {
        assert_eq!(
            args(vec![2, 0, 2]).partitions(3).expect("partitions"),
            vec![0, 2]
        );
        let err = args(vec![3]).partitions(3).expect_err("out of range");
        assert!(
            err.to_string().contains("partition 3 is out of range 0..3"),
            "{err}"
        );
    }
}
