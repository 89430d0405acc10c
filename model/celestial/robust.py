"""Model v2 helpers: the augmented training pool, out-of-distribution scores, temperature scaling,
the corruption-suite evaluation and the metrics those need (AUROC, flag rates).

Used by `train.py` (the served model and its evaluations), `loco.py` (leave-one-class-out) and
`verify.py` (re-checks the committed figures).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import augment
from .preprocess import load_model_pixels, load_rgb8

SUITE_SEED = 1414
POOL_SEED = 2024
OUTLIER_TRAIN_SEED = 31
OUTLIER_EVAL_SEED = 9090


def _cache(cache_dir: Path | None, key: dict, make):
    """Memoise an expensive, deterministic array computation on disk (model/.cache, not committed)."""
    if cache_dir is None:
        return make()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{key['what']}-{digest}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    out = make()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.rename(path)
    return out


def source_images(raw: Path, items) -> list:
    """Full-size RGB8 decodes (no DCT scaling): the pictures that augmentation and corruption change."""
    return [load_rgb8(raw / rel) for rel, _ in items]


def training_pool(raw: Path, items, variants: int, height: int, width: int, cache_dir: Path | None) -> dict:
    """`variants` random augmentations of each training image (augment.random_augment), each sent as a
    JPEG through the model's decode path. Seeded per image: numpy default_rng([POOL_SEED, i])."""
    def make():
        px, y, src = [], [], []
        for i, (im, (rel, label)) in enumerate(zip(source_images(raw, items), items)):
            rng = np.random.default_rng([POOL_SEED, i])
            for _ in range(variants):
                a, q = augment.random_augment(im, rng)
                px.append(augment.model_pixels(a, height, width, q))
                y.append(label)
                src.append(i)
        return {"px": np.stack(px), "y": np.array(y), "src": np.array(src)}
    return _cache(cache_dir, {"what": "pool", "items": [r for r, _ in items], "variants": variants, "h": height,
                              "w": width, "seed": POOL_SEED, "v": 3}, make)


def outlier_pool(raw: Path, items, n: int, seed: int, height: int, width: int, cache_dir: Path | None,
                 reader: str = "rgb") -> dict:
    """n synthetic outliers (augment.outlier_set); jigsaw/blend built from `items` (the training classes)."""
    def make():
        inl = source_images(raw, items)
        px, kinds = augment.outlier_set(n, seed, height, width, inl, reader=reader)
        return {"px": px, "kinds": np.array(kinds)}
    return _cache(cache_dir, {"what": "outliers", "items": [r for r, _ in items], "n": n, "seed": seed,
                              "h": height, "w": width, "v": 2, **({"reader": reader} if reader != "rgb" else {})}, make)


def clean_pixels(raw: Path, items, height: int, width: int) -> np.ndarray:
    return np.stack([load_model_pixels(raw / rel, height, width) for rel, _ in items])


def suite_pixels(raw: Path, items, height: int, width: int, cache_dir: Path | None, reader: str = "rgb") -> dict:
    """The fixed corruption suite on `items`: {"name/severity": HWC uint8 [N,h,w,3]}, each corrupted picture
    re-encoded as JPEG q92 and decoded through the model path. Seed per image, corruption and severity."""
    def make():
        ims = source_images(raw, items)
        out = {}
        for ci, (name, (_, values, _)) in enumerate(augment.SUITE.items()):
            for s in range(len(values)):
                out[f"{name}/{s}"] = np.stack([
                    augment.model_pixels(augment.corrupt(im, name, s, seed=hash_seed(SUITE_SEED, i, ci, s)),
                                         height, width, reader=reader)
                    for i, im in enumerate(ims)])
        return out
    return _cache(cache_dir, {"what": "suite", "items": [r for r, _ in items], "h": height, "w": width,
                              "seed": SUITE_SEED, "suite": {k: v[1] for k, v in augment.SUITE.items()}, "v": 2,
                              **({"reader": reader} if reader != "rgb" else {})}, make)


def hash_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(",".join(map(str, parts)).encode()).digest()[:8], "little")


# ------------------------------------------------------------------------------------------ scores


def logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(-1)
    return m + np.log(np.exp(z - m[:, None]).sum(-1))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def l2n(f: np.ndarray) -> np.ndarray:
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


class FeatureStats:
    """What the feature-distance scores need, fitted on training-pool features (penultimate layer)."""

    def __init__(self, feats: np.ndarray, y: np.ndarray, n_classes: int, bank_size: int = 0, seed: int = 0,
                 bank_idx: np.ndarray | None = None):
        fn = l2n(feats.astype(np.float64))
        self.centroids = l2n(np.stack([fn[y == k].mean(0) for k in range(n_classes)]))
        mu = np.stack([feats[y == k].mean(0) for k in range(n_classes)])
        cen = feats - mu[y]
        cov = cen.T @ cen / len(feats)
        cov += 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov))
        self.mu, self.prec = mu, np.linalg.inv(cov)
        rng = np.random.default_rng(seed)
        idx = rng.permutation(len(fn))[:bank_size] if bank_size else np.arange(len(fn))
        self.bank = fn[idx]
        # the served bank: one feature vector per training image (its first augmented variant)
        self.bank_v0 = fn[bank_idx] if bank_idx is not None else None

    def scores(self, feats: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Higher = more likely out of distribution."""
        fn = l2n(feats.astype(np.float64))
        d = feats[:, None, :] - self.mu[None]
        maha = np.einsum("nkd,de,nke->nk", d, self.prec, d).min(1)
        z = logits.astype(np.float64)
        out = {
            "msp": -softmax(z).max(1),
            "max_logit": -z.max(1),
            "energy": -logsumexp(z),
            "centroid_cosine": 1.0 - (fn @ self.centroids.T).max(1),
            "mahalanobis": maha,
            "knn_cosine": 1.0 - (fn @ self.bank.T).max(1),
        }
        if self.bank_v0 is not None:
            out["knn_cosine_per_image"] = 1.0 - (fn @ self.bank_v0.T).max(1)
            # a quarter of that bank (every 4th training image): 4x cheaper in the graph
            out["knn_cosine_quarter"] = 1.0 - (fn @ self.bank_v0[::4].T).max(1)
        return out


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
# ClassColourKnn's bank: every CLASS_COLOUR_STRIDE-th picture of the training pool (2 of the 12 variants of each
# training image), its k: chosen on the LOCO runs' saved logits (loco.sh --dump), strides 3-12 and k 3-5 all giving
# a mean AUROC of 0.996-0.9985 with msp; 6 and 3 had the best flag rate at the served calibration.
CLASS_COLOUR_STRIDE, CLASS_COLOUR_K = 6, 3


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


COLOUR_STATISTICS = ("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "chroma_r", "chroma_g",
                     "chroma_spread_r", "chroma_spread_g")


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

    def __init__(self, bank_px: np.ndarray | None, bank_y: np.ndarray | None, k: int = 3, features=slice(None),
                 parts: tuple | None = None):
        """From bank pictures and their labels, or from `parts` = (raw bank statistics [M, F], labels [M],
        mean [F], spread [F])."""
        self.features, self.k = features, k
        if parts is None:
            f = colour_features(bank_px)[:, features]
            parts = (f, np.asarray(bank_y), f.mean(0), f.std(0) + 1e-6)
        self.raw, self.y, self.mu, self.sd = parts
        z = (self.raw - self.mu) / self.sd
        self.bank = {int(c): z[self.y == c] for c in np.unique(self.y)}

    def rounded(self) -> "ClassColourKnn":
        return ClassColourKnn(None, None, self.k, self.features,
                              (sig6(self.raw), self.y, sig6(self.mu), sig6(self.sd)))

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
        return json.dumps({
            "formula": ("d = the distance from the picture's standardised colour statistics z = (f - mean) / std "
                        "to the k-th nearest of the bank pictures of the predicted class (argmax of the logits), "
                        "each standardised the same way; f = the ten statistics of the model-input picture p "
                        "(values p / 255 in 0..1, channels R, G, B): per channel the mean and the standard "
                        "deviation over all pixels; with s = R + G + B + 0.001, w = (R + G + B) / 3 and "
                        "W = sum(w) + 1e-6, the chromaticities r = R / s, g = G / s, their weighted means "
                        "sum(r w) / W, sum(g w) / W and weighted spreads sqrt(sum((r - mean_r)^2 w) / W), "
                        "sqrt(sum((g - mean_g)^2 w) / W); the colours pass when d <= threshold"),
            "statistics": list(COLOUR_STATISTICS), "k": self.k, "threshold": threshold,
            "mean": self.mu.tolist(), "std": self.sd.tolist(),
            "bank": [self.raw[self.y == c].tolist() for c in range(classes)],
        }, separators=(",", ":"))


def ecdf(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The share of `reference` at or below each x; beyond the largest reference value it goes on growing, by
    one per reference standard deviation, so that the scores past every reference value stay ordered (a
    plain empirical CDF would tie them all at 1 and leave no threshold for a 1 % false-flag rate)."""
    ref = np.sort(reference)
    share = np.searchsorted(ref, x, side="right") / len(ref)
    beyond = np.maximum(x - ref[-1], 0.0) / (ref.std() + 1e-12)
    return share + beyond


def combined_max(id_parts: list, ood_parts: list) -> tuple[np.ndarray, np.ndarray]:
    """Several scores (higher = more out of distribution) made one: each calibrated to its in-distribution
    distribution (the empirical CDF), then the largest. Cross-fitted: the in-distribution pictures are split
    in two alternating halves, each calibrated on the other, and the out-of-distribution ones (alternately)
    on one half, so no picture is scored against a reference that contains it."""
    n = len(id_parts[0])
    fold = np.arange(n) % 2
    id_c = np.zeros(n)
    ood_fold = np.arange(len(ood_parts[0])) % 2
    ood_c = np.zeros(len(ood_parts[0]))
    for f in (0, 1):
        ref = fold != f
        for a, o in zip(id_parts, ood_parts):
            id_c[fold == f] = np.maximum(id_c[fold == f], ecdf(a[ref], a[fold == f]))
            ood_c[ood_fold == f] = np.maximum(ood_c[ood_fold == f], ecdf(a[ref], o[ood_fold == f]))
    return id_c, ood_c


def joint_thresholds(a: np.ndarray, b: np.ndarray, rate: float) -> tuple[float, float]:
    """Thresholds (ta, tb) such that flagging `a > ta or b > tb` flags `rate` of the reference pairs (a[i], b[i]),
    both at the same rank: the flag rule of the larger of the two scores calibrated to their empirical CDFs
    (combined_max's combination, on the reference itself)."""
    ca, cb = ecdf(a, a), ecdf(b, b)
    tau = threshold_at(np.maximum(ca, cb), rate)
    return float(a[ca <= tau].max()), float(b[cb <= tau].max())


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """P(score(ood) > score(id)) + 0.5 P(equal): the area under the ROC curve of flagging by score."""
    a = np.concatenate([id_scores, ood_scores])
    order = a.argsort(kind="mergesort")
    ranks = np.empty(len(a))
    sa = a[order]
    i = 0
    while i < len(sa):  # average ranks of ties
        j = i
        while j + 1 < len(sa) and sa[j + 1] == sa[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_id, n_ood = len(id_scores), len(ood_scores)
    return float((ranks[n_id:].sum() - n_ood * (n_ood + 1) / 2) / (n_id * n_ood))


def threshold_at(id_scores: np.ndarray, false_flag_rate: float) -> float:
    """The smallest threshold t with at most `false_flag_rate` of id_scores > t (flag = score > t)."""
    s = np.sort(id_scores)
    k = int(np.floor(len(s) * (1 - false_flag_rate)))
    k = min(max(k, 1), len(s))
    return float(s[k - 1])


def flag_rate(scores: np.ndarray, t: float) -> float:
    return float((scores > t).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """Temperature T minimising the negative log-likelihood of softmax(logits / T) (grid, log-spaced)."""
    z = logits.astype(np.float64)
    grid = np.exp(np.linspace(np.log(0.2), np.log(20), 401))

    def nll(t):
        zt = z / t
        return float((logsumexp(zt) - zt[np.arange(len(y)), y]).mean())

    t = float(min(grid, key=nll))
    t = float(f"{t:.3g}")
    return t, {"nll_t1": round(nll(1.0), 4), "nll": round(nll(t), 4), "ece_t1": round(ece(z, y, 1.0), 4),
               "ece": round(ece(z, y, t), 4)}


def ece(logits: np.ndarray, y: np.ndarray, t: float, bins: int = 15) -> float:
    p = softmax(logits / t)
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(total)


def plot_robustness(table: dict, clean: float, path: Path, baseline: dict | None = None) -> None:
    """Top-1 per corruption and severity (one line per corruption)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for name, accs in table.items():
        xs = np.arange(1, len(accs) + 1) if len(accs) > 1 else [3]
        line, = ax.plot(xs, [100 * a for a in accs], marker="o", label=name)
        if baseline and name in baseline:
            ax.plot(xs, [100 * a for a in baseline[name]], ":", color=line.get_color(), alpha=0.6)
    ax.axhline(100 * clean, color="k", lw=0.8, label=f"clean ({100 * clean:.2f} %)")
    ax.axhline(97, color="r", lw=0.8, ls="--", label="target at middle severity (97 %)")
    ax.set_xlabel("severity (3 = middle)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_xticks([1, 2, 3, 4, 5])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    title = "corruption suite on the validation split (JPEG q92 after each change)"
    if baseline:
        title += "\nsolid: served model; dotted: previous model (v1)"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
