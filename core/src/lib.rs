//! Shared building blocks of every Beacon role.
//!
//! Every external system sits behind a small trait with an embedded implementation (standalone
//! mode, local disk, durable) and a clustered one (NATS JetStream; Cassandra for raw events):
//!
//! - [`log::Log`]: the partitioned event and rollup logs.
//! - [`raw::RawStore`]: raw events, idempotent on event id, the source of truth that
//!   restatement jobs ([`jobs`]) replay.
//! - [`meta::TenantStore`], [`meta::SaltStore`], [`meta::SnapshotStore`]: tenants and keys,
//!   daily visitor salts, aggregator snapshots.
//!
//! Dependencies point downward only: roles depend on this crate, never the other way.

pub mod accept;
pub mod auth;
pub mod backends;
pub mod consumer;
pub mod deadletter;
pub mod error;
pub mod grpc;
pub mod jobs;
pub mod lease;
pub mod log;
pub mod meta;
pub mod observe;
pub mod partition;
pub mod property;
pub mod raw;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace;
pub mod visitor;

pub use error::{Error, Result};

/// Largest request body Beacon accepts (a gRPC message or an HTTP beacon), in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
