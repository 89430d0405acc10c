//! The messages and the server trait of `inference.GRPCInferenceService`, generated at build time
//! from `server/proto/grpc_predict_v2.proto` (build.rs).

#![allow(unused_qualifications, clippy::all, clippy::pedantic)]

tonic::include_proto!("inference");
