"""Export of a Keras model to ONNX (input `input`, output `logits`, metadata) and the ONNX Runtime/Keras
parity check that every exported model must pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import MODEL_VERSION, OPSET, PARITY_MAX_ABS, STANDARDIZE_EPS
from .graph import add_knn_output, dynamic_batch, fuse_layer_norm
from .log import log
from .metadata import write_metadata


def exposure_normalise_nchw(x):
    """The model's first layer for the export, on the NCHW tensor (same arithmetic as ImageStandardize);
    graph.fuse_layer_norm then replaces its seven ONNX nodes with one LayerNormalization."""
    import tensorflow as tf

    c = x - tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return c / tf.sqrt(tf.reduce_mean(c * c, axis=[1, 2, 3], keepdims=True) + STANDARDIZE_EPS)


def _convert(model, input_shape: list, layout_in: str, served: bool):
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def serve(x):
        if served:  # the served network: exposure normalisation on the NCHW input, then the convolutions
            x = tf.transpose(exposure_normalise_nchw(x), [0, 2, 3, 1])
            return {"logits": model.get_layer("body")(x, training=False)}
        if layout_in == "NCHW":
            x = tf.transpose(x, [0, 2, 3, 1])
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
    return proto


def export_onnx(
    model,
    input_shape: list,
    layout_in: str,
    path: Path,
    metadata: dict[str, str] | None,
    doc: str,
    bank: np.ndarray | None = None,
):
    """Export `model` (NHWC Keras) with input `input` and output `logits`; NCHW input is transposed
    inside the graph (tf2onnx folds the transposes into the convolutions)."""
    import onnx

    served = "standardize" in [layer.name for layer in model.layers] and layout_in == "NCHW"
    proto = _convert(model, input_shape, layout_in, served)
    if served:
        fuse_layer_norm(proto, input_shape)
    if bank is not None:
        add_knn_output(proto, bank)
    dynamic_batch(proto)
    proto.producer_name = "celestial model/train.py (tf2onnx)"
    proto.producer_version = MODEL_VERSION
    proto.doc_string = doc
    write_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return proto


def parity(name: str, keras_logits: np.ndarray, onnx_logits: np.ndarray) -> dict:
    """Fail the run unless ONNX Runtime and Keras agree (max abs logit difference, identical argmax)."""
    diff = float(np.max(np.abs(keras_logits - onnx_logits)))
    same = bool(np.array_equal(keras_logits.argmax(1), onnx_logits.argmax(1)))
    log(f"parity {name}: max |keras - onnxruntime| logit = {diff:.3g}, identical argmax = {same}")
    if not (diff <= PARITY_MAX_ABS and same):
        raise SystemExit(
            f"parity check FAILED for {name}: max abs diff {diff} (limit {PARITY_MAX_ABS}), identical argmax {same}"
        )
    return {
        "max_abs_logit_diff": diff,
        "identical_argmax": same,
        "images": int(len(keras_logits)),
        "limit": PARITY_MAX_ABS,
    }
