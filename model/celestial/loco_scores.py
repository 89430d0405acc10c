"""The leave-one-class-out run's measures: every OOD score's AUROC and flag rate on the left-out class, the
flags at the served calibration, and the summary over the ten runs."""

from __future__ import annotations

import numpy as np

from . import augment, robust
from .colour import ClassColourKnn
from .config import OOD_FALSE_FLAGS as FALSE_FLAGS


def colour_score(c, px: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """A colour distance: to every known picture (ColourKnn), or to those of the predicted class (ClassColourKnn)."""
    return c.score(px, logits.argmax(1)) if isinstance(c, ClassColourKnn) else c.score(px)


def evaluate_scores(
    stats: robust.FeatureStats,
    id_fl,
    ood_sets: dict,
    colour: dict | None = None,
    id_px=None,
    ood_px: dict | None = None,
) -> dict:
    """AUROC and flag rate at 1 % false flags for every score, per OOD set. With `colour` ({name:
    ColourKnn}, and the pictures), also those colour-distance scores and each one's cross-fitted
    combination with the maximum softmax probability (`msp_<name>`)."""
    id_s = stats.scores(*id_fl)
    for k, c in (colour or {}).items():
        id_s[k] = colour_score(c, id_px, id_fl[1])
    out = {}
    for name, fl in ood_sets.items():
        o_s = stats.scores(*fl)
        ids = dict(id_s)
        for k, c in (colour or {}).items():
            o_s[k] = colour_score(c, ood_px[name], fl[1])
            ids[f"msp_{k}"], o_s[f"msp_{k}"] = robust.combined_max([id_s["msp"], id_s[k]], [o_s["msp"], o_s[k]])
        out[name] = {
            k: {
                "auroc": round(robust.auroc(ids[k], o_s[k]), 5),
                "flag_rate_at_1pct": round(robust.flag_rate(o_s[k], robust.threshold_at(ids[k], FALSE_FLAGS)), 4),
            }
            for k in ids
        }
    return out


def served_flags(id_logits, id_px, suite_fl: dict, suite: dict, vm, held_logits, held_px, colour) -> dict:
    """The left-out class flagged at thresholds calibrated as the served ones are (1 % false flags over the nine
    classes' clean and middle-severity corrupted validation images together; ood.calibrate): msp alone, and msp with
    the class-conditional colour distance (robust.joint_thresholds)."""

    def msp(z):
        return -robust.softmax(z.astype(np.float64)).max(1)

    ref_z = [id_logits] + [sl for _, sl in suite_fl.values()]
    ref_px = [id_px] + [suite[f"{k}/{augment.middle(k)}"][vm] for k in suite_fl]
    ref_msp = np.concatenate([msp(z) for z in ref_z])
    ref_col = np.concatenate([colour.score(p, z.argmax(1)) for p, z in zip(ref_px, ref_z)])
    h_msp, h_col = msp(held_logits), colour.score(held_px, held_logits.argmax(1))
    t = robust.threshold_at(ref_msp, FALSE_FLAGS)
    ta, tb = robust.joint_thresholds(ref_msp, ref_col, FALSE_FLAGS)
    return {
        "msp": round(float((h_msp > t).mean()), 4),
        "msp_class_colour_pool": round(float(((h_msp > ta) | (h_col > tb)).mean()), 4),
    }


def summarise(results: dict) -> dict:
    kinds = list(next(iter(results.values()))["scores"])
    out = {
        k: {
            "mean_auroc": round(float(np.mean([r["scores"][k]["auroc"] for r in results.values()])), 5),
            "min_auroc": round(float(np.min([r["scores"][k]["auroc"] for r in results.values()])), 5),
            "mean_flag_rate_at_1pct": round(
                float(np.mean([r["scores"][k]["flag_rate_at_1pct"] for r in results.values()])), 4
            ),
        }
        for k in kinds
    }
    for k in next(iter(results.values())).get("served_calibration", {}):
        out[k]["mean_flag_rate_served_calibration"] = round(
            float(np.mean([r["served_calibration"][k] for r in results.values()])), 4
        )
    return out
