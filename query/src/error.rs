//! The query role's error type, mapped to `tonic::Status` in one place.

use tonic::Status;

/// What went wrong in the query role.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A shared error: invalid request, authentication, backend failure.
    #[error(transparent)]
    Core(#[from] beacon_core::Error),
    /// A DuckDB shard failed.
    #[error("{what} in the shard of tenant {tenant_id:?}: {source}")]
    Shard {
        /// The shard's tenant.
        tenant_id: String,
        /// What was being done.
        what: String,
        /// DuckDB's error.
        #[source]
        source: duckdb::Error,
    },
    /// A rollup-log message holds data that can never be applied (parked, not retried).
    #[error("invalid rollup: {0}")]
    InvalidRollup(String),
    /// A blocking shard task panicked or was cancelled.
    #[error("shard task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl QueryError {
    /// Wraps a DuckDB error of `tenant_id`'s shard with what was being done.
    pub fn shard(tenant_id: &str, what: impl Into<String>, source: duckdb::Error) -> Self {
        Self::Shard {
            tenant_id: tenant_id.to_owned(),
            what: what.into(),
            source,
        }
    }

    /// A request that breaks a rule; the message names the field and the limit.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Core(beacon_core::Error::InvalidArgument(message.into()))
    }
}

impl From<QueryError> for beacon_core::Error {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Core(err) => err,
            QueryError::Shard {
                tenant_id,
                what,
                source,
            } => beacon_core::Error::backend(
                format!("{what} in the shard of tenant {tenant_id:?}"),
                source,
            ),
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
