"""Train, export and check the celestial-bodies classifier (and the guide-recipe baseline).

Run through `model/train.sh` (creates the pinned venv first). Outputs, all under --out (default model/):
  celestial-bodies.onnx        the served model, metadata_props describe its I/O and preprocessing
  testdata/guide-recipe.onnx   the guide's architecture/hyper-parameters, guide I/O contract, no metadata
  validation-split.txt         the stratified validation split (dataset-relative paths)
  golden.json                  golden fixtures for the server's preprocessing/inference tests
  metrics.json                 every number the model card quotes
  plots/*.png                  training curves and confusion matrices
Everything is written to <out>/.staging first and moved into place at the end; the pipeline exits
non-zero, leaving the previous artifacts untouched, when the ONNX Runtime/Keras parity check fails or
the validation top-1 is below --min-accuracy.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from . import augment, robust  # noqa: E402
from .bench import latency_us  # noqa: E402
from .preprocess import (  # noqa: E402
    JPEG_DCT_SCALING, SPEC, Preprocessing, guide_gray8, jpeg_dct_factor, jpeg_draft_size, load_model_pixels, load_rgb8, resize_rgb8,
    tensor_sha256, to_tensor,
)

MODEL_NAME = "celestial-bodies"
MODEL_VERSION = "2.0.0"
MODEL_FILE = "celestial-bodies.onnx"
GUIDE_FILE = "testdata/guide-recipe.onnx"
SPLIT_SEED = 77
VAL_FRACTION = 0.2
OPSET = 17
PARITY_MAX_ABS = 1e-4

# Recommended golden-fixture tolerances for another implementation of the preprocessing (the Rust
# server). Measured with model/tools/pixel-parity (image-rs 0.25.10 + zune-jpeg 0.5.15, FilterType::
# Triangle) against this pipeline (Pillow 13.0.0 / libjpeg-turbo) on the 300 validation images:
# RGB8 after resize differs by at most 3 (mean 0.17) per channel, JPEG decoding alone by at most 4
# at 128x128, the resize alone (same decoded pixels) by at most 1; the resulting logits differ by at
# most 0.20 and every prediction is identical. Guide recipe (f32 luma, rounded, then Triangle to 32x32):
# pixels differ by at most 1 (mean 0.08), logits by at most 0.0054.
GOLDEN_SELECTION = ("per class, the validation image whose two highest logits are furthest apart "
                    "(top2_logit_margin), so that the expected prediction is robust to decoder differences")

TOLERANCE = {
    "pixel_max_abs": 3,
    "pixel_mean_abs": 0.5,
    "pixel_note": "decoded + resized RGB8 vs pixels_rgb8_base64, per channel value; JPEG decoders differ (IDCT, "
                  "chroma upsampling) and so does the resize's rounding (alone: at most 1)",
    "tensor_note": "from exactly the pixels in pixels_rgb8_base64, ((p*scale)-mean)/std in float32 reproduces "
                   "tensor_sha256 bit for bit",
    "logit_max_abs_same_pixels": 1e-4,
    "logit_max_abs": 0.5,
    "logit_note": "logit_max_abs_same_pixels when the input tensor is identical; logit_max_abs for pixels within "
                  "the pixel tolerance (measured at most 0.20 with image-rs decoding over the validation split)",
    "prediction": "must be identical",
}

# Guide recipe ("A guide to MLOps" params.yaml + src/train.py): grayscale 32x32, Conv2D(32, 3x3, relu),
# MaxPool(3x3), Flatten, Dense(64, relu), Dense(classes); Adam(1e-4), 10 epochs, batch 32, seed 77.
GUIDE = dict(height=32, width=32, conv=32, dense=64, lr=1e-4, epochs=10, batch=32, seed=77)

# The served model. Architectures: per conv block (filters, stride, 2x2 max-pool after it[, "separable"]): a 3x3
# convolution, or with "separable" a 3x3 depthwise convolution (+ BN, ReLU) then a 1x1 convolution to `filters`;
# then global average pooling and one dense layer to the logits. c4e is served (model card, "Models").
ARCHS = {
    "b4": ((8, 1, True), (16, 1, True), (32, 1, True), (64, 1, False)),
    "s3": ((16, 2, True), (32, 1, True), (64, 1, False)),
    "c4": ((16, 2, False), (32, 2, False), (64, 2, False), (64, 1, False)),
    "c3": ((16, 2, False), (32, 2, False), (48, 1, False)),
    "c4w": ((16, 2, False), (32, 2, False), (64, 2, False), (96, 1, False)),
    "c4s": ((16, 2, False), (32, 2, False), (64, 2, False), (128, 2, False)),
    "c4d": ((16, 2, False), (32, 2, False), (64, 2, False), (192, 1, False, "separable")),
    "c4e": ((16, 2, False), (32, 2, False), (64, 2, False), (256, 1, False, "separable")),
}
STANDARDIZE_EPS = 1e-4
IMPROVED = dict(height=32, width=32, arch="c4e", lr=3e-3, epochs=15, batch=64, seed=77, label_smoothing=0.05,
                variants=12, outliers=2000, oe_weight=0.5, bank=0)


# Out-of-distribution signal, chosen by the leave-one-class-out measurement (loco.json, model card).
OOD_SCORE = "msp"  # chosen by the leave-one-class-out mean AUROC (loco.json); "knn_cosine" adds a graph output
OOD_OUTPUT = "ood_score"
OOD_BANK_STRIDE = 4  # the bank: every OOD_BANK_STRIDE-th training image (LOCO key knn_cosine_quarter for 4)
OOD_FORMULAS = {
    "knn_cosine": ("s = the model's second output ood_score [N] = 1 - max_i cos(f, bank_i), computed in the graph: "
                   "f = the globally pooled features, bank = the unit-length features of one augmented variant "
                   "of each of the 1,200 training images"),
    "centroid_cosine": ("s = the model's second output ood_score [N] = 1 - max_k cos(f, c_k), computed in the graph: "
                        "f = the globally pooled features, c_k = the unit-length mean of the unit-length "
                        "features of class k over the augmented training pool"),
    "max_logit": "s = -max_k logits[k]",
    "energy": "s = -log(sum_k exp(logits[k]))",
    "msp": "s = -max_k softmax(logits)[k]",
}
OOD_FALSE_FLAGS = 0.01
OOD_EVAL_OUTLIERS = 900
CONFIDENCE_RULE = "confidence = max_k softmax(logits / temperature)[k], temperature = celestial.temperature"
KNOWN_RULE = ("known = (s <= celestial.ood_threshold) with s the score celestial.ood_score as "
              "celestial.ood_score_formula says (the output celestial.ood_score_output when present, else computed "
              "from the raw logits), and, when celestial.colour_ood is present, its colour check passes "
              "(d <= its threshold, d as its formula says); known = false otherwise")


def ood_score(logits: np.ndarray, ood: np.ndarray | None = None) -> np.ndarray:
    """The served OOD score (higher = less like the training classes), in float64: the graph's ood_score
    output for knn_cosine, else from the raw logits."""
    z = logits.astype(np.float64)
    if OOD_SCORE in ("knn_cosine", "centroid_cosine"):
        return ood.astype(np.float64)
    if OOD_SCORE == "max_logit":
        return -z.max(1)
    if OOD_SCORE == "energy":
        return -robust.logsumexp(z)
    if OOD_SCORE == "msp":
        return -robust.softmax(z).max(1)
    raise ValueError(OOD_SCORE)


def confidence_known(logits: np.ndarray, temperature: float, threshold: float, ood: np.ndarray | None = None,
                     px: np.ndarray | None = None, colour: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The served confidence and known; `colour` = (robust.ClassColourKnn, its threshold) with the pictures `px`."""
    z = logits.astype(np.float64)
    known = ood_score(z, ood) <= threshold
    if colour is not None:
        known &= colour[0].score(px, z.argmax(1)) <= colour[1]
    return robust.softmax(z / temperature).max(1), known


def ood_metadata(temperature: float, threshold: float, colour: tuple | None = None, classes: int = 0) -> dict[str, str]:
    return {
        "celestial.jpeg_dct_scaling": JPEG_DCT_SCALING,
        "celestial.temperature": f"{temperature}",
        "celestial.confidence": CONFIDENCE_RULE,
        "celestial.ood_score": OOD_SCORE,
        "celestial.ood_score_formula": OOD_FORMULAS[OOD_SCORE],
        **({"celestial.ood_score_output": OOD_OUTPUT} if OOD_SCORE in ("knn_cosine", "centroid_cosine") else {}),
        "celestial.ood_threshold": f"{threshold}",
        "celestial.known": KNOWN_RULE,
        "celestial.ood_false_flag_rate": f"{OOD_FALSE_FLAGS}",
        **({"celestial.colour_ood": colour[0].metadata(colour[1], classes)} if colour is not None else {}),
    }


def v1_preprocessing(path: Path) -> Preprocessing:
    """The previous model's (v1) preprocessing, from its metadata (a baseline for the robustness table)."""
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return Preprocessing(int(meta["celestial.input_height"]), int(meta["celestial.input_width"]), "rgb", "NCHW",
                         meta["celestial.scale"], tuple(meta["celestial.mean"].split(",")),
                         tuple(meta["celestial.std"].split(",")))


def decode_cases(mpath: Path, pre: Preprocessing, temperature: float, threshold: float,
                 colour: tuple | None = None) -> list[dict]:
    """Synthetic files that exercise the decode rule: JPEGs of several sizes (DCT factors 8, 4, 2, 1, a
    size that is no multiple of the factor, a grayscale JPEG, one with EXIF orientation) and a PNG
    (decoded at full size). Each: the file (base64), the DCT-scaled decoded size and the resized pixels."""
    import io

    from PIL import Image
    sess = ort_session(mpath)
    rng = np.random.default_rng(5)
    cases = []
    specs = [("jpeg", 256, 256, "RGB", None), ("jpeg", 128, 128, "RGB", None), ("jpeg", 300, 200, "RGB", None),
             ("jpeg", 257, 129, "RGB", None), ("jpeg", 100, 60, "RGB", None), ("jpeg", 70, 70, "RGB", None),
             ("jpeg", 20, 24, "RGB", None), ("jpeg", 160, 120, "L", None), ("jpeg", 200, 136, "RGB", 6),
             ("png", 128, 128, "RGB", None)]
    for fmt, wd, ht, mode, orient in specs:
        small = rng.integers(0, 256, (max(ht // 16, 2), max(wd // 16, 2), 3)).astype(np.uint8)
        im = Image.fromarray(small, "RGB").resize((wd, ht), Image.Resampling.BICUBIC)
        if mode == "L":
            im = im.convert("L")
        buf = io.BytesIO()
        if fmt == "jpeg":
            kw = {}
            if orient:
                exif = Image.Exif()
                exif[0x0112] = orient
                kw["exif"] = exif
            im.save(buf, "JPEG", quality=90, **kw)
        else:
            im.save(buf, "PNG")
        data = buf.getvalue()
        with Image.open(io.BytesIO(data)) as probe:
            stored = probe.size
        dec = jpeg_draft_size(stored[0], stored[1], pre.width, pre.height) if fmt == "jpeg" else stored
        pix = load_model_pixels(io.BytesIO(data), pre.height, pre.width)
        x = to_tensor(pix, pre)[None]
        outs = sess.run(None, {"input": x})
        logits = outs[0]
        ood = outs[1] if len(outs) > 1 else None
        conf, known = confidence_known(logits, temperature, threshold, ood, pix[None], colour)
        cases.append({
            "format": fmt, "mode": mode, "exif_orientation": orient or 1,
            "stored_width": stored[0], "stored_height": stored[1],
            "dct_scale_denominator": jpeg_dct_factor(stored[0], stored[1], pre.width, pre.height) if fmt == "jpeg" else 1,
            "decoded_width": dec[0], "decoded_height": dec[1],
            "file_base64": base64.b64encode(data).decode(),
            "pixels_layout": "HWC row-major uint8",
            "pixels_rgb8_base64": base64.b64encode(pix.tobytes()).decode(),
            "tensor_sha256": tensor_sha256(x),
            "logits": [float(v) for v in logits[0]],
            "confidence": float(conf[0]), "known": bool(known[0]),
            **({"ood_score": float(ood[0])} if ood is not None else {}),
        })
    return cases


def log(msg: str) -> None:
    print(f"[train {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------- data


def list_dataset(raw: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(p.name for p in raw.iterdir() if p.is_dir())
    items = []
    for ci, c in enumerate(classes):
        files = sorted(f.name for f in (raw / c).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        items += [(f"{c}/{f}", ci) for f in files]
    return classes, items


def stratified_split(items: list[tuple[str, int]], n_classes: int, seed: int, fraction: float):
    """Per class (alphabetical), files sorted by name, permuted with numpy default_rng(seed) (one
    generator, classes in order); the first round(fraction * n) of each permutation are validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for ci in range(n_classes):
        members = [it for it in items if it[1] == ci]
        perm = rng.permutation(len(members))
        n_val = int(round(fraction * len(members)))
        val += [members[i] for i in perm[:n_val]]
        train += [members[i] for i in perm[n_val:]]
    return sorted(train), sorted(val)


def served_preprocessing(raw: Path, train_items) -> Preprocessing:
    """The served model's preprocessing: pixels scaled to 0..1, mean 0 and std 1 per channel (the network
    normalises each image's exposure itself, see improved_model)."""
    return Preprocessing(IMPROVED["height"], IMPROVED["width"], "rgb", "NCHW", scale="0.00392156862745098",
                         mean=("0", "0", "0"), std=("1", "1", "1"))


def load_pixels(raw: Path, items, height: int, width: int, grayscale: bool = False) -> np.ndarray:
    out = []
    for rel, _ in items:
        im = load_rgb8(raw / rel)
        if grayscale:
            out.append(guide_gray8(im, height, width))
        else:
            out.append(resize_rgb8(im, height, width))
    return np.stack(out)


# --------------------------------------------------------------------------------------------- models


def guide_model(classes: int):
    import keras
    L = keras.layers
    return keras.Sequential([
        keras.Input((GUIDE["height"], GUIDE["width"], 1)),
        L.Conv2D(GUIDE["conv"], (3, 3), activation="relu"),
        L.MaxPooling2D((3, 3)),
        L.Flatten(),
        L.Dense(GUIDE["dense"], activation="relu"),
        L.Dense(classes),
    ], name="guide_recipe")


def improved_model(classes: int, pre: Preprocessing):
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

    body_in = keras.Input((IMPROVED["height"], IMPROVED["width"], 3), name="normalised")
    x = body_in
    for i, (f, stride, pool, *kind) in enumerate(ARCHS[IMPROVED["arch"]]):
        if kind == ["separable"]:  # depthwise 3x3 (+ BN, ReLU), then the pointwise 1x1 convolution below
            x = L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"dwconv{i + 1}")(x)
            x = L.BatchNormalization(name=f"dwbn{i + 1}")(x)
            x = L.ReLU(name=f"dwrelu{i + 1}")(x)
            x = L.Conv2D(f, 1, use_bias=False, name=f"conv{i + 1}")(x)
        else:
            x = L.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = L.BatchNormalization(name=f"bn{i + 1}")(x)
        x = L.ReLU(name=f"relu{i + 1}")(x)
        if pool:
            x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    body = keras.Model(body_in, L.Dense(classes, name="logits")(x), name="body")
    inp = keras.Input((IMPROVED["height"], IMPROVED["width"], 3), name="image")
    return keras.Model(inp, body(ImageStandardize(name="standardize")(inp)), name="celestial_bodies")


def exposure_normalise_nchw(x):
    """The model's first layer for the export, on the NCHW tensor (same arithmetic as ImageStandardize);
    fuse_layer_norm then replaces its seven ONNX nodes with one LayerNormalization."""
    import tensorflow as tf
    c = x - tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return c / tf.sqrt(tf.reduce_mean(c * c, axis=[1, 2, 3], keepdims=True) + STANDARDIZE_EPS)


def fuse_layer_norm(proto, shape: list) -> None:
    """Replace the exported standardisation (ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div) at the
    graph's start with one LayerNormalization(axis=1, epsilon) node: the same formula in one kernel.
    The parity check (ONNX Runtime vs Keras) verifies the result."""
    from onnx import helper, numpy_helper
    g = proto.graph
    nodes = list(g.node)
    ops = [n.op_type for n in nodes[:7]]
    if sorted(ops) != sorted(["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div"]):
        raise SystemExit(f"unexpected standardisation subgraph {ops}")
    x, y = nodes[0].input[0], nodes[6].output[0]
    if x != g.input[0].name or nodes[6].op_type != "Div":
        raise SystemExit("standardisation does not start at the input / end with Div")
    used = {i for n in nodes[:7] for i in n.input}
    g.initializer.append(numpy_helper.from_array(np.ones(shape, np.float32), "standardize_scale"))
    del g.node[:7]
    g.node.insert(0, helper.make_node("LayerNormalization", [x, "standardize_scale"], [y], axis=1,
                                      epsilon=STANDARDIZE_EPS, name="standardize"))
    still = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name in used and i.name not in still]:
        g.initializer.remove(init)


def train_guide(x_tr, y_tr, x_va, y_va, classes):
    import keras
    keras.utils.set_random_seed(GUIDE["seed"])
    model = guide_model(len(classes))
    model.compile(optimizer=keras.optimizers.Adam(GUIDE["lr"]),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    hist = model.fit(x_tr, y_tr, batch_size=GUIDE["batch"], epochs=GUIDE["epochs"], shuffle=True,
                     validation_data=(x_va, y_va), verbose=2)
    return model, hist.history


def train_improved(px_pool, y_pool, px_out, n_classes: int, pre: Preprocessing, x_va=None, y_va=None, log_fn=None):
    """Train the served model on the augmented pool (HWC uint8) plus synthetic outliers (outlier
    exposure: their target is the uniform distribution over the classes, weight IMPROVED["oe_weight"])."""
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(IMPROVED["seed"])
    scale, mean, std = pre.constants()

    def norm(px):
        return (px.astype(np.float32) * scale - mean) / std  # NHWC, the same float32 formula as to_tensor

    ls = IMPROVED["label_smoothing"]
    t_in = np.full((len(y_pool), n_classes), ls / n_classes, np.float32)
    t_in[np.arange(len(y_pool)), y_pool] += 1 - ls
    x = np.concatenate([norm(px_pool), norm(px_out)]) if len(px_out) else norm(px_pool)
    t = np.concatenate([t_in, np.full((len(px_out), n_classes), 1 / n_classes, np.float32)])
    w = np.concatenate([np.ones(len(px_pool), np.float32), np.full(len(px_out), IMPROVED["oe_weight"], np.float32)])
    n = len(x)
    ds = (tf.data.Dataset.from_tensor_slices((x, t, w))
          .shuffle(n, seed=IMPROVED["seed"], reshuffle_each_iteration=True)
          .batch(IMPROVED["batch"]).prefetch(2))
    steps = IMPROVED["epochs"] * int(np.ceil(n / IMPROVED["batch"]))
    schedule = keras.optimizers.schedules.CosineDecay(IMPROVED["lr"] * 0.1, steps, warmup_target=IMPROVED["lr"],
                                                      warmup_steps=steps // 20)
    model = improved_model(n_classes, pre)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="acc")])
    val = None
    if x_va is not None:
        val = (norm(x_va), np.eye(n_classes, dtype=np.float32)[y_va])
    hist = model.fit(ds, epochs=IMPROVED["epochs"], validation_data=val, verbose=2)
    return model, hist.history


def feature_model(model):
    import keras
    body = model.get_layer("body")
    return keras.Model(body.inputs, [body.get_layer("gap").output, body.outputs[0]])


def features_logits(model, px, pre: Preprocessing, batch: int = 256):
    scale, mean, std = pre.constants()
    fm = feature_model(model)
    norm = model.get_layer("standardize")
    fs, ls = [], []
    for i in range(0, len(px), batch):
        xb = (px[i:i + batch].astype(np.float32) * scale - mean) / std
        f, lg = fm(norm(xb), training=False)
        fs.append(np.asarray(f))
        ls.append(np.asarray(lg))
    return np.concatenate(fs), np.concatenate(ls)


# --------------------------------------------------------------------------------------------- export


def add_knn_output(proto, bank: np.ndarray) -> None:
    """Append the OOD score output `ood_score` [N] = 1 - max_i cos(f, bank_i) to the exported graph, f being
    the pooled features (the input of the logits MatMul) and bank the unit-length reference features:
    MatMul(f, -bank^T) -> ReduceMin over the bank -> divided by ||f|| (+1e-12) -> + 1."""
    from onnx import TensorProto, helper, numpy_helper
    g = proto.graph
    mm = [n for n in g.node if n.op_type == "MatMul"]
    if len(mm) != 1:
        raise SystemExit("expected one MatMul (the logits layer) in the exported graph")
    f = mm[0].input[0]
    g.initializer.extend([
        numpy_helper.from_array((-bank.T).astype(np.float32), "ood_bank_neg_t"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "ood_eps"),
        numpy_helper.from_array(np.array(1.0, np.float32), "ood_one"),
    ])
    g.node.extend([
        helper.make_node("MatMul", [f, "ood_bank_neg_t"], ["ood_neg_dots"], name="ood_dots"),
        helper.make_node("ReduceMin", ["ood_neg_dots"], ["ood_neg_max_dot"], axes=[1], keepdims=0, name="ood_max"),
        helper.make_node("ReduceL2", [f], ["ood_norm"], axes=[1], keepdims=0, name="ood_norm"),
        helper.make_node("Add", ["ood_norm", "ood_eps"], ["ood_norm_eps"], name="ood_norm_eps"),
        helper.make_node("Div", ["ood_neg_max_dot", "ood_norm_eps"], ["ood_neg_cos"], name="ood_cos"),
        helper.make_node("Add", ["ood_neg_cos", "ood_one"], [OOD_OUTPUT], name="ood_score"),
    ])
    g.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["N"]))


def export_onnx(model, input_shape: list, layout_in: str, path: Path, metadata: dict[str, str] | None, doc: str,
                bank: np.ndarray | None = None):
    """Export `model` (NHWC Keras) with input `input` and output `logits`; NCHW input is transposed
    inside the graph (tf2onnx folds the transposes into the convolutions)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="input")

    names = [layer.name for layer in model.layers]

    @tf.function(input_signature=[spec])
    def serve(x):
        if "standardize" in names and layout_in == "NCHW":
            # the served network: exposure normalisation on the NCHW input, then the convolutions
            x = tf.transpose(exposure_normalise_nchw(x), [0, 2, 3, 1])
            return {"logits": model.get_layer("body")(x, training=False)}
        if layout_in == "NCHW":
            x = tf.transpose(x, [0, 2, 3, 1])
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
    if "standardize" in names and layout_in == "NCHW":
        fuse_layer_norm(proto, input_shape)
    if bank is not None:
        add_knn_output(proto, bank)
    # A readable dynamic batch dimension name.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "N"
    proto.producer_name = "celestial model/train.py (tf2onnx)"
    proto.producer_version = MODEL_VERSION
    proto.doc_string = doc
    del proto.metadata_props[:]
    for k, v in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return proto


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_outputs(path: Path, x: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, ood_score or None) of a model over a batch of input tensors."""
    sess = ort_session(path, threads=os.cpu_count() or 1)
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run(None, {"input": x[i:i + batch]}) for i in range(0, len(x), batch)]
    logits = np.concatenate([o[names.index("logits")] for o in outs])
    ood = np.concatenate([o[names.index(OOD_OUTPUT)] for o in outs]) if OOD_OUTPUT in names else None
    return logits, ood


def ort_logits(path: Path, x: np.ndarray, batch: int = 64) -> np.ndarray:
    sess = ort_session(path, threads=os.cpu_count() or 1)
    return np.concatenate([sess.run(["logits"], {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def parity(name: str, keras_logits: np.ndarray, onnx_logits: np.ndarray) -> dict:
    diff = float(np.max(np.abs(keras_logits - onnx_logits)))
    same = bool(np.array_equal(keras_logits.argmax(1), onnx_logits.argmax(1)))
    log(f"parity {name}: max |keras - onnxruntime| logit = {diff:.3g}, identical argmax = {same}")
    if not (diff <= PARITY_MAX_ABS and same):
        raise SystemExit(f"parity check FAILED for {name}: max abs diff {diff} (limit {PARITY_MAX_ABS}), "
                         f"identical argmax {same}")
    return {"max_abs_logit_diff": diff, "identical_argmax": same, "images": int(len(keras_logits)),
            "limit": PARITY_MAX_ABS}


# --------------------------------------------------------------------------------------------- reporting


def evaluate(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    pred = logits.argmax(1)
    cm = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    per_class = {c: round(float(cm[i, i] / max(cm[i].sum(), 1)), 4) for i, c in enumerate(classes)}
    return {"accuracy": round(float((pred == y).mean()), 4), "correct": int((pred == y).sum()), "total": int(len(y)),
            "per_class": per_class, "min_per_class": min(per_class.values()), "confusion": cm.tolist()}


def confusion_text(cm: list[list[int]], classes: list[str]) -> str:
    w = max(len(c) for c in classes)
    head = " " * (w + 2) + " ".join(f"{c[:4]:>4}" for c in classes)
    rows = [f"{c:<{w}}  " + " ".join(f"{v:>4}" for v in row) for c, row in zip(classes, cm)]
    return "\n".join(["rows: true class, columns: predicted (first 4 letters)", head, *rows])


def plot_confusion(cm, classes, title, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.array(cm)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(histories: dict[str, dict], path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name, h in histories.items():
        ep = np.arange(1, len(h["loss"]) + 1)
        a1.plot(ep, h["loss"], label=f"{name} train")
        a1.plot(ep, h["val_loss"], "--", label=f"{name} validation")
        a2.plot(ep, h["acc"], label=f"{name} train")
        a2.plot(ep, h["val_acc"], "--", label=f"{name} validation")
    a1.set_xlabel("epoch"), a1.set_ylabel("cross-entropy loss"), a1.set_yscale("log"), a1.legend(fontsize=8)
    a2.set_xlabel("epoch"), a2.set_ylabel("top-1 accuracy"), a2.set_ylim(0, 1.01), a2.legend(fontsize=8)
    a1.grid(alpha=0.3), a2.grid(alpha=0.3)
    fig.suptitle("training curves (train: augmented batches; validation: held-out split)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def golden_entries(val_items, px_val, x_val, classes, logits, raw: Path | None = None,
                   pre: Preprocessing | None = None, temperature: float | None = None,
                   threshold: float | None = None, ood: np.ndarray | None = None,
                   colour: tuple | None = None) -> list[dict]:
    """One validation image per class: the one with the widest gap between its two highest logits
    (first by name on a tie), so that a prediction cannot flip on decoder-level pixel differences."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    entries = []
    for ci, c in enumerate(classes):
        members = [i for i, (_, y) in enumerate(val_items) if y == ci]
        idx = max(members, key=lambda i: (margins[i], -i))
        rel, _ = val_items[idx]
        pix = px_val[idx]
        entries.append({
            "image": rel,
            "label": c,
            "height": int(pix.shape[0]),
            "width": int(pix.shape[1]),
            "channels": int(pix.shape[2]),
            "pixels_layout": "HWC row-major uint8",
            "pixels_rgb8_base64" if pix.shape[2] == 3 else "pixels_gray8_base64":
                base64.b64encode(np.ascontiguousarray(pix).tobytes()).decode(),
            "tensor_shape": [1, *x_val[idx].shape],
            "tensor_sha256": tensor_sha256(x_val[idx][None]),
            "logits": [float(v) for v in logits[idx]],
            "probabilities": [float(v) for v in softmax(logits[idx].astype(np.float64))],
            "prediction": classes[int(logits[idx].argmax())],
            "top2_logit_margin": round(float(margins[idx]), 5),
        })
        if raw is not None and pre is not None:
            from PIL import Image
            with Image.open(raw / rel) as im:
                stored = im.size
            dec = jpeg_draft_size(stored[0], stored[1], pre.width, pre.height)
            decoded = np.asarray(load_rgb8(raw / rel, draft=(pre.width, pre.height)), np.uint8)
            conf, known = confidence_known(logits[idx:idx + 1], temperature, threshold,
                                           None if ood is None else ood[idx:idx + 1], pix[None], colour)
            entries[-1].update({
                "stored_width": stored[0], "stored_height": stored[1],
                "dct_scale_denominator": jpeg_dct_factor(stored[0], stored[1], pre.width, pre.height),
                "decoded_width": dec[0], "decoded_height": dec[1],
                "decoded_rgb8_base64": base64.b64encode(np.ascontiguousarray(decoded).tobytes()).decode(),
                "confidence": float(conf[0]), "known": bool(known[0]),
                **({"ood_score": float(ood[idx])} if ood is not None else {}),
                **({"colour_distance": float(colour[0].score(pix[None], logits[idx:idx + 1].argmax(1))[0])}
                   if colour is not None else {}),
            })
    return entries


def pixel_sensitivity(path: Path, px: np.ndarray, pre_fn, trials: int = 20) -> float:
    """Max logit change when every pixel channel moves by a random -1/0/+1 (the decoder/resize tolerance)."""
    sess = ort_session(path)
    rng = np.random.default_rng(1)
    base = sess.run(["logits"], {"input": pre_fn(px)})[0]
    worst = 0.0
    for _ in range(trials):
        noisy = np.clip(px.astype(np.int16) + rng.integers(-1, 2, px.shape), 0, 255).astype(np.uint8)
        worst = max(worst, float(np.abs(sess.run(["logits"], {"input": pre_fn(noisy)})[0] - base).max()))
    return worst


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- main


def main(argv=None) -> int:
    repo = Path(__file__).resolve().parents[2]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", repo.parent / "shared" / "dataset"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=default_ds,
                    help="dataset root containing raw/<Class>/*.jpg (env CELESTIAL_DATASET; default ../shared/dataset)")
    ap.add_argument("--out", type=Path, default=repo / "model", help="where artifacts are written (default model/)")
    ap.add_argument("--epochs", type=int, default=IMPROVED["epochs"], help="epochs for the served model")
    ap.add_argument("--seed", type=int, default=IMPROVED["seed"],
                    help="training seed of the served model (initialisation, batch order, augmentation)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default=IMPROVED["arch"], help="served model architecture")
    ap.add_argument("--split-seed", type=int, default=SPLIT_SEED, help="seed of the stratified validation split")
    ap.add_argument("--min-accuracy", type=float, default=0.997,
                    help="refuse to replace the artifacts when validation top-1 is below this (default 0.997)")
    ap.add_argument("--latency-iterations", type=int, default=20000, help="timed ONNX Runtime runs (batch 1)")
    args = ap.parse_args(argv)

    raw = args.dataset / "raw" if (args.dataset / "raw").is_dir() else args.dataset
    if not raw.is_dir():
        print(f"dataset not found at {raw} (set --dataset or CELESTIAL_DATASET)", file=sys.stderr)
        return 2
    IMPROVED["epochs"] = args.epochs
    IMPROVED["seed"] = args.seed
    IMPROVED["arch"] = args.arch
    IMPROVED["blocks"] = [list(b) for b in ARCHS[args.arch]]
    final: Path = args.out
    # Everything is written to a staging folder first and moved into place at the very end, so that a
    # failed run (e.g. the parity check) leaves the previous artifacts untouched and readers never see
    # a new model next to old golden fixtures.
    out = final / ".staging"
    shutil.rmtree(out, ignore_errors=True)
    (out / "plots").mkdir(parents=True)
    (out / "testdata").mkdir(parents=True)
    t_start = time.time()

    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    classes, items = list_dataset(raw)
    train_items, val_items = stratified_split(items, len(classes), args.split_seed, VAL_FRACTION)
    (out / "validation-split.txt").write_text("".join(f"{rel}\n" for rel, _ in val_items))
    log(f"{len(classes)} classes, {len(train_items)} train / {len(val_items)} validation images from {raw}")
    y_tr = np.array([y for _, y in train_items])
    y_va = np.array([y for _, y in val_items])

    # ---- baseline: the guide's recipe
    guide_pre = Preprocessing(GUIDE["height"], GUIDE["width"], "grayscale", "NHWC",
                              scale="0.00392156862745098", mean=("0",), std=("1",))
    g_tr = load_pixels(raw, train_items, GUIDE["height"], GUIDE["width"], grayscale=True)
    g_va = load_pixels(raw, val_items, GUIDE["height"], GUIDE["width"], grayscale=True)
    gx_tr, gx_va = to_tensor(g_tr, guide_pre), to_tensor(g_va, guide_pre)
    log("training the guide-recipe baseline")
    t0 = time.time()
    gmodel, ghist = train_guide(gx_tr, y_tr, gx_va, y_va, classes)
    guide_train_s = time.time() - t0
    gpath = out / GUIDE_FILE
    export_onnx(gmodel, [GUIDE["height"], GUIDE["width"], 1], "NHWC", gpath, None,
                "Guide-recipe baseline (no metadata): input 'input' [N,32,32,1] NHWC float32 0..1 grayscale, "
                "output 'logits' [N,10], labels alphabetical: " + ",".join(classes))
    g_keras = gmodel.predict(gx_va, batch_size=64, verbose=0)
    g_onnx = ort_logits(gpath, gx_va)
    g_parity = parity("guide-recipe", g_keras, g_onnx)
    g_eval = evaluate(g_onnx, y_va, classes)
    log(f"guide-recipe baseline: val top-1 {g_eval['accuracy']:.4f} ({g_eval['correct']}/{g_eval['total']})")

    # ---- the served model
    h, w = IMPROVED["height"], IMPROVED["width"]
    cache = final / ".cache"
    pre = served_preprocessing(raw, train_items)
    mean, std = pre.mean, pre.std
    px_va = robust.clean_pixels(raw, val_items, h, w)
    x_va = to_tensor(px_va, pre)  # NCHW
    x_va_nhwc = np.ascontiguousarray(x_va.transpose(0, 2, 3, 1))
    log(f"building the augmented training pool ({IMPROVED['variants']} variants per image) and "
        f"{IMPROVED['outliers']} synthetic outliers (cached in {cache})")
    pool = robust.training_pool(raw, train_items, IMPROVED["variants"], h, w, cache)
    outl = robust.outlier_pool(raw, train_items, IMPROVED["outliers"], robust.OUTLIER_TRAIN_SEED, h, w, cache)
    log(f"training the served model (mean {mean}, std {std}, {IMPROVED['epochs']} epochs over "
        f"{len(pool['y'])} + {len(outl['px'])} images)")
    t0 = time.time()
    model, hist = train_improved(pool["px"], pool["y"], outl["px"], len(classes), pre, px_va, y_va)
    train_s = time.time() - t0

    k_logits = model.predict(x_va_nhwc, batch_size=64, verbose=0)
    k_eval = evaluate(k_logits, y_va, classes)
    # the OOD reference bank: unit-length pooled features of each training image's first augmented variant
    bank = None
    if OOD_SCORE == "knn_cosine":
        first = np.arange(len(pool["y"])) % IMPROVED["variants"] == 0
        bank = robust.l2n(features_logits(model, pool["px"][first][::OOD_BANK_STRIDE], pre)[0].astype(np.float64)
                          ).astype(np.float32)
    elif OOD_SCORE == "centroid_cosine":  # the ten class centroids of the unit-length pool features
        pf = robust.l2n(features_logits(model, pool["px"], pre)[0].astype(np.float64))
        bank = robust.l2n(np.stack([pf[pool["y"] == k].mean(0) for k in range(len(classes))])).astype(np.float32)

    # ---- calibration, OOD score and threshold (ONNX Runtime on everything below)
    log("corruption suite, synthetic outliers: generating (cached)")
    suite = robust.suite_pixels(raw, val_items, h, w, cache)
    ev_out = robust.outlier_pool(raw, val_items, OOD_EVAL_OUTLIERS, robust.OUTLIER_EVAL_SEED, h, w, cache)
    trained_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    base_meta = {
        "celestial.labels": json.dumps(classes),
        "celestial.input_name": "input",
        "celestial.output_name": "logits",
        **pre.metadata(),
        "celestial.output_kind": "logits",
        "celestial.model_name": MODEL_NAME,
        "celestial.model_version": MODEL_VERSION,
        "celestial.trained_at": trained_at,
        "celestial.validation_accuracy": f"{k_eval['accuracy']:.4f}",
    }
    mpath = out / MODEL_FILE
    doc = (f"{MODEL_NAME} {MODEL_VERSION}: classifies a picture of a Solar System body into one of "
           f"{len(classes)} classes and says when a picture is none of them. Preprocessing: {SPEC}. "
           "See model/README.md.")
    export_onnx(model, [3, h, w], "NCHW", mpath, base_meta, doc, bank)
    onnx_out = lambda px: ort_outputs(mpath, to_tensor(px, pre))  # noqa: E731
    o_logits, o_ood = ort_outputs(mpath, x_va)
    suite_out = {k: onnx_out(v) for k, v in suite.items()}
    suite_logits = {k: v[0] for k, v in suite_out.items()}
    middle_keys = [f"{n}/{augment.middle(n)}" for n in augment.SUITE]
    all_corrupt = np.concatenate([suite_logits[k] for k in suite_logits])
    temperature, calib = robust.fit_temperature(np.concatenate([o_logits, all_corrupt]),
                                                np.concatenate([y_va] + [y_va] * len(suite_logits)))
    score = ood_score(o_logits, o_ood)
    id_robust = np.concatenate([score] + [ood_score(*suite_out[k]) for k in middle_keys])
    # the colour check (robust.ClassColourKnn on the augmented pool) and the two thresholds, calibrated together
    st = robust.CLASS_COLOUR_STRIDE
    colour_knn = robust.ClassColourKnn(pool["px"][::st], pool["y"][::st], k=robust.CLASS_COLOUR_K).rounded()
    ref_px = [px_va] + [suite[k] for k in middle_keys]
    ref_logits = [o_logits] + [suite_logits[k] for k in middle_keys]
    colour_ref = np.concatenate([colour_knn.score(p, z.argmax(1)) for p, z in zip(ref_px, ref_logits)])
    t_score, t_colour = robust.joint_thresholds(id_robust, colour_ref, OOD_FALSE_FLAGS)
    threshold = float(f"{t_score:.6f}")
    colour = (colour_knn, float(robust.sig6(t_colour)))
    metadata = base_meta | ood_metadata(temperature, threshold, colour, len(classes))
    export_onnx(model, [3, h, w], "NCHW", mpath, metadata, doc, bank)
    o_logits, o_ood = ort_outputs(mpath, x_va)
    m_parity = parity(MODEL_NAME, k_logits, o_logits)
    if bank is not None:  # the in-graph OOD score against the same formula on Keras' features
        kf = features_logits(model, px_va, pre)[0].astype(np.float64)
        k_ood = 1.0 - (robust.l2n(kf) @ bank.T.astype(np.float64)).max(1)
        ood_diff = float(np.abs(k_ood - o_ood).max())
        log(f"parity {OOD_OUTPUT}: max |numpy - onnxruntime| = {ood_diff:.3g}")
        if ood_diff > PARITY_MAX_ABS:
            raise SystemExit(f"parity check FAILED for {OOD_OUTPUT}: {ood_diff}")
        m_parity["ood_score_max_abs_diff"] = ood_diff
    m_eval = evaluate(o_logits, y_va, classes)
    if f"{m_eval['accuracy']:.4f}" != metadata["celestial.validation_accuracy"]:
        raise SystemExit("ONNX Runtime accuracy differs from the Keras one written to the metadata")
    log(f"served model: val top-1 {m_eval['accuracy']:.4f} ({m_eval['correct']}/{m_eval['total']}), "
        f"min per class {m_eval['min_per_class']:.4f}; temperature {temperature}, {OOD_SCORE} threshold {threshold}, "
        f"colour threshold {colour[1]}")

    # robustness table (this model, the previous model v1, the guide recipe)
    robustness = {"suite": {n: {"parameter": v[0], "values": v[1]} for n, v in augment.SUITE.items()},
                  "reencode_quality": augment.REENCODE_QUALITY, "seed": robust.SUITE_SEED,
                  "served": {n: [round(float((suite_logits[f"{n}/{s}"].argmax(1) == y_va).mean()), 4)
                                 for s in range(len(augment.SUITE[n][1]))] for n in augment.SUITE}}
    robustness["served_middle_min"] = min(robustness["served"][n][augment.middle(n)] for n in augment.SUITE)
    v1 = final / "testdata" / "v1-celestial-bodies.onnx"
    if v1.exists():
        log("corruption suite on the previous model (v1) and the guide recipe")
        v1_pre = v1_preprocessing(v1)
        v1_suite = robust.suite_pixels(raw, val_items, v1_pre.height, v1_pre.width, cache)
        robustness["v1"] = {n: [round(float((ort_logits(v1, to_tensor(v1_suite[f"{n}/{s}"], v1_pre)).argmax(1)
                                              == y_va).mean()), 4) for s in range(len(augment.SUITE[n][1]))]
                            for n in augment.SUITE}
        v1_clean = ort_logits(v1, to_tensor(robust.clean_pixels(raw, val_items, v1_pre.height, v1_pre.width), v1_pre))
        robustness["v1_clean"] = round(float((v1_clean.argmax(1) == y_va).mean()), 4)
    g_suite = robust.suite_pixels(raw, val_items, GUIDE["height"], GUIDE["width"], cache, reader="guide")
    robustness["guide"] = {n: [round(float((ort_logits(gpath, to_tensor(g_suite[f"{n}/{s}"], guide_pre)).argmax(1)
                                            == y_va).mean()), 4) for s in range(len(augment.SUITE[n][1]))]
                           for n in augment.SUITE}

    # OOD on synthetic outliers (held-out seed, built from validation images) and flag rates
    ev_logits, ev_ood = onnx_out(ev_out["px"])
    ev_score = ood_score(ev_logits, ev_ood)
    kinds = ev_out["kinds"]

    def flagged(z, o, px):
        return ~confidence_known(z, temperature, threshold, o, px, colour)[1]

    ev_flag = flagged(ev_logits, ev_ood, ev_out["px"])
    # the two checks as one score for the AUROC: each calibrated on the clean validation images, the larger
    id_c, ev_c = robust.combined_max([score, colour_knn.score(px_va, o_logits.argmax(1))],
                                     [ev_score, colour_knn.score(ev_out["px"], ev_logits.argmax(1))])
    ood = {"score": OOD_SCORE, "bank_size": 0 if bank is None else int(len(bank)),
           "loco_key": f"{OOD_SCORE}_class_colour_pool",  # the served pair of checks, as loco.json names it
           "threshold": threshold, "temperature": temperature, "calibration": calib,
           "colour": {"k": colour_knn.k, "threshold": colour[1], "bank_pool_stride": st,
                      "bank_size": int(len(colour_knn.raw)), "statistics": len(robust.COLOUR_STATISTICS)},
           "threshold_rule": f"the two thresholds together flag {OOD_FALSE_FLAGS:.0%} of the in-distribution "
                             "validation images, clean and every corruption at its middle severity (3,600 images)",
           "synthetic": {"images": int(len(kinds)), "auroc_vs_clean_val": round(robust.auroc(id_c, ev_c), 5),
                         "auroc_vs_clean_val_score_alone": round(robust.auroc(score, ev_score), 5),
                         "flag_rate": round(float(ev_flag.mean()), 4),
                         "per_kind": {k: {"auroc": round(robust.auroc(id_c, ev_c[kinds == k]), 5),
                                          "flag_rate": round(float(ev_flag[kinds == k].mean()), 4)}
                                      for k in sorted(set(kinds.tolist()))}},
           "false_flags": {"clean_validation": round(float(flagged(o_logits, o_ood, px_va).mean()), 4),
                           **{k.split("/")[0]: round(float(flagged(*suite_out[k], suite[k]).mean()), 4)
                              for k in middle_keys}},
           "all_scores_synthetic_auroc": {}}
    fs = robust.FeatureStats(*features_logits(model, pool["px"][::4], pre)[:1], pool["y"][::4], len(classes))
    id_all = fs.scores(*features_logits(model, px_va, pre))
    ev_all = fs.scores(*features_logits(model, ev_out["px"], pre))
    ood["all_scores_synthetic_auroc"] = {k: round(robust.auroc(id_all[k], ev_all[k]), 5) for k in id_all}
    g_ev = robust.outlier_pool(raw, val_items, OOD_EVAL_OUTLIERS, robust.OUTLIER_EVAL_SEED, GUIDE["height"],
                               GUIDE["width"], cache, reader="guide")
    ood["guide_msp_auroc"] = round(robust.auroc(-robust.softmax(g_onnx).max(1),
                                                -robust.softmax(ort_logits(gpath, to_tensor(g_ev["px"], guide_pre))).max(1)), 5)
    if v1.exists():
        v1_ev = robust.outlier_pool(raw, val_items, OOD_EVAL_OUTLIERS, robust.OUTLIER_EVAL_SEED, v1_pre.height,
                                    v1_pre.width, cache)
        ood["v1_msp_auroc"] = round(robust.auroc(-robust.softmax(v1_clean).max(1), -robust.softmax(
            ort_logits(v1, to_tensor(v1_ev["px"], v1_pre))).max(1)), 5)
    loco_path = final / "loco.json"
    if loco_path.exists():
        shutil.copy2(loco_path, out / "loco.json")
    log(f"robustness: lowest middle-severity top-1 {robustness['served_middle_min']:.4f}; synthetic outliers AUROC "
        f"{ood['synthetic']['auroc_vs_clean_val']:.4f}, flagged {ood['synthetic']['flag_rate']:.3f}")

    # the committed file must load and describe itself
    loaded = onnx.load(str(mpath))
    meta_back = {p.key: p.value for p in loaded.metadata_props}
    assert meta_back == metadata, "metadata did not round-trip"
    sess = ort_session(mpath)
    assert sess.get_modelmeta().custom_metadata_map == metadata
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == (["logits", OOD_OUTPUT] if bank is not None else ["logits"])

    # ---- golden fixtures
    sens = pixel_sensitivity(mpath, px_va[:100], lambda p: to_tensor(p, pre))
    golden = {
        "model": MODEL_FILE,
        "model_sha256": sha256_file(mpath),
        "model_version": MODEL_VERSION,
        "labels": classes,
        "preprocessing": SPEC,
        "selection": GOLDEN_SELECTION,
        "input": {"name": "input", "layout": "NCHW", "shape": [1, 3, h, w],
                  "scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std)},
        "jpeg_dct_scaling": JPEG_DCT_SCALING,
        "outputs": {"confidence": CONFIDENCE_RULE, "known": KNOWN_RULE, "temperature": temperature,
                    "ood_score": OOD_SCORE, "ood_score_formula": OOD_FORMULAS[OOD_SCORE],
                    "ood_score_output": OOD_OUTPUT if bank is not None else None, "ood_threshold": threshold,
                    "colour_ood_threshold": colour[1]},
        "tolerance": TOLERANCE | {"logit_sensitivity_to_random_pixel_noise_1": round(sens, 5)},
        "images": golden_entries(val_items, px_va, x_va, classes, o_logits, raw=raw, pre=pre,
                                 temperature=temperature, threshold=threshold, ood=o_ood, colour=colour),
        "decode_cases": decode_cases(mpath, pre, temperature, threshold, colour),
    }
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    gsens = pixel_sensitivity(gpath, g_va[:100], lambda p: to_tensor(p, guide_pre))
    guide_golden = {
        "model": GUIDE_FILE,
        "model_sha256": sha256_file(gpath),
        "labels": classes,
        "preprocessing": "decode -> RGB8 (as the served model) -> grayscale PIL convert('L') = (19595 R + 38470 G + "
                         "7471 B + 32768) >> 16 -> resize 32x32 antialiased triangle (PIL BILINEAR, "
                         "reducing_gap=None) -> float32 p/255 -> NHWC [N,32,32,1]",
        "selection": GOLDEN_SELECTION,
        "input": {"name": "input", "layout": "NHWC", "shape": [1, 32, 32, 1], "scale": guide_pre.scale},
        "tolerance": {"pixel_max_abs": 2, "pixel_mean_abs": 0.25, "logit_max_abs_same_pixels": 1e-4,
                      "tensor_note": "tensor = float32(p) * float32(0.00392156862745098), a multiplication (not "
                                     "p / 255.0, which differs in the last bit for some p); from exactly the "
                                     "pixels in pixels_gray8_base64 it reproduces tensor_sha256 bit for bit",
                      "logit_max_abs": 0.05, "prediction": "must be identical",
                      "note": "measured with tools/pixel-parity (image-rs decode, f32 luma 0.299/0.587/0.114 "
                              "rounded, Triangle resize) on the validation split: pixels max 1, mean 0.08; "
                              "logits max 0.0054",
                      "logit_sensitivity_to_random_pixel_noise_1": round(gsens, 5)},
        "images": golden_entries(val_items, g_va, gx_va, classes, g_onnx),
    }
    (out / "testdata" / "guide-recipe-golden.json").write_text(json.dumps(guide_golden, indent=1) + "\n")

    # ---- plots, latency, metrics
    plot_curves({"served model": hist}, out / "plots" / "training-curves.png")
    plot_curves({"guide recipe": ghist}, out / "plots" / "guide-recipe-training-curves.png")
    plot_confusion(m_eval["confusion"], classes, f"{MODEL_NAME}: validation confusion ({m_eval['accuracy']:.2%})",
                   out / "plots" / "confusion-matrix.png")
    plot_confusion(g_eval["confusion"], classes, f"guide recipe: validation confusion ({g_eval['accuracy']:.2%})",
                   out / "plots" / "guide-recipe-confusion-matrix.png")
    robust.plot_robustness(robustness["served"], m_eval["accuracy"], out / "plots" / "robustness.png",
                           robustness.get("v1"))
    log("measuring ONNX Runtime latency (1 thread, batch 1)")
    lat = latency_us(mpath, [3, IMPROVED["height"], IMPROVED["width"]], args.latency_iterations)
    glat = latency_us(gpath, [GUIDE["height"], GUIDE["width"], 1], args.latency_iterations // 4)
    log(f"latency: served {lat['median_us']} us median, guide {glat['median_us']} us median")
    from .bench import ab_latency, onnx_macs
    ab = None
    if v1.exists():
        ab = ab_latency(mpath, [3, h, w], v1, [3, v1_pre.height, v1_pre.width])
        log(f"A/B vs v1 (alternating, {ab['rounds']} rounds): {ab['new_median_us']} vs {ab['old_median_us']} us, "
            f"ratio {ab['ratio_median']}")

    metrics = {
        "model": {
            "file": MODEL_FILE, "sha256": golden["model_sha256"], "bytes": mpath.stat().st_size,
            "parameters": int(model.count_params()), "trained_at": trained_at, "hyper_parameters": IMPROVED,
            "validation": m_eval, "keras_validation_accuracy": k_eval["accuracy"], "parity": m_parity,
            "latency": lat, "train_seconds": round(train_s, 1), "mean": mean, "std": std,
            "history": {k: [round(float(v), 5) for v in vs] for k, vs in hist.items()},
            "confusion_text": confusion_text(m_eval["confusion"], classes),
            "compute": onnx_macs(mpath), "ab_v1": ab, "v1_compute": onnx_macs(v1) if v1.exists() else None,
            "v1_bytes": v1.stat().st_size if v1.exists() else None,
            "robustness": robustness, "ood": ood, "metadata_added": {k: v for k, v in metadata.items()
                                                                if k not in base_meta and k != "celestial.colour_ood"},
        },
        "guide_recipe": {
            "file": GUIDE_FILE, "bytes": gpath.stat().st_size, "parameters": int(gmodel.count_params()),
            "hyper_parameters": GUIDE, "validation": g_eval, "parity": g_parity, "latency": glat,
            "train_seconds": round(guide_train_s, 1),
            "history": {k: [round(float(v), 5) for v in vs] for k, vs in ghist.items()},
            "confusion_text": confusion_text(g_eval["confusion"], classes),
        },
        "split": {"seed": args.split_seed, "validation_fraction": VAL_FRACTION, "train": len(train_items),
                  "validation": len(val_items)},
        "environment": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                        "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                        "machine": platform.machine(), "cpus": os.cpu_count(), "opset": OPSET},
        "pipeline_seconds": round(time.time() - t_start, 1),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    if (final / "README.md").exists():
        from . import card
        shutil.copy2(final / "README.md", out / "README.md")
        card.update(out / "README.md", metrics)
    if m_eval["accuracy"] < args.min_accuracy:
        raise SystemExit(f"validation top-1 {m_eval['accuracy']:.4f} is below --min-accuracy {args.min_accuracy}: "
                         f"the artifacts in {final} are unchanged; this run's are in {out}")
    staged = sorted(p for p in out.rglob("*") if p.is_file())
    for p in staged:
        dest = final / p.relative_to(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
    shutil.rmtree(out)
    log(f"wrote {len(staged)} files to {final}: " + ", ".join(str(p.relative_to(out)) for p in staged))
    log(f"done in {metrics['pipeline_seconds']} s: {MODEL_FILE} {metrics['model']['bytes']} bytes, "
        f"val top-1 {m_eval['accuracy']:.4f}, baseline {g_eval['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
