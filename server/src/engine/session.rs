//! ONNX Runtime sessions: building one from the model bytes, reading the spec from its metadata
//! and signature, the warm-up that proves the model runs, and running a batch of images.

use std::collections::HashMap;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::error::InferenceError;
use crate::model::{ModelError, ModelOverrides, ModelSpec, TensorInfo};

/// A session of `model_bytes` in `env` with `intra` intra-op threads (a model that does not load
/// is a [`ModelError::Load`] with the first line of ONNX Runtime's reason).
pub(super) fn new_session(
    env: &Environment,
    model_bytes: &[u8],
    intra: usize,
) -> Result<Session, InferenceError> {
    let load = |e: String| InferenceError::Model(ModelError::Load(e));
    Session::builder(env)
        .map_err(|e| load(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(e.to_string()))?
        .with_intra_threads(intra)
        .map_err(|e| load(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| load(e.to_string()))?
        .commit_from_memory(model_bytes)
        .map_err(|e| load(first_line(&e.to_string())))
}

/// The first line of `s`, trimmed.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// What the spec needs to know of one input or output.
fn tensor_info(name: &str, dtype: &ValueType) -> TensorInfo {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_string(),
            shape: Some(shape.iter().copied().collect()),
            is_f32: *ty == TensorElementType::Float32,
        },
        _ => TensorInfo {
            name: name.to_string(),
            shape: None,
            is_f32: false,
        },
    }
}

/// The spec from the session's metadata (its description included), `overrides` and its signature.
pub(super) fn read_spec(
    session: &Session,
    overrides: &ModelOverrides,
) -> Result<ModelSpec, InferenceError> {
    let meta = session
        .metadata()
        .map_err(|e| ModelError::Load(e.to_string()))?;
    let mut map = HashMap::new();
    for key in meta
        .custom_keys()
        .map_err(|e| ModelError::Load(e.to_string()))?
    {
        if let Some(v) = meta.custom(&key) {
            map.insert(key, v);
        }
    }
    if let Some(d) = meta.description().filter(|d| !d.trim().is_empty()) {
        map.entry("celestial.description".to_string()).or_insert(d);
    }
    let inputs: Vec<TensorInfo> = session
        .inputs()
        .iter()
        .map(|o| tensor_info(o.name(), o.dtype()))
        .collect();
    let outputs: Vec<TensorInfo> = session
        .outputs()
        .iter()
        .map(|o| tensor_info(o.name(), o.dtype()))
        .collect();
    Ok(ModelSpec::resolve(&map, overrides, &inputs, &outputs)?)
}

/// Run a blank image: proves the input is accepted and the output has one value per label.
pub(super) fn warm_up(session: &mut Session, spec: &ModelSpec) -> Result<(), InferenceError> {
    let input = vec![0f32; spec.tensor_len()];
    let rows = run(session, spec, 1, &input).map_err(|e| {
        ModelError::Invalid(format!("the model does not run on a blank input: {e}"))
    })?;
    if rows.len() != spec.labels.len() {
        return Err(ModelError::LabelCount {
            outputs: rows.len(),
            labels: spec.labels.len(),
        }
        .into());
    }
    Ok(())
}

/// Run `n` images (contiguous in `input`) and return the flat output (n x labels).
fn run(
    session: &mut Session,
    spec: &ModelSpec,
    n: usize,
    input: &[f32],
) -> Result<Vec<f32>, String> {
    let tensor =
        TensorRef::from_array_view((spec.input_shape(n), input)).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![spec.input_name.as_str() => tensor])
        .map_err(|e| e.to_string())?;
    let value = outputs
        .get(&spec.output_name)
        .ok_or_else(|| format!("no output `{}`", spec.output_name))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let expected = n * spec.labels.len();
    if data.len() != expected || shape.first().copied() != Some(n as i64) {
        return Err(format!(
            "output shape {shape} does not fit {n} images x {} labels",
            spec.labels.len()
        ));
    }
    Ok(data.to_vec())
}

/// The first `n` images of `input` in one call, or one call per image for a model without a
/// batch dimension.
pub(super) fn run_all(
    session: &mut Session,
    spec: &ModelSpec,
    n: usize,
    input: &[f32],
) -> Result<Vec<f32>, String> {
    let len = spec.tensor_len();
    if spec.dynamic_batch || n == 1 {
        return run(session, spec, n, &input[..n * len]);
    }
    (0..n).try_fold(Vec::with_capacity(n * spec.labels.len()), |mut all, i| {
        all.extend(run(session, spec, 1, &input[i * len..(i + 1) * len])?);
        Ok(all)
    })
}
