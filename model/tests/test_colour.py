"""The colour check's statistics (colour.colour_features) and its served form (colour.ClassColourKnn)."""

from __future__ import annotations

import json
import math

import numpy as np
from celestial.colour import COLOUR_STATISTICS, ClassColourKnn, colour_features, sig6


def test_colour_features_of_a_two_pixel_picture():
    """One red and one black pixel, computed by hand from the formula in the model card."""
    px = np.array([[[[255, 0, 0], [0, 0, 0]]]], np.uint8)  # [N=1, H=1, W=2, C=3]
    f = colour_features(px)[0]
    r = 1 / 1.001  # chromaticity r = R / (R + G + B + 0.001) of the red pixel; the black one has 0
    w = 1 / 3  # its brightness weight (R + G + B) / 3; the black one weighs 0
    wsum = w + 1e-6
    mean_r = r * w / wsum
    spread_r = math.sqrt((r - mean_r) ** 2 * w / wsum + mean_r**2 * 0 / wsum)
    want = [0.5, 0, 0, 0.5, 0, 0, mean_r, 0, spread_r, 0]
    assert np.allclose(f, want, rtol=0, atol=1e-12), f


def test_colour_features_of_grey_and_uniform_pictures():
    grey = np.full((1, 4, 4, 3), 128, np.uint8)
    f = colour_features(grey)[0]
    v = 128 / 255
    assert np.allclose(f[:3], v) and np.allclose(f[3:6], 0)
    assert np.allclose(f[6:8], v / (3 * v + 1e-3)) and np.allclose(f[8:], 0, atol=1e-6)
    assert len(COLOUR_STATISTICS) == f.size


def test_population_standard_deviation_per_channel():
    px = np.zeros((1, 2, 2, 3), np.uint8)
    px[0, :, :, 1] = [[0, 255], [255, 0]]
    f = colour_features(px)[0]
    assert f[1] == 0.5 and f[4] == 0.5  # mean and population (not sample) deviation of G


def pictures(rng, n, base):
    return np.clip(rng.normal(base, 20, (n, 4, 4, 3)), 0, 255).astype(np.uint8)


def test_class_colour_knn_is_the_kth_nearest_of_the_predicted_class():
    rng = np.random.default_rng(0)
    bank = np.concatenate([pictures(rng, 6, (200, 60, 40)), pictures(rng, 6, (60, 80, 200))])
    y = np.array([0] * 6 + [1] * 6)
    knn = ClassColourKnn(bank, y, k=2)
    probe = pictures(rng, 3, (190, 70, 50))
    z = (colour_features(probe) - knn.mu) / knn.sd
    zb = (colour_features(bank) - knn.mu) / knn.sd
    for cls in (0, 1):
        d = np.sqrt(((z[:, None] - zb[y == cls][None]) ** 2).sum(-1))
        assert np.allclose(knn.score(probe, np.full(3, cls)), np.sort(d, 1)[:, 1])
    assert (knn.score(probe, np.zeros(3, int)) < knn.score(probe, np.ones(3, int))).all()


def test_served_form_round_trips_through_the_metadata_json():
    rng = np.random.default_rng(1)
    bank = np.concatenate([pictures(rng, 5, (200, 60, 40)), pictures(rng, 5, (60, 80, 200))])
    y = np.array([0] * 5 + [1] * 5)
    knn = ClassColourKnn(bank, y, k=3).rounded()
    doc = json.loads(knn.metadata(1.5, 2))
    assert doc["k"] == 3 and doc["threshold"] == 1.5 and len(doc["bank"]) == 2
    assert doc["statistics"] == list(COLOUR_STATISTICS)
    raw = np.array(doc["bank"][0] + doc["bank"][1])
    again = ClassColourKnn(None, None, doc["k"], parts=(raw, y, np.array(doc["mean"]), np.array(doc["std"])))
    probe = pictures(rng, 4, (120, 120, 120))
    pred = np.array([0, 1, 0, 1])
    assert np.array_equal(again.score(probe, pred), knn.score(probe, pred))


def test_thinning_keeps_k_neighbours_within_the_radius_of_every_dropped_picture():
    rng = np.random.default_rng(2)
    # many near-duplicates (one grey-ish cluster) and a few far apart pictures per class
    bank = np.concatenate([pictures(rng, 40, (120, 120, 120)), pictures(rng, 5, (230, 40, 20))] * 2)
    y = np.repeat([0, 1], 45)
    full = ClassColourKnn(bank, y, k=2)
    R = 2.0
    thin = full.thinned(R, seed=3)
    assert len(thin.raw) < len(full.raw) and np.array_equal(thin.mu, full.mu) and np.array_equal(thin.sd, full.sd)
    for c in (0, 1):
        kept, every = thin.bank[c], full.bank[c]
        d = np.sqrt(((every[:, None] - kept[None]) ** 2).sum(-1))
        dropped = d.min(1) > 0  # the kept pictures are at distance 0 of themselves
        assert ((d[dropped] < R).sum(1) >= 2).all()
        assert len(kept) >= 2
    # so the k-th nearest distance moves by less than the radius, anywhere
    probe = pictures(rng, 6, (150, 110, 90))
    pred = np.array([0, 1] * 3)
    assert (thin.score(probe, pred) - full.score(probe, pred) < R).all()
    assert np.array_equal(thin.score(probe, pred), full.thinned(R, seed=3).score(probe, pred)), "seeded"
    assert len(full.thinned(0.0).raw) == len(full.raw), "radius 0 keeps every picture"


def test_sig6_keeps_six_significant_digits():
    assert sig6([1.23456789, 0.000123456789, 98765432.1]).tolist() == [1.23457, 0.000123457, 98765400.0]
