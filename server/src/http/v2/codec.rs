//! The REST form of an inference: the JSON request and response, and the binary tensor extension
//! (Triton's, as tritonclient sends it): a body that starts with `Inference-Header-Content-Length`
//! bytes of JSON followed by the raw data of each input whose `parameters` give a
//! `binary_data_size`, in the order of the inputs; outputs asked with `binary_data` (or every
//! output with the request's `binary_data_output`) answered the same way.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::oip::{Elements, InputTensor, OutputData, OutputKind, OutputTensor, decode_raw};

/// The header that gives the length of the JSON part of a body with binary data.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

type Parameters = Map<String, Value>;

#[derive(Deserialize)]
struct RequestJson {
    /// A string when present (checked in [`parse_request`]; `null` is present, and refused).
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default)]
    parameters: Parameters,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

/// A field's value when the field is there, `null` included (serde's `Option` takes `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Parameters,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Parameters,
}

/// An inference request as the REST routes read it.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    /// The outputs asked for by name (empty: all), each with whether it asks to be answered as
    /// binary (`binary_data`).
    pub outputs: Vec<(String, Option<bool>)>,
    /// Whether outputs not asked for by name are answered as binary (`binary_data_output`).
    pub binary_output: bool,
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidInference(message)
}

/// A boolean parameter, if given.
fn flag(parameters: &Parameters, key: &str) -> Result<Option<bool>, ApiError> {
    match parameters.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!(
            "Parameter `{key}` is {other}; it takes true or false"
        ))),
    }
}

/// The request in `body`: JSON, or JSON and binary data when `headers` give the JSON's length.
pub fn parse_request(headers: &HeaderMap, body: &Bytes) -> Result<InferRequest, ApiError> {
    let (json, mut binary) = match headers.get(HEADER_LENGTH) {
        None => (body.clone(), Bytes::new()),
        Some(v) => {
            let len = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .filter(|&n| n <= body.len())
                .ok_or_else(|| {
                    invalid(format!(
                        "Header Inference-Header-Content-Length is {v:?}; it must be a number of bytes up to the body's {}",
                        body.len()
                    ))
                })?;
            (body.slice(..len), body.slice(len..))
        }
    };
    let request: RequestJson = serde_json::from_slice(&json)
        .map_err(|e| invalid(format!("The request is not a valid inference request: {e}")))?;
    let id = match request.id {
        None => None,
        Some(Value::String(id)) => Some(id),
        Some(other) => {
            return Err(invalid(format!(
                "The request's `id` is {other}; it must be a string"
            )));
        }
    };
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        inputs.push(input_tensor(input, &mut binary)?);
    }
    if !binary.is_empty() {
        return Err(invalid(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            binary.len()
        )));
    }
    let outputs = request
        .outputs
        .iter()
        .map(|o| Ok((o.name.clone(), flag(&o.parameters, "binary_data")?)))
        .collect::<Result<_, ApiError>>()?;
    Ok(InferRequest {
        id,
        inputs,
        outputs,
        binary_output: flag(&request.parameters, "binary_data_output")?.unwrap_or(false),
    })
}

/// One input: its `data`, or its `binary_data_size` bytes taken from the front of `binary`.
fn input_tensor(input: InputJson, binary: &mut Bytes) -> Result<InputTensor, ApiError> {
    let name = input.name;
    let size = input.parameters.get("binary_data_size");
    let data = match (size, input.data) {
        (Some(size), None) => {
            let size = size
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= binary.len())
                .ok_or_else(|| {
                    invalid(format!(
                        "Input `{name}` has binary_data_size {size}, but {} bytes of binary data are left",
                        binary.len()
                    ))
                })?;
            let raw = binary.split_to(size);
            decode_raw(&input.datatype, &raw)
                .map_err(|e| invalid(format!("Input `{name}`: {e}")))?
        }
        (None, Some(data)) => {
            let flat = flat_data(data, &input.shape)
                .map_err(|e| invalid(format!("Input `{name}`: {e}")))?;
            json_elements(&name, &input.datatype, flat)?
        }
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "Input `{name}` has both `data` and binary_data_size; send one"
            )));
        }
        (None, None) => return Err(invalid(format!("Input `{name}` has no `data`"))),
    };
    Ok(InputTensor {
        name,
        datatype: input.datatype,
        shape: input.shape,
        data,
    })
}

/// The elements of JSON `data`: a flat array, or arrays nested exactly as `shape` says (row-major).
fn flat_data(data: Value, shape: &[i64]) -> Result<Vec<Value>, String> {
    let Value::Array(items) = data else {
        return Err("`data` is not an array".into());
    };
    if items.iter().all(|v| !v.is_array()) {
        return Ok(items);
    }
    let mut flat = Vec::new();
    nested(Value::Array(items), shape, &mut flat)?;
    Ok(flat)
}

fn nested(v: Value, shape: &[i64], out: &mut Vec<Value>) -> Result<(), String> {
    match (v, shape.split_first()) {
        (Value::Array(items), Some((&d, rest))) if items.len() as i64 == d => {
            items.into_iter().try_for_each(|i| nested(i, rest, out))
        }
        (leaf, None) if !leaf.is_array() => {
            out.push(leaf);
            Ok(())
        }
        _ => Err("its nested `data` does not follow its shape; send the elements flat, or nested as the shape says".into()),
    }
}

/// The elements of flat JSON `data`: strings for BYTES (their UTF-8 bytes), numbers for FP32.
fn json_elements(name: &str, datatype: &str, flat: Vec<Value>) -> Result<Elements, ApiError> {
    let wrong =
        |i: usize, what: &str| invalid(format!("Element {i} of input `{name}` is not {what}"));
    match datatype {
        "BYTES" => flat
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(Bytes::from(s.into_bytes())),
                _ => Err(wrong(i, "a string")),
            })
            .collect::<Result<_, _>>()
            .map(Elements::Bytes),
        "FP32" => flat
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| wrong(i, "a number"))
            })
            .collect::<Result<_, _>>()
            .map(Elements::Fp32),
        other => Err(invalid(format!(
            "Input `{name}` has datatype {other:?}; this server takes BYTES pictures or an FP32 tensor"
        ))),
    }
}

/// The elements of an output as JSON `data`.
fn json_data(data: &OutputData) -> Value {
    match data {
        OutputData::Bytes(v) => json!(v),
        OutputData::Fp32(v) => json!(v),
        OutputData::Bool(v) => json!(v),
    }
}

/// The answer: JSON, or JSON then the raw data of the `binary` outputs (with the JSON's length in
/// `Inference-Header-Content-Length`).
pub fn response(head: Map<String, Value>, outputs: &[(OutputTensor, bool)]) -> Response {
    let mut head = head;
    let mut raw: Vec<u8> = Vec::new();
    let tensors: Vec<Value> = outputs
        .iter()
        .map(|(t, binary)| {
            let mut o = json!({
                "name": t.kind.name(),
                "datatype": t.data.datatype().as_str(),
                "shape": t.shape,
            });
            if *binary {
                let bytes = t.data.to_raw();
                o["parameters"] = json!({"binary_data_size": bytes.len()});
                raw.extend_from_slice(&bytes);
            } else {
                o["data"] = json_data(&t.data);
            }
            o
        })
        .collect();
    head.insert("outputs".into(), Value::Array(tensors));
    let json = serde_json::to_vec(&head).unwrap_or_default();
    if !outputs.iter().any(|(_, binary)| *binary) {
        return ([(header::CONTENT_TYPE, "application/json")], json).into_response();
    }
    let json_len = json.len();
    let mut body = json;
    body.extend_from_slice(&raw);
    let mut resp = Body::from(body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(json_len));
    resp
}

/// Whether each output kind is answered as binary: as the output asks, else as the request says
/// for all.
pub fn binary_flags(request: &InferRequest, kinds: &[OutputKind]) -> Vec<bool> {
    kinds
        .iter()
        .map(|k| {
            request
                .outputs
                .iter()
                .find(|(name, _)| name == k.name())
                .and_then(|(_, binary)| *binary)
                .unwrap_or(request.binary_output)
        })
        .collect()
}
