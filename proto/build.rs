//! Compiles the protobuf contracts with protox (no system protoc needed), and the proto3 JSON
//! form of the Insights messages with pbjson.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "beacon/ingest/v1/ingest.proto",
    "beacon/insights/v1/insights.proto",
    "beacon/admin/v1/admin.proto",
    "beacon/pipeline/v1/pipeline.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["."])?;
    compiler.include_imports(true);
    compiler.include_source_info(true);
    compiler.open_files(PROTOS)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("beacon_descriptor.bin"), &descriptors)?;
    tonic_prost_build::configure()
        // Held events are kept encoded, and snapshotted without a copy.
        .bytes(".beacon.pipeline.v1.HeldEvent.event")
        .compile_fds(compiler.file_descriptor_set())?;
    // The proto3 JSON form of the Insights messages, for the gateway's HTTP report export.
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".beacon.insights.v1"])?;
    Ok(())
}
