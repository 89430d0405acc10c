//! Compiles the Open Inference Protocol's gRPC definition (proto/grpc_predict_v2.proto) into the
//! server side of `inference.GRPCInferenceService` (no client, no transport: the server's own
//! connection layer serves it). Needs `protoc` (Debian: protobuf-compiler, scripts/apt-packages.txt).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        // bytes::Bytes for `bytes` fields: an encoded picture is a slice of the request, not a copy
        .bytes(".")
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])?;
    Ok(())
}
