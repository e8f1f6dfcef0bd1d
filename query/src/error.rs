//! The query role's error type, mapped to `tonic::Status` in one place.

use tonic::Status;

use crate::shard::DuckFailure;

/// What went wrong in the query role.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A shared error: invalid request, authentication, backend failure.
    #[error(transparent)]
    Core(#[from] beacon_core::Error),
    /// A shard file failed.
    #[error("{what} in shard {shard}: {source}")]
    Shard {
        /// The shard file.
        shard: String,
        /// What was being done.
        what: String,
        /// DuckDB's or the sketch library's error.
        #[source]
        source: ShardFailure,
    },
    /// A rollup-log message holds data that can never be applied (parked, not retried).
    #[error("invalid rollup: {0}")]
    InvalidRollup(String),
    /// A blocking shard task panicked or was cancelled.
    #[error("shard task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The cause of a shard failure.
#[derive(Debug, thiserror::Error)]
pub enum ShardFailure {
    /// DuckDB failed.
    #[error(transparent)]
    DuckDb(#[from] duckdb::Error),
    /// A stored visitor sketch could not be read or built.
    #[error("HLL sketch: {0}")]
    Sketch(#[from] datasketches::error::Error),
    /// A read needed more memory than one read may use.
    #[error("{0}")]
    Budget(String),
}

impl QueryError {
    /// Wraps a failure of `shard` (a file name) with what was being done.
    pub fn shard(
        shard: impl Into<String>,
        what: impl Into<String>,
        source: impl Into<ShardFailure>,
    ) -> Self {
        Self::Shard {
            shard: shard.into(),
            what: what.into(),
            source: source.into(),
        }
    }

    /// A request that breaks a rule; the message names the field and the limit.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Core(beacon_core::Error::InvalidArgument(message.into()))
    }

    /// A valid request the rollups cannot answer; the message says why.
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::Core(beacon_core::Error::Unimplemented(message.into()))
    }
}

impl From<QueryError> for beacon_core::Error {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Core(err) => err,
            QueryError::Shard {
                source: ShardFailure::Budget(reason),
                ..
            } => beacon_core::Error::ResourceExhausted(reason),
            QueryError::Shard {
                shard,
                what,
                source,
            } if source.out_of_memory() => beacon_core::Error::ResourceExhausted(format!(
                "{what} in shard {shard} needs more memory than the shard may use \
                 (--shard-memory): {source}"
            )),
            QueryError::Shard {
                shard,
                what,
                source,
            } => beacon_core::Error::backend(format!("{what} in shard {shard}"), source),
            QueryError::InvalidRollup(reason) => beacon_core::Error::Corrupt(reason),
            QueryError::Task(err) => beacon_core::Error::backend("running a shard task", err),
        }
    }
}

impl From<QueryError> for Status {
    fn from(err: QueryError) -> Self {
        beacon_core::Error::from(err).into()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn maps_to_status_codes() {
        assert_eq!(
            Status::from(QueryError::invalid("limit")).code(),
            Code::InvalidArgument
        );
        let unauthenticated =
            QueryError::Core(beacon_core::Error::Unauthenticated("no key".into()));
        assert_eq!(Status::from(unauthenticated).code(), Code::Unauthenticated);
        assert_eq!(
            Status::from(QueryError::InvalidRollup("bad".into())).code(),
            Code::Internal
        );
    }

    #[test]
    fn invalid_message_is_kept() {
        let status = Status::from(QueryError::invalid(
            "limit 5000 is above the maximum of 1,000",
        ));
        assert!(
            status.message().contains("limit 5000"),
            "{}",
            status.message()
        );
    }
}
