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

from .bench import latency_us  # noqa: E402
from .preprocess import (  # noqa: E402
    SPEC, Preprocessing, guide_gray8, load_rgb8, resize_rgb8, tensor_sha256, to_tensor,
)

MODEL_NAME = "celestial-bodies"
MODEL_VERSION = "1.0.0"
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

# The served model. Architectures: per 3x3 conv block (filters, stride, 2x2 max-pool after it); then global average pooling
# and one dense layer to the logits.
ARCHS = {
    "b4": ((8, 1, True), (16, 1, True), (32, 1, True), (64, 1, False)),
    "s3": ((16, 2, True), (32, 1, True), (64, 1, False)),
}
IMPROVED = dict(height=64, width=64, arch="s3", lr=3e-3, epochs=40, batch=32, seed=77,
                rotation=1.0, label_smoothing=0.05)


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


def improved_model(classes: int):
    import keras
    L = keras.layers
    inp = keras.Input((IMPROVED["height"], IMPROVED["width"], 3), name="image")
    x = inp
    for i, (f, stride, pool) in enumerate(ARCHS[IMPROVED["arch"]]):
        x = L.Conv2D(f, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = L.BatchNormalization(name=f"bn{i + 1}")(x)
        x = L.ReLU(name=f"relu{i + 1}")(x)
        if pool:
            x = L.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name="celestial_bodies")


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


def train_improved(px_tr, y_tr, x_va, y_va, classes, pre: Preprocessing):
    import keras
    import tensorflow as tf
    keras.utils.set_random_seed(IMPROVED["seed"])
    scale, mean, std = pre.constants()
    augment = keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical", seed=IMPROVED["seed"]),
        keras.layers.RandomRotation(IMPROVED["rotation"] / 2, fill_mode="constant", fill_value=0.0,
                                    interpolation="bilinear", seed=IMPROVED["seed"] + 1),
    ], name="augment")

    def prep(px, y):
        x = tf.cast(px, tf.float32) * scale  # 0..1, black stays 0 so rotation fills with black
        x = augment(x, training=True)
        return (x - mean) / std, y

    n = len(px_tr)
    ds = (tf.data.Dataset.from_tensor_slices((px_tr, y_tr))
          .shuffle(n, seed=IMPROVED["seed"], reshuffle_each_iteration=True)
          .batch(IMPROVED["batch"])
          .map(prep, num_parallel_calls=1, deterministic=True)
          .prefetch(2))
    steps = IMPROVED["epochs"] * int(np.ceil(n / IMPROVED["batch"]))
    schedule = keras.optimizers.schedules.CosineDecay(IMPROVED["lr"] * 0.1, steps, warmup_target=IMPROVED["lr"],
                                                      warmup_steps=steps // 20)
    model = improved_model(len(classes))
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                            label_smoothing=IMPROVED["label_smoothing"]),
                  metrics=[keras.metrics.CategoricalAccuracy(name="acc")])
    onehot = lambda y: np.eye(len(classes), dtype=np.float32)[y]  # noqa: E731
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, len(classes))))
    hist = model.fit(ds, epochs=IMPROVED["epochs"], validation_data=(x_va, onehot(y_va)), verbose=2)
    return model, hist.history


# --------------------------------------------------------------------------------------------- export


def export_onnx(model, input_shape: list, layout_in: str, path: Path, metadata: dict[str, str] | None, doc: str):
    """Export `model` (NHWC Keras) with input `input` and output `logits`; NCHW input is transposed
    inside the graph (tf2onnx folds the transposes into the convolutions)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def serve(x):
        if layout_in == "NCHW":
            x = tf.transpose(x, [0, 2, 3, 1])
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
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


def golden_entries(val_items, px_val, x_val, classes, logits) -> list[dict]:
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
    ap.add_argument("--min-accuracy", type=float, default=0.99,
                    help="refuse to replace the artifacts when validation top-1 is below this (default 0.99)")
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
    px_tr = load_pixels(raw, train_items, IMPROVED["height"], IMPROVED["width"])
    px_va = load_pixels(raw, val_items, IMPROVED["height"], IMPROVED["width"])
    scaled = px_tr.astype(np.float64) / 255.0
    mean = tuple(f"{v:.3f}" for v in scaled.mean(axis=(0, 1, 2)))
    std = tuple(f"{v:.3f}" for v in scaled.std(axis=(0, 1, 2)))
    pre = Preprocessing(IMPROVED["height"], IMPROVED["width"], "rgb", "NCHW",
                        scale="0.00392156862745098", mean=mean, std=std)
    x_va = to_tensor(px_va, pre)  # NCHW
    x_va_nhwc = np.ascontiguousarray(x_va.transpose(0, 2, 3, 1))
    log(f"training the served model (mean {mean}, std {std}, {IMPROVED['epochs']} epochs)")
    t0 = time.time()
    model, hist = train_improved(px_tr, y_tr, x_va_nhwc, y_va, classes, pre)
    train_s = time.time() - t0

    k_logits = model.predict(x_va_nhwc, batch_size=64, verbose=0)
    k_eval = evaluate(k_logits, y_va, classes)
    trained_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    metadata = {
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
    export_onnx(model, [3, IMPROVED["height"], IMPROVED["width"]], "NCHW", mpath, metadata,
                f"{MODEL_NAME} {MODEL_VERSION}: classifies a picture of a Solar System body into one of "
                f"{len(classes)} classes. Preprocessing: {SPEC}. See model/README.md.")
    o_logits = ort_logits(mpath, x_va)
    m_parity = parity(MODEL_NAME, k_logits, o_logits)
    m_eval = evaluate(o_logits, y_va, classes)
    if f"{m_eval['accuracy']:.4f}" != metadata["celestial.validation_accuracy"]:
        raise SystemExit("ONNX Runtime accuracy differs from the Keras one written to the metadata")
    log(f"served model: val top-1 {m_eval['accuracy']:.4f} ({m_eval['correct']}/{m_eval['total']}), "
        f"min per class {m_eval['min_per_class']:.4f}")

    # the committed file must load and describe itself
    loaded = onnx.load(str(mpath))
    meta_back = {p.key: p.value for p in loaded.metadata_props}
    assert meta_back == metadata, "metadata did not round-trip"
    sess = ort_session(mpath)
    assert sess.get_modelmeta().custom_metadata_map == metadata
    assert [i.name for i in sess.get_inputs()] == ["input"] and [o.name for o in sess.get_outputs()] == ["logits"]

    # ---- golden fixtures
    sens = pixel_sensitivity(mpath, px_va[:100], lambda p: to_tensor(p, pre))
    golden = {
        "model": MODEL_FILE,
        "model_sha256": sha256_file(mpath),
        "model_version": MODEL_VERSION,
        "labels": classes,
        "preprocessing": SPEC,
        "selection": GOLDEN_SELECTION,
        "input": {"name": "input", "layout": "NCHW", "shape": [1, 3, IMPROVED["height"], IMPROVED["width"]],
                  "scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std)},
        "tolerance": TOLERANCE | {"logit_sensitivity_to_random_pixel_noise_1": round(sens, 5)},
        "images": golden_entries(val_items, px_va, x_va, classes, o_logits),
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
    log("measuring ONNX Runtime latency (1 thread, batch 1)")
    lat = latency_us(mpath, [3, IMPROVED["height"], IMPROVED["width"]], args.latency_iterations)
    glat = latency_us(gpath, [GUIDE["height"], GUIDE["width"], 1], args.latency_iterations // 4)
    log(f"latency: served {lat['median_us']} us median, guide {glat['median_us']} us median")

    metrics = {
        "model": {
            "file": MODEL_FILE, "sha256": golden["model_sha256"], "bytes": mpath.stat().st_size,
            "parameters": int(model.count_params()), "trained_at": trained_at, "hyper_parameters": IMPROVED,
            "validation": m_eval, "keras_validation_accuracy": k_eval["accuracy"], "parity": m_parity,
            "latency": lat, "train_seconds": round(train_s, 1), "mean": mean, "std": std,
            "history": {k: [round(float(v), 5) for v in vs] for k, vs in hist.items()},
            "confusion_text": confusion_text(m_eval["confusion"], classes),
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
