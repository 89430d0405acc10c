"""Golden fixtures (golden.json, testdata/guide-recipe-golden.json): per class one validation image with its
pixels, input tensor hash and outputs, and synthetic files that exercise the decode rule; the tolerances
another implementation of the preprocessing (the Rust server) should meet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import robust
from .config import GUIDE_FILE, MODEL_FILE, MODEL_VERSION, OOD_OUTPUT
from .decode_cases import b64, decode_cases
from .metadata import CONFIDENCE_RULE, KNOWN_RULE, OOD_FORMULAS
from .ood import Calibration
from .preprocess import JPEG_DCT_SCALING, SPEC, jpeg_dct_factor, jpeg_draft_size, load_rgb8, tensor_sha256, to_tensor
from .runtime import ort_session

# Recommended golden-fixture tolerances for another implementation of the preprocessing (the Rust
# server). Measured with model/tools/pixel-parity (image-rs 0.25.10 + zune-jpeg 0.5.15, FilterType::
# Triangle) against this pipeline (Pillow 13.0.0 / libjpeg-turbo) on the 300 validation images:
# RGB8 after resize differs by at most 3 (mean 0.17) per channel, JPEG decoding alone by at most 4
# at 128x128, the resize alone (same decoded pixels) by at most 1; the resulting logits differ by at
# most 0.20 and every prediction is identical. Guide recipe (f32 luma, rounded, then Triangle to 32x32):
# pixels differ by at most 1 (mean 0.08), logits by at most 0.0054.
SELECTION = (
    "per class, the validation image whose two highest logits are furthest apart "
    "(top2_logit_margin), so that the expected prediction is robust to decoder differences"
)

TOLERANCE = {
    "pixel_max_abs": 3,
    "pixel_mean_abs": 0.5,
    "pixel_note": "decoded + resized RGB8 vs pixels_rgb8_base64, per channel value; JPEG decoders differ (IDCT, "
    "chroma upsampling) and so does the resize's rounding (alone: at most 1)",
    "tensor_note": "from exactly the pixels in pixels_rgb8_base64, ((p*scale)-mean)/std in float32 reproduces "
    "tensor_sha256 bit for bit",
    "logit_max_abs_same_pixels": 1e-4,
    "logit_max_abs": 0.5,
    # The class images of a re-framing model (content_square) sent as their decoded pixels: they go through a real
    # resize (the square around the body, 33-36 pixels, to 32), so many pixels are one level off Pillow's, and v3's
    # large logits move by up to 0.098 (measured with the server on the 10 class images); forgetting the
    # re-framing moves them by whole units, another resize filter by 0.4-0.8 (server/tests/self_check.rs).
    "logit_max_abs_reframed": 0.15,
    "logit_note": "logit_max_abs_same_pixels when the input tensor is identical; logit_max_abs for pixels within "
    "the pixel tolerance (measured at most 0.20 with image-rs decoding over the validation split)",
    "prediction": "must be identical",
}


def _widest_margins(val_items, classes, logits) -> tuple[list[int], np.ndarray]:
    """Per class the validation image with the widest gap between its two highest logits (first by name on a
    tie), so that a prediction cannot flip on decoder-level pixel differences; and every image's gap."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    chosen = []
    for ci in range(len(classes)):
        members = [i for i, (_, y) in enumerate(val_items) if y == ci]
        chosen.append(max(members, key=lambda i: (margins[i], -i)))
    return chosen, margins


def _served_probabilities(logits: np.ndarray, cal: Calibration | None) -> np.ndarray:
    """As the server answers: calibrated for a model with a temperature, the plain softmax otherwise."""
    z = logits.astype(np.float64)
    return robust.softmax(z) if cal is None else cal.probabilities(z)


def _decoded(raw: Path, rel: str, pre) -> dict:
    """The stored size of a dataset JPEG and its DCT-scaled decode (before the resize)."""
    from PIL import Image

    with Image.open(raw / rel) as im:
        stored = im.size
    dec = jpeg_draft_size(stored[0], stored[1], pre.width, pre.height)
    decoded = np.asarray(load_rgb8(raw / rel, draft=(pre.width, pre.height)), np.uint8)
    return {
        "stored_width": stored[0],
        "stored_height": stored[1],
        "dct_scale_denominator": jpeg_dct_factor(stored[0], stored[1], pre.width, pre.height),
        "decoded_width": dec[0],
        "decoded_height": dec[1],
        "decoded_rgb8_base64": b64(decoded),
    }


def golden_entries(
    val_items,
    px_val,
    x_val,
    classes,
    logits,
    raw: Path | None = None,
    pre=None,
    cal: Calibration | None = None,
    ood: np.ndarray | None = None,
) -> list[dict]:
    """One validation image per class (_widest_margins); with `raw`, `pre` and `cal` also its decode and the
    served outputs (confidence, known, the colour check's distance)."""
    chosen, margins = _widest_margins(val_items, classes, logits)
    entries = []
    for idx in chosen:
        rel, _ = val_items[idx]
        pix = px_val[idx]
        rgb = pix.shape[2] == 3
        entry = {
            "image": rel,
            "label": classes[val_items[idx][1]],
            "height": int(pix.shape[0]),
            "width": int(pix.shape[1]),
            "channels": int(pix.shape[2]),
            "pixels_layout": "HWC row-major uint8",
            "pixels_rgb8_base64" if rgb else "pixels_gray8_base64": b64(pix),
            "tensor_shape": [1, *x_val[idx].shape],
            "tensor_sha256": tensor_sha256(x_val[idx][None]),
            "logits": [float(v) for v in logits[idx]],
            "probabilities": [float(v) for v in _served_probabilities(logits[idx], cal)],
            "prediction": classes[int(logits[idx].argmax())],
            "top2_logit_margin": round(float(margins[idx]), 5),
        }
        if raw is not None and pre is not None:
            one = None if ood is None else ood[idx : idx + 1]
            conf, known = cal.confidence_known(logits[idx : idx + 1], one, pix[None])
            entry.update(
                {
                    **_decoded(raw, rel, pre),
                    "confidence": float(conf[0]),
                    "known": bool(known[0]),
                    **({"ood_score": float(ood[idx])} if ood is not None else {}),
                }
            )
            if cal.colour is not None:
                entry["colour_distance"] = float(cal.colour[0].score(pix[None], logits[idx : idx + 1].argmax(1))[0])
        entries.append(entry)
    return entries


def pixel_sensitivity(path: Path, px: np.ndarray, pre_fn, trials: int = 20) -> float:
    """Max logit change when every pixel channel moves by a random -1/0/+1 (the decoder/resize tolerance)."""
    sess = ort_session(path)
    rng = np.random.default_rng(1)
    base = sess.run(["logits"], {"input": pre_fn(px)})[0]
    worst = 0.0
    for _ in range(trials):
        noisy = np.clip(px.astype(np.int16) + rng.integers(-1, 2, px.shape), 0, 255).astype(np.uint8)
        worst = max(worst, float(np.abs(sess.run(["logits"], {"input": pre_fn(noisy)})[0] - base).max()))
    return worst


def served_golden(mpath: Path, pre, cal: Calibration, classes, val_items, px_va, val_out, raw: Path) -> dict:
    """golden.json: the served model's fixtures; `val_out` = ONNX Runtime's (logits, ood output) on px_va."""

    sens = pixel_sensitivity(mpath, px_va[:100], lambda p: to_tensor(p, pre))
    logits, ood = val_out
    return {
        "model": MODEL_FILE,
        "model_sha256": sha256_file(mpath),
        "model_version": MODEL_VERSION,
        "labels": classes,
        "preprocessing": SPEC,
        "selection": SELECTION,
        "input": {
            "name": "input",
            "layout": "NCHW",
            "shape": [1, 3, pre.height, pre.width],
            "scale": pre.scale,
            "mean": list(pre.mean),
            "std": list(pre.std),
        },
        "jpeg_dct_scaling": JPEG_DCT_SCALING,
        "resize_mode": pre.resize_mode,
        "outputs": {
            "confidence": CONFIDENCE_RULE,
            "known": KNOWN_RULE,
            "temperature": cal.temperature,
            "ood_score": cal.score,
            "ood_score_formula": OOD_FORMULAS[cal.score],
            "ood_score_output": OOD_OUTPUT if ood is not None else None,
            "ood_threshold": cal.threshold,
            "colour_ood_threshold": cal.colour[1],
        },
        "tolerance": TOLERANCE | {"logit_sensitivity_to_random_pixel_noise_1": round(sens, 5)},
        "images": golden_entries(
            val_items, px_va, to_tensor(px_va, pre), classes, logits, raw=raw, pre=pre, cal=cal, ood=ood
        ),
        "decode_cases": decode_cases(mpath, pre, cal),
    }


GUIDE_PREPROCESSING = (
    "decode -> RGB8 (as the served model) -> grayscale PIL convert('L') = (19595 R + 38470 G + "
    "7471 B + 32768) >> 16 -> resize 32x32 antialiased triangle (PIL BILINEAR, "
    "reducing_gap=None) -> float32 p/255 -> NHWC [N,32,32,1]"
)
GUIDE_TOLERANCE = {
    "pixel_max_abs": 2,
    "pixel_mean_abs": 0.25,
    "logit_max_abs_same_pixels": 1e-4,
    "tensor_note": "tensor = float32(p) * float32(0.00392156862745098), a multiplication (not "
    "p / 255.0, which differs in the last bit for some p); from exactly the "
    "pixels in pixels_gray8_base64 it reproduces tensor_sha256 bit for bit",
    "logit_max_abs": 0.05,
    "prediction": "must be identical",
    "note": "measured with tools/pixel-parity (image-rs decode, f32 luma 0.299/0.587/0.114 "
    "rounded, Triangle resize) on the validation split: pixels max 1, mean 0.08; "
    "logits max 0.0054",
}


def guide_golden(gpath: Path, guide_pre, classes, val_items, g_va, g_logits) -> dict:
    """testdata/guide-recipe-golden.json: the metadata-less guide-recipe fixture's golden images."""

    sens = pixel_sensitivity(gpath, g_va[:100], lambda p: to_tensor(p, guide_pre))
    return {
        "model": GUIDE_FILE,
        "model_sha256": sha256_file(gpath),
        "labels": classes,
        "preprocessing": GUIDE_PREPROCESSING,
        "selection": SELECTION,
        "input": {"name": "input", "layout": "NHWC", "shape": [1, 32, 32, 1], "scale": guide_pre.scale},
        "tolerance": GUIDE_TOLERANCE | {"logit_sensitivity_to_random_pixel_noise_1": round(sens, 5)},
        "images": golden_entries(val_items, g_va, to_tensor(g_va, guide_pre), classes, g_logits),
    }


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
