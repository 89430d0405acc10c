"""Leave-one-class-out (LOCO) evaluation of the out-of-distribution scores, and the shared experiment.

`model/loco.sh` (python -m celestial.loco) trains the served model's recipe ten times, each time on nine
of the ten classes (training split only, with that run's synthetic outliers built from those nine
classes), and measures how well every OOD score (the network's, the colour distances of colour.ColourKnn
fitted on the nine classes' clean training pictures and of colour.ClassColourKnn fitted on their augmented
pool, and their combinations with the maximum softmax probability) flags the tenth class (all its 150
images, none seen in training) against the nine classes' clean validation images: AUROC, and the share of the
tenth class flagged at the threshold that flags 1 % of the in-distribution validation images. Results go to
model/loco.json (read by the model card and by the choice of the served score, config.Run.ood_score).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import augment, pools, robust
from .colour import CHROMATICITY, ColourKnn, pool_colour_check
from .config import SPLIT_SEED, Served
from .loco_scores import FALSE_FLAGS, colour_measures, evaluate_scores, served_curve, served_flags, summarise
from .preprocess import Preprocessing


def log(msg: str) -> None:
    print(f"[loco {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


@dataclass
class LocoData:
    """What every left-out run shares: the split, the augmented pool, the validation pictures and the suite."""

    raw: Path
    train_items: list
    val_items: list
    pre: Preprocessing
    cache: Path
    hp: Served
    pool: dict
    val_px: np.ndarray
    y_val: np.ndarray
    suite: dict


def load_data(raw: Path, train_items, val_items, pre: Preprocessing, cache: Path, hp: Served) -> LocoData:
    h, w = pre.height, pre.width
    pool = pools.training_pool(raw, train_items, hp.variants, h, w, cache)
    val_px = pools.clean_pixels(raw, val_items, h, w)
    y_val = np.array([y for _, y in val_items])
    suite = pools.suite_pixels(raw, val_items, h, w, cache)
    return LocoData(raw, train_items, val_items, pre, cache, hp, pool, val_px, y_val, suite)


def train_nine(d: LocoData, c: int, n_classes: int):
    """The served recipe trained without class c (labels renumbered): (model, pool pictures and labels used,
    which of them are each image's first variant, the nine classes' training items, the renumbering)."""
    from .fit import train_served

    keep = [k for k in range(n_classes) if k != c]
    remap = {k: i for i, k in enumerate(keep)}
    m = d.pool["y"] != c
    px_in, y_in = d.pool["px"][m], np.array([remap[v] for v in d.pool["y"][m]])
    first = (np.arange(len(d.pool["y"])) % d.hp.variants == 0)[m]  # pool is ordered image by image
    tr9 = [it for it in d.train_items if it[1] != c]
    h, w = d.pre.height, d.pre.width
    outl = pools.outlier_pool(d.raw, tr9, d.hp.outliers, pools.OUTLIER_TRAIN_SEED, h, w, d.cache)
    model, _ = train_served(d.hp, px_in, y_in, outl["px"], len(keep), d.pre)
    return model, px_in, y_in, first, tr9, remap


def leave_out(d: LocoData, c: int, n_classes: int) -> tuple[dict, dict]:
    """One run without class c: its result entry and the arrays `--dump` saves."""
    from .networks import features_logits

    t0 = time.time()
    model, px_in, y_in, first, tr9, remap = train_nine(d, c, n_classes)
    h, w = d.pre.height, d.pre.width
    fit_f, _ = features_logits(model, px_in, d.pre)
    stats = robust.FeatureStats(fit_f, y_in, n_classes - 1, bank_size=d.hp.bank, seed=1, bank_idx=np.where(first)[0])
    vm = d.y_val != c
    id_fl = features_logits(model, d.val_px[vm], d.pre)
    held = [it for it in d.train_items + d.val_items if it[1] == c]
    held_px = pools.clean_pixels(d.raw, held, h, w)
    acc9 = float((id_fl[1].argmax(1) == np.array([remap[v] for v in d.y_val[vm]])).mean())
    tr9_px = pools.clean_pixels(d.raw, tr9, h, w)
    colour = {
        "colour_knn": ColourKnn(tr9_px),
        "chroma_knn": ColourKnn(tr9_px, features=CHROMATICITY),
        "class_colour_pool": pool_colour_check(px_in, y_in),
    }
    held_fl = features_logits(model, held_px, d.pre)
    res = evaluate_scores(stats, id_fl, {"held_out": held_fl}, colour, d.val_px[vm], {"held_out": held_px})
    suite_fl = {k: features_logits(model, d.suite[f"{k}/{augment.middle(k)}"][vm], d.pre) for k in augment.SUITE}
    entry = {
        "accuracy_9": round(acc9, 4),
        "held_out_images": len(held),
        "scores": res["held_out"],
        **served_entries(d, vm, id_fl[1], suite_fl, held_fl[1], held_px, colour["class_colour_pool"]),
        "seconds": round(time.time() - t0, 1),
    }
    arrays = {
        "val_logits": id_fl[1],
        "held_logits": held_fl[1],
        "val_features": id_fl[0],
        "held_features": held_fl[0],
        "val_mask": vm,
        "held_index": np.array([i for i, it in enumerate(d.train_items + d.val_items) if it[1] == c]),
    }
    for k, (sf, sl) in suite_fl.items():
        arrays[f"suite_logits/{k}"], arrays[f"suite_features/{k}"] = sl, sf
    return entry, arrays


def served_entries(d: LocoData, vm, id_logits, suite_fl: dict, held_logits, held_px, check) -> dict:
    """The left-out class flagged by the served checks (msp and the colour check `check`) at the served
    calibration, and its curve over false-flag rates."""
    args = (id_logits, d.val_px[vm], suite_fl, d.suite, vm, held_logits, held_px, check)
    return {"served_calibration": served_flags(*args), "served_curve": served_curve(*args)}


def rescore(d: LocoData, c: int, dump: Path, entry: dict) -> dict:
    """`entry` (class c's result) with every measure of the colour check recomputed from the run's saved
    logits (`--dump`) and the current colour.pool_colour_check: the network is the same, only the check moved."""
    a = np.load(dump)
    vm = a["val_mask"]
    keep = d.pool["y"] != c
    y_in = np.unique(d.pool["y"][keep], return_inverse=True)[1]  # labels renumbered as train_nine does
    check = pool_colour_check(d.pool["px"][keep], y_in)
    everything = d.train_items + d.val_items
    held_px = pools.clean_pixels(d.raw, [everything[i] for i in a["held_index"]], d.pre.height, d.pre.width)
    suite_fl = {k: (None, a[f"suite_logits/{k}"]) for k in augment.SUITE}
    entry = dict(entry)
    entry["scores"] = {
        **entry["scores"],
        **colour_measures(a["val_logits"], d.val_px[vm], a["held_logits"], held_px, {"class_colour_pool": check}),
    }
    entry.update(served_entries(d, vm, a["val_logits"], suite_fl, a["held_logits"], held_px, check))
    return entry


def run_loco(
    raw: Path,
    classes,
    train_items,
    val_items,
    pre: Preprocessing,
    cache: Path,
    hp: Served,
    only: list[str] | None = None,
    partial: Path | None = None,
    dump: Path | None = None,
) -> dict:
    d = load_data(raw, train_items, val_items, pre, cache, hp)
    results = {}
    for c, cname in enumerate(classes):
        if only and cname not in only:
            continue
        entry, arrays = leave_out(d, c, len(classes))
        if dump is not None:  # the raw logits, for scores studied after the run (no retraining)
            dump.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(dump / f"{cname}.npz", **arrays)
        results[cname] = entry
        log(
            f"left out {cname}: 9-class val top-1 {entry['accuracy_9']:.4f}; "
            + ", ".join(f"{k} {v['auroc']:.4f}/{v['flag_rate_at_1pct']:.2f}" for k, v in entry["scores"].items())
        )
        if partial is not None:  # progress survives an interrupted run
            partial.write_text(json.dumps({"per_class": results, "summary": summarise(results)}, indent=1) + "\n")
    return {"per_class": results, "summary": summarise(results)}


def rescore_file(out: Path, dump: Path, d: LocoData, classes: list[str]) -> int:
    """`out` (a loco.json) with every class that has a dump in `dump` rescored (`rescore`), and its summary."""
    res = json.loads(out.read_text())
    for name, entry in res["per_class"].items():
        if (dump / f"{name}.npz").exists():
            res["per_class"][name] = rescore(d, classes.index(name), dump / f"{name}.npz", entry)
            log(f"rescored {name}: served {res['per_class'][name]['served_calibration']}")
    res["summary"] = summarise(res["per_class"])
    res["rescored_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    from .data import dataset_root, served_preprocessing, split_dataset
    from .fit import determinism

    repo = Path(__file__).resolve().parents[2]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", repo.parent / "shared" / "dataset"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=default_ds)
    ap.add_argument("--out", type=Path, default=repo / "model" / "loco.json")
    ap.add_argument("--only", nargs="*", help="left-out classes to run (default all ten)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument(
        "--dump",
        type=Path,
        default=None,
        help="also save each run's logits and pooled features (validation, left-out class, the corruption suite at its "
        "middle severity) to DIR/<class>.npz",
    )
    ap.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="no training: recompute the colour check's measures in --out from the logits a --dump run saved in DIR",
    )
    args = ap.parse_args(argv)
    raw = dataset_root(args.dataset)
    determinism()
    hp = Served(epochs=args.epochs) if args.epochs else Served()
    classes, split = split_dataset(raw, SPLIT_SEED)
    train_items, val_items = split.train, split.val
    pre = served_preprocessing(hp)
    if args.rescore is not None:
        return rescore_file(
            args.out, args.rescore, load_data(raw, train_items, val_items, pre, repo / "model" / ".cache", hp), classes
        )
    t0 = time.time()
    res = run_loco(
        raw,
        classes,
        train_items,
        val_items,
        pre,
        repo / "model" / ".cache",
        hp,
        args.only,
        partial=args.out.with_suffix(".partial.json"),
        dump=args.dump,
    )
    res.update(
        {
            "hyper_parameters": hp.as_dict(),
            "false_flags": FALSE_FLAGS,
            "seconds": round(time.time() - t0, 1),
            "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "protocol": "train on the 9 other classes' training split (+ synthetic outliers from them); "
            "in-distribution: those 9 classes' clean validation images; out: all 150 images of "
            "the left-out class; flag = score > threshold at 1 % false flags",
        }
    )
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    for k, v in res["summary"].items():
        log(
            f"{k}: mean AUROC {v['mean_auroc']:.4f}, min {v['min_auroc']:.4f}, "
            f"flag rate at 1 % false flags {v['mean_flag_rate_at_1pct']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
