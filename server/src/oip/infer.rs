//! One inference request in the protocol's terms: its input -> the pictures the classifier takes
//! ([`pictures`]), the outputs it asks for ([`requested_outputs`]), and the classifier's answers ->
//! the output tensors ([`output_tensors`]). A request whose input does not fit is refused whole,
//! before any work; an element that cannot be classified fails the whole request, naming its index.

use std::sync::Arc;

use super::tensor::{Datatype, Elements, OutputData, element_count};
use crate::classifier::{Input, Prediction};
use crate::errors::ApiError;
use crate::model::ModelSpec;
use crate::preprocess::PreprocessError;

/// The input of encoded pictures (one JPEG, PNG, WebP, GIF or BMP file per element).
pub const IMAGE_INPUT: &str = "image";

/// An input tensor as a request sends it (its elements already read from JSON, raw bytes or
/// protobuf contents).
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    pub data: Elements,
}

/// What a request asks the classifier: its pictures, and the input they came from (for errors).
#[derive(Debug)]
pub struct Pictures {
    pub input: String,
    pub items: Vec<Input>,
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidInference(message)
}

/// The pictures of a request's `inputs`: exactly one input, either [`IMAGE_INPUT`] (BYTES, shape
/// `[N]` or `[N, 1]`) or the model's own input (FP32, the model's shape with `N` pictures), with
/// as many elements as its shape says and 1 to `max_batch` pictures.
pub fn pictures(
    spec: &ModelSpec,
    max_batch: usize,
    mut inputs: Vec<InputTensor>,
) -> Result<Pictures, ApiError> {
    let expected = format!(
        "`{IMAGE_INPUT}` (BYTES, encoded pictures) or `{}` (FP32, the model's input tensor)",
        spec.input_name
    );
    if inputs.len() != 1 {
        return Err(invalid(format!(
            "The request has {} inputs; send exactly one: {expected}",
            inputs.len()
        )));
    }
    let input = inputs.remove(0);
    let count =
        element_count(&input.shape).map_err(|e| invalid(format!("Input `{}`: {e}", input.name)))?;
    if count != input.data.len() {
        return Err(invalid(format!(
            "Input `{}` has shape {:?}, so {count} elements, but {} were sent",
            input.name,
            input.shape,
            input.data.len()
        )));
    }
    let items = if input.name == IMAGE_INPUT {
        encoded(&input, max_batch)?
    } else if input.name == spec.input_name {
        tensors(spec, &input, max_batch)?
    } else {
        return Err(invalid(format!(
            "The model has no input `{}`; send {expected}",
            input.name
        )));
    };
    Ok(Pictures {
        input: input.name,
        items,
    })
}

/// The type an input must have, else its refusal.
fn require_type(input: &InputTensor, datatype: Datatype) -> Result<(), ApiError> {
    match input.datatype == datatype.as_str() {
        true => Ok(()),
        false => Err(invalid(format!(
            "Input `{}` has datatype {:?}; it takes {}",
            input.name,
            input.datatype,
            datatype.as_str()
        ))),
    }
}

/// The number of pictures `n` (the first dimension), refused outside 1..=`max_batch`.
fn batch(input: &InputTensor, max_batch: usize) -> Result<usize, ApiError> {
    let n = input.shape.first().copied().unwrap_or(0);
    let n = usize::try_from(n).unwrap_or(0);
    if n == 0 {
        return Err(invalid(format!(
            "Input `{}` has no pictures (shape {:?}); send at least one",
            input.name, input.shape
        )));
    }
    if n > max_batch {
        return Err(ApiError::TooManyImages { limit: max_batch });
    }
    Ok(n)
}

fn encoded(input: &InputTensor, max_batch: usize) -> Result<Vec<Input>, ApiError> {
    require_type(input, Datatype::Bytes)?;
    if !matches!(input.shape.as_slice(), [_] | [_, 1]) {
        return Err(invalid(format!(
            "Input `{IMAGE_INPUT}` has shape {:?}; it takes [N] or [N, 1], one encoded picture per element",
            input.shape
        )));
    }
    batch(input, max_batch)?;
    let Elements::Bytes(pictures) = &input.data else {
        return Err(invalid(format!("Input `{IMAGE_INPUT}` must hold BYTES")));
    };
    Ok(pictures.iter().cloned().map(Input::Encoded).collect())
}

fn tensors(
    spec: &ModelSpec,
    input: &InputTensor,
    max_batch: usize,
) -> Result<Vec<Input>, ApiError> {
    require_type(input, Datatype::Fp32)?;
    let n = batch(input, max_batch)?;
    let want: Vec<i64> = spec.input_shape(n).iter().map(|&d| d as i64).collect();
    if input.shape != want {
        return Err(invalid(format!(
            "Input `{}` has shape {:?}; for {n} pictures the model takes {want:?}",
            input.name, input.shape
        )));
    }
    let Elements::Fp32(values) = &input.data else {
        return Err(invalid(format!("Input `{}` must hold FP32", input.name)));
    };
    let len = spec.tensor_len();
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::InvalidElement {
            input: input.name.clone(),
            index: at / len,
            reason: format!(
                "value {} of its tensor is {}, not a finite number",
                at % len,
                values[at]
            ),
        });
    }
    Ok(values
        .chunks_exact(len)
        .map(|c| Input::Tensor(Arc::from(c)))
        .collect())
}

/// An output the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// The most probable label of each picture (BYTES `[N]`).
    Label,
    /// Each label's probability (FP32 `[N, labels]`, in label order).
    Probabilities,
    /// The calibrated top probability (FP32 `[N]`), for a model with a temperature.
    Confidence,
    /// Whether the picture looks like one of the labels (BOOL `[N]`), for a model with the rule.
    Known,
}

impl OutputKind {
    pub const ALL: [OutputKind; 4] = [
        OutputKind::Label,
        OutputKind::Probabilities,
        OutputKind::Confidence,
        OutputKind::Known,
    ];

    /// The output's name.
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Label => "label",
            OutputKind::Probabilities => "probabilities",
            OutputKind::Confidence => "confidence",
            OutputKind::Known => "known",
        }
    }

    pub fn datatype(self) -> Datatype {
        match self {
            OutputKind::Label => Datatype::Bytes,
            OutputKind::Probabilities | OutputKind::Confidence => Datatype::Fp32,
            OutputKind::Known => Datatype::Bool,
        }
    }

    /// The shape of the output for `n` pictures (-1: any number).
    pub fn shape(self, spec: &ModelSpec, n: i64) -> Vec<i64> {
        match self {
            OutputKind::Probabilities => vec![n, spec.labels.len() as i64],
            _ => vec![n],
        }
    }

    /// The outputs the served model has (`confidence` and `known` only with their metadata).
    pub fn served(spec: &ModelSpec) -> Vec<OutputKind> {
        OutputKind::ALL
            .into_iter()
            .filter(|k| match k {
                OutputKind::Confidence => spec.calibration.temperature.is_some(),
                OutputKind::Known => spec.calibration.ood.is_some(),
                _ => true,
            })
            .collect()
    }
}

/// The outputs asked for by name (none named: every output the model has), each once, in the
/// order asked.
pub fn requested_outputs(spec: &ModelSpec, names: &[String]) -> Result<Vec<OutputKind>, ApiError> {
    let served = OutputKind::served(spec);
    if names.is_empty() {
        return Ok(served);
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Some(kind) = served.iter().find(|k| k.name() == name) else {
            let known: Vec<_> = served.iter().map(|k| format!("`{}`", k.name())).collect();
            return Err(invalid(format!(
                "The model has no output `{name}`; it has {}",
                known.join(", ")
            )));
        };
        if !out.contains(kind) {
            out.push(*kind);
        }
    }
    Ok(out)
}

/// A computed output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub kind: OutputKind,
    pub shape: Vec<i64>,
    pub data: OutputData,
}

/// The `kinds` of output for the classifier's `results` on the pictures of input `input`; the
/// first picture that could not be classified fails the request, naming its index.
pub fn output_tensors(
    spec: &ModelSpec,
    kinds: &[OutputKind],
    input: &str,
    results: Vec<Result<Prediction, PreprocessError>>,
) -> Result<Vec<OutputTensor>, ApiError> {
    let predictions = results
        .into_iter()
        .enumerate()
        .map(|(index, r)| {
            r.map_err(|e| ApiError::InvalidElement {
                input: input.to_string(),
                index,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = predictions.len() as i64;
    Ok(kinds
        .iter()
        .map(|&kind| OutputTensor {
            kind,
            shape: kind.shape(spec, n),
            data: output_data(spec, kind, &predictions),
        })
        .collect())
}

fn output_data(spec: &ModelSpec, kind: OutputKind, predictions: &[Prediction]) -> OutputData {
    let each = predictions.iter();
    match kind {
        OutputKind::Label => OutputData::Bytes(each.map(|p| spec.labels[p.best].clone()).collect()),
        OutputKind::Probabilities => {
            OutputData::Fp32(each.flat_map(|p| p.probabilities.iter().copied()).collect())
        }
        // A served output of a model with the metadata: every prediction has the value.
        OutputKind::Confidence => {
            OutputData::Fp32(each.map(|p| p.confidence.unwrap_or(f32::NAN)).collect())
        }
        OutputKind::Known => OutputData::Bool(each.map(|p| p.known.unwrap_or(false)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::testing::spec;

    fn images(shape: Vec<i64>, n: usize) -> Vec<InputTensor> {
        vec![InputTensor {
            name: IMAGE_INPUT.into(),
            datatype: "BYTES".into(),
            shape,
            data: Elements::Bytes(vec![Bytes::from_static(b"x"); n]),
        }]
    }

    #[test]
    fn pictures_take_n_or_n_by_one_elements_up_to_the_batch_limit() {
        let s = spec();
        assert_eq!(pictures(&s, 4, images(vec![3], 3)).unwrap().items.len(), 3);
        assert_eq!(
            pictures(&s, 4, images(vec![2, 1], 2)).unwrap().items.len(),
            2
        );
        for (shape, n) in [(vec![2, 2], 4), (vec![0], 0), (vec![], 1)] {
            let e = pictures(&s, 4, images(shape.clone(), n)).unwrap_err();
            assert_eq!(e.status(), 400, "{shape:?}: {e}");
        }
        let e = pictures(&s, 4, images(vec![5], 5)).unwrap_err();
        assert_eq!(e.status(), 413);
        let e = pictures(&s, 4, images(vec![3], 2)).unwrap_err();
        assert!(e.to_string().contains("3 elements, but 2"), "{e}");
    }

    #[test]
    fn outputs_are_the_served_ones_each_once_in_the_order_asked() {
        let s = spec();
        let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let kinds = requested_outputs(&s, &names(&["probabilities", "label", "label"])).unwrap();
        assert_eq!(kinds, [OutputKind::Probabilities, OutputKind::Label]);
        assert_eq!(requested_outputs(&s, &[]).unwrap(), OutputKind::served(&s));
        let e = requested_outputs(&s, &names(&["known"])).unwrap_err();
        assert!(e.to_string().contains("`label`, `probabilities`"), "{e}");
        let tensors = output_tensors(
            &s,
            &kinds,
            "image",
            vec![Ok(Prediction {
                best: 2,
                probabilities: vec![0.1; 10],
                ..Prediction::default()
            })],
        )
        .unwrap();
        assert_eq!(tensors[0].shape, [1, 10]);
        assert_eq!(tensors[1].data, OutputData::Bytes(vec!["Mars".into()]));
        let failed = output_tensors(
            &s,
            &kinds,
            "image",
            vec![Ok(Prediction::default()), Err(PreprocessError::Empty)],
        )
        .unwrap_err();
        assert!(
            failed.to_string().starts_with("Element 1 of input `image`"),
            "{failed}"
        );
    }
}
