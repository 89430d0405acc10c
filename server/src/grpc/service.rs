//! `inference.GRPCInferenceService`: the Open Inference Protocol's six calls over [`crate::oip`],
//! like the REST routes: the same model check, inputs, outputs and errors (each error's gRPC code
//! from [`crate::errors::ErrorCode::grpc_code`], its message the REST one). Outputs are answered
//! in `raw_output_contents`, as Triton does (tritonclient reads FP32 and BOOL outputs only there).

use std::sync::Arc;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::*;
use crate::errors::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::http::job::{PROBE_HEADER, Traffic, admit, run_job};
use crate::oip::{self, Elements, InputTensor, decode_raw};
use crate::telemetry::RequestTrace;

/// The service over the server's shared state.
pub struct Inference {
    pub state: Arc<AppState>,
}

/// The gRPC status of `e` (counted as a rejection, like a refused REST request).
pub fn status(state: &AppState, e: &ApiError) -> Status {
    let code = e.code();
    state.metrics.rejected(code.as_str());
    Status::new(code.grpc_code(), ErrorBody::from(e).error)
}

impl Inference {
    fn fail(&self, e: ApiError) -> Status {
        status(&self.state, &e)
    }

    async fn infer(
        &self,
        request: ModelInferRequest,
        traffic: Traffic,
        trace: Option<&RequestTrace>,
    ) -> Result<ModelInferResponse, ApiError> {
        let spec = self.state.classifier.spec();
        let version = Some(request.model_version.as_str());
        oip::check_model(spec, &request.model_name, version)?;
        let names: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
        let kinds = oip::requested_outputs(spec, &names)?;
        let inputs = input_tensors(request.inputs, request.raw_input_contents)?;
        let max_batch = self.state.limits.max_batch_images;
        let pictures = oip::pictures(spec, max_batch, inputs)?;
        let _permit = admit(&self.state, trace).await?;
        let results = run_job(&self.state, pictures.items, traffic, trace).await?;
        let tensors = oip::output_tensors(spec, &kinds, &pictures.input, results)?;
        let (outputs, raw) = tensors
            .into_iter()
            .map(|t| {
                let output = InferOutputTensor {
                    name: t.kind.name().into(),
                    datatype: t.data.datatype().as_str().into(),
                    shape: t.shape,
                    ..Default::default()
                };
                (output, Bytes::from(t.data.to_raw()))
            })
            .unzip();
        Ok(ModelInferResponse {
            model_name: spec.name.clone(),
            model_version: spec.version.clone(),
            id: request.id,
            outputs,
            raw_output_contents: raw,
            ..Default::default()
        })
    }
}

/// The inputs of a request: each one's elements from its `raw_input_contents` entry (all inputs
/// raw, or none) or its `contents`.
fn input_tensors(
    inputs: Vec<InferInputTensor>,
    raw: Vec<Bytes>,
) -> Result<Vec<InputTensor>, ApiError> {
    let invalid = ApiError::InvalidInference;
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(invalid(format!(
            "The request has {} inputs and {} raw_input_contents; send one per input, or none",
            inputs.len(),
            raw.len()
        )));
    }
    let mut raw = raw.into_iter();
    inputs
        .into_iter()
        .map(|input| {
            let data = match (raw.next(), input.contents) {
                (Some(raw), _) => decode_raw(&input.datatype, &raw)
                    .map_err(|e| invalid(format!("Input `{}`: {e}", input.name)))?,
                (None, Some(c)) => match input.datatype.as_str() {
                    "BYTES" => Elements::Bytes(c.bytes_contents),
                    "FP32" => Elements::Fp32(c.fp32_contents),
                    other => {
                        return Err(invalid(format!(
                            "Input `{}` has datatype {other:?}; this server takes BYTES pictures or an FP32 tensor",
                            input.name
                        )));
                    }
                },
                (None, None) => {
                    return Err(invalid(format!("Input `{}` has no contents", input.name)));
                }
            };
            Ok(InputTensor {
                name: input.name,
                datatype: input.datatype,
                shape: input.shape,
                data,
            })
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: !self.state.is_draining(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        oip::check_model(self.state.classifier.spec(), &r.name, Some(&r.version))
            .map_err(|e| self.fail(e))?;
        Ok(Response::new(ModelReadyResponse {
            ready: !self.state.is_draining(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: oip::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: oip::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let spec = self.state.classifier.spec();
        oip::check_model(spec, &r.name, Some(&r.version)).map_err(|e| self.fail(e))?;
        let m = oip::model_metadata(spec);
        let tensors = |ts: Vec<oip::TensorMetadata>| {
            ts.into_iter()
                .map(|t| TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.into(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let traffic = Traffic::probe_if(request.metadata().contains_key(PROBE_HEADER));
        // (the call's trace, begun by the gRPC entry point, comes in the request's extensions)
        let trace = request.extensions().get::<RequestTrace>().cloned();
        self.infer(request.into_inner(), traffic, trace.as_ref())
            .await
            .map(Response::new)
            .map_err(|e| self.fail(e))
    }
}
