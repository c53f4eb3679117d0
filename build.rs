//! Compiles the public API in `proto/` with protox (pure Rust, no `protoc` needed) and keeps the
//! descriptor set for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/hkms/v1/types.proto",
        "proto/hkms/v1/keys.proto",
        "proto/hkms/v1/policy.proto",
        "proto/hkms/v1/ceremony.proto",
        "proto/hkms/v1/audit.proto",
        "proto/hkms/v1/card.proto",
        "proto/hkms/v1/transport.proto",
        "proto/hkms/v1/witness.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("hkms_descriptor.bin"), fds.encode_to_vec())?;
    // A body that does not decode is the caller's error (src/proto/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::proto::codec::ApiCodec")
        .compile_fds(fds)?;
    Ok(())
}
