//! Compiles the protobuf contracts with protox (no system protoc needed).

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
    std::fs::write(
        out_dir.join("beacon_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure().compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
