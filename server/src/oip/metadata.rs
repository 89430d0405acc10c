//! The server's and the model's metadata as the protocol describes them, and which model (and
//! version) a request names.

use serde::Serialize;

use super::infer::{IMAGE_INPUT, OutputKind};
use super::tensor::Datatype;
use crate::errors::ApiError;
use crate::model::ModelSpec;

/// The server's name in its metadata.
pub const SERVER_NAME: &str = "celestial-server";
/// The protocol extensions the server implements (Triton's name for the binary tensor extension).
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];
/// The model's platform, in Triton's naming.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// A tensor's name, element type and shape (-1: any size).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// The model's metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// The served model's metadata: its two inputs (encoded pictures, or its own tensor) and the
/// outputs it has.
pub fn model_metadata(spec: &ModelSpec) -> ModelMetadata {
    let mut tensor_shape: Vec<i64> = spec.input_shape(1).iter().map(|&d| d as i64).collect();
    tensor_shape[0] = -1;
    ModelMetadata {
        name: spec.name.clone(),
        versions: vec![spec.version.clone()],
        platform: PLATFORM,
        inputs: vec![
            TensorMetadata {
                name: IMAGE_INPUT.into(),
                datatype: Datatype::Bytes.as_str(),
                shape: vec![-1],
            },
            TensorMetadata {
                name: spec.input_name.clone(),
                datatype: Datatype::Fp32.as_str(),
                shape: tensor_shape,
            },
        ],
        outputs: OutputKind::served(spec)
            .into_iter()
            .map(|k| TensorMetadata {
                name: k.name().into(),
                datatype: k.datatype().as_str(),
                shape: k.shape(spec, -1),
            })
            .collect(),
    }
}

/// Whether `name` (and `version`, when given and not empty) is the served model; else its 404.
pub fn check_model(spec: &ModelSpec, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if name != spec.name {
        return Err(ApiError::ModelNotFound {
            name: name.to_string(),
            served: spec.name.clone(),
        });
    }
    match version {
        Some(v) if !v.is_empty() && v != spec.version => Err(ApiError::VersionNotFound {
            name: name.to_string(),
            version: v.to_string(),
            served: spec.version.clone(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::spec;

    #[test]
    fn the_metadata_names_both_inputs_and_the_served_outputs() {
        let s = spec();
        let m = model_metadata(&s);
        assert_eq!(
            (m.name.as_str(), m.versions.as_slice()),
            ("fake", &["0.0.0".to_string()][..])
        );
        assert_eq!(m.inputs[0].name, "image");
        assert_eq!(m.inputs[1].name, "input");
        assert_eq!(m.inputs[1].shape, [-1, 3, 64, 64]);
        let outputs: Vec<_> = m.outputs.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            outputs,
            ["label", "probabilities"],
            "no calibration: no confidence, known"
        );
        assert_eq!(m.outputs[1].shape, [-1, 10]);
    }

    #[test]
    fn another_model_or_version_is_not_found() {
        let s = spec();
        assert!(check_model(&s, "fake", None).is_ok());
        assert!(check_model(&s, "fake", Some("")).is_ok());
        assert!(check_model(&s, "fake", Some("0.0.0")).is_ok());
        let e = check_model(&s, "other", None).unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(e.to_string().contains("`fake`"), "{e}");
        let e = check_model(&s, "fake", Some("9")).unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(e.to_string().contains("0.0.0"), "{e}");
    }
}
