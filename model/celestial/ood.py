"""The served `confidence` and `known`: the out-of-distribution score, the temperature, and the calibration
of the score's and the colour check's thresholds (pure numpy: no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import augment, robust
from .colour import pool_colour_check, sig6
from .config import GRAPH_OOD_SCORES, OOD_FALSE_FLAGS
from .metadata import ood_metadata


def ood_score(kind: str, logits: np.ndarray, ood: np.ndarray | None = None) -> np.ndarray:
    """The OOD score `kind` (higher = less like the training classes), in float64: the graph's ood_score
    output for a feature-distance score, else from the raw logits."""
    z = logits.astype(np.float64)
    if kind in GRAPH_OOD_SCORES:
        return ood.astype(np.float64)
    if kind == "max_logit":
        return -z.max(1)
    if kind == "energy":
        return -robust.logsumexp(z)
    if kind == "msp":
        return -robust.softmax(z).max(1)
    raise ValueError(kind)


@dataclass(frozen=True)
class Calibration:
    """What the metadata states about confidence and known: the score, temperature T, the score's threshold and
    the colour check (ClassColourKnn, its threshold); `fit` holds the temperature fit's NLL and ECE."""

    score: str
    temperature: float
    threshold: float
    colour: tuple | None
    fit: dict

    def scores(self, logits: np.ndarray, ood: np.ndarray | None = None) -> np.ndarray:
        return ood_score(self.score, logits, ood)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The served probabilities: softmax(logits / T), so that they say how often such answers are right."""
        return robust.softmax(logits.astype(np.float64) / self.temperature)

    def confidence_known(
        self, logits: np.ndarray, ood: np.ndarray | None = None, px: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The served confidence (the largest of the served probabilities) and known of pictures `px` (HWC uint8,
        needed for the colour check)."""
        z = logits.astype(np.float64)
        known = self.scores(z, ood) <= self.threshold
        if self.colour is not None:
            known &= self.colour[0].score(px, z.argmax(1)) <= self.colour[1]
        return self.probabilities(z).max(1), known

    def flagged(self, logits: np.ndarray, ood: np.ndarray | None, px: np.ndarray) -> np.ndarray:
        return ~self.confidence_known(logits, ood, px)[1]

    def metadata(self, classes: int) -> dict[str, str]:
        return ood_metadata(self.score, self.temperature, self.threshold, self.colour, classes)


def middle_keys() -> list[str]:
    """The corruption suite's middle severities ("name/severity"), part of the thresholds' reference."""
    return [f"{n}/{augment.middle(n)}" for n in augment.SUITE]


def reliability_sets(clean: np.ndarray, y: np.ndarray, corrupted: list[np.ndarray], temperature: float) -> dict:
    """The reliability diagrams of the clean validation pictures and of their corrupted versions (every family at
    its middle severity), at temperature 1 and at the fitted temperature."""
    sets = {"clean": (clean, y), "corrupted": (np.concatenate(corrupted), np.concatenate([y] * len(corrupted)))}
    return {
        name: {"t1": robust.reliability(z, yy, 1.0), "calibrated": robust.reliability(z, yy, temperature)}
        for name, (z, yy) in sets.items()
    }


def calibrate(
    score: str, val: tuple, y_val: np.ndarray, px_val: np.ndarray, suite_out: dict, suite: dict, pool: dict
) -> Calibration:
    """Temperature: fitted on the clean and every corrupted validation image. Thresholds: the OOD score's and
    the colour check's (ClassColourKnn on the augmented training pool) together flag OOD_FALSE_FLAGS of
    the clean and middle-severity corrupted validation images (robust.joint_thresholds).
    `val` and `suite_out` hold ONNX Runtime's (logits, ood output) of the validation pictures and the suite."""
    all_corrupt = np.concatenate([z for z, _ in suite_out.values()])
    temperature, fit = robust.fit_temperature(
        np.concatenate([val[0], all_corrupt]), np.concatenate([y_val] + [y_val] * len(suite_out))
    )
    keys = middle_keys()
    fit["reliability"] = reliability_sets(val[0], y_val, [suite_out[k][0] for k in keys], temperature)
    id_robust = np.concatenate([ood_score(score, *val)] + [ood_score(score, *suite_out[k]) for k in keys])
    colour_knn = pool_colour_check(pool["px"], pool["y"]).rounded()
    ref = [(px_val, val[0])] + [(suite[k], suite_out[k][0]) for k in keys]
    colour_ref = np.concatenate([colour_knn.score(p, z.argmax(1)) for p, z in ref])
    t_score, t_colour = robust.joint_thresholds(id_robust, colour_ref, OOD_FALSE_FLAGS)
    return Calibration(score, temperature, float(f"{t_score:.6f}"), (colour_knn, float(sig6(t_colour))), fit)
