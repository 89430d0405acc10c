"""The guide-recipe baseline: trained on the same split, exported without metadata (the server's fixture for a
model without metadata), checked for parity and evaluated."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import GUIDE_FILE, Run
from .data import Split, guide_preprocessing, load_pixels
from .evaluation import evaluate
from .export import export_onnx, parity
from .fit import train_guide
from .log import log
from .preprocess import Preprocessing, to_tensor
from .runtime import ort_logits


@dataclass
class GuideResult:
    path: Path
    pre: Preprocessing
    px_va: np.ndarray  # grayscale validation pixels [N, 32, 32, 1]
    logits: np.ndarray  # ONNX Runtime's, on the validation split
    history: dict
    parity: dict
    evaluation: dict
    train_seconds: float
    parameters: int


def run_guide(run: Run, split: Split, classes: list[str], out: Path) -> GuideResult:
    g = run.guide
    pre = guide_preprocessing(g.height, g.width)
    g_tr = load_pixels(run.raw, split.train, g.height, g.width, grayscale=True)
    g_va = load_pixels(run.raw, split.val, g.height, g.width, grayscale=True)
    x_tr, x_va = to_tensor(g_tr, pre), to_tensor(g_va, pre)
    log("training the guide-recipe baseline")
    t0 = time.time()
    model, hist = train_guide(g, x_tr, split.y_train, x_va, split.y_val, classes)
    train_s = time.time() - t0
    path = out / GUIDE_FILE
    export_onnx(
        model,
        [g.height, g.width, 1],
        "NHWC",
        path,
        None,
        "Guide-recipe baseline (no metadata): input 'input' [N,32,32,1] NHWC float32 0..1 grayscale, "
        "output 'logits' [N,10], labels alphabetical: " + ",".join(classes),
    )
    k_logits = model.predict(x_va, batch_size=64, verbose=0)
    o_logits = ort_logits(path, x_va)
    par = parity("guide-recipe", k_logits, o_logits)
    ev = evaluate(o_logits, split.y_val, classes)
    log(f"guide-recipe baseline: val top-1 {ev['accuracy']:.4f} ({ev['correct']}/{ev['total']})")
    return GuideResult(path, pre, g_va, o_logits, hist, par, ev, train_s, int(model.count_params()))
