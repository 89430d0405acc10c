"""The model's drift reference (`celestial.drift`): what the served model answers on validation pictures, which
the server compares its recent live answers with (docs/server.md, "Drift").

Built on half of the validation split: per class, in the order of validation-split.txt (sorted by path), the
pictures at even positions (the 1st, 3rd, ...); the other half (`held_out`) is kept for measuring the monitor's
false alarms (bench/drift.sh), so the reference never scores the pictures that judge it. Per picture, exactly what
the server computes: the predicted label, the calibrated `confidence`, `known` (celestial.confidence,
celestial.known, from the metadata alone: verify_outputs.served_outputs) and the ten colour statistics of the
colour check (colour.colour_features). The reference keeps counts and summaries only: the predicted labels'
counts, the confidence's quantile bins (edges and counts), the count of `known: false`, each colour statistic's
mean and standard deviation. `build`, `halves`, `encode` and `decode` are pure; `observe` runs ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .colour import COLOUR_STATISTICS, colour_features, sig6

DRIFT_KEY = "celestial.drift"
FORMAT = 1
# Quantile bins of the confidence: with 150 pictures, 30 a bin (few bins keep each one's share well estimated).
CONFIDENCE_BINS = 5
ABOUT = (
    "Drift reference: the served model's answers on the validation pictures at even positions of each class "
    "(validation-split.txt order). labels: predictions per label (output order); confidence: quantile bin edges "
    "(a value v is in bin i when edges[i-1] <= v < edges[i]) and the pictures per bin; unknown: answers with "
    "known=false; colour: each colour statistic's mean and population standard deviation over the pictures."
)


def halves(paths: list[str]) -> tuple[list[str], list[str]]:
    """(reference, held_out): per class (the path's folder), in the given order, even positions then odd ones."""
    seen: dict[str, int] = {}
    ref, held = [], []
    for p in paths:
        cls = p.split("/", 1)[0]
        i = seen.get(cls, 0)
        seen[cls] = i + 1
        (held if i % 2 else ref).append(p)
    return ref, held


def confidence_edges(confidence: np.ndarray, bins: int = CONFIDENCE_BINS) -> list[float]:
    """The inner edges of `bins` quantile bins, rounded to 6 significant digits, strictly increasing (ties merged:
    a bin that would be empty is dropped)."""
    q = sig6(np.quantile(np.asarray(confidence, np.float64), np.arange(1, bins) / bins))
    edges: list[float] = []
    for v in q:
        if not edges or v > edges[-1]:
            edges.append(float(v))
    return edges


def bin_counts(confidence: np.ndarray, edges: list[float]) -> list[int]:
    """Pictures per bin, bin i holding edges[i-1] <= v < edges[i] (as the server bins)."""
    idx = np.searchsorted(np.asarray(edges, np.float64), np.asarray(confidence, np.float64), side="right")
    return [int(n) for n in np.bincount(idx, minlength=len(edges) + 1)]


def build(
    labels: list[str], predicted: np.ndarray, confidence: np.ndarray, known: np.ndarray, colours: np.ndarray
) -> dict:
    """The reference of the answers on the reference pictures: `predicted` (label indices), `confidence`,
    `known` (bool) and `colours` ([N, 10] colour statistics), one row per picture."""
    n = len(predicted)
    if not (n == len(confidence) == len(known) == len(colours)) or n == 0:
        raise ValueError("one prediction, confidence, known and colour row per picture, at least one")
    edges = confidence_edges(confidence)
    colours = np.asarray(colours, np.float64)
    return {
        "format": FORMAT,
        "about": ABOUT,
        "pictures": n,
        "labels": [int(c) for c in np.bincount(np.asarray(predicted), minlength=len(labels))],
        "confidence": {"edges": edges, "counts": bin_counts(confidence, edges)},
        "unknown": int(np.count_nonzero(~np.asarray(known, bool))),
        "colour": {
            "statistics": list(COLOUR_STATISTICS),
            "mean": [float(v) for v in sig6(colours.mean(0))],
            "std": [float(v) for v in sig6(colours.std(0))],
        },
    }


def encode(reference: dict) -> str:
    """The metadata value: compact JSON (the same reference always gives the same string)."""
    return json.dumps(reference, separators=(",", ":"))


def decode(value: str) -> dict:
    return json.loads(value)


def compute(model: Path, raw: Path, validation: list[str]) -> dict:
    """The reference of `model` on the reference half of the validation pictures `validation` (the order of
    validation-split.txt). Needs ONNX Runtime and the dataset."""
    from .metadata import read_metadata

    reference, _ = halves(validation)
    seen = observe(model, raw, reference)
    labels = json.loads(read_metadata(model)["celestial.labels"])
    return build(labels, seen["predicted"], seen["confidence"], seen["known"], seen["colours"])


def observe(model: Path, raw: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """What the served model answers for the dataset pictures `paths` (relative to `raw`), from its metadata
    alone: predicted label index, confidence, known and colour statistics per picture. Needs ONNX Runtime."""
    from .metadata import preprocessing_from, read_metadata
    from .preprocess import load_model_pixels, to_tensor
    from .runtime import ort_logits
    from .verify_outputs import served_outputs

    meta = read_metadata(model)
    pre = preprocessing_from(meta)
    px = np.stack([load_model_pixels(raw / p, pre.height, pre.width, pre.resize_mode) for p in paths])
    logits = ort_logits(model, to_tensor(px, pre))
    confidence, known = served_outputs(logits, meta, px=px)
    return {
        "predicted": logits.argmax(1),
        "confidence": confidence,
        "known": known,
        "colours": colour_features(px),
    }
