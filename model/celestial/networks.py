"""The Keras networks: the guide-recipe baseline and the served model, and its feature extractor.

TensorFlow/Keras are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import numpy as np

from .config import STANDARDIZE_EPS, Guide, Served
from .preprocess import Preprocessing


def guide_model(guide: Guide, classes: int):
    import keras

    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((guide.height, guide.width, 1)),
            L.Conv2D(guide.conv, (3, 3), activation="relu"),
            L.MaxPooling2D((3, 3)),
            L.Flatten(),
            L.Dense(guide.dense, activation="relu"),
            L.Dense(classes),
        ],
        name="guide_recipe",
    )


def _conv_block(x, i: int, filters: int, stride: int, pool: bool, kind: list):
    import keras

    L = keras.layers
    if kind == ["separable"]:  # depthwise 3x3 (+ BN, ReLU), then the pointwise 1x1 convolution below
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dwconv{i + 1}")(x)
        x = L.BatchNormalization(name=f"dwbn{i + 1}")(x)
        x = L.ReLU(name=f"dwrelu{i + 1}")(x)
        x = L.Conv2D(filters, 1, use_bias=False, name=f"conv{i + 1}")(x)
    else:
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
    x = L.BatchNormalization(name=f"bn{i + 1}")(x)
    x = L.ReLU(name=f"relu{i + 1}")(x)
    if pool:
        x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    return x


def served_model(served: Served, classes: int, pre: Preprocessing):
    """The served network. Its first operation standardises each image as a whole: the input (the pixels
    scaled to 0..1; the metadata's mean and std are 0 and 1) minus its mean over all pixels and channels,
    divided by sqrt(variance + 1e-4): an exposure change (p * f) or a contrast change (a blend with a grey
    level) is one affine map of all three channels, which this undoes (up to clipping and rounding);
    colour ratios are kept. Exported as one ONNX LayerNormalization over [3, H, W] (scale 1, no bias)."""
    import keras
    from keras import ops

    L = keras.layers
    _, mean, std = pre.constants()
    if not (np.all(mean == 0) and np.all(std == 1)):
        raise ValueError("the exposure normalisation expects mean 0 and std 1")

    class ImageStandardize(L.Layer):
        def call(self, x):
            c = x - ops.mean(x, axis=(1, 2, 3), keepdims=True)
            return c / ops.sqrt(ops.mean(c * c, axis=(1, 2, 3), keepdims=True) + STANDARDIZE_EPS)

    body_in = keras.Input((served.height, served.width, 3), name="normalised")
    x = body_in
    for i, (f, stride, pool, *kind) in enumerate(served.blocks):
        x = _conv_block(x, i, f, stride, pool, kind)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    body = keras.Model(body_in, L.Dense(classes, name="logits")(x), name="body")
    inp = keras.Input((served.height, served.width, 3), name="image")
    return keras.Model(inp, body(ImageStandardize(name="standardize")(inp)), name="celestial_bodies")


def feature_model(model):
    """The served model's body with two outputs: the pooled features and the logits."""
    import keras

    body = model.get_layer("body")
    return keras.Model(body.inputs, [body.get_layer("gap").output, body.outputs[0]])


def features_logits(model, px, pre: Preprocessing, batch: int = 256):
    """(pooled features, logits) of the served Keras model for HWC uint8 pictures."""
    scale, mean, std = pre.constants()
    fm = feature_model(model)
    norm = model.get_layer("standardize")
    fs, ls = [], []
    for i in range(0, len(px), batch):
        xb = (px[i : i + batch].astype(np.float32) * scale - mean) / std
        f, lg = fm(norm(xb), training=False)
        fs.append(np.asarray(f))
        ls.append(np.asarray(lg))
    return np.concatenate(fs), np.concatenate(ls)
