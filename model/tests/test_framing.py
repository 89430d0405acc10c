"""The framing changes of the training augmentation and the corruption suite: sizes, positions, black sky."""

from __future__ import annotations

import numpy as np
from celestial import augment, framing
from PIL import Image


def _disc(size: int = 128) -> Image.Image:
    """A white disc filling most of a black square, as the dataset's renders do."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - size / 2 + 0.5, yy - size / 2 + 0.5)
    px = np.where(r < 0.45 * size, 255, 0).astype(np.uint8)
    return Image.fromarray(np.stack([px] * 3, axis=-1))


def test_crop_keeps_its_smaller_size_inside_the_picture():
    im = _disc()
    for seed in range(20):
        out = framing.crop(im, 0.65, np.random.default_rng(seed))
        assert out.size == (83, 83)
        # A window of the original: its pixels are found at some offset of the source.
        a, src = np.asarray(out), np.asarray(im)
        assert any(np.array_equal(src[y : y + 83, x : x + 83], a) for y in range(0, 46) for x in range(0, 46)), seed


def test_zoom_out_keeps_the_size_and_adds_black_sky():
    im = _disc()
    out = framing.zoom_out(im, 0.4, np.random.default_rng(1))
    assert out.size == im.size
    lit = np.asarray(out)[..., 0] > 127
    ys, xs = np.nonzero(lit)
    # The disc (0.9 of the side) shrunk to 0.4: about 46 pixels across, wholly inside the frame.
    assert 40 <= xs.max() - xs.min() <= 50 and 40 <= ys.max() - ys.min() <= 50
    assert lit.mean() < 0.2 * (np.asarray(im)[..., 0] > 127).mean() + 0.01


def test_shift_moves_the_content_by_the_fraction():
    im = _disc()
    for seed in range(10):
        out = np.asarray(framing.shift(im, 0.3, np.random.default_rng(seed)))[..., 0] > 127
        ys, xs = np.nonzero(out)
        cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2
        # The centre moves by 0.3 * 128 = 38 pixels; a disc cut at the edge moves its box centre less.
        assert 10 <= np.hypot(cx - 63.5, cy - 63.5) <= 40, seed


def test_aspect_widens_or_heightens_the_frame():
    im = _disc()
    assert framing.aspect(im, 1.5, np.random.default_rng(0)).size == (192, 128)
    assert framing.aspect(im, 0.67, np.random.default_rng(0)).size == (128, 191)


def test_random_framing_is_seeded_and_the_suite_has_the_geometric_families():
    im = _disc()
    a = np.asarray(framing.random_framing(im, np.random.default_rng(7)))
    b = np.asarray(framing.random_framing(im, np.random.default_rng(7)))
    assert np.array_equal(a, b)
    for name in augment.GEOMETRIC:
        assert len(augment.SUITE[name][1]) == 3, name
    assert [augment.SUITE[n][1][augment.middle(n)] for n in ("crop", "zoom_out")] == [0.8, 0.6]
