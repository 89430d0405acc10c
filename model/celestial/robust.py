"""Out-of-distribution scores, thresholds, temperature scaling and the metrics they need (AUROC, flag rates).

Used by the training pipeline (`ood.py`, `evaluation.py`), `loco.py` (leave-one-class-out), `colour_ood.py` and
`verify.py` (re-checks the committed figures). The picture sets are in `pools.py`, the colour check in
`colour.py`.
"""

from __future__ import annotations

import numpy as np


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

    def __init__(
        self,
        feats: np.ndarray,
        y: np.ndarray,
        n_classes: int,
        bank_size: int = 0,
        seed: int = 0,
        bank_idx: np.ndarray | None = None,
    ):
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
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
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
    return t, {
        "nll_t1": round(nll(1.0), 4),
        "nll": round(nll(t), 4),
        "ece_t1": round(ece(z, y, 1.0), 4),
        "ece": round(ece(z, y, t), 4),
    }


def reliability(logits: np.ndarray, y: np.ndarray, t: float, bins: int = 10) -> dict:
    """The reliability diagram's numbers of softmax(logits / t): per equal-width confidence bin (lo, hi] the
    pictures, their mean top probability and their accuracy (empty bins left out), and the expected calibration
    error (over 15 bins, as fit_temperature reports it)."""
    p = softmax(logits.astype(np.float64) / t)
    conf, right = p.max(1), p.argmax(1) == y
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            rows.append(
                [
                    round(float(lo), 2),
                    round(float(hi), 2),
                    int(m.sum()),
                    round(float(conf[m].mean()), 4),
                    round(float(right[m].mean()), 4),
                ]
            )
    return {
        "temperature": t,
        "columns": ["lo", "hi", "pictures", "confidence", "accuracy"],
        "bins": rows,
        "ece": round(ece(logits, y, t), 4),
    }


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
