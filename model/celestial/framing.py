"""Geometric changes: how a photograph frames the body, for the training augmentation and the corruption suite.

The dataset's renders show each body centred and filling about 90 % of a square frame on a black sky. Photographs
rarely do: they cut the body (tight framing, partly outside the picture), show it small on a wide sky, off
centre, or in a landscape or portrait frame that the model's stretch-to-square resize squashes. Each primitive
here takes a full-size RGB8 picture and returns the picture a user would send: cropped pictures keep their
smaller size and wide or tall ones their new aspect, so they meet the JPEG decoder's DCT scaling and the resize
as a real file would; new sky is black, as in space.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def _position(rng: np.random.Generator, room: int) -> int:
    """A uniformly random offset in 0..room (both ends included)."""
    return int(rng.integers(0, room + 1)) if room > 0 else 0


def crop(im: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    """Tight framing: a window of `keep` of each side at a random position (the body fills the picture and may
    overflow it); the cropped picture keeps its size in pixels."""
    w, h = im.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    x, y = _position(rng, w - cw), _position(rng, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def zoom_out(im: Image.Image, scale: float, rng: np.random.Generator) -> Image.Image:
    """A wide frame: the picture shrunk to `scale` of each side (antialiased) at a random position on a black
    canvas of the original size."""
    w, h = im.size
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small = im.resize((sw, sh), Image.Resampling.BILINEAR, reducing_gap=None)
    canvas = Image.new("RGB", (w, h))
    canvas.paste(small, (_position(rng, w - sw), _position(rng, h - sh)))
    return canvas


def shift(im: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Off centre: the content moved by `fraction` of the side in a random direction, black sky coming in (a
    shift of more than the margin cuts the body at the far edge)."""
    w, h = im.size
    angle = float(rng.uniform(0.0, 2.0 * math.pi))
    dx, dy = round(fraction * w * math.cos(angle)), round(fraction * h * math.sin(angle))
    canvas = Image.new("RGB", (w, h))
    canvas.paste(im, (dx, dy))
    return canvas


def aspect(im: Image.Image, ratio: float, rng: np.random.Generator) -> Image.Image:
    """A landscape (`ratio` > 1, width / height) or portrait (< 1) frame: the picture on a black canvas that is
    wider or taller by that ratio, at a random position; the server's stretch to a square squashes the body by
    the same ratio."""
    w, h = im.size
    if ratio >= 1.0:
        cw, ch = round(w * ratio), h
    else:
        cw, ch = w, round(h / ratio)
    canvas = Image.new("RGB", (cw, ch))
    canvas.paste(im, (_position(rng, cw - w), _position(rng, ch - h)))
    return canvas


# Training framings: name -> (weight, lowest, highest, log-uniform); ranges span the suite's severities and a
# little more. Plain numbers, so that the training pool's cache key can hold them.
TRAIN_FRAMINGS = {
    "crop": (2.5, 0.55, 0.97, False),
    "zoom_out": (4.0, 0.4, 0.97, True),
    "shift": (1.5, 0.05, 0.35, False),
    "aspect": (1.5, 0.6, 1 / 0.6, True),
}
_FRAMING_FUNCTIONS = {"crop": crop, "zoom_out": zoom_out, "shift": shift, "aspect": aspect}
FRAMED_SHARE = 0.7  # the share of training variants that get one framing change


def random_framing(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One framing change drawn by weight for FRAMED_SHARE of the variants; the others keep the render's framing
    (which is also how many photographs of a body look)."""
    if rng.random() >= FRAMED_SHARE:
        return im
    names = list(TRAIN_FRAMINGS)
    p = np.array([TRAIN_FRAMINGS[n][0] for n in names])
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    _, lo, hi, log = TRAIN_FRAMINGS[name]
    value = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else float(rng.uniform(lo, hi))
    return _FRAMING_FUNCTIONS[name](im, value, rng)
