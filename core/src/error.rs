//! The error type shared by Beacon's storage traits, mapped to `tonic::Status` in one place.

use tonic::{Code, Status};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend (file, NATS, Cassandra, DuckDB) failed.
    #[error("{what}: {source}")]
    Backend {
        /// What Beacon was doing, with its inputs.
        what: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The caller sent something invalid; the message names the field and the limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Something the caller named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Something the caller wants to create exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// No key, or an unknown key.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A valid key that may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Temporarily unable to serve (shutting down, backend unreachable, rate limited).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too many requests for this tenant.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// Stored data could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A conditional write lost a race (the log moved on since it was read); read again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request needs more than one request may use (memory, time); the message names the
    /// limit and how to stay under it.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A valid request Beacon cannot answer yet; the message says what it would need.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
}

impl Error {
    /// Wraps a backend error with a description of the failed operation.
    pub fn backend(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The gRPC status code for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::Backend { .. } | Self::Corrupt(_) => Code::Internal,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unavailable(_) => Code::Unavailable,
            Self::RateLimited(_) => Code::ResourceExhausted,
            Self::Conflict(_) => Code::Aborted,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::Unimplemented(_) => Code::Unimplemented,
        }
    }

    /// Whether trying the same call again later may succeed: a backend that is down or busy.
    /// Invalid input, missing or corrupt data and refused keys fail the same way on every
    /// attempt, so retrying them would stall whoever waits for the call; so does a lost
    /// conditional write ([`Error::Conflict`]), whose caller must read again and decide.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Backend { .. } | Self::Unavailable(_) | Self::RateLimited(_)
        )
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

/// Adds context to a backend error: `.context(|| format!("reading {path}"))`.
pub trait ResultExt<T> {
    /// Wraps the error as [`Error::Backend`] with `what` describing the operation.
    fn context<F: FnOnce() -> String>(self, what: F) -> Result<T>;
}

impl<T, E> ResultExt<T> for std::result::Result<T, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn context<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|err| Error::backend(what(), err))
    }
}
