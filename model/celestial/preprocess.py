"""The one definition of the classifier's input preprocessing (training and serving alike).

Every image the model sees, in training, validation, the golden fixtures and the parity check,
goes through `load_rgb8` -> `resize_rgb8` -> `to_tensor`. The Rust server reproduces the same steps
from the ONNX file's `celestial.*` metadata; `SPEC` below is the text written into the model card
and `golden.json`.

Steps:
  1. decode the file; a JPEG is decoded at a reduced size directly in the DCT domain (libjpeg-turbo's
     scaled IDCT, exactly what Pillow's `Image.draft("RGB", (W, H))` asks for): with the stored
     (pre-EXIF) size w x h, the factor is the largest s in {8, 4, 2, 1} with s <= min(w // W, h // H),
     and the decoded size is ceil(w / s) x ceil(h / s) (so still >= the model input W x H); other
     formats are decoded at full size; then apply the EXIF orientation tag if present;
  2. convert to 8-bit RGB: grayscale sources are expanded (R = G = B = L); an alpha channel is
     composited onto black (c' = round(c * a / 255)); 16-bit samples are reduced to 8 bits first
     (v8 = round(v16 * 255 / 65535), as image-rs's to_rgb8(); Pillow decodes 16-bit RGB PNGs to 8 bits
     itself with v >> 8, at most 1 lower; the training data is all 8-bit JPEG);
  3. re-frame (resize mode `content_square`, the served model's; `stretch` skips it): the picture is cut
     to the square around its body (`content_square`), so a body photographed small, off centre or in a
     wide frame reaches the network at the size and place it was trained on;
  4. resize to exactly H x W (stretch, aspect ratio not kept) with the antialiased triangle
     (bilinear) filter: PIL `Image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)`,
     which Rust `image::imageops::resize(.., FilterType::Triangle)` reproduces to within +-1 per
     channel; the result is rounded back to 8-bit RGB;
  5. float32, per channel c: t = ((p * scale) - mean[c]) / std[c], each operation in IEEE float32
     in exactly that order (multiply, subtract, divide; no fused multiply-add);
  6. layout NCHW (or NHWC for a model whose metadata says so), batch dimension first.
"""

from __future__ import annotations

import hashlib
import io  # noqa: F401 (annotations)
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SPEC = (
    "decode (JPEG: DCT-domain scaling, the largest 1/s, s in {8,4,2,1}, with s <= min(w // W, h // H) "
    "for a w x h file and a W x H model input, decoded size ceil(w/s) x ceil(h/s), as Pillow "
    "Image.draft('RGB', (W, H)) / libjpeg-turbo scale_denom; other formats full size; then EXIF orientation "
    "applied) -> RGB8 (grayscale expanded R=G=B; alpha composited onto "
    "black, c'=round(c*a/255); 16-bit reduced by round(v*255/65535)) -> with resize mode content_square, "
    "cut to the square around the body (rows and columns with at least max(2, side // 16) pixels whose "
    "brightest channel reaches max(16, lo + (hi - lo + 3) // 4), lo and hi that channel's 10th and 99th "
    "percentiles; the box widened by a tenth of its longer side, at least a quarter of the shorter picture "
    "side, centred on the box, black outside the picture) -> resize to HxW, stretch, "
    "antialiased triangle filter (PIL Image.BILINEAR with reducing_gap=None; image-rs "
    "FilterType::Triangle), rounded to u8 -> float32 t = ((p*scale) - mean[c]) / std[c] "
    "(float32, multiply then subtract then divide) -> NCHW"
)


def parse_f32(text: str) -> np.float32:
    """Parse a decimal string to float32 with a single correct rounding (like Rust's str::parse::<f32>).

    numpy goes through float64 first; this checks that the double rounding did not change the
    result, so the Rust side and the pipeline use the very same float32 constants.
    """
    exact = Fraction(text)
    candidate = np.float32(float(text))
    best = min(
        (candidate, np.nextafter(candidate, np.float32(np.inf)), np.nextafter(candidate, np.float32(-np.inf))),
        key=lambda v: abs(Fraction(float(v)) - exact),
    )
    if best != candidate:
        raise ValueError(f"{text!r} rounds differently through float64; pick another constant")
    return candidate


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of the preprocessing; mirrored 1:1 by the ONNX metadata strings."""

    height: int
    width: int
    color_mode: str  # "rgb" or "grayscale"
    layout: str  # "NCHW" or "NHWC"
    scale: str  # decimal strings, exactly as written to the metadata
    mean: tuple[str, ...]
    std: tuple[str, ...]
    grayscale_coefficients: str = "0.299,0.587,0.114"
    resize_mode: str = "stretch"  # RESIZE_MODES

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    def constants(self) -> tuple[np.float32, np.ndarray, np.ndarray]:
        scale = parse_f32(self.scale)
        mean = np.array([parse_f32(m) for m in self.mean], dtype=np.float32)
        std = np.array([parse_f32(s) for s in self.std], dtype=np.float32)
        if mean.shape != (self.channels,) or std.shape != (self.channels,):
            raise ValueError("mean/std need one value per channel")
        return scale, mean, std

    def metadata(self) -> dict[str, str]:
        meta = {
            "celestial.input_layout": self.layout,
            "celestial.input_height": str(self.height),
            "celestial.input_width": str(self.width),
            "celestial.color_mode": self.color_mode,
            "celestial.alpha": "composite_black",
            "celestial.resize_filter": "triangle",
            "celestial.resize_mode": self.resize_mode,
            "celestial.jpeg_dct_scaling": JPEG_DCT_SCALING,
            "celestial.scale": self.scale,
            "celestial.mean": ",".join(self.mean),
            "celestial.std": ",".join(self.std),
        }
        if self.color_mode == "grayscale":
            meta["celestial.grayscale_coefficients"] = self.grayscale_coefficients
        return meta


# The values of `celestial.resize_mode`: `stretch` resizes the whole picture; `content_square` first cuts it to
# the square around the body (content_square). The served model's is content_square.
RESIZE_MODES = ("stretch", "content_square")
SERVED_RESIZE_MODE = "content_square"

# The value of the `celestial.jpeg_dct_scaling` metadata key: how a JPEG is decoded.
JPEG_DCT_SCALING = "draft"


def jpeg_dct_factor(width: int, height: int, target_w: int, target_h: int) -> int:
    """The DCT scaling denominator Pillow's draft((target_w, target_h)) picks for a width x height JPEG:
    the largest of 8, 4, 2, 1 not above min(width // target_w, height // target_h)."""
    ratio = min(width // target_w, height // target_h)
    for s in (8, 4, 2, 1):
        if ratio >= s:
            return s
    return 1


def jpeg_draft_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """(width, height) of a JPEG decoded with DCT scaling for a target_w x target_h model input."""
    s = jpeg_dct_factor(width, height, target_w, target_h)
    return (width + s - 1) // s, (height + s - 1) // s


def load_rgb8(path: "str | Path | io.BytesIO", draft: tuple[int, int] | None = None) -> Image.Image:
    """Steps 1-2: decode (a JPEG at reduced size in the DCT domain when `draft` = (W, H) of the model
    input is given), apply EXIF orientation, convert to 8-bit RGB (alpha onto black)."""
    with Image.open(path) as im:
        if draft is not None and im.format == "JPEG":
            want = jpeg_draft_size(im.size[0], im.size[1], draft[0], draft[1])
            im.draft("RGB", draft)
            assert im.size == want, (im.size, want)
        im.load()
        im = ImageOps.exif_transpose(im)
        return to_rgb8(im)


def load_model_pixels(
    path: "str | Path | io.BytesIO", height: int, width: int, mode: str = SERVED_RESIZE_MODE
) -> np.ndarray:
    """Steps 1-4 for a model input of height x width: decode (JPEG DCT-scaled), RGB8, re-frame (`mode`),
    resize; HWC uint8."""
    return resize_rgb8(load_rgb8(path, draft=(width, height)), height, width, mode)


def to_rgb8(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(np.rint(arr * 255.0 / 65535.0), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint32)
        a = rgba[..., 3:4]
        rgb = (rgba[..., :3] * a + 127) // 255  # == round(c * a / 255): ties cannot occur
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    if im.mode == "L":
        arr = np.asarray(im)
        return Image.fromarray(np.stack([arr, arr, arr], axis=-1), "RGB")
    return im.convert("RGB")


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the rows and columns of an RGB8 picture (HWC) that hold the body: at least
    max(2, side // 16) pixels whose brightest channel reaches a threshold a quarter of the way from the picture's
    dark level (10th percentile) to its bright one (99th), and at least 16. None when no row or column does (a
    picture darker than 16 nearly everywhere). Percentiles and threshold are integers, as the server computes them."""
    h, w = rgb.shape[:2]
    level = rgb.max(2)
    counts = np.bincount(level.ravel(), minlength=256).cumsum()
    n = h * w
    lo = int(np.searchsorted(counts, n // 10, side="right"))
    hi = int(np.searchsorted(counts, n - 1 - n // 100, side="right"))
    bright = level >= max(16, lo + (hi - lo + 3) // 4)
    rows = np.flatnonzero(bright.sum(1) >= max(2, w // 16))
    cols = np.flatnonzero(bright.sum(0) >= max(2, h // 16))
    if len(rows) == 0 or len(cols) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def content_square(im: Image.Image) -> Image.Image:
    """Step 3 (resize mode content_square): the picture cut to the square around its body (`content_box`),
    widened by a tenth of the box's longer side (the dataset's renders leave about that much sky), at least a
    quarter of the picture's shorter side (a star is not zoomed into), centred on the box; black beyond the
    picture. The whole picture when no body is found."""
    box = content_box(np.asarray(im, dtype=np.uint8))
    if box is None:
        return im
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    side = max(side + (side + 9) // 10, min(im.size) // 4)
    left, top = (x0 + x1 - side) // 2, (y0 + y1 - side) // 2
    return im.crop((left, top, left + side, top + side))


def resize_rgb8(im: Image.Image, height: int, width: int, mode: str = SERVED_RESIZE_MODE) -> np.ndarray:
    """Steps 3-4: re-frame (`mode` content_square) then stretch to height x width with the antialiased triangle
    filter; HWC uint8."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}")
    if mode == "content_square":
        im = content_square(im)
    out = im.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(out, dtype=np.uint8)
    assert arr.shape == (height, width, 3), arr.shape
    return arr


def to_grayscale8(im: Image.Image) -> Image.Image:
    """PIL's convert("L") on an RGB8 image: L = (19595 R + 38470 G + 7471 B + 32768) >> 16,
    i.e. ITU-R 601 luma with coefficients 0.299, 0.587, 0.114, rounded to 8 bits."""
    return im.convert("L")


def guide_gray8(im: Image.Image, height: int, width: int) -> np.ndarray:
    """The guide-recipe baseline's pixels: RGB8 -> PIL "L" (ITU-R 601, before resizing) -> antialiased
    triangle resize to height x width -> HxWx1 uint8."""
    small = to_grayscale8(im).resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(small, dtype=np.uint8)[..., None]


def to_tensor(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Steps 5-6 for a batch (N,H,W,C) or one image (H,W,C) of uint8 pixels -> float32 in `pre.layout`."""
    single = pixels.ndim == 3
    batch = pixels[None] if single else pixels
    scale, mean, std = pre.constants()
    x = batch.astype(np.float32)
    x = x * scale
    x = x - mean
    x = x / std
    if pre.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x[0] if single else x


def tensor_sha256(tensor: np.ndarray) -> str:
    """sha256 of the float32 little-endian bytes of a tensor, in its memory (C) order."""
    return hashlib.sha256(np.ascontiguousarray(tensor, dtype="<f4").tobytes()).hexdigest()
