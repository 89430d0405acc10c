//! [`ModelSpec::resolve`]: the model's metadata, the override flags and its signature -> the spec.
//! Every setting follows one ladder ([`Meta::ladder`]): the flag, else the `celestial.*` metadata,
//! else a default (a constant, or what the input shape says).

//!
//! Inside: `meta` (the ladder and the metadata parsers), `calibration` (`confidence` and `known`
//! from the metadata), `golden` (the golden set of the start-up self-check), `drift` (the drift reference); this file resolves
//! the signature, labels, input and pixels and puts the spec together.

mod calibration;
mod drift;
mod golden;
mod meta;

use std::collections::HashMap;

use self::calibration::{calibration, colour};
use self::meta::{Meta, bad, floats, kind, number, text, three};
use super::kinds::{ColorMode, JpegDctScaling, Layout, OutputKind, ResizeFilter, ResizeMode};
use super::overrides::ModelOverrides;
use super::spec::{ModelError, ModelSpec, TensorInfo};

/// The chosen input and output tensors, with their shapes checked.
struct Signature<'a> {
    input: &'a TensorInfo,
    output: &'a TensorInfo,
    /// Rank 4.
    in_shape: Vec<i64>,
    /// `[batch, classes]`.
    out_shape: Vec<i64>,
}

impl Signature<'_> {
    fn unsupported_input(&self, reason: String) -> ModelError {
        ModelError::UnsupportedInput {
            name: self.input.name.clone(),
            reason,
        }
    }
}

/// The tensor named `name` (a flag or the metadata), else `default`.
fn find_tensor<'a>(
    tensors: &'a [TensorInfo],
    name: Option<String>,
    missing: fn(String) -> ModelError,
    default: impl FnOnce() -> Result<&'a TensorInfo, ModelError>,
) -> Result<&'a TensorInfo, ModelError> {
    match name {
        Some(name) => tensors.iter().find(|t| t.name == name).ok_or(missing(name)),
        None => default(),
    }
}

/// A float32 tensor's shape of `rank`, else why not.
fn float_shape(t: &TensorInfo, rank: usize, expected: &str) -> Result<Vec<i64>, String> {
    let shape = t.shape.clone().ok_or("it is not a tensor")?;
    if !t.is_f32 {
        return Err(format!("only float32 {expected}s are supported"));
    }
    if shape.len() != rank {
        return Err(match rank {
            4 => format!("expected a rank-4 image tensor, got shape {shape:?}"),
            _ => format!("expected shape [batch, classes], got {shape:?}"),
        });
    }
    Ok(shape)
}

fn signature<'a>(
    meta: &Meta<'_>,
    over: &ModelOverrides,
    inputs: &'a [TensorInfo],
    outputs: &'a [TensorInfo],
) -> Result<Signature<'a>, ModelError> {
    let input_name = meta.ladder(over.input_name.clone(), "input_name", text)?;
    let input = find_tensor(
        inputs,
        input_name,
        ModelError::NoSuchInput,
        || match inputs {
            [only] => Ok(only),
            _ => Err(ModelError::AmbiguousInput(inputs.len())),
        },
    )?;
    let output_name = meta.ladder(over.output_name.clone(), "output_name", text)?;
    let output = find_tensor(outputs, output_name, ModelError::NoSuchOutput, || {
        outputs.first().ok_or(ModelError::NoOutputs)
    })?;
    let in_shape =
        float_shape(input, 4, "input").map_err(|reason| ModelError::UnsupportedInput {
            name: input.name.clone(),
            reason,
        })?;
    let out_shape =
        float_shape(output, 2, "output").map_err(|reason| ModelError::UnsupportedOutput {
            name: output.name.clone(),
            reason,
        })?;
    Ok(Signature {
        input,
        output,
        in_shape,
        out_shape,
    })
}

fn labels(meta: &Meta<'_>, over: &ModelOverrides, classes: i64) -> Result<Vec<String>, ModelError> {
    let flag = over
        .labels
        .as_ref()
        .map(|l| l.iter().map(|s| s.trim().to_string()).collect());
    let labels: Vec<String> = meta
        .ladder(flag, "labels", |key, raw| {
            serde_json::from_str(raw)
                .map_err(|e| bad(key, raw, &format!("not a JSON array of strings: {e}")))
        })?
        .ok_or(ModelError::NoLabels)?;
    if labels.is_empty() || labels.iter().any(|l| l.is_empty()) {
        return Err(ModelError::Invalid(
            "labels must be a non-empty list of non-empty names".into(),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(ModelError::Invalid(format!("label `{dup}` appears twice")));
    }
    if classes > 0 && classes as usize != labels.len() {
        return Err(ModelError::LabelCount {
            outputs: classes as usize,
            labels: labels.len(),
        });
    }
    Ok(labels)
}

/// The layout: flag, metadata, else where a 1- or 3-sized dimension sits.
fn layout(
    meta: &Meta<'_>,
    over: &ModelOverrides,
    sig: &Signature<'_>,
) -> Result<Layout, ModelError> {
    if let Some(layout) = meta.ladder(over.input_layout, "input_layout", kind)? {
        return Ok(layout);
    }
    let s = &sig.in_shape;
    let is_c = |d: i64| d == 1 || d == 3;
    match (is_c(s[1]), is_c(s[3])) {
        (true, false) => Ok(Layout::Nchw),
        (false, true) => Ok(Layout::Nhwc),
        _ => Err(sig.unsupported_input(format!(
            "cannot tell the layout of shape {s:?}; pass --input-layout"
        ))),
    }
}

/// Height or width: flag, metadata, else the input shape's (when static); it must fit the shape.
fn dimension(
    meta: &Meta<'_>,
    flag: Option<u32>,
    key: &str,
    from_shape: i64,
    sig: &Signature<'_>,
) -> Result<u32, ModelError> {
    let v = match meta.ladder(flag, key, number("expected a positive integer"))? {
        Some(v) => v,
        None if from_shape > 0 => from_shape as u32,
        None => {
            return Err(sig.unsupported_input(format!(
                "{key} is dynamic and not in the metadata; pass --{}",
                key.replace('_', "-")
            )));
        }
    };
    if v == 0 || v > 4096 {
        return Err(sig.unsupported_input(format!("{key} {v} is out of range 1..=4096")));
    }
    if from_shape > 0 && from_shape as u32 != v {
        return Err(
            sig.unsupported_input(format!("{key} is {v} but the model input has {from_shape}"))
        );
    }
    Ok(v)
}

/// The colour mode: flag, metadata, else from the channel count; it must fit the shape.
fn color_mode(
    meta: &Meta<'_>,
    over: &ModelOverrides,
    c_dim: i64,
    sig: &Signature<'_>,
) -> Result<ColorMode, ModelError> {
    let color_mode = match meta.ladder(over.color_mode, "color_mode", kind)? {
        Some(c) => c,
        None => match c_dim {
            1 => ColorMode::Grayscale,
            3 => ColorMode::Rgb,
            _ => {
                return Err(
                    sig.unsupported_input("channel count unknown; pass --color-mode".into())
                );
            }
        },
    };
    let channels = color_mode.channels() as i64;
    if c_dim > 0 && c_dim != channels {
        return Err(sig.unsupported_input(format!(
            "color mode {color_mode:?} needs {channels} channel(s) but the model input has {c_dim}"
        )));
    }
    Ok(color_mode)
}

/// Mean or std: flag, metadata, else `default`; one value stands for every channel.
fn per_channel(
    meta: &Meta<'_>,
    flag: &Option<Vec<f32>>,
    key: &str,
    default: f32,
    channels: usize,
) -> Result<Vec<f32>, ModelError> {
    let v = meta
        .ladder(flag.clone(), key, floats)?
        .unwrap_or_else(|| vec![default; channels]);
    let v = if v.len() == 1 {
        vec![v[0]; channels]
    } else {
        v
    };
    if v.len() != channels || v.iter().any(|x| !x.is_finite()) {
        return Err(ModelError::Invalid(format!(
            "{key} needs {channels} finite value(s), got {v:?}"
        )));
    }
    Ok(v)
}

/// A metadata-only setting that must have its one supported value.
fn only(meta: &Meta<'_>, key: &str, supported: &str) -> Result<String, ModelError> {
    let v = meta.get(key).unwrap_or_else(|| supported.to_string());
    if v != supported {
        return Err(bad(key, &v, &format!("only {supported} is supported")));
    }
    Ok(v)
}

/// How pixels become the input tensor.
struct Pixels {
    grayscale_coefficients: [f32; 3],
    alpha: String,
    resize_filter: ResizeFilter,
    resize_mode: ResizeMode,
    scale: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
}

fn pixels(meta: &Meta<'_>, over: &ModelOverrides, channels: usize) -> Result<Pixels, ModelError> {
    let gray_flag = over
        .grayscale_coefficients
        .as_deref()
        .map(|v| {
            three(v).ok_or_else(|| {
                ModelError::Invalid("--grayscale-coefficients needs 3 numbers".into())
            })
        })
        .transpose()?;
    let grayscale_coefficients = meta
        .ladder(gray_flag, "grayscale_coefficients", |key, s| {
            three(&floats(key, s)?).ok_or_else(|| bad(key, s, "expected 3 numbers"))
        })?
        .unwrap_or([0.299, 0.587, 0.114]);
    let alpha = only(meta, "alpha", "composite_black")?;
    let resize_filter = meta
        .ladder(over.resize_filter, "resize_filter", kind)?
        .unwrap_or(ResizeFilter::Triangle);
    let resize_mode = meta
        .ladder(None, "resize_mode", kind)?
        .unwrap_or(ResizeMode::Stretch);
    let scale = meta
        .ladder(over.scale, "scale", number("expected a number"))?
        .unwrap_or(1.0 / 255.0);
    let mean = per_channel(meta, &over.mean, "mean", 0.0, channels)?;
    let std = per_channel(meta, &over.std, "std", 1.0, channels)?;
    if std.contains(&0.0) {
        return Err(ModelError::Invalid("std must not contain 0".into()));
    }
    if !scale.is_finite() {
        return Err(ModelError::Invalid("scale must be finite".into()));
    }
    Ok(Pixels {
        grayscale_coefficients,
        alpha,
        resize_filter,
        resize_mode,
        scale,
        mean,
        std,
    })
}

impl ModelSpec {
    /// Resolve the spec from metadata, overrides and the model signature.
    pub fn resolve(
        meta: &HashMap<String, String>,
        over: &ModelOverrides,
        inputs: &[TensorInfo],
        outputs: &[TensorInfo],
    ) -> Result<ModelSpec, ModelError> {
        let meta = Meta(meta);
        let sig = signature(&meta, over, inputs, outputs)?;
        let labels = labels(&meta, over, sig.out_shape[1])?;
        let layout = layout(&meta, over, &sig)?;
        let s = &sig.in_shape;
        let (c_dim, h_dim, w_dim) = match layout {
            Layout::Nchw => (s[1], s[2], s[3]),
            Layout::Nhwc => (s[3], s[1], s[2]),
        };
        let height = dimension(&meta, over.input_height, "input_height", h_dim, &sig)?;
        let width = dimension(&meta, over.input_width, "input_width", w_dim, &sig)?;
        let color_mode = color_mode(&meta, over, c_dim, &sig)?;
        let px = pixels(&meta, over, color_mode.channels())?;
        let output_kind = meta
            .ladder(over.output_kind, "output_kind", kind)?
            .unwrap_or(OutputKind::Logits);
        let mut calibration = calibration(&meta, output_kind)?;
        calibration.colour = colour(&meta, &calibration, labels.len(), color_mode)?;
        let jpeg_dct_scaling = meta
            .ladder(over.jpeg_dct_scaling, "jpeg_dct_scaling", kind)?
            .unwrap_or(JpegDctScaling::Full);
        let validation_accuracy =
            meta.ladder(None, "validation_accuracy", number("expected a number"))?;
        let name = meta.ladder(over.model_name.clone(), "model_name", text)?;
        let version = meta.ladder(over.model_version.clone(), "model_version", text)?;
        let golden = golden::golden(&meta, labels.len())?.map(std::sync::Arc::new);
        let drift = drift::drift(&meta, labels.len())?.map(std::sync::Arc::new);
        Ok(ModelSpec {
            name: name.unwrap_or_else(|| "celestial-bodies".into()),
            version: version.unwrap_or_else(|| "unknown".into()),
            labels,
            input_name: sig.input.name.clone(),
            output_name: sig.output.name.clone(),
            layout,
            height,
            width,
            color_mode,
            grayscale_coefficients: px.grayscale_coefficients,
            alpha: px.alpha,
            resize_filter: px.resize_filter,
            resize_mode: px.resize_mode,
            jpeg_dct_scaling,
            scale: px.scale,
            mean: px.mean,
            std: px.std,
            output_kind,
            calibration,
            dynamic_batch: s[0] < 0,
            trained_at: meta.get("trained_at"),
            validation_accuracy,
            description: meta.get("description"),
            golden,
            drift,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::calibration::{Calibration, OodScore};
    use crate::model::colour::FEATURES;

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

    fn with(extra: &[(&str, &str)]) -> Result<ModelSpec, ModelError> {
        let mut m = meta();
        for (k, v) in extra {
            m.insert(format!("celestial.{k}"), v.to_string());
        }
        ModelSpec::resolve(
            &m,
            &ModelOverrides::default(),
            &[t("input", &[-1, 3, 64, 64])],
            &[t("logits", &[-1, 3])],
        )
    }

    #[test]
    fn the_colour_check_from_metadata() {
        let colour = |classes: usize, k: usize, std: f64| {
            serde_json::json!({
                "formula": "d <= threshold",
                "statistics": vec!["s"; FEATURES],
                "k": k,
                "threshold": 1.5,
                "mean": vec![0.0; FEATURES],
                "std": vec![std; FEATURES],
                "bank": vec![vec![vec![0.1; FEATURES]; 2]; classes],
            })
            .to_string()
        };
        let ood = [("ood_score", "msp"), ("ood_threshold", "-0.5")];
        let good = colour(3, 2, 1.0);
        let s = with(&[ood[0], ood[1], ("colour_ood", &good)]).unwrap();
        let rule = s.calibration.colour.unwrap();
        assert_eq!((rule.k, rule.threshold, rule.bank_sizes.len()), (2, 1.5, 3));
        assert_eq!(rule.bank_sizes, [2, 2, 2]);
        for (bad, why) in [
            (
                colour(2, 2, 1.0),
                "a bank for 2 classes, the model has 3 labels",
            ),
            (colour(3, 3, 1.0), "k must be"),
            (colour(3, 2, 0.0), "std positive"),
            ("{".to_string(), "not the expected JSON"),
        ] {
            let e = with(&[ood[0], ood[1], ("colour_ood", &bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("celestial.colour_ood") && e.contains(why), "{e}");
            assert!(e.len() < 400, "the bank is not repeated in the error: {e}");
        }
        let e = with(&[("colour_ood", &good)]).unwrap_err().to_string();
        assert!(e.contains("needs celestial.ood_score"), "{e}");
    }

    #[test]
    fn calibration_and_jpeg_decoding_from_metadata() {
        let plain = with(&[]).unwrap();
        assert_eq!(plain.calibration, Calibration::default());
        assert_eq!(plain.jpeg_dct_scaling, JpegDctScaling::Full);
        let s = with(&[
            ("jpeg_dct_scaling", "draft"),
            ("temperature", "0.502"),
            ("ood_score", "msp"),
            ("ood_threshold", "-0.544899"),
            ("ood_false_flag_rate", "0.01"),
        ])
        .unwrap();
        assert_eq!(s.jpeg_dct_scaling, JpegDctScaling::Draft);
        assert_eq!(s.calibration.temperature, Some(0.502));
        let rule = s.calibration.ood.unwrap();
        assert_eq!((rule.score, rule.threshold), (OodScore::Msp, -0.544899));
        assert_eq!(rule.false_flag_rate, Some(0.01));
    }

    #[test]
    fn bad_calibration_metadata_is_refused_at_start() {
        let err = |extra: &[(&str, &str)]| with(extra).unwrap_err().to_string();
        let e = err(&[("ood_score", "knn_cosine"), ("ood_threshold", "0.3")]);
        assert!(
            e.contains("celestial.ood_score")
                && e.contains("unknown OOD score")
                && e.contains("msp"),
            "{e}"
        );
        let e = err(&[("ood_score", "msp")]);
        assert!(e.contains("no celestial.ood_threshold"), "{e}");
        let e = err(&[("ood_threshold", "-0.5")]);
        assert!(e.contains("no celestial.ood_score"), "{e}");
        for t in ["0", "-1", "hot", "inf"] {
            let e = err(&[("temperature", t)]);
            assert!(e.contains("celestial.temperature"), "{t}: {e}");
        }
        let e = err(&[
            ("ood_score", "msp"),
            ("ood_threshold", "-0.5"),
            ("ood_score_output", "ood"),
        ]);
        assert!(e.contains("celestial.ood_score_output"), "{e}");
        let e = err(&[("jpeg_dct_scaling", "half")]);
        assert!(e.contains("celestial.jpeg_dct_scaling"), "{e}");
        let e = err(&[("temperature", "0.5"), ("output_kind", "probabilities")]);
        assert!(e.contains("logits"), "{e}");
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
