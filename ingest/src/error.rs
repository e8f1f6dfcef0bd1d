//! Ingest errors, mapped to gRPC status in one place.

use tonic::Status;

/// What can go wrong in the ingest role.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A storage or auth error from the shared crate.
    #[error(transparent)]
    Core(#[from] beacon_core::Error),
    /// The GeoIP database could not be opened.
    #[error("opening GeoIP database {path}: {source}")]
    GeoIp {
        /// The database path.
        path: String,
        /// What maxminddb said.
        #[source]
        source: maxminddb::MaxMindDbError,
    },
}

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Self {
        match err {
            IngestError::Core(err) => err.into(),
            other => Status::internal(other.to_string()),
        }
    }
}
