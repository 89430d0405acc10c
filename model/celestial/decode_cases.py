"""The golden fixtures' synthetic decode cases: files that exercise the decode rule (DCT scaling, sizes that are
no multiple of the factor, grayscale, EXIF orientation, a PNG), with the pixels and outputs they must give."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from .ood import Calibration
from .preprocess import jpeg_dct_factor, jpeg_draft_size, load_model_pixels, tensor_sha256, to_tensor
from .runtime import ort_session


def b64(a) -> str:
    return base64.b64encode(a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes()).decode()


# The synthetic decode cases: (format, width, height, mode, EXIF orientation): JPEGs whose DCT factor is 8, 4,
# 2, 1, a size that is no multiple of the factor, a grayscale JPEG, one with EXIF orientation; a PNG; then
# bodies on a black sky that the content_square re-framing cuts out (mode "body": small and off centre, in a
# wide frame, cut by the picture's edge).
DECODE_SPECS = [
    ("jpeg", 256, 256, "RGB", None),
    ("jpeg", 128, 128, "RGB", None),
    ("jpeg", 300, 200, "RGB", None),
    ("jpeg", 257, 129, "RGB", None),
    ("jpeg", 100, 60, "RGB", None),
    ("jpeg", 70, 70, "RGB", None),
    ("jpeg", 20, 24, "RGB", None),
    ("jpeg", 160, 120, "L", None),
    ("jpeg", 200, 136, "RGB", 6),
    ("png", 128, 128, "RGB", None),
    ("jpeg", 128, 128, "body", None),
    ("jpeg", 200, 120, "body", None),
    ("png", 96, 96, "body", None),
]


def _synthetic_file(rng, fmt: str, wd: int, ht: int, mode: str, orient: int | None) -> bytes:
    from PIL import Image

    small = rng.integers(0, 256, (max(ht // 16, 2), max(wd // 16, 2), 3)).astype(np.uint8)
    im = Image.fromarray(small, "RGB").resize((wd, ht), Image.Resampling.BICUBIC)
    if mode == "body":  # a textured disc of a third to two thirds of the shorter side, anywhere, even cut off
        r = int(rng.integers(min(wd, ht) // 6, min(wd, ht) // 3 + 1))
        cx, cy = int(rng.integers(0, wd)), int(rng.integers(0, ht))
        yy, xx = np.mgrid[:ht, :wd]
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        im = Image.fromarray(np.where(inside[..., None], np.asarray(im) // 2 + 100, 0).astype(np.uint8), "RGB")
        mode = "RGB"
    if mode == "L":
        im = im.convert("L")
    buf = io.BytesIO()
    if fmt == "jpeg":
        kw = {}
        if orient:
            exif = Image.Exif()
            exif[0x0112] = orient
            kw["exif"] = exif
        im.save(buf, "JPEG", quality=90, **kw)
    else:
        im.save(buf, "PNG")
    return buf.getvalue()


def _outputs(sess, x: np.ndarray, pix: np.ndarray, cal: Calibration) -> dict:
    outs = sess.run(None, {"input": x})
    logits, ood = outs[0], (outs[1] if len(outs) > 1 else None)
    conf, known = cal.confidence_known(logits, ood, pix[None])
    return {
        "tensor_sha256": tensor_sha256(x),
        "logits": [float(v) for v in logits[0]],
        "confidence": float(conf[0]),
        "known": bool(known[0]),
        **({"ood_score": float(ood[0])} if ood is not None else {}),
    }


def decode_cases(mpath: Path, pre, cal: Calibration) -> list[dict]:
    """Synthetic files that exercise the decode rule (DECODE_SPECS). Each: the file (base64), the DCT-scaled
    decoded size, the resized pixels and the model's outputs."""
    from PIL import Image

    sess = ort_session(mpath)
    rng = np.random.default_rng(5)
    cases = []
    for fmt, wd, ht, mode, orient in DECODE_SPECS:
        data = _synthetic_file(rng, fmt, wd, ht, mode, orient)
        with Image.open(io.BytesIO(data)) as probe:
            stored = probe.size
        jpeg = fmt == "jpeg"
        dec = jpeg_draft_size(stored[0], stored[1], pre.width, pre.height) if jpeg else stored
        pix = load_model_pixels(io.BytesIO(data), pre.height, pre.width, pre.resize_mode)
        cases.append(
            {
                "format": fmt,
                "mode": mode,
                "exif_orientation": orient or 1,
                "stored_width": stored[0],
                "stored_height": stored[1],
                "dct_scale_denominator": jpeg_dct_factor(stored[0], stored[1], pre.width, pre.height) if jpeg else 1,
                "decoded_width": dec[0],
                "decoded_height": dec[1],
                "file_base64": b64(data),
                "pixels_layout": "HWC row-major uint8",
                "pixels_rgb8_base64": b64(pix),
                **_outputs(sess, to_tensor(pix, pre)[None], pix, cal),
            }
        )
    return cases
