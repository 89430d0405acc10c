"""The golden set the model carries in its metadata (`celestial.golden`): small image files with the outputs this
pipeline computed for them, so that a server can send them through its own decoding, preprocessing and inference
at start and refuse to serve a model whose metadata does not give the answers training did (permuted labels,
another input size, normalisation or decode rule).

Built from golden.json (`build`), so it needs no dataset and no ONNX Runtime: each class image's model-input pixels
re-encoded as a PNG (decoded at full size, already the input size: a server that decodes PNGs exactly gets the
golden tensor bit for bit), with its prediction and logits; for a model that re-frames its pictures (resize mode
content_square, which would cut the model-input pixels again), the image's DCT-scaled decode as a PNG instead, which
the server re-frames and resizes as the pipeline did (within one pixel level: the decode cases' tolerance); and
the synthetic decode cases' own files up to MAX_FILE_BYTES (JPEGs with every DCT factor, grayscale, EXIF
orientation), with their logits and no expected label (low-confidence pictures whose arg-max a one-level pixel
difference may flip). Written into the model at export (train.py) and, for an exported model, by
model/tools/add_golden_set.py (`add`: metadata only; the graph and weights stay byte for byte what they were, which
`add` checks)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np

from .metadata import add_key

GOLDEN_KEY = "celestial.golden"
FORMAT = 1
# The set travels in every copy of the model (and of the server binary that embeds it): decode cases above this
# size stay out (the 128x128 PNG; class images cover the PNG path).
MAX_FILE_BYTES = 16 * 1024
# The decode cases' tolerance. The server decodes JPEGs with libjpeg-turbo and Pillow's DCT scaling, so only the
# resize's rounding differs (image-rs's float triangle filter vs Pillow's fixed point: pixels within one level);
# measured with the server on these decode cases: logits within 0.0099 with model v2, 0.041 with v3, whose logits
# are larger (server/tests/self_check.rs). A slip in the decode rule or the resize filter moves them further
# (measured with v2: full-size JPEG decoding 0.088, Lanczos3 0.074, nearest 0.175; with v3 each of the three still
# fails the check), golden.json's general logit_max_abs (0.5, for any decoder) would let every one of them pass.
DECODED_LOGIT_MAX_ABS = 0.05
ABOUT = (
    "Start-up self-check: decode, preprocess and classify each file as a request would be; every logit must be "
    "within the image's logit_max_abs of `logits` (the model's output, in output order) and, where `label` is "
    "not null, the prediction must be that label. Class images: their model-input pixels as PNG (the tensor is "
    "the training pipeline's bit for bit, hence golden.json's logit_max_abs_same_pixels), or for a model that "
    "re-frames its pictures (resize mode content_square) their decoded pixels as PNG (0.15: a real resize, within "
    "one level of Pillow's); decode cases: the "
    "files themselves (JPEGs decoded as Pillow does, resized within one pixel level of Pillow's: 0.05)."
)


def png(pixels_b64: str, height: int, width: int) -> bytes:
    """RGB8 HWC pixels (base64) as a PNG file (lossless: decoding gives the same pixels)."""
    from PIL import Image

    px = np.frombuffer(base64.b64decode(pixels_b64), np.uint8).reshape(height, width, 3)
    buf = io.BytesIO()
    Image.fromarray(px, "RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build(golden: dict) -> dict:
    """The golden set of the model golden.json describes (see the module's text and DECODED_LOGIT_MAX_ABS)."""
    tol = golden["tolerance"]
    reframed = golden.get("resize_mode", "stretch") != "stretch"
    images = [
        {
            "name": f"{e['image']} (decoded pixels, PNG)" if reframed else f"{e['image']} (model-input pixels, PNG)",
            "label": e["prediction"],
            "file_base64": _b64(
                png(e["decoded_rgb8_base64"], e["decoded_height"], e["decoded_width"])
                if reframed
                else png(e["pixels_rgb8_base64"], e["height"], e["width"])
            ),
            "logits": e["logits"],
            "logit_max_abs": tol["logit_max_abs_reframed"] if reframed else tol["logit_max_abs_same_pixels"],
        }
        for e in golden["images"]
    ]
    for i, case in enumerate(golden.get("decode_cases", [])):
        if len(base64.b64decode(case["file_base64"])) > MAX_FILE_BYTES:
            continue
        orient = case.get("exif_orientation") or 1
        images.append(
            {
                "name": f"decode case {i} ({case['format']} {case['mode']} {case['stored_width']}x"
                f"{case['stored_height']}{f', EXIF orientation {orient}' if orient != 1 else ''})",
                "label": None,
                "file_base64": case["file_base64"],
                "logits": case["logits"],
                "logit_max_abs": DECODED_LOGIT_MAX_ABS,
            }
        )
    return {"format": FORMAT, "about": ABOUT, "images": images}


def encode(golden_set: dict) -> str:
    """The metadata value: compact JSON (the same set always gives the same string)."""
    return json.dumps(golden_set, separators=(",", ":"))


def decode(value: str) -> dict:
    return json.loads(value)


def add(path: Path, golden: dict, out: Path | None = None) -> dict[str, str]:
    """Write the golden set of `golden` into the model at `path` (to `out`, default in place), replacing an
    earlier one, the other keys as they were; returns the new metadata. Refuses (SystemExit) when the file
    would differ in anything but its metadata, or when golden.json's labels are not the model's."""
    return add_key(path, GOLDEN_KEY, encode(build(golden)), golden["labels"], out)
