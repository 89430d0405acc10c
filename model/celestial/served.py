"""The served model: trained on the augmented pool with outlier exposure, exported with its metadata after the
calibration of confidence and known, and checked (ONNX Runtime vs Keras, accuracy vs metadata)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import pools, robust
from .config import MODEL_FILE, MODEL_NAME, MODEL_VERSION, OOD_BANK_STRIDE, OOD_OUTPUT, PARITY_MAX_ABS, Run
from .data import Split
from .evaluation import evaluate
from .export import export_onnx, parity
from .fit import train_served
from .log import log
from .metadata import base_metadata, utc_now
from .networks import features_logits
from .ood import Calibration, calibrate
from .preprocess import SPEC, Preprocessing, to_tensor
from .runtime import ort_outputs


@dataclass
class Trained:
    model: object  # the Keras model
    history: dict
    train_seconds: float
    pool: dict  # the augmented training pool (pools.training_pool)
    px_va: np.ndarray  # the clean validation pixels (HWC uint8)
    keras_eval: dict
    keras_logits: np.ndarray
    bank: np.ndarray | None  # the feature bank of a graph OOD score


@dataclass
class Exported:
    path: Path
    trained_at: str
    metadata: dict
    base_metadata: dict
    cal: Calibration
    val_out: tuple  # ONNX Runtime's (logits, ood output or None) on the validation split
    suite: dict  # the corruption suite's pixels
    suite_out: dict  # and ONNX Runtime's outputs on it
    parity: dict
    evaluation: dict


def train(run: Run, split: Split, pre: Preprocessing, classes: list[str]) -> Trained:
    s = run.served
    px_va = pools.clean_pixels(run.raw, split.val, s.height, s.width)
    log(
        f"building the augmented training pool ({s.variants} variants per image) and "
        f"{s.outliers} synthetic outliers (cached in {run.cache})"
    )
    pool = pools.training_pool(run.raw, split.train, s.variants, s.height, s.width, run.cache)
    outl = pools.outlier_pool(run.raw, split.train, s.outliers, pools.OUTLIER_TRAIN_SEED, s.height, s.width, run.cache)
    log(
        f"training the served model (mean {pre.mean}, std {pre.std}, {s.epochs} epochs over "
        f"{len(pool['y'])} + {len(outl['px'])} images)"
    )
    t0 = time.time()
    model, hist = train_served(s, pool["px"], pool["y"], outl["px"], len(classes), pre, px_va, split.y_val)
    train_s = time.time() - t0
    x_va_nhwc = np.ascontiguousarray(to_tensor(px_va, pre).transpose(0, 2, 3, 1))
    k_logits = model.predict(x_va_nhwc, batch_size=64, verbose=0)
    bank = feature_bank(run, model, pool, pre, len(classes))
    return Trained(model, hist, train_s, pool, px_va, evaluate(k_logits, split.y_val, classes), k_logits, bank)


def feature_bank(run: Run, model, pool: dict, pre: Preprocessing, n_classes: int) -> np.ndarray | None:
    """The reference bank of a graph OOD score: for knn_cosine the unit-length pooled features of each training
    image's first augmented variant (every OOD_BANK_STRIDE-th image), for centroid_cosine the classes' centroids
    of the unit-length pool features; None for a score computed from the logits."""
    if run.ood_score == "knn_cosine":
        first = np.arange(len(pool["y"])) % run.served.variants == 0
        feats = features_logits(model, pool["px"][first][::OOD_BANK_STRIDE], pre)[0]
        return robust.l2n(feats.astype(np.float64)).astype(np.float32)
    if run.ood_score == "centroid_cosine":
        pf = robust.l2n(features_logits(model, pool["px"], pre)[0].astype(np.float64))
        return robust.l2n(np.stack([pf[pool["y"] == k].mean(0) for k in range(n_classes)])).astype(np.float32)
    return None


def _doc(n_classes: int) -> str:
    return (
        f"{MODEL_NAME} {MODEL_VERSION}: classifies a picture of a Solar System body into one of "
        f"{n_classes} classes and says when a picture is none of them. Preprocessing: {SPEC}. "
        "See model/README.md."
    )


def export(run: Run, t: Trained, split: Split, pre: Preprocessing, classes: list[str], out: Path) -> Exported:
    """Export once without the OOD keys, calibrate on ONNX Runtime's outputs (clean and corrupted validation
    images), then export again with the full metadata and check it."""
    s = run.served
    log("corruption suite, synthetic outliers: generating (cached)")
    suite = pools.suite_pixels(run.raw, split.val, s.height, s.width, run.cache)
    trained_at = utc_now()
    base_meta = base_metadata(classes, pre, t.keras_eval["accuracy"], trained_at)
    path = out / MODEL_FILE
    export_onnx(t.model, [3, s.height, s.width], "NCHW", path, base_meta, _doc(len(classes)), t.bank)
    x_va = to_tensor(t.px_va, pre)
    val_out = ort_outputs(path, x_va)
    suite_out = {k: ort_outputs(path, to_tensor(v, pre)) for k, v in suite.items()}
    cal = calibrate(run.ood_score, val_out, split.y_val, t.px_va, suite_out, suite, t.pool)
    metadata = base_meta | cal.metadata(len(classes))
    export_onnx(t.model, [3, s.height, s.width], "NCHW", path, metadata, _doc(len(classes)), t.bank)
    val_out = ort_outputs(path, x_va)
    m_parity = parity(MODEL_NAME, t.keras_logits, val_out[0])
    if t.bank is not None:
        m_parity["ood_score_max_abs_diff"] = _ood_parity(t, pre, val_out[1])
    ev = evaluate(val_out[0], split.y_val, classes)
    if f"{ev['accuracy']:.4f}" != metadata["celestial.validation_accuracy"]:
        raise SystemExit("ONNX Runtime accuracy differs from the Keras one written to the metadata")
    log(
        f"served model: val top-1 {ev['accuracy']:.4f} ({ev['correct']}/{ev['total']}), "
        f"min per class {ev['min_per_class']:.4f}; temperature {cal.temperature}, {cal.score} threshold "
        f"{cal.threshold}, colour threshold {cal.colour[1]}"
    )
    return Exported(path, trained_at, metadata, base_meta, cal, val_out, suite, suite_out, m_parity, ev)


def _ood_parity(t: Trained, pre: Preprocessing, onnx_ood: np.ndarray) -> float:
    """The in-graph OOD score against the same formula on Keras' features."""
    kf = features_logits(t.model, t.px_va, pre)[0].astype(np.float64)
    k_ood = 1.0 - (robust.l2n(kf) @ t.bank.T.astype(np.float64)).max(1)
    diff = float(np.abs(k_ood - onnx_ood).max())
    log(f"parity {OOD_OUTPUT}: max |numpy - onnxruntime| = {diff:.3g}")
    if diff > PARITY_MAX_ABS:
        raise SystemExit(f"parity check FAILED for {OOD_OUTPUT}: {diff}")
    return diff


def check_self_description(e: Exported, graph_ood: bool) -> None:
    """The written file must load and describe itself: its metadata round-trips (onnx and ONNX Runtime) and
    ONNX Runtime sees the input `input` and the output `logits` (and `ood_score` for a graph OOD score)."""
    from .metadata import read_metadata
    from .runtime import ort_session

    if read_metadata(e.path) != e.metadata:
        raise SystemExit("metadata did not round-trip")
    sess = ort_session(e.path)
    if sess.get_modelmeta().custom_metadata_map != e.metadata:
        raise SystemExit("ONNX Runtime reads other metadata than was written")
    outputs = ["logits", OOD_OUTPUT] if graph_ood else ["logits"]
    if [i.name for i in sess.get_inputs()] != ["input"] or [o.name for o in sess.get_outputs()] != outputs:
        raise SystemExit("the exported model's inputs or outputs are not input -> " + ", ".join(outputs))
