"""Evaluations of the exported models with ONNX Runtime: accuracy and confusion, the corruption suite (served
model, the previous model, guide recipe) and the out-of-distribution figures on the synthetic outliers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import augment, pools, robust
from .colour import CLASS_COLOUR_RADIUS, COLOUR_STATISTICS
from .config import OOD_EVAL_OUTLIERS, OOD_FALSE_FLAGS
from .networks import features_logits
from .ood import Calibration, middle_keys
from .preprocess import to_tensor
from .runtime import ort_logits


def evaluate(logits: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Top-1 overall and per class, and the confusion matrix (rows: true class)."""
    pred = logits.argmax(1)
    cm = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(y, pred):
        cm[t, p] += 1
    per_class = {c: round(float(cm[i, i] / max(cm[i].sum(), 1)), 4) for i, c in enumerate(classes)}
    return {
        "accuracy": round(float((pred == y).mean()), 4),
        "correct": int((pred == y).sum()),
        "total": int(len(y)),
        "per_class": per_class,
        "min_per_class": min(per_class.values()),
        "confusion": cm.tolist(),
    }


def top1(logits: np.ndarray, y: np.ndarray) -> float:
    return round(float((logits.argmax(1) == y).mean()), 4)


def suite_top1(logits_of) -> dict:
    """{corruption: [top-1 per severity]} with `logits_of(key)` the logits of the suite's "name/severity"."""
    return {n: [logits_of(f"{n}/{s}") for s in range(len(augment.SUITE[n][1]))] for n in augment.SUITE}


def robustness(suite_logits: dict, y_va: np.ndarray, previous: tuple | None, guide: tuple) -> dict:
    """The corruption-suite table. `previous` = (path, preprocessing, suite pixels, clean logits) of the previous
    model or None; `guide` = (path, preprocessing, suite pixels) of the guide recipe."""
    table = {
        "suite": {n: {"parameter": v[0], "values": v[1]} for n, v in augment.SUITE.items()},
        "reencode_quality": augment.REENCODE_QUALITY,
        "seed": pools.SUITE_SEED,
        "served": suite_top1(lambda k: top1(suite_logits[k], y_va)),
    }
    table["served_middle_min"] = min(table["served"][n][augment.middle(n)] for n in augment.SUITE)
    if previous is not None:
        path, pre, suite, clean_logits = previous
        table["previous"] = suite_top1(lambda k: top1(ort_logits(path, to_tensor(suite[k], pre)), y_va))
        table["previous_clean"] = top1(clean_logits, y_va)
    path, pre, suite = guide
    table["guide"] = suite_top1(lambda k: top1(ort_logits(path, to_tensor(suite[k], pre)), y_va))
    return table


def _synthetic(cal: Calibration, id_val: tuple, ev: tuple, kinds: np.ndarray) -> dict:
    """AUROC and flag rates on the synthetic outliers. `id_val`, `ev`: (logits, ood output, pictures) of the clean
    validation images and of the outliers. The two checks as one score for the AUROC: each calibrated on the
    clean validation images, the larger."""
    colour = cal.colour[0]
    score, ev_score = cal.scores(*id_val[:2]), cal.scores(*ev[:2])
    id_c, ev_c = robust.combined_max(
        [score, colour.score(id_val[2], id_val[0].argmax(1))], [ev_score, colour.score(ev[2], ev[0].argmax(1))]
    )
    flag = cal.flagged(*ev)
    return {
        "images": int(len(kinds)),
        "auroc_vs_clean_val": round(robust.auroc(id_c, ev_c), 5),
        "auroc_vs_clean_val_score_alone": round(robust.auroc(score, ev_score), 5),
        "flag_rate": round(float(flag.mean()), 4),
        "per_kind": {
            k: {
                "auroc": round(robust.auroc(id_c, ev_c[kinds == k]), 5),
                "flag_rate": round(float(flag[kinds == k].mean()), 4),
            }
            for k in sorted(set(kinds.tolist()))
        },
    }


def ood_summary(
    cal: Calibration, bank, id_val: tuple, ev: tuple, kinds: np.ndarray, suite_out: dict, suite: dict
) -> dict:
    """The served OOD rule's figures: threshold, temperature, colour check, synthetic outliers, false flags."""
    colour, t_colour = cal.colour
    keys = middle_keys()
    return {
        "score": cal.score,
        "bank_size": 0 if bank is None else int(len(bank)),
        "loco_key": f"{cal.score}_class_colour_pool",  # the served pair of checks, as loco.json names it
        "threshold": cal.threshold,
        "temperature": cal.temperature,
        "calibration": cal.fit,
        "colour": {
            "k": colour.k,
            "threshold": t_colour,
            "bank_radius": CLASS_COLOUR_RADIUS,
            "bank_size": int(len(colour.raw)),
            "statistics": len(COLOUR_STATISTICS),
        },
        "threshold_rule": f"the two thresholds together flag {OOD_FALSE_FLAGS:.0%} of the in-distribution "
        "validation images, clean and every corruption at its middle severity (3,600 images)",
        "synthetic": _synthetic(cal, id_val, ev, kinds),
        "false_flags": {
            "clean_validation": round(float(cal.flagged(*id_val).mean()), 4),
            **{k.split("/")[0]: round(float(cal.flagged(*suite_out[k], suite[k]).mean()), 4) for k in keys},
        },
        "all_scores_synthetic_auroc": {},
    }


def feature_scores_auroc(model, pool: dict, px_va, ev_px, pre, n_classes: int) -> dict:
    """AUROC on the synthetic outliers of every score robust.FeatureStats computes (fitted on every 4th
    picture of the training pool), from the Keras model's features and logits."""
    fs = robust.FeatureStats(*features_logits(model, pool["px"][::4], pre)[:1], pool["y"][::4], n_classes)
    id_all = fs.scores(*features_logits(model, px_va, pre))
    ev_all = fs.scores(*features_logits(model, ev_px, pre))
    return {k: round(robust.auroc(id_all[k], ev_all[k]), 5) for k in id_all}


def msp_auroc(path: Path, clean_logits: np.ndarray, outlier_px: np.ndarray, pre) -> float:
    """Another model's maximum-softmax-probability AUROC on synthetic outliers (a baseline)."""
    ev = ort_logits(path, to_tensor(outlier_px, pre))
    return round(robust.auroc(-robust.softmax(clean_logits).max(1), -robust.softmax(ev).max(1)), 5)


def eval_outliers(raw: Path, val_items, height: int, width: int, cache: Path, reader: str = "rgb") -> dict:
    return pools.outlier_pool(
        raw, val_items, OOD_EVAL_OUTLIERS, pools.OUTLIER_EVAL_SEED, height, width, cache, reader=reader
    )
