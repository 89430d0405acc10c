"""The ONNX `metadata_props` (all strings) that let the server preprocess, interpret and check the model's
outputs exactly as training did: what they say, and writing and reading them."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from .config import GRAPH_OOD_SCORES, MODEL_NAME, MODEL_VERSION, OOD_FALSE_FLAGS, OOD_OUTPUT
from .preprocess import JPEG_DCT_SCALING, Preprocessing

OOD_FORMULAS = {
    "knn_cosine": (
        "s = the model's second output ood_score [N] = 1 - max_i cos(f, bank_i), computed in the graph: "
        "f = the globally pooled features, bank = the unit-length features of one augmented variant "
        "of each of the 1,200 training images"
    ),
    "centroid_cosine": (
        "s = the model's second output ood_score [N] = 1 - max_k cos(f, c_k), computed in the graph: "
        "f = the globally pooled features, c_k = the unit-length mean of the unit-length "
        "features of class k over the augmented training pool"
    ),
    "max_logit": "s = -max_k logits[k]",
    "energy": "s = -log(sum_k exp(logits[k]))",
    "msp": "s = -max_k softmax(logits)[k]",
}
CONFIDENCE_RULE = (
    "probabilities = softmax(logits / temperature), confidence = max_k probabilities[k], "
    "temperature = celestial.temperature"
)
KNOWN_RULE = (
    "known = (s <= celestial.ood_threshold) with s the score celestial.ood_score as "
    "celestial.ood_score_formula says (the output celestial.ood_score_output when present, else computed "
    "from the raw logits), and, when celestial.colour_ood is present, its colour check passes "
    "(d <= its threshold, d as its formula says); known = false otherwise"
)


def utc_now() -> str:
    """RFC 3339 UTC time to the second (`celestial.trained_at`)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def base_metadata(classes: list[str], pre: Preprocessing, accuracy: float, trained_at: str) -> dict[str, str]:
    """Labels, I/O names, preprocessing, identity and validation accuracy."""
    return {
        "celestial.labels": json.dumps(classes),
        "celestial.input_name": "input",
        "celestial.output_name": "logits",
        **pre.metadata(),
        "celestial.output_kind": "logits",
        "celestial.model_name": MODEL_NAME,
        "celestial.model_version": MODEL_VERSION,
        "celestial.trained_at": trained_at,
        "celestial.validation_accuracy": f"{accuracy:.4f}",
    }


def ood_metadata(
    score: str, temperature: float, threshold: float, colour: tuple | None = None, classes: int = 0
) -> dict[str, str]:
    """The calibrated confidence, the OOD score and threshold and (with `colour` = (colour.ClassColourKnn,
    its threshold)) the colour check that define the server's `confidence` and `known`."""
    return {
        "celestial.jpeg_dct_scaling": JPEG_DCT_SCALING,
        "celestial.temperature": f"{temperature}",
        "celestial.confidence": CONFIDENCE_RULE,
        "celestial.ood_score": score,
        "celestial.ood_score_formula": OOD_FORMULAS[score],
        **({"celestial.ood_score_output": OOD_OUTPUT} if score in GRAPH_OOD_SCORES else {}),
        "celestial.ood_threshold": f"{threshold}",
        "celestial.known": KNOWN_RULE,
        "celestial.ood_false_flag_rate": f"{OOD_FALSE_FLAGS}",
        **({"celestial.colour_ood": colour[0].metadata(colour[1], classes)} if colour is not None else {}),
    }


def write_metadata(proto, metadata: dict[str, str] | None) -> None:
    """Replace the model's metadata_props with `metadata`, in its order."""
    del proto.metadata_props[:]
    for k, v in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _without_metadata(proto) -> bytes:
    """The model's bytes with its metadata_props removed: everything a metadata-only step must leave as it was."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.metadata_props[:]
    return copy.SerializeToString()


def add_key(path: Path, key: str, value: str, labels: list[str] | None = None, out: Path | None = None) -> dict:
    """The metadata-only step: write `key` = `value` into the model at `path` (to `out`, default in place),
    replacing an earlier value where it was, else last, the other keys as they were; returns the new metadata.
    Refuses (SystemExit) when the file would differ in anything but its metadata, or when `labels` (the labels
    the value was made for) are not the model's `celestial.labels`."""
    import onnx

    proto = onnx.load(str(path))
    before = _without_metadata(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    have = meta.get("celestial.labels")
    if labels is not None and have is not None and json.loads(have) != labels:
        raise SystemExit(f"{path}: celestial.labels {have} are not the labels {labels} {key} was made for")
    meta[key] = value
    write_metadata(proto, meta)
    data = proto.SerializeToString()
    back = onnx.load_from_string(data)
    if _without_metadata(back) != before:
        raise SystemExit(f"{path}: adding {key} would change more than the metadata")
    if {p.key: p.value for p in back.metadata_props} != meta:
        raise SystemExit(f"{path}: the metadata did not round-trip")
    dest = out or path
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return meta


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def preprocessing_from(meta: dict[str, str]) -> Preprocessing:
    """An RGB model's preprocessing as its metadata describes it (the previous model's, for baselines)."""
    return Preprocessing(
        int(meta["celestial.input_height"]),
        int(meta["celestial.input_width"]),
        "rgb",
        "NCHW",
        meta["celestial.scale"],
        tuple(meta["celestial.mean"].split(",")),
        tuple(meta["celestial.std"].split(",")),
        resize_mode=meta.get("celestial.resize_mode", "stretch"),
    )
