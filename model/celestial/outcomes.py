"""A run's outcomes beyond training: the corruption suite and OOD evaluations, latency, and metrics.json."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from . import evaluation, pools
from .baseline import GuideResult
from .config import GUIDE_FILE, MODEL_FILE, OPSET, VAL_FRACTION, Run
from .data import Split
from .golden_set import GOLDEN_KEY
from .log import log
from .metadata import preprocessing_from, read_metadata
from .preprocess import SERVED_RESIZE_MODE, Preprocessing, to_tensor
from .report import confusion_text, environment, history
from .runtime import ort_logits, ort_outputs
from .served import Exported, Trained

# Metadata values too large for metrics.json's `metadata_added` (the colour bank, the golden set's images).
LARGE_KEYS = {"celestial.colour_ood", GOLDEN_KEY}


@dataclass
class Outcomes:
    classes: list[str]
    split: Split
    guide: GuideResult
    trained: Trained
    exported: Exported
    robustness: dict
    ood: dict
    previous_pre: Preprocessing | None


def reader_of(pre: Preprocessing) -> str:
    """The picture sets' reader (augment.model_pixels) for a model of preprocessing `pre`."""
    return "rgb" if pre.resize_mode == SERVED_RESIZE_MODE else "stretch"


def _previous(run: Run, split: Split) -> tuple | None:
    """The previous model (v2): its preprocessing, corruption suite and clean validation logits, when present."""
    if not run.previous.exists():
        return None
    log("corruption suite on the previous model (v2) and the guide recipe")
    pre = preprocessing_from(read_metadata(run.previous))
    suite = pools.suite_pixels(run.raw, split.val, pre.height, pre.width, run.cache, reader=reader_of(pre))
    px = pools.clean_pixels(run.raw, split.val, pre.height, pre.width, pre.resize_mode)
    clean = ort_logits(run.previous, to_tensor(px, pre))
    return run.previous, pre, suite, clean


def evaluate_outcomes(
    run: Run,
    split: Split,
    classes: list[str],
    pre: Preprocessing,
    guide: GuideResult,
    t: Trained,
    e: Exported,
    out: Path,
) -> Outcomes:
    """Robustness (served, previous, guide) and the OOD figures (synthetic outliers, false flags, baselines)."""
    g = run.guide
    prev = _previous(run, split)
    g_suite = pools.suite_pixels(run.raw, split.val, g.height, g.width, run.cache, reader="guide")
    suite_logits = {k: v[0] for k, v in e.suite_out.items()}
    table = evaluation.robustness(suite_logits, split.y_val, prev, (guide.path, guide.pre, g_suite))
    ev_out = evaluation.eval_outliers(run.raw, split.val, run.served.height, run.served.width, run.cache)
    ev = (*ort_outputs(e.path, to_tensor(ev_out["px"], pre)), ev_out["px"])
    ood = evaluation.ood_summary(e.cal, t.bank, (*e.val_out, t.px_va), ev, ev_out["kinds"], e.suite_out, e.suite)
    ood["all_scores_synthetic_auroc"] = evaluation.feature_scores_auroc(
        t.model, t.pool, t.px_va, ev_out["px"], pre, len(classes)
    )
    g_ev = evaluation.eval_outliers(run.raw, split.val, g.height, g.width, run.cache, reader="guide")
    ood["guide_msp_auroc"] = evaluation.msp_auroc(guide.path, guide.logits, g_ev["px"], guide.pre)
    if prev is not None:
        p = prev[1]
        prev_ev = evaluation.eval_outliers(run.raw, split.val, p.height, p.width, run.cache, reader=reader_of(p))
        ood["previous_msp_auroc"] = evaluation.msp_auroc(run.previous, prev[3], prev_ev["px"], prev[1])
    if (run.out / "loco.json").exists():
        shutil.copy2(run.out / "loco.json", out / "loco.json")
    log(
        f"robustness: lowest middle-severity top-1 {table['served_middle_min']:.4f}; synthetic outliers AUROC "
        f"{ood['synthetic']['auroc_vs_clean_val']:.4f}, flagged {ood['synthetic']['flag_rate']:.3f}"
    )
    return Outcomes(classes, split, guide, t, e, table, ood, None if prev is None else prev[1])


def latency(run: Run, o: Outcomes) -> dict:
    """ONNX Runtime latency (1 thread, batch 1) of both models, and the A/B against the previous model when present."""
    from .bench import ab_latency, latency_us

    s, g = run.served, run.guide
    log("measuring ONNX Runtime latency (1 thread, batch 1)")
    lat = latency_us(o.exported.path, [3, s.height, s.width], run.latency_iterations)
    glat = latency_us(o.guide.path, [g.height, g.width, 1], run.latency_iterations // 4)
    log(f"latency: served {lat['median_us']} us median, guide {glat['median_us']} us median")
    ab = None
    if o.previous_pre is not None:
        p = o.previous_pre
        ab = ab_latency(o.exported.path, [3, s.height, s.width], run.previous, [3, p.height, p.width])
        log(
            f"A/B vs the previous model (alternating, {ab['rounds']} rounds): {ab['new_median_us']} vs "
            f"{ab['old_median_us']} us, ratio {ab['ratio_median']}"
        )
    return {"served": lat, "guide": glat, "ab_previous": ab}


def _served_metrics(run: Run, o: Outcomes, lat: dict, pre: Preprocessing) -> dict:
    from .bench import onnx_macs
    from .golden import sha256_file

    t, e, prev = o.trained, o.exported, run.previous
    return {
        "file": MODEL_FILE,
        "sha256": sha256_file(e.path),
        "bytes": e.path.stat().st_size,
        "parameters": int(t.model.count_params()),
        "trained_at": e.trained_at,
        "hyper_parameters": run.served.as_dict(),
        "validation": e.evaluation,
        "keras_validation_accuracy": t.keras_eval["accuracy"],
        "parity": e.parity,
        "latency": lat["served"],
        "train_seconds": round(t.train_seconds, 1),
        "mean": pre.mean,
        "std": pre.std,
        "history": history(t.history),
        "confusion_text": confusion_text(e.evaluation["confusion"], o.classes),
        "compute": onnx_macs(e.path),
        "ab_previous": lat["ab_previous"],
        "previous_compute": onnx_macs(prev) if prev.exists() else None,
        "previous_bytes": prev.stat().st_size if prev.exists() else None,
        "robustness": o.robustness,
        "ood": o.ood,
        "metadata_added": {k: v for k, v in e.metadata.items() if k not in e.base_metadata and k not in LARGE_KEYS},
    }


def _guide_metrics(run: Run, o: Outcomes, lat: dict) -> dict:
    g = o.guide
    return {
        "file": GUIDE_FILE,
        "bytes": g.path.stat().st_size,
        "parameters": g.parameters,
        "hyper_parameters": run.guide.as_dict(),
        "validation": g.evaluation,
        "parity": g.parity,
        "latency": lat["guide"],
        "train_seconds": round(g.train_seconds, 1),
        "history": history(g.history),
        "confusion_text": confusion_text(g.evaluation["confusion"], o.classes),
    }


def metrics(run: Run, o: Outcomes, lat: dict, pre: Preprocessing, seconds: float) -> dict:
    """metrics.json: every number the model card quotes."""
    return {
        "model": _served_metrics(run, o, lat, pre),
        "guide_recipe": _guide_metrics(run, o, lat),
        "split": {
            "seed": run.split_seed,
            "validation_fraction": VAL_FRACTION,
            "train": len(o.split.train),
            "validation": len(o.split.val),
        },
        "environment": environment(OPSET),
        "pipeline_seconds": round(seconds, 1),
    }
