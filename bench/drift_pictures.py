"""The picture sets of the drift benchmark (bench/drift.sh), written as files into OUT/<set>/:

    clean      the 150 validation pictures the drift reference leaves out (model/celestial/drift_reference.py:
               odd positions of each class in validation-split.txt), as the dataset has them
    grayscale  the same pictures in grayscale (luma back to three channels), JPEG quality 95
    dimmed     the same pictures with every pixel value halved (exposure x0.5), JPEG quality 95
    unseen     150 bodies that are none of the ten: spheres with random smooth-noise or banded surfaces
               (model/celestial/augment.py's synthetic outliers of those two kinds, seed 2718), JPEG quality 95

A single-body stream is the clean pictures of one class (the file names say it). Needs numpy and pillow.

    python bench/drift_pictures.py OUT [--dataset D]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model"))

from celestial import augment  # noqa: E402
from celestial.data import dataset_root  # noqa: E402
from celestial.drift_reference import halves  # noqa: E402
from PIL import Image  # noqa: E402

UNSEEN_SEED = 2718
QUALITY = 95


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    default = os.environ.get("CELESTIAL_DATASET", str(ROOT.parent / "shared" / "dataset"))
    ap.add_argument("--dataset", type=Path, default=Path(default))
    args = ap.parse_args(argv)
    raw = dataset_root(args.dataset)
    paths = (ROOT / "model" / "validation-split.txt").read_text().split()
    _, held_out = halves(paths)
    sets = {name: args.out / name for name in ("clean", "grayscale", "dimmed", "unseen")}
    for d in sets.values():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for rel in held_out:
        name = rel.replace("/", "_")
        shutil.copy(raw / rel, sets["clean"] / name)
        with Image.open(raw / rel) as im:
            im = im.convert("RGB")
            augment.grayscale(im).save(sets["grayscale"] / name, quality=QUALITY)
            augment.brightness(im, 0.5).save(sets["dimmed"] / name, quality=QUALITY)
    rng = np.random.default_rng(UNSEEN_SEED)
    for i in range(len(held_out)):
        kind = ("textured_sphere", "banded_sphere")[i % 2]
        augment.synthetic_outlier(rng, kind).save(sets["unseen"] / f"{kind}_{i:03d}.jpg", quality=QUALITY)
    print(f"{args.out}: " + ", ".join(f"{k} {len(list(d.iterdir()))}" for k, d in sets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
