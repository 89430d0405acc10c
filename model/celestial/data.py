"""The dataset: listing, the fixed stratified split, the served preprocessing and the clean pixels.

Augmentation, the corruption suite and the synthetic outliers are in `augment.py`; the cached pools built
from them in `robust.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import VAL_FRACTION, Served
from .preprocess import SERVED_RESIZE_MODE, Preprocessing, guide_gray8, load_rgb8, resize_rgb8

SCALE = "0.00392156862745098"  # 1/255, as the metadata writes it


def dataset_root(dataset: Path) -> Path:
    """The folder of class folders: DIR/raw when it exists, else DIR itself."""
    return dataset / "raw" if (dataset / "raw").is_dir() else dataset


def list_dataset(raw: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes (alphabetical) and every picture as (dataset-relative path, class index)."""
    classes = sorted(p.name for p in raw.iterdir() if p.is_dir())
    items = []
    for ci, c in enumerate(classes):
        files = sorted(f.name for f in (raw / c).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        items += [(f"{c}/{f}", ci) for f in files]
    return classes, items


def stratified_split(items: list[tuple[str, int]], n_classes: int, seed: int, fraction: float):
    """Per class (alphabetical), files sorted by name, permuted with numpy default_rng(seed) (one
    generator, classes in order); the first round(fraction * n) of each permutation are validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for ci in range(n_classes):
        members = [it for it in items if it[1] == ci]
        perm = rng.permutation(len(members))
        n_val = int(round(fraction * len(members)))
        val += [members[i] for i in perm[:n_val]]
        train += [members[i] for i in perm[n_val:]]
    return sorted(train), sorted(val)


def served_preprocessing(served: Served) -> Preprocessing:
    """The served model's preprocessing: pixels scaled to 0..1, mean 0 and std 1 per channel (the network
    normalises each image's exposure itself, see networks.served_model)."""
    return Preprocessing(
        served.height,
        served.width,
        "rgb",
        "NCHW",
        scale=SCALE,
        mean=("0", "0", "0"),
        std=("1", "1", "1"),
        resize_mode=SERVED_RESIZE_MODE,
    )


def guide_preprocessing(height: int, width: int) -> Preprocessing:
    """The guide recipe's: grayscale, NHWC, pixels scaled to 0..1."""
    return Preprocessing(height, width, "grayscale", "NHWC", scale=SCALE, mean=("0",), std=("1",))


def load_pixels(raw: Path, items, height: int, width: int, grayscale: bool = False) -> np.ndarray:
    """Full-size decode then resize (RGB8, or the guide's luma with `grayscale`): HWC uint8 [N, h, w, c]."""
    out = []
    for rel, _ in items:
        im = load_rgb8(raw / rel)
        out.append(guide_gray8(im, height, width) if grayscale else resize_rgb8(im, height, width))
    return np.stack(out)


def labels(items) -> np.ndarray:
    return np.array([y for _, y in items])


@dataclass(frozen=True)
class Split:
    """The training and validation pictures, (dataset-relative path, class index), sorted by path."""

    train: list
    val: list

    @property
    def y_train(self) -> np.ndarray:
        return labels(self.train)

    @property
    def y_val(self) -> np.ndarray:
        return labels(self.val)


def split_dataset(raw: Path, seed: int) -> tuple[list[str], Split]:
    """The classes and the fixed stratified split (VAL_FRACTION of each class for validation)."""
    classes, items = list_dataset(raw)
    train, val = stratified_split(items, len(classes), seed, VAL_FRACTION)
    return classes, Split(train, val)
