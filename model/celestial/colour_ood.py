"""What a colour-distance OOD score would cost the served model: false flags on recoloured photographs.

`python -m celestial.colour_ood` (from model/, or model/colour_ood.sh) takes the committed model, fits the
colour-distance scores of colour.ColourKnn on the clean training split (all ten classes) or on its augmented
pool (`*_pool`: recoloured, darker, noisier variants of the training pictures as known; `class_colour_pool`:
colour.ClassColourKnn, only the pool pictures of the predicted class), measures each alone
left-one-class-out (the bank without the class: no training needed), and combines each with
the maximum softmax probability exactly as the leave-one-class-out run does (robust.combined_max, calibrated on
the clean validation images, cross-fitted). Threshold: 1 % false flags on the clean validation images. It then
measures the share flagged of every corruption of the fixed suite at its middle severity (pictures of known
bodies that should stay known) and of the synthetic outliers (which should be flagged), for the served score
(msp) and the combinations; then, for msp and its combination with the class-conditional distance, the same with
the threshold calibrated as the served one is (1 % false flags over the clean and the middle-severity corrupted
validation images together). Results: model/colour_ood.json. The served check is msp with the class-conditional
distance (ood.calibrate); the other combinations are measured here for comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import augment, pools, robust
from .checks import session
from .colour import CHROMATICITY, ClassColourKnn, ColourKnn, pool_colour_check
from .config import OOD_EVAL_OUTLIERS, SPLIT_SEED, Served
from .data import dataset_root, served_preprocessing, split_dataset
from .loco_scores import FALSE_FLAGS, colour_score
from .preprocess import to_tensor


class Scorer:
    """The committed model's logits and maximum softmax probability score, and a colour score on its predictions."""

    def __init__(self, model: Path, pre) -> None:
        self.sess, self.pre = session(model), pre

    def logits(self, px: np.ndarray) -> np.ndarray:
        x = to_tensor(px, self.pre)
        return np.concatenate([self.sess.run(["logits"], {"input": x[i : i + 100]})[0] for i in range(0, len(x), 100)])

    def msp(self, px: np.ndarray) -> np.ndarray:
        return -robust.softmax(self.logits(px).astype(np.float64)).max(1)

    def colour(self, c, px: np.ndarray) -> np.ndarray:
        return colour_score(c, px, self.logits(px))


def colour_checks(train_px: np.ndarray, pool: dict) -> dict:
    """The colour distances compared: to the clean training pictures or the augmented pool, all ten statistics
    or the chromaticities only, and the served class-conditional one."""
    return {
        "colour_knn": ColourKnn(train_px),
        "chroma_knn": ColourKnn(train_px, features=CHROMATICITY),
        "colour_knn_pool": ColourKnn(pool["px"]),
        "chroma_knn_pool": ColourKnn(pool["px"], features=CHROMATICITY),
        "class_colour_pool": pool_colour_check(pool["px"], pool["y"]),
    }


def colour_alone_loco(colour: dict, banks: dict, classes, train: tuple, val: tuple) -> dict:
    """Each colour distance alone, left-one-class-out (no training needed: the bank without the class).
    `banks`: {"clean"/"pool": (pictures, labels)}; `train`, `val`: (pictures, labels)."""
    out = {}
    for k, c in colour.items():
        if isinstance(c, ClassColourKnn):
            continue  # needs a nine-class network's predictions: model/loco.json has it
        bank_px, bank_y = banks["pool" if k.endswith("_pool") else "clean"]
        aucs = {}
        for ci, cname in enumerate(classes):
            ck = ColourKnn(bank_px[bank_y != ci], features=c.features)
            held = np.concatenate([train[0][train[1] == ci], val[0][val[1] == ci]])
            aucs[cname] = round(robust.auroc(ck.score(val[0][val[1] != ci]), ck.score(held)), 4)
        out[k] = {"per_class_auroc": aucs, "mean_auroc": round(float(np.mean(list(aucs.values()))), 4)}
        print(f"{k} alone, leave-one-class-out AUROC: {aucs}, mean {out[k]['mean_auroc']}", flush=True)
    return out


def flags_clean_calibration(s: Scorer, colour: dict, val_px: np.ndarray, sets: dict) -> dict:
    """Per score (msp and msp with each colour distance), the share flagged of each set at 1 % false flags on the
    clean validation images."""
    id_msp = s.msp(val_px)
    result = {}
    for score in ["msp", *(f"msp_{k}" for k in colour)]:
        flagged = {}
        for name, px in sets.items():
            o_msp = s.msp(px)
            if score == "msp":
                ids, os_ = id_msp, o_msp
            else:
                c = colour[score[4:]]
                # the corrupted pictures are the validation pictures in the same order: each is calibrated on
                # the half that does not hold its original, like the clean one
                ids, os_ = robust.combined_max([id_msp, s.colour(c, val_px)], [o_msp, s.colour(c, px)])
            flagged[name] = round(robust.flag_rate(os_, robust.threshold_at(ids, FALSE_FLAGS)), 4)
        result[score] = flagged
        print(f"{score}: " + ", ".join(f"{k} {v:.3f}" for k, v in flagged.items()), flush=True)
    return result


def flags_served_calibration(s: Scorer, c: ClassColourKnn, ref_sets: dict, outliers: np.ndarray) -> dict:
    """As the served threshold is calibrated: 1 % false flags over the clean validation images and every
    corruption at its middle severity together (cross-fitted halves by image), flags per set."""
    n = len(ref_sets["clean"])
    ref_msp = np.concatenate([s.msp(px) for px in ref_sets.values()])
    out_msp = s.msp(outliers)
    served = {}
    for score in ["msp", "msp_class_colour_pool"]:
        if score == "msp":
            ids, os_ = ref_msp, out_msp
        else:
            ids, os_ = robust.combined_max(
                [ref_msp, np.concatenate([s.colour(c, px) for px in ref_sets.values()])],
                [out_msp, s.colour(c, outliers)],
            )
        t = robust.threshold_at(ids, FALSE_FLAGS)
        per = {name: round(robust.flag_rate(ids[i * n : (i + 1) * n], t), 4) for i, name in enumerate(ref_sets)}
        per["synthetic outliers"] = round(robust.flag_rate(os_, t), 4)
        served[score] = per
        print(f"{score} (served calibration): " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()), flush=True)
    return served


PROTOCOL = (
    "served model; colour scores fitted on the clean training split (or its augmented pool, "
    "*_pool); combinations calibrated on "
    "the clean validation images (cross-fitted halves); threshold at 1 % false flags on them; "
    "corruptions of the validation images at their middle severity; "
    "the synthetic outliers of the model card"
)


def main(argv=None) -> int:
    model_dir = Path(__file__).resolve().parents[1]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", model_dir.parent.parent / "shared" / "dataset"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=default_ds)
    ap.add_argument("--out", type=Path, default=model_dir / "colour_ood.json")
    args = ap.parse_args(argv)
    raw, served, cache = dataset_root(args.dataset), Served(), model_dir / ".cache"
    classes, split = split_dataset(raw, SPLIT_SEED)
    pre = served_preprocessing(served)
    h, w = pre.height, pre.width
    train = (pools.clean_pixels(raw, split.train, h, w), split.y_train)
    val = (pools.clean_pixels(raw, split.val, h, w), split.y_val)
    suite = pools.suite_pixels(raw, split.val, h, w, cache)
    outliers = pools.outlier_pool(raw, split.val, OOD_EVAL_OUTLIERS, pools.OUTLIER_EVAL_SEED, h, w, cache)["px"]
    pool = pools.training_pool(raw, split.train, served.variants, h, w, cache)
    sets = {f"{n} (middle)": suite[f"{n}/{augment.middle(n)}"] for n in augment.SUITE}
    # The neighbours: the clean training pictures (what loco.sh measures), or their augmented variants (the
    # training pool: recoloured, darker, noisier pictures of known bodies count as known).
    banks = {"clean": train, "pool": (pool["px"], pool["y"])}
    colour = colour_checks(train[0], pool)
    loco_colour = colour_alone_loco(colour, banks, classes, train, val)
    s = Scorer(model_dir / "celestial-bodies.onnx", pre)
    result = flags_clean_calibration(s, colour, val[0], {**sets, "synthetic outliers": outliers})
    served_flags = flags_served_calibration(s, colour["class_colour_pool"], {"clean": val[0], **sets}, outliers)
    doc = {
        "flagged_at_1pct_false_flags_on_clean_validation": result,
        "flagged_at_1pct_false_flags_on_clean_and_corrupted_validation": served_flags,
        "colour_alone_leave_one_class_out": loco_colour,
        "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "protocol": PROTOCOL,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
