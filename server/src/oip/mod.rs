//! The Open Inference Protocol (v2, the KServe/Triton prediction protocol), protocol-neutral: what
//! the REST routes (`http/v2/`) and the gRPC service ([`crate::grpc`]) share, so both accept the
//! same inputs, answer the same outputs and refuse the same requests with the same errors.
//!
//! - `tensor`: element types, the raw little-endian form of a tensor's elements (the binary
//!   tensor extension and gRPC's `raw_*_contents`), shapes;
//! - `infer`: a request's input -> the pictures the classifier takes ([`Pictures`]), the outputs
//!   asked for, the answers -> output tensors;
//! - `metadata`: the server's and the model's metadata, and which model and version a request names.
//!
//! The served model is the one [`ModelSpec`](crate::model::ModelSpec) describes: its name and
//! version come from its metadata. Imports the classifier's answers, the model spec and
//! [`crate::errors`] (every refusal is an [`ApiError`](crate::errors::ApiError), mapped to its
//! HTTP status and gRPC code there).

mod infer;
mod metadata;
mod tensor;

pub use infer::{
    InputTensor, OutputKind, OutputTensor, Pictures, output_tensors, pictures, requested_outputs,
};
pub use metadata::{
    EXTENSIONS, ModelMetadata, PLATFORM, SERVER_NAME, TensorMetadata, check_model, model_metadata,
};
pub use tensor::{Datatype, Elements, OutputData, decode_raw, element_count};
