//! Beacon's protobuf contracts, generated from `proto/beacon/**` at build time.
//!
//! Generated code is never edited by hand: change the `.proto` files instead.

#![allow(missing_docs, clippy::all)]

/// `beacon.ingest.v1`: the event ingestion API.
pub mod ingest {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("beacon.ingest.v1");
    }
}

/// `beacon.insights.v1`: the merchant-facing query API.
pub mod insights {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("beacon.insights.v1");
        include!(concat!(env!("OUT_DIR"), "/beacon.insights.v1.serde.rs"));
    }
}

/// `beacon.admin.v1`: tenants and keys.
pub mod admin {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("beacon.admin.v1");
    }
}

/// `beacon.pipeline.v1`: internal messages on the event and rollup logs.
pub mod pipeline {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("beacon.pipeline.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Beacon proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("beacon_descriptor");
