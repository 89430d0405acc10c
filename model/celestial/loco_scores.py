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
    out = {}
    for name, fl in ood_sets.items():
        o_s = stats.scores(*fl)
        out[name] = {k: _measure(id_s[k], o_s[k]) for k in id_s}
        if colour:
            out[name].update(colour_measures(id_fl[1], id_px, fl[1], ood_px[name], colour))
    return out


def _measure(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict:
    return {
        "auroc": round(robust.auroc(id_scores, ood_scores), 5),
        "flag_rate_at_1pct": round(robust.flag_rate(ood_scores, robust.threshold_at(id_scores, FALSE_FLAGS)), 4),
    }


def colour_measures(id_logits, id_px, held_logits, held_px, colour: dict) -> dict:
    """evaluate_scores' entries of the colour distances `colour` alone and with msp, from the logits: what a
    rescore recomputes when only a colour check changed."""
    id_m, o_m = _msp(id_logits), _msp(held_logits)
    pairs = {k: (colour_score(c, id_px, id_logits), colour_score(c, held_px, held_logits)) for k, c in colour.items()}
    out = {k: _measure(i_c, o_c) for k, (i_c, o_c) in pairs.items()}
    for k, (i_c, o_c) in pairs.items():
        out[f"msp_{k}"] = _measure(*robust.combined_max([id_m, i_c], [o_m, o_c]))
    return out


CURVE_FALSE_FLAGS = (0.005, 0.01, 0.02, 0.05)


def _msp(z: np.ndarray) -> np.ndarray:
    return -robust.softmax(z.astype(np.float64)).max(1)


def _reference(id_logits, id_px, suite_fl: dict, suite: dict, vm, colour, families) -> tuple[np.ndarray, np.ndarray]:
    """The in-distribution reference of the served thresholds: msp and the colour distance of the nine classes'
    clean validation images and of their corrupted versions (`families`, each at its middle severity)."""
    ref_z = [id_logits] + [suite_fl[k][1] for k in families]
    ref_px = [id_px] + [suite[f"{k}/{augment.middle(k)}"][vm] for k in families]
    return np.concatenate([_msp(z) for z in ref_z]), np.concatenate(
        [colour.score(p, z.argmax(1)) for p, z in zip(ref_px, ref_z)]
    )


def served_flags(id_logits, id_px, suite_fl: dict, suite: dict, vm, held_logits, held_px, colour) -> dict:
    """The left-out class flagged at thresholds calibrated as the served ones are (1 % false flags over the nine
    classes' clean and middle-severity corrupted validation images together; ood.calibrate): msp alone, and msp with
    the class-conditional colour distance (robust.joint_thresholds)."""
    ref_msp, ref_col = _reference(id_logits, id_px, suite_fl, suite, vm, colour, list(suite_fl))
    h_msp, h_col = _msp(held_logits), colour.score(held_px, held_logits.argmax(1))
    t = robust.threshold_at(ref_msp, FALSE_FLAGS)
    ta, tb = robust.joint_thresholds(ref_msp, ref_col, FALSE_FLAGS)
    return {
        "msp": round(float((h_msp > t).mean()), 4),
        "msp_class_colour_pool": round(float(((h_msp > ta) | (h_col > tb)).mean()), 4),
    }


def served_curve(id_logits, id_px, suite_fl: dict, suite: dict, vm, held_logits, held_px, colour) -> dict:
    """The served checks' trade-off for the left-out class: its flag rate at thresholds calibrated as served for
    each false-flag rate of CURVE_FALSE_FLAGS, and at 1 % with the zoom-out family left out of the reference
    (how much the black margins of zoomed-out pictures cost)."""
    h_msp, h_col = _msp(held_logits), colour.score(held_px, held_logits.argmax(1))

    def flagged(ref: tuple, rate: float) -> float:
        ta, tb = robust.joint_thresholds(*ref, rate)
        return round(float(((h_msp > ta) | (h_col > tb)).mean()), 4)

    every = _reference(id_logits, id_px, suite_fl, suite, vm, colour, list(suite_fl))
    no_zoom = _reference(id_logits, id_px, suite_fl, suite, vm, colour, [k for k in suite_fl if k != "zoom_out"])
    return {
        "false_flags": list(CURVE_FALSE_FLAGS),
        "flagged": [flagged(every, r) for r in CURVE_FALSE_FLAGS],
        "flagged_1pct_without_zoom_out": flagged(no_zoom, FALSE_FLAGS),
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
