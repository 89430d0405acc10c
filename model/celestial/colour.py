"""The colour check: ten colour statistics of a model-input picture and the distances built on them
(ColourKnn to every known picture, ClassColourKnn to the pictures of the predicted class, the served one)."""

from __future__ import annotations

import json

import numpy as np


def colour_features(px: np.ndarray) -> np.ndarray:
    """Ten colour statistics of model-input pictures (HWC, 0..255, as decoded for the model): per channel
    mean and standard deviation, and the brightness-weighted mean and spread of the chromaticities
    r/(r+g+b) and g/(r+g+b) (the body's colour, little moved by exposure)."""
    p = px.astype(np.float64) / 255.0
    mean, std = p.mean((1, 2)), p.std((1, 2))
    chrom = (p / (p.sum(3, keepdims=True) + 1e-3))[..., :2]
    w = p.mean(3)[..., None]
    wsum = w.sum((1, 2)) + 1e-6
    cm = (chrom * w).sum((1, 2)) / wsum
    cs = np.sqrt(((chrom - cm[:, None, None, :]) ** 2 * w).sum((1, 2)) / wsum)
    return np.concatenate([mean, std, cm, cs], 1)


CHROMATICITY = slice(6, 10)
# ClassColourKnn's bank: the whole training pool, thinned (ClassColourKnn.thinned) so that no picture is kept
# while k kept ones of its class lie within CLASS_COLOUR_RADIUS of it (standardised units): the k-th nearest
# distance of anything near the pool moves by less than the radius, and the near-duplicates (the many grey
# variants of each body) stop taking the file's room from the rare colours. k: chosen for v2 on the LOCO runs' saved
# logits; the radius: the one that keeps the check closest to the whole pool within the 1 MB file (the model card
# measures the whole pool and radii 0.7 and 1.0 on the LOCO runs: loco.sh --dump, then --rescore).
CLASS_COLOUR_RADIUS, CLASS_COLOUR_K = 0.7, 3
# The thinning's order of visit (a seeded permutation per class): the same pool always gives the same bank.
CLASS_COLOUR_SEED = 0


class ColourKnn:
    """Distance to the k-th nearest clean training picture in standardised colour-feature space: how unlike
    every known body's colours a picture is (a network trained to discount colour cannot tell that)."""

    def __init__(self, fit_px: np.ndarray, k: int = 5, features=slice(None)):
        """`features`: which of the ten `colour_features` (`CHROMATICITY`: the four that do not move with
        exposure and are those of grey for a grayscale picture)."""
        self.features = features
        f = colour_features(fit_px)[:, features]
        self.mu, self.sd, self.k = f.mean(0), f.std(0) + 1e-6, k
        self.bank = (f - self.mu) / self.sd

    def score(self, px: np.ndarray) -> np.ndarray:
        z = (colour_features(px)[:, self.features] - self.mu) / self.sd
        d = np.sqrt(((z[:, None, :] - self.bank[None]) ** 2).sum(-1))
        return np.sort(d, 1)[:, self.k - 1]


COLOUR_STATISTICS = (
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "chroma_r",
    "chroma_g",
    "chroma_spread_r",
    "chroma_spread_g",
)


def sig6(a) -> np.ndarray:
    """Numbers rounded to 6 significant digits (what the metadata stores, so every reader gets the same floats)."""
    return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[np.float64])(np.asarray(a, np.float64))


class ClassColourKnn:
    """Distance to the k-th nearest picture *of the predicted class* in standardised colour-feature space,
    the bank being augmented training pictures (the training pool: recoloured, darker, greyer, noisier
    variants of each known body). A known body photographed with other colours stays near its own class's
    variants; a body the model does not know, taken for a known one, has colours unlike every variant of
    that class. The served form (`celestial.colour_ood`, `metadata`) stores the bank's raw statistics, their
    mean and spread, k and the threshold, rounded to 6 significant digits (`rounded`)."""

    def __init__(
        self,
        bank_px: np.ndarray | None,
        bank_y: np.ndarray | None,
        k: int = 3,
        features=slice(None),
        parts: tuple | None = None,
    ):
        """From bank pictures and their labels, or from `parts` = (raw bank statistics [M, F], labels [M],
        mean [F], spread [F])."""
        self.features, self.k = features, k
        if parts is None:
            f = colour_features(bank_px)[:, features]
            parts = (f, np.asarray(bank_y), f.mean(0), f.std(0) + 1e-6)
        self.raw, self.y, self.mu, self.sd = parts
        z = (self.raw - self.mu) / self.sd
        self.bank = {int(c): z[self.y == c] for c in np.unique(self.y)}

    def thinned(self, radius: float, seed: int = CLASS_COLOUR_SEED) -> "ClassColourKnn":
        """The same check on a smaller bank: per class, visiting the pictures in a seeded random order, a picture
        is dropped when k already kept ones lie within `radius` of it (standardised), so every dropped picture has
        k kept neighbours within `radius`. The standardisation stays that of the whole bank."""
        rng = np.random.default_rng(seed)
        keep = []
        for c in sorted(self.bank):
            idx = np.where(self.y == c)[0]
            z = self.bank[c]
            kept = np.empty_like(z)
            n = 0
            for o in rng.permutation(len(idx)):
                if n >= self.k and np.count_nonzero(((kept[:n] - z[o]) ** 2).sum(1) < radius * radius) >= self.k:
                    continue
                kept[n] = z[o]
                n += 1
                keep.append(idx[o])
        keep = np.sort(np.array(keep))
        return ClassColourKnn(None, None, self.k, self.features, (self.raw[keep], self.y[keep], self.mu, self.sd))

    def rounded(self) -> "ClassColourKnn":
        return ClassColourKnn(None, None, self.k, self.features, (sig6(self.raw), self.y, sig6(self.mu), sig6(self.sd)))

    def score(self, px: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        z = (colour_features(px)[:, self.features] - self.mu) / self.sd
        out = np.empty(len(px))
        for c in np.unique(predicted):
            m = predicted == c
            d = np.sqrt(((z[m][:, None, :] - self.bank[int(c)][None]) ** 2).sum(-1))
            out[m] = np.sort(d, 1)[:, self.k - 1]
        return out

    def metadata(self, threshold: float, classes: int) -> str:
        """`celestial.colour_ood` (JSON): the rule, k, threshold, mean, spread and the bank per class."""
        if self.features != slice(None):
            raise ValueError("the served colour check uses all ten statistics")
        return json.dumps(
            {
                "formula": (
                    "d = the distance from the picture's standardised colour statistics z = (f - mean) / std "
                    "to the k-th nearest of the bank pictures of the predicted class (argmax of the logits), "
                    "each standardised the same way; f = the ten statistics of the model-input picture p "
                    "(values p / 255 in 0..1, channels R, G, B): per channel the mean and the standard "
                    "deviation over all pixels; with s = R + G + B + 0.001, w = (R + G + B) / 3 and "
                    "W = sum(w) + 1e-6, the chromaticities r = R / s, g = G / s, their weighted means "
                    "sum(r w) / W, sum(g w) / W and weighted spreads sqrt(sum((r - mean_r)^2 w) / W), "
                    "sqrt(sum((g - mean_g)^2 w) / W); the colours pass when d <= threshold"
                ),
                "statistics": list(COLOUR_STATISTICS),
                "k": self.k,
                "threshold": threshold,
                "mean": self.mu.tolist(),
                "std": self.sd.tolist(),
                "bank": [self.raw[self.y == c].tolist() for c in range(classes)],
            },
            separators=(",", ":"),
        )


def pool_colour_check(pool_px: np.ndarray, pool_y: np.ndarray) -> ClassColourKnn:
    """The served colour check of a model trained on this augmented pool: ClassColourKnn over the whole pool,
    thinned at CLASS_COLOUR_RADIUS."""
    return ClassColourKnn(pool_px, pool_y, k=CLASS_COLOUR_K).thinned(CLASS_COLOUR_RADIUS)
