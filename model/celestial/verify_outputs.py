"""Checks of the served model's outputs: confidence and known recomputed from the metadata's rules alone,
the golden images and the decode cases of golden.json."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from .checks import Checks
from .preprocess import (
    Preprocessing,
    guide_gray8,
    jpeg_draft_size,
    load_model_pixels,
    load_rgb8,
    tensor_sha256,
    to_tensor,
)


def colour_passes(px: np.ndarray, logits: np.ndarray, rule: dict) -> np.ndarray:
    """`celestial.colour_ood`'s check as its formula describes it (independent of colour.py): the ten
    statistics of each picture (HWC uint8), standardised, to the k-th nearest bank picture of the argmax class."""
    p = px.astype(np.float64).reshape(len(px), -1, 3) / 255.0
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    s, w = r + g + b + 0.001, (r + g + b) / 3
    big_w = w.sum(1) + 1e-6
    cr, cg = r / s, g / s
    mr, mg = (cr * w).sum(1) / big_w, (cg * w).sum(1) / big_w
    sr = np.sqrt(((cr - mr[:, None]) ** 2 * w).sum(1) / big_w)
    sg = np.sqrt(((cg - mg[:, None]) ** 2 * w).sum(1) / big_w)
    f = np.stack([r.mean(1), g.mean(1), b.mean(1), r.std(1), g.std(1), b.std(1), mr, mg, sr, sg], 1)
    mu, sd = np.array(rule["mean"]), np.array(rule["std"])
    z = (f - mu) / sd
    d = [
        np.sort(np.sqrt((((np.array(rule["bank"][c]) - mu) / sd - z[i]) ** 2).sum(1)))[rule["k"] - 1]
        for i, c in enumerate(logits.argmax(1))
    ]
    return np.array(d) <= rule["threshold"]


def served_outputs(
    logits: np.ndarray, meta: dict, ood: np.ndarray | None = None, px: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """confidence and known exactly as the metadata defines them (independent of ood.py); `px`, the
    model-input pictures, for the colour check of `celestial.colour_ood`."""
    z = logits.astype(np.float64)
    t = float(meta["celestial.temperature"])
    zt = z / t
    e = np.exp(zt - zt.max(1, keepdims=True))
    conf = (e / e.sum(1, keepdims=True)).max(1)
    formula = meta["celestial.ood_score_formula"]
    if "celestial.ood_score_output" in meta:
        s = np.asarray(ood, np.float64)
    elif formula == "s = -max_k logits[k]":
        s = -z.max(1)
    elif formula == "s = -max_k softmax(logits)[k]":
        e1 = np.exp(z - z.max(1, keepdims=True))
        s = -(e1 / e1.sum(1, keepdims=True)).max(1)
    elif formula == "s = -log(sum_k exp(logits[k]))":
        m = z.max(1)
        s = -(m + np.log(np.exp(z - m[:, None]).sum(1)))
    else:
        raise SystemExit(f"unknown celestial.ood_score_formula {formula!r}")
    known = s <= float(meta["celestial.ood_threshold"])
    if "celestial.colour_ood" in meta:
        known &= colour_passes(px, z, json.loads(meta["celestial.colour_ood"]))
    return conf, known


def check_golden(
    c: Checks, name: str, golden: dict, sess, raw: Path | None, pre: Preprocessing, gray: bool, meta: dict | None = None
) -> None:
    for g in golden["images"]:
        tag = f"{name} golden {g['image']}"
        key = "pixels_gray8_base64" if gray else "pixels_rgb8_base64"
        pix = np.frombuffer(base64.b64decode(g[key]), np.uint8).reshape(g["height"], g["width"], g["channels"])
        x = to_tensor(pix, pre)[None]
        c.check(f"{tag}: tensor sha256 from the recorded pixels", tensor_sha256(x) == g["tensor_sha256"])
        logits = sess.run(["logits"], {"input": x})[0][0]
        diff = float(np.abs(logits - np.array(g["logits"], np.float32)).max())
        c.check(f"{tag}: logits within 1e-4", diff <= 1e-4, f"max abs diff {diff}")
        labels = golden["labels"]
        c.check(f"{tag}: prediction {g['prediction']}", labels[int(logits.argmax())] == g["prediction"])
        if meta is not None:
            conf, known = served_outputs(
                np.array([g["logits"]]), meta, np.array([g.get("ood_score", np.nan)]), pix[None]
            )
            if "celestial.ood_score_output" in meta:
                o = sess.run([meta["celestial.ood_score_output"]], {"input": x})[0]
                c.check(f"{tag}: ood_score output within 1e-4", abs(float(o[0]) - g["ood_score"]) <= 1e-4)
            c.check(
                f"{tag}: confidence and known from the metadata's rules",
                abs(conf[0] - g["confidence"]) < 1e-9 and bool(known[0]) == g["known"],
            )
        if raw is None:
            c.skip(f"{tag}: dataset image preprocesses to the recorded pixels", "no dataset")
            continue
        if gray:
            again = guide_gray8(load_rgb8(raw / g["image"]), g["height"], g["width"])
        else:
            again = load_model_pixels(raw / g["image"], g["height"], g["width"])
            dec = np.asarray(load_rgb8(raw / g["image"], draft=(g["width"], g["height"])))
            want = np.frombuffer(base64.b64decode(g["decoded_rgb8_base64"]), np.uint8)
            c.check(
                f"{tag}: DCT-scaled decode {g['decoded_width']}x{g['decoded_height']} reproduces",
                dec.shape[:2] == (g["decoded_height"], g["decoded_width"])
                and (g["decoded_width"], g["decoded_height"])
                == jpeg_draft_size(g["stored_width"], g["stored_height"], g["width"], g["height"])
                and np.array_equal(dec.ravel(), want),
            )
        c.check(f"{tag}: dataset image preprocesses to the recorded pixels", np.array_equal(again, pix))


def check_decode_cases(c: Checks, golden: dict, sess, pre: Preprocessing, meta: dict) -> None:

    for k, case in enumerate(golden.get("decode_cases", [])):
        tag = (
            f"decode case {k} ({case['format']} {case['mode']} {case['stored_width']}x{case['stored_height']}, "
            f"EXIF {case['exif_orientation']})"
        )
        data = base64.b64decode(case["file_base64"])
        im = load_rgb8(io.BytesIO(data), draft=(pre.width, pre.height))
        want_dec = (
            jpeg_draft_size(case["stored_width"], case["stored_height"], pre.width, pre.height)
            if case["format"] == "jpeg"
            else (case["stored_width"], case["stored_height"])
        )
        if case["exif_orientation"] in (5, 6, 7, 8):
            want_dec = want_dec[::-1]
        c.check(
            f"{tag}: decoded size {want_dec[0]}x{want_dec[1]}",
            im.size == want_dec
            and (case["decoded_width"], case["decoded_height"])
            == jpeg_draft_size(case["stored_width"], case["stored_height"], pre.width, pre.height)
            if case["format"] == "jpeg"
            else im.size == want_dec,
            f"{im.size}",
        )
        pix = load_model_pixels(io.BytesIO(data), pre.height, pre.width, pre.resize_mode)
        want = np.frombuffer(base64.b64decode(case["pixels_rgb8_base64"]), np.uint8).reshape(pix.shape)
        c.check(f"{tag}: pixels", np.array_equal(pix, want))
        x = to_tensor(pix, pre)[None]
        c.check(f"{tag}: tensor sha256", tensor_sha256(x) == case["tensor_sha256"])
        outs = sess.run(None, {"input": x})
        logits, ood = outs[0], (outs[1] if len(outs) > 1 else None)
        conf, known = served_outputs(logits, meta, ood, pix[None])
        c.check(
            f"{tag}: logits, confidence, known",
            float(np.abs(logits[0] - np.array(case["logits"])).max()) <= 1e-4
            and abs(conf[0] - case["confidence"]) < 1e-5
            and bool(known[0]) == case["known"]
            and (ood is None or abs(float(ood[0]) - case["ood_score"]) <= 1e-4),
        )


def check_golden_set(c: Checks, golden: dict, meta: dict, sess, pre: Preprocessing) -> None:
    """`celestial.golden` is the set golden.json gives, and this pipeline's own decoding and ONNX Runtime give
    each of its files its logits within its tolerance and its label (what the server checks at start)."""
    from .golden_set import GOLDEN_KEY, build, decode, encode

    value = meta.get(GOLDEN_KEY)
    c.check("served model: celestial.golden is golden.json's golden set", value == encode(build(golden)))
    if value is None:
        return
    labels = json.loads(meta["celestial.labels"])
    worst, wrong = 0.0, []
    for image in decode(value)["images"]:
        pix = load_model_pixels(
            io.BytesIO(base64.b64decode(image["file_base64"])), pre.height, pre.width, pre.resize_mode
        )
        logits = sess.run(["logits"], {"input": to_tensor(pix, pre)[None]})[0][0]
        diff = float(np.abs(logits - np.array(image["logits"])).max())
        worst = max(worst, diff)
        label = image["label"]
        if diff > image["logit_max_abs"] or (label is not None and labels[int(logits.argmax())] != label):
            wrong.append(image["name"])
    c.check(
        "served model: celestial.golden reproduced from its files (logits within tolerance, labels)",
        not wrong,
        f"max logit diff {worst:.3g}; disagree: {wrong}",
    )
