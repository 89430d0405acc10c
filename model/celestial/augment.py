"""Photometric and framing changes: the training augmentations, the fixed corruption suite and synthetic outliers.

Everything here works on full-size 8-bit RGB PIL images (the dataset's 128x128 renders) and ends the way
a real request does: the changed picture is encoded as a JPEG and then goes through the one
preprocessing definition (`preprocess.load_model_pixels`: DCT-scaled decode, content_square, resize). So training, the
robustness evaluation and serving see pixels made by the same path.

Corruption suite (`SUITE`): each photometric corruption has five severities (increasing), each geometric one
(`GEOMETRIC`: how the picture is framed, `framing.py`) three, applied to the original validation image, then
re-encoded as JPEG quality 92, as the robustness target's measurement does. The middle severity (index 2 of
five, 1 of three) is the one the targets are set on; `grayscale` has one level (it is its middle). Random
corruptions (noise, the crops' and shifts' positions) are seeded per image, so the suite is fixed.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from . import framing
from .preprocess import SERVED_RESIZE_MODE, load_model_pixels

REENCODE_QUALITY = 92


def jpeg_bytes(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def through_jpeg(im: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at `quality` and decode at full size (a compression artefact, not the model path)."""
    with Image.open(io.BytesIO(jpeg_bytes(im, quality))) as j:
        j.load()
        return j.convert("RGB")


def model_pixels(
    im: Image.Image, height: int, width: int, quality: int = REENCODE_QUALITY, reader: str = "rgb"
) -> np.ndarray:
    """What a model sees for picture `im` sent as a JPEG of `quality`: HWC uint8 at height x width.
    reader "rgb": this model's path (DCT-scaled decode, RGB8, content_square, resize); "stretch": the same without
    content_square (the previous model's); "guide": the guide-recipe baseline's (full decode, RGB8, PIL luma,
    resize; HxWx1)."""
    buf = io.BytesIO(jpeg_bytes(im, quality))
    if reader == "guide":
        from .preprocess import guide_gray8, load_rgb8

        return guide_gray8(load_rgb8(buf), height, width)
    return load_model_pixels(buf, height, width, "stretch" if reader == "stretch" else SERVED_RESIZE_MODE)


# ------------------------------------------------------------------------------------------ primitives


def brightness(im: Image.Image, f: float) -> Image.Image:
    """Exposure: every channel value times f (PIL ImageEnhance.Brightness, clipped)."""
    return ImageEnhance.Brightness(im).enhance(f)


def contrast(im: Image.Image, f: float) -> Image.Image:
    """PIL ImageEnhance.Contrast: blend with the image's mean grey level (f < 1 lifts the black sky)."""
    return ImageEnhance.Contrast(im).enhance(f)


def saturation(im: Image.Image, f: float) -> Image.Image:
    """PIL ImageEnhance.Color: blend with the grayscale version (0 = grayscale)."""
    return ImageEnhance.Color(im).enhance(f)


def grayscale(im: Image.Image) -> Image.Image:
    """ITU-R 601 luma (PIL convert("L")), converted back to 3 equal channels."""
    return im.convert("L").convert("RGB")


def hue_shift(im: Image.Image, degrees: float) -> Image.Image:
    hsv = np.asarray(im.convert("HSV")).copy()
    shift = int(round(degrees / 360.0 * 256)) % 256
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def gamma(im: Image.Image, g: float) -> Image.Image:
    lut = [min(255, int(round(255.0 * (i / 255.0) ** g))) for i in range(256)]
    return im.point(lut * 3)


def gaussian_noise(im: Image.Image, sd: float, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian sensor noise of standard deviation sd (in units of the 0..1 range), per channel."""
    a = np.asarray(im, dtype=np.float32)
    a = a + rng.normal(0.0, sd * 255.0, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def blur(im: Image.Image, radius: float) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else im


def jpeg_quality(im: Image.Image, q: int) -> Image.Image:
    return through_jpeg(im, q)


# ------------------------------------------------------------------------------------------ the suite

# name -> (parameter name, five severities, function(im, value, rng))
SUITE: dict[str, tuple[str, list, object]] = {
    "brightness_down": ("factor", [0.8, 0.65, 0.5, 0.35, 0.25], lambda im, v, r: brightness(im, v)),
    "brightness_up": ("factor", [1.2, 1.35, 1.5, 1.75, 2.0], lambda im, v, r: brightness(im, v)),
    "contrast_down": ("factor", [0.8, 0.65, 0.5, 0.35, 0.25], lambda im, v, r: contrast(im, v)),
    "contrast_up": ("factor", [1.2, 1.35, 1.5, 1.75, 2.0], lambda im, v, r: contrast(im, v)),
    "saturation": ("factor", [1.6, 1.3, 0.5, 0.25, 0.1], lambda im, v, r: saturation(im, v)),
    "grayscale": ("-", [None], lambda im, v, r: grayscale(im)),
    "hue": ("degrees", [5, 10, 15, 20, 30], lambda im, v, r: hue_shift(im, v)),
    "gamma": ("gamma", [0.8, 1.25, 1.5, 1.8, 2.2], lambda im, v, r: gamma(im, v)),
    "noise": ("sd", [0.02, 0.05, 0.1, 0.15, 0.2], lambda im, v, r: gaussian_noise(im, v, r)),
    "blur": ("radius", [0.5, 1.0, 1.5, 2.0, 3.0], lambda im, v, r: blur(im, v)),
    "jpeg": ("quality", [50, 30, 20, 10, 5], lambda im, v, r: jpeg_quality(im, v)),
    # framing: the share of each side kept, the body's size in the frame, the offset as a share of the side,
    # the frame's width / height
    "crop": ("keep", [0.9, 0.8, 0.65], lambda im, v, r: framing.crop(im, v, r)),
    "zoom_out": ("scale", [0.8, 0.6, 0.4], lambda im, v, r: framing.zoom_out(im, v, r)),
    "shift": ("fraction", [0.1, 0.2, 0.3], lambda im, v, r: framing.shift(im, v, r)),
    "aspect_wide": ("ratio", [1.1, 1.25, 1.5], lambda im, v, r: framing.aspect(im, v, r)),
    "aspect_tall": ("ratio", [0.9, 0.8, 0.67], lambda im, v, r: framing.aspect(im, v, r)),
}
GEOMETRIC = ("crop", "zoom_out", "shift", "aspect_wide", "aspect_tall")


def middle(name: str) -> int:
    return len(SUITE[name][1]) // 2


def corrupt(im: Image.Image, name: str, severity: int, seed: int) -> Image.Image:
    _, values, fn = SUITE[name]
    return fn(im, values[severity], np.random.default_rng(seed))


# ------------------------------------------------------------------------------------------ training


# Training photometric operations: name -> (weight, function(im, rng)).
TRAIN_OPS = {
    "exposure": (2.0, lambda im, r: brightness(im, math.exp(r.uniform(math.log(0.2), math.log(2.2))))),
    "contrast": (1.5, lambda im, r: contrast(im, math.exp(r.uniform(math.log(0.2), math.log(2.2))))),
    "gamma": (0.8, lambda im, r: gamma(im, float(r.uniform(0.5, 2.4)))),
    "grayscale": (6.0, lambda im, r: grayscale(im)),
    "saturation": (1.0, lambda im, r: saturation(im, float(r.uniform(0.0, 1.8)))),
    "hue": (1.2, lambda im, r: hue_shift(im, float(r.uniform(-35, 35)))),
    "blur": (1.0, lambda im, r: blur(im, float(r.uniform(0.3, 3.2)))),
    "noise": (1.0, lambda im, r: gaussian_noise(im, float(r.uniform(0.01, 0.22)), r)),
    "jpeg": (1.0, lambda im, r: jpeg_quality(im, int(r.integers(5, 61)))),
}


def random_augment(im: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """One random training variant of a full-size RGB8 image and the JPEG quality to send it with.

    Geometry (always): random horizontal/vertical flips, rotation over the full circle (bilinear,
    black fill); then the framing (`framing.random_framing`: 60 % of the variants get a crop keeping 55-97 %
    of each side, a zoom-out to 30-97 %, a shift by 5-35 % of the side or a frame of aspect 0.6-1.67, at
    random positions). Photometric: 1 in 6 variants keep their colours; the others get one (60 %) or two
    (40 %) different operations of TRAIN_OPS drawn by weight (exposure x0.2..x2.2 and contrast
    x0.2..x2.2 log-uniform, gamma 0.5..2.4, grayscale, saturation 0..1.8, hue +-35 degrees, Gaussian
    blur radius 0.3..3.2, Gaussian noise sd 0.01..0.22, JPEG quality 5..60), applied in TRAIN_OPS
    order; finally the picture is sent as a JPEG of quality 60..98 through the model's decode path.
    """
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    im = im.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    im = framing.random_framing(im, rng)
    if rng.random() >= 1 / 6:
        names = list(TRAIN_OPS)
        p = np.array([TRAIN_OPS[n][0] for n in names])
        k = 1 if rng.random() < 0.6 else 2
        chosen = set(rng.choice(len(names), size=k, replace=False, p=p / p.sum()).tolist())
        for i, n in enumerate(names):
            if i in chosen:
                im = TRAIN_OPS[n][1](im, rng)
    return im, int(rng.integers(60, 99))


# ------------------------------------------------------------------------------------------ outliers

OUTLIER_KINDS = ("noise", "flat", "gradient", "stripes", "textured_sphere", "banded_sphere", "jigsaw", "blend", "blobs")


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 3) -> np.ndarray:
    small = rng.random((cells, cells, channels)).astype(np.float32)
    img = Image.fromarray((small * 255).astype(np.uint8), "RGB" if channels == 3 else "L")
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


def _disc_mask(size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    return np.clip(r - d + 0.5, 0, 1)[..., None], d


def synthetic_outlier(
    rng: np.random.Generator, kind: str, size: int = 128, inliers: list[Image.Image] | None = None
) -> Image.Image:
    """A picture that is none of the ten bodies, generated in code: noise, flat colour, gradients,
    stripes and checkerboards, spheres rendered with random smooth-noise or banded textures, random
    blobs, and (when `inliers` are given) jigsaw-shuffled or blended training images."""
    if kind == "noise":
        if rng.random() < 0.5:
            a = rng.random((size, size, 3)).astype(np.float32)
        else:
            a = _smooth_noise(rng, size, int(rng.integers(2, 32)))
        a = a * rng.uniform(0.2, 1.0)
    elif kind == "flat":
        a = np.broadcast_to(rng.random(3).astype(np.float32), (size, size, 3)).copy()
    elif kind == "gradient":
        t = np.linspace(0, 1, size, dtype=np.float32)
        ang = rng.uniform(0, 2 * np.pi)
        g = np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None]
        g = (g - g.min()) / (np.ptp(g) + 1e-6)
        c0, c1 = rng.random(3), rng.random(3)
        a = (c0[None, None] * (1 - g[..., None]) + c1[None, None] * g[..., None]).astype(np.float32)
    elif kind == "stripes":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        period = rng.uniform(4, 40)
        ang = rng.uniform(0, np.pi)
        u = np.cos(ang) * xx + np.sin(ang) * yy
        if rng.random() < 0.5:
            v = -np.sin(ang) * xx + np.cos(ang) * yy
            m = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        else:
            m = (0.5 + 0.5 * np.sin(2 * np.pi * u / period)).astype(np.float32)
        c0, c1 = rng.random(3), rng.random(3)
        a = (c0[None, None] * (1 - m[..., None]) + c1[None, None] * m[..., None]).astype(np.float32)
    elif kind in ("textured_sphere", "banded_sphere"):
        r = rng.uniform(0.25, 0.5) * size
        cx, cy = size / 2 + rng.uniform(-0.1, 0.1) * size, size / 2 + rng.uniform(-0.1, 0.1) * size
        mask, d = _disc_mask(size, cx, cy, r)
        if kind == "textured_sphere":
            tex = _smooth_noise(rng, size, int(rng.integers(3, 40)))
            if rng.random() < 0.5:  # a monochrome-ish surface
                tex = tex.mean(-1, keepdims=True) * rng.random(3)[None, None] * 1.5
        else:
            yy = np.mgrid[0:size, 0:size][0].astype(np.float32)
            freq = rng.uniform(1, 12)
            phase = rng.uniform(0, 2 * np.pi)
            band = 0.5 + 0.5 * np.sin(2 * np.pi * freq * yy / size + phase + 0.3 * np.sin(yy / 7.0))
            c0, c1 = rng.random(3), rng.random(3)
            tex = c0[None, None] * (1 - band[..., None]) + c1[None, None] * band[..., None]
        shade = np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1))[..., None] ** rng.uniform(0.2, 1.0)
        a = np.clip(tex * shade, 0, 1) * mask
    elif kind == "blobs":
        a = np.zeros((size, size, 3), np.float32)
        for _ in range(int(rng.integers(1, 6))):
            m, _ = _disc_mask(size, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(4, size / 3))
            a = a * (1 - m) + m * rng.random(3)[None, None].astype(np.float32)
    elif kind in ("jigsaw", "blend") and inliers:
        x = np.asarray(inliers[int(rng.integers(len(inliers)))], dtype=np.float32) / 255.0
        if kind == "jigsaw":
            k = int(rng.choice([2, 4, 8]))
            t = size // k
            tiles = [x[i * t : (i + 1) * t, j * t : (j + 1) * t] for i in range(k) for j in range(k)]
            order = rng.permutation(len(tiles))
            rows = [np.concatenate([tiles[order[i * k + j]] for j in range(k)], 1) for i in range(k)]
            a = np.concatenate(rows, 0)
        else:
            y = np.asarray(inliers[int(rng.integers(len(inliers)))], dtype=np.float32) / 255.0
            y = np.rot90(y, int(rng.integers(4)))
            a = 0.5 * x + 0.5 * y
    else:
        raise ValueError(kind)
    return Image.fromarray(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8), "RGB")


def outlier_set(
    n: int,
    seed: int,
    height: int,
    width: int,
    inliers: list[Image.Image] | None,
    kinds: tuple[str, ...] = OUTLIER_KINDS,
    reader: str = "rgb",
) -> tuple[np.ndarray, list[str]]:
    """n synthetic outliers (kinds in rotation), each sent as a JPEG q 60..98 through the model path; the
    jigsaw and blend kinds only when `inliers` are given. Returns HWC uint8 pixels and the kinds."""
    rng = np.random.default_rng(seed)
    use = [k for k in kinds if inliers or k not in ("jigsaw", "blend")]
    out, names = [], []
    for i in range(n):
        kind = use[i % len(use)]
        im = synthetic_outlier(rng, kind, inliers=inliers)
        if rng.random() < 0.5:
            im, _ = random_augment(im, rng)
        out.append(model_pixels(im, height, width, int(rng.integers(60, 99)), reader))
        names.append(kind)
    return np.stack(out), names
