"""The cached picture sets: the augmented training pool, the synthetic outliers, the corruption suite and
the clean pixels, each made by seeded code and memoised on disk (model/.cache, not committed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import augment, framing
from .preprocess import SERVED_RESIZE_MODE, load_model_pixels, load_rgb8

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

    return _cache(
        cache_dir,
        {
            "what": "pool",
            "items": [r for r, _ in items],
            "variants": variants,
            "h": height,
            "w": width,
            "seed": POOL_SEED,
            "framings": framing.TRAIN_FRAMINGS,
            "framed_share": framing.FRAMED_SHARE,
            "op_weights": {name: w for name, (w, _) in augment.TRAIN_OPS.items()},
            "v": 5,
        },
        make,
    )


def outlier_pool(
    raw: Path, items, n: int, seed: int, height: int, width: int, cache_dir: Path | None, reader: str = "rgb"
) -> dict:
    """n synthetic outliers (augment.outlier_set); jigsaw/blend built from `items` (the training classes)."""

    def make():
        inl = source_images(raw, items)
        px, kinds = augment.outlier_set(n, seed, height, width, inl, reader=reader)
        return {"px": px, "kinds": np.array(kinds)}

    return _cache(
        cache_dir,
        {
            "what": "outliers",
            "items": [r for r, _ in items],
            "n": n,
            "seed": seed,
            "h": height,
            "w": width,
            # the jigsaw and blend outliers are made of training variants (augment.random_augment): what changes
            # those changes the outliers, and a cache keyed without it would train on stale ones
            "framings": framing.TRAIN_FRAMINGS,
            "framed_share": framing.FRAMED_SHARE,
            "op_weights": {name: w for name, (w, _) in augment.TRAIN_OPS.items()},
            "v": 5,
            **({"reader": reader} if reader != "rgb" else {}),
        },
        make,
    )


def clean_pixels(raw: Path, items, height: int, width: int, mode: str = SERVED_RESIZE_MODE) -> np.ndarray:
    return np.stack([load_model_pixels(raw / rel, height, width, mode) for rel, _ in items])


def suite_pixels(raw: Path, items, height: int, width: int, cache_dir: Path | None, reader: str = "rgb") -> dict:
    """The fixed corruption suite on `items`: {"name/severity": HWC uint8 [N,h,w,3]}, each corrupted picture
    re-encoded as JPEG q92 and decoded through the model path. Seed per image, corruption and severity."""

    def make():
        ims = source_images(raw, items)
        out = {}
        for ci, (name, (_, values, _)) in enumerate(augment.SUITE.items()):
            for s in range(len(values)):
                out[f"{name}/{s}"] = np.stack(
                    [
                        augment.model_pixels(
                            augment.corrupt(im, name, s, seed=hash_seed(SUITE_SEED, i, ci, s)),
                            height,
                            width,
                            reader=reader,
                        )
                        for i, im in enumerate(ims)
                    ]
                )
        return out

    return _cache(
        cache_dir,
        {
            "what": "suite",
            "items": [r for r, _ in items],
            "h": height,
            "w": width,
            "seed": SUITE_SEED,
            "suite": {k: v[1] for k, v in augment.SUITE.items()},
            "v": 3,
            **({"reader": reader} if reader != "rgb" else {}),
        },
        make,
    )


def hash_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(",".join(map(str, parts)).encode()).digest()[:8], "little")
