//! Gateway errors.

/// What can go wrong starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A shared-crate error.
    #[error(transparent)]
    Core(#[from] beacon_core::Error),
    /// An upstream DNS source is malformed.
    #[error("upstream URL {url:?}: {why}")]
    Discovery {
        /// The URL.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A role has no upstream replica.
    #[error("no {0} replica is listed: give at least one URL")]
    NoUpstream(&'static str),
    /// A rate limit of zero.
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    /// The admin token is missing or too weak.
    #[error("{0}")]
    AdminToken(String),
    /// The server failed.
    #[error("serving the public port on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
}
