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
    /// Memory limit of each shard file's DuckDB instance (one per partition), e.g. "256MB".
    #[arg(
        long = "shard-memory",
        env = "BEACON_SHARD_MEMORY",
        default_value = "256MB"
    )]
    pub shard_memory: String,
    /// Partitions whose rollups this instance applies (comma-separated); all when empty.
    #[arg(
        id = "query_partitions",
        long = "query-partitions",
        env = "BEACON_QUERY_PARTITIONS",
        value_delimiter = ','
    )]
    pub own_partitions: Vec<u32>,
}

impl QueryArgs {
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
            shard_memory: "64MB".into(),
            own_partitions: own,
        }
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
