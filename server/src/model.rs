//! What the served model expects and returns ([`ModelSpec`]), resolved from the ONNX metadata
//! (`celestial.*` keys), the input/output signature and the override flags.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::{ColorMode, Layout, ModelOverrides, OutputKind, ResizeFilter};

/// The model bundled into the binary (`model/celestial-bodies.onnx`).
pub static EMBEDDED_MODEL: &[u8] = include_bytes!("../../model/celestial-bodies.onnx");

/// Why a model cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("ONNX Runtime cannot load the model: {0}")]
    Load(String),
    #[error("model has no input named `{0}`")]
    NoSuchInput(String),
    #[error("model has no output named `{0}`")]
    NoSuchOutput(String),
    #[error("model has {0} inputs; pass --input-name to choose one")]
    AmbiguousInput(usize),
    #[error("model has no outputs")]
    NoOutputs,
    #[error("unsupported model input `{name}`: {reason}")]
    UnsupportedInput { name: String, reason: String },
    #[error("unsupported model output `{name}`: {reason}")]
    UnsupportedOutput { name: String, reason: String },
    #[error("model has no labels: it lacks `celestial.labels` metadata, pass --labels")]
    NoLabels,
    #[error("invalid metadata `{key}` = {value:?}: {reason}")]
    BadMetadata {
        key: String,
        value: String,
        reason: String,
    },
    #[error("model outputs {outputs} classes but {labels} labels are configured")]
    LabelCount { outputs: usize, labels: usize },
    #[error("{0}")]
    Invalid(String),
}

/// A tensor's element type and shape (-1 for dynamic dimensions), as far as the spec needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// `None` when the value is not a tensor.
    pub shape: Option<Vec<i64>>,
    pub is_f32: bool,
}

/// Everything the server needs to know to feed the model and read its answer.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    pub input_name: String,
    pub output_name: String,
    pub layout: Layout,
    pub height: u32,
    pub width: u32,
    pub color_mode: ColorMode,
    pub grayscale_coefficients: [f32; 3],
    pub alpha: String,
    pub resize_filter: ResizeFilter,
    pub resize_mode: String,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub output_kind: OutputKind,
    /// Whether the batch dimension is dynamic (several images per run).
    pub dynamic_batch: bool,
    pub trained_at: Option<String>,
    pub validation_accuracy: Option<f64>,
    pub description: Option<String>,
}

impl ModelSpec {
    pub fn channels(&self) -> usize {
        match self.color_mode {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
        }
    }

    /// Number of f32 values of one image's tensor.
    pub fn tensor_len(&self) -> usize {
        self.channels() * self.height as usize * self.width as usize
    }

    /// Input shape for a batch of `n` images.
    pub fn input_shape(&self, n: usize) -> [usize; 4] {
        let (c, h, w) = (self.channels(), self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }

    /// Resolve the spec from metadata, overrides and the model signature.
    pub fn resolve(
        meta: &HashMap<String, String>,
        over: &ModelOverrides,
        inputs: &[TensorInfo],
        outputs: &[TensorInfo],
    ) -> Result<ModelSpec, ModelError> {
        let m = |key: &str| {
            meta.get(&format!("celestial.{key}"))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };

        // Input and output selection.
        let input_name = over.input_name.clone().or_else(|| m("input_name"));
        let input = match input_name {
            Some(name) => inputs
                .iter()
                .find(|i| i.name == name)
                .ok_or(ModelError::NoSuchInput(name))?,
            None if inputs.len() == 1 => &inputs[0],
            None => return Err(ModelError::AmbiguousInput(inputs.len())),
        };
        let output = match over.output_name.clone().or_else(|| m("output_name")) {
            Some(name) => outputs
                .iter()
                .find(|o| o.name == name)
                .ok_or(ModelError::NoSuchOutput(name))?,
            None => outputs.first().ok_or(ModelError::NoOutputs)?,
        };
        let unsupported_in = |reason: String| ModelError::UnsupportedInput {
            name: input.name.clone(),
            reason,
        };
        let in_shape = input
            .shape
            .clone()
            .ok_or_else(|| unsupported_in("it is not a tensor".into()))?;
        if !input.is_f32 {
            return Err(unsupported_in("only float32 inputs are supported".into()));
        }
        if in_shape.len() != 4 {
            return Err(unsupported_in(format!(
                "expected a rank-4 image tensor, got shape {in_shape:?}"
            )));
        }
        let unsupported_out = |reason: String| ModelError::UnsupportedOutput {
            name: output.name.clone(),
            reason,
        };
        let out_shape = output
            .shape
            .clone()
            .ok_or_else(|| unsupported_out("it is not a tensor".into()))?;
        if !output.is_f32 {
            return Err(unsupported_out("only float32 outputs are supported".into()));
        }
        if out_shape.len() != 2 {
            return Err(unsupported_out(format!(
                "expected shape [batch, classes], got {out_shape:?}"
            )));
        }

        // Labels.
        let labels: Vec<String> = match &over.labels {
            Some(l) => l.iter().map(|s| s.trim().to_string()).collect(),
            None => {
                let raw = m("labels").ok_or(ModelError::NoLabels)?;
                serde_json::from_str::<Vec<String>>(&raw).map_err(|e| {
                    bad("labels", &raw, &format!("not a JSON array of strings: {e}"))
                })?
            }
        };
        if labels.is_empty() || labels.iter().any(|l| l.is_empty()) {
            return Err(ModelError::Invalid(
                "labels must be a non-empty list of non-empty names".into(),
            ));
        }
        {
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
                return Err(ModelError::Invalid(format!("label `{dup}` appears twice")));
            }
        }
        if out_shape[1] > 0 && out_shape[1] as usize != labels.len() {
            return Err(ModelError::LabelCount {
                outputs: out_shape[1] as usize,
                labels: labels.len(),
            });
        }

        // Layout: explicit, else inferred from where a 1- or 3-sized dimension sits.
        let layout = match over.input_layout {
            Some(l) => l,
            None => match m("input_layout") {
                Some(v) => match v.to_ascii_uppercase().as_str() {
                    "NCHW" => Layout::Nchw,
                    "NHWC" => Layout::Nhwc,
                    _ => return Err(bad("input_layout", &v, "expected NCHW or NHWC")),
                },
                None => {
                    let is_c = |d: i64| d == 1 || d == 3;
                    match (is_c(in_shape[1]), is_c(in_shape[3])) {
                        (true, false) => Layout::Nchw,
                        (false, true) => Layout::Nhwc,
                        _ => {
                            return Err(unsupported_in(format!(
                                "cannot tell the layout of shape {in_shape:?}; pass --input-layout"
                            )));
                        }
                    }
                }
            },
        };
        let (c_dim, h_dim, w_dim) = match layout {
            Layout::Nchw => (in_shape[1], in_shape[2], in_shape[3]),
            Layout::Nhwc => (in_shape[3], in_shape[1], in_shape[2]),
        };
        let dim = |over: Option<u32>, key: &str, from_shape: i64| -> Result<u32, ModelError> {
            let v = match over {
                Some(v) => v,
                None => match m(key) {
                    Some(s) => s
                        .parse::<u32>()
                        .map_err(|_| bad(key, &s, "expected a positive integer"))?,
                    None if from_shape > 0 => from_shape as u32,
                    None => {
                        return Err(unsupported_in(format!(
                            "{key} is dynamic and not in the metadata; pass --{}",
                            key.replace('_', "-")
                        )));
                    }
                },
            };
            if v == 0 || v > 4096 {
                return Err(unsupported_in(format!(
                    "{key} {v} is out of range 1..=4096"
                )));
            }
            if from_shape > 0 && from_shape as u32 != v {
                return Err(unsupported_in(format!(
                    "{key} is {v} but the model input has {from_shape}"
                )));
            }
            Ok(v)
        };
        let height = dim(over.input_height, "input_height", h_dim)?;
        let width = dim(over.input_width, "input_width", w_dim)?;

        let color_mode = match over.color_mode {
            Some(c) => c,
            None => match m("color_mode") {
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "rgb" => ColorMode::Rgb,
                    "grayscale" | "gray" | "l" => ColorMode::Grayscale,
                    _ => return Err(bad("color_mode", &v, "expected rgb or grayscale")),
                },
                None => match c_dim {
                    1 => ColorMode::Grayscale,
                    3 => ColorMode::Rgb,
                    _ => {
                        return Err(unsupported_in(
                            "channel count unknown; pass --color-mode".into(),
                        ));
                    }
                },
            },
        };
        let channels = if color_mode == ColorMode::Rgb { 3 } else { 1 };
        if c_dim > 0 && c_dim != channels {
            return Err(unsupported_in(format!(
                "color mode {color_mode:?} needs {channels} channel(s) but the model input has {c_dim}"
            )));
        }

        let grayscale_coefficients = match &over.grayscale_coefficients {
            Some(v) => three(v).ok_or_else(|| {
                ModelError::Invalid("--grayscale-coefficients needs 3 numbers".into())
            })?,
            None => match m("grayscale_coefficients") {
                Some(s) => three(&floats("grayscale_coefficients", &s)?)
                    .ok_or_else(|| bad("grayscale_coefficients", &s, "expected 3 numbers"))?,
                None => [0.299, 0.587, 0.114],
            },
        };
        let alpha = m("alpha").unwrap_or_else(|| "composite_black".into());
        if alpha != "composite_black" {
            return Err(bad("alpha", &alpha, "only composite_black is supported"));
        }
        let resize_filter = match over.resize_filter {
            Some(f) => f,
            None => match m("resize_filter") {
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "triangle" | "bilinear" => ResizeFilter::Triangle,
                    "nearest" => ResizeFilter::Nearest,
                    "catmull_rom" | "catmullrom" | "bicubic" => ResizeFilter::CatmullRom,
                    "lanczos3" | "lanczos" => ResizeFilter::Lanczos3,
                    _ => {
                        return Err(bad(
                            "resize_filter",
                            &v,
                            "expected triangle, nearest, catmull_rom or lanczos3",
                        ));
                    }
                },
                None => ResizeFilter::Triangle,
            },
        };
        let resize_mode = m("resize_mode").unwrap_or_else(|| "stretch".into());
        if resize_mode != "stretch" {
            return Err(bad(
                "resize_mode",
                &resize_mode,
                "only stretch is supported",
            ));
        }
        let scale = match over.scale {
            Some(s) => s,
            None => match m("scale") {
                Some(s) => s
                    .parse::<f32>()
                    .map_err(|_| bad("scale", &s, "expected a number"))?,
                None => 1.0 / 255.0,
            },
        };
        let per_channel =
            |over: &Option<Vec<f32>>, key: &str, default: f32| -> Result<Vec<f32>, ModelError> {
                let v = match over {
                    Some(v) => v.clone(),
                    None => match m(key) {
                        Some(s) => floats(key, &s)?,
                        None => vec![default; channels as usize],
                    },
                };
                let v = if v.len() == 1 {
                    vec![v[0]; channels as usize]
                } else {
                    v
                };
                if v.len() != channels as usize || v.iter().any(|x| !x.is_finite()) {
                    return Err(ModelError::Invalid(format!(
                        "{key} needs {channels} finite value(s), got {v:?}"
                    )));
                }
                Ok(v)
            };
        let mean = per_channel(&over.mean, "mean", 0.0)?;
        let std = per_channel(&over.std, "std", 1.0)?;
        if std.contains(&0.0) {
            return Err(ModelError::Invalid("std must not contain 0".into()));
        }
        if !scale.is_finite() {
            return Err(ModelError::Invalid("scale must be finite".into()));
        }
        let output_kind = match over.output_kind {
            Some(k) => k,
            None => match m("output_kind") {
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "logits" => OutputKind::Logits,
                    "probabilities" | "probs" | "softmax" => OutputKind::Probabilities,
                    _ => return Err(bad("output_kind", &v, "expected logits or probabilities")),
                },
                None => OutputKind::Logits,
            },
        };
        let validation_accuracy = match m("validation_accuracy") {
            Some(s) => Some(
                s.parse::<f64>()
                    .map_err(|_| bad("validation_accuracy", &s, "expected a number"))?,
            ),
            None => None,
        };

        Ok(ModelSpec {
            name: over
                .model_name
                .clone()
                .or_else(|| m("model_name"))
                .unwrap_or_else(|| "celestial-bodies".into()),
            version: over
                .model_version
                .clone()
                .or_else(|| m("model_version"))
                .unwrap_or_else(|| "unknown".into()),
            labels,
            input_name: input.name.clone(),
            output_name: output.name.clone(),
            layout,
            height,
            width,
            color_mode,
            grayscale_coefficients,
            alpha,
            resize_filter,
            resize_mode,
            scale,
            mean,
            std,
            output_kind,
            dynamic_batch: in_shape[0] < 0,
            trained_at: m("trained_at"),
            validation_accuracy,
            description: m("description"),
        })
    }
}

fn bad(key: &str, value: &str, reason: &str) -> ModelError {
    ModelError::BadMetadata {
        key: format!("celestial.{key}"),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn floats(key: &str, s: &str) -> Result<Vec<f32>, ModelError> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<f32>()
                .map_err(|_| bad(key, s, "expected comma-separated numbers"))
        })
        .collect()
}

fn three(v: &[f32]) -> Option<[f32; 3]> {
    <[f32; 3]>::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            shape: Some(shape.to_vec()),
            is_f32: true,
        }
    }

    fn meta() -> HashMap<String, String> {
        [
            ("celestial.labels", r#"["a","b","c"]"#),
            ("celestial.input_layout", "NCHW"),
            ("celestial.input_height", "64"),
            ("celestial.input_width", "64"),
            ("celestial.color_mode", "rgb"),
            ("celestial.scale", "0.00392156862745098"),
            ("celestial.model_version", "1.2.3"),
            ("celestial.validation_accuracy", "0.9933"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn resolves_from_metadata() {
        let s = ModelSpec::resolve(
            &meta(),
            &ModelOverrides::default(),
            &[t("input", &[-1, 3, 64, 64])],
            &[t("logits", &[-1, 3])],
        )
        .unwrap();
        assert_eq!(s.labels, ["a", "b", "c"]);
        assert_eq!(
            (s.layout, s.height, s.width, s.color_mode),
            (Layout::Nchw, 64, 64, ColorMode::Rgb)
        );
        assert_eq!(s.input_shape(2), [2, 3, 64, 64]);
        assert_eq!(s.version, "1.2.3");
        assert_eq!(s.validation_accuracy, Some(0.9933));
        assert!(s.dynamic_batch);
        assert_eq!(s.mean, [0.0; 3]);
    }

    #[test]
    fn guide_model_from_flags_and_shape() {
        let over = ModelOverrides {
            labels: Some((0..10).map(|i| format!("l{i}")).collect()),
            ..Default::default()
        };
        let s = ModelSpec::resolve(
            &HashMap::new(),
            &over,
            &[t("input", &[-1, 32, 32, 1])],
            &[t("logits", &[-1, 10])],
        )
        .unwrap();
        assert_eq!(
            (s.layout, s.height, s.width, s.color_mode),
            (Layout::Nhwc, 32, 32, ColorMode::Grayscale)
        );
        assert_eq!(s.input_shape(1), [1, 32, 32, 1]);
        assert_eq!(s.tensor_len(), 1024);
    }

    #[test]
    fn refuses_unservable_models() {
        let none = ModelOverrides::default();
        let inputs = [t("input", &[-1, 3, 64, 64])];
        assert!(matches!(
            ModelSpec::resolve(&meta(), &none, &inputs, &[t("logits", &[-1, 10])]),
            Err(ModelError::LabelCount {
                outputs: 10,
                labels: 3
            })
        ));
        assert!(matches!(
            ModelSpec::resolve(&HashMap::new(), &none, &inputs, &[t("o", &[-1, 3])]),
            Err(ModelError::NoLabels)
        ));
        assert!(matches!(
            ModelSpec::resolve(
                &meta(),
                &none,
                &[t("input", &[-1, 64])],
                &[t("o", &[-1, 3])]
            ),
            Err(ModelError::UnsupportedInput { .. })
        ));
        let mut m = meta();
        m.insert("celestial.input_height".into(), "32".into());
        assert!(matches!(
            ModelSpec::resolve(&m, &none, &inputs, &[t("o", &[-1, 3])]),
            Err(ModelError::UnsupportedInput { .. })
        ));
        let over = ModelOverrides {
            input_name: Some("nope".into()),
            ..Default::default()
        };
        assert!(matches!(
            ModelSpec::resolve(&meta(), &over, &inputs, &[t("o", &[-1, 3])]),
            Err(ModelError::NoSuchInput(_))
        ));
        let mut m = meta();
        m.insert("celestial.labels".into(), "Earth,Mars".into());
        assert!(matches!(
            ModelSpec::resolve(&m, &none, &inputs, &[t("o", &[-1, 3])]),
            Err(ModelError::BadMetadata { .. })
        ));
    }

    #[test]
    fn flags_override_metadata() {
        let over = ModelOverrides {
            labels: Some(vec!["x".into(), "y".into(), "z".into()]),
            model_version: Some("9".into()),
            mean: Some(vec![0.5]),
            ..Default::default()
        };
        let s = ModelSpec::resolve(
            &meta(),
            &over,
            &[t("input", &[-1, 3, 64, 64])],
            &[t("logits", &[-1, 3])],
        )
        .unwrap();
        assert_eq!(s.labels, ["x", "y", "z"]);
        assert_eq!(s.version, "9");
        assert_eq!(s.mean, [0.5; 3]);
    }
}
