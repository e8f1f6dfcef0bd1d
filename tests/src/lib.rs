//! Test harness: starts the real `beacon` binary (standalone or one process per role) and real
//! nats-server processes on free ports, generates reproducible traffic with its expected numbers,
//! and reads the numbers back through the public gateway.

pub mod client;
pub mod collector;
pub mod failover;
pub mod health;
pub mod reports;
pub mod run;
pub mod sessions;
pub mod traffic;

pub use beacon_bench::procs as process;
pub use beacon_bench::procs::{Cluster, Role, Standalone};
pub use client::Client;
