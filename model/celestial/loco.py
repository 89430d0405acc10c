"""Leave-one-class-out (LOCO) evaluation of the out-of-distribution scores, and the shared experiment.

`model/loco.sh` (python -m celestial.loco) trains the served model's recipe ten times, each time on nine
of the ten classes (training split only, with that run's synthetic outliers built from those nine
classes), and measures how well every OOD score (the network's, the colour distances of colour.ColourKnn
fitted on the nine classes' clean training pictures and of colour.ClassColourKnn fitted on their augmented
pool, and their combinations with the maximum softmax probability) flags the tenth class (all its 150
images, none seen in training) against the nine classes' clean validation images: AUROC, and the share of the
tenth class flagged at the threshold that flags 1 % of the in-distribution validation images. Results go to
model/loco.json (read by the model card and by train.py's choice of score).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import augment, pools, robust
from .colour import CHROMATICITY, CLASS_COLOUR_K, CLASS_COLOUR_STRIDE, ClassColourKnn, ColourKnn
from .config import SPLIT_SEED, Served
from .preprocess import Preprocessing

FALSE_FLAGS = 0.01


def log(msg: str) -> None:
    print(f"[loco {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def colour_score(c, px: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """A colour distance: to every known picture (ColourKnn), or to those of the predicted class (ClassColourKnn)."""
    return c.score(px, logits.argmax(1)) if isinstance(c, ClassColourKnn) else c.score(px)


def evaluate_scores(
    stats: robust.FeatureStats,
    id_fl,
    ood_sets: dict,
    colour: dict | None = None,
    id_px=None,
    ood_px: dict | None = None,
) -> dict:
    """AUROC and flag rate at 1 % false flags for every score, per OOD set. With `colour` ({name:
    ColourKnn}, and the pictures), also those colour-distance scores and each one's cross-fitted
    combination with the maximum softmax probability (`msp_<name>`)."""
    id_s = stats.scores(*id_fl)
    for k, c in (colour or {}).items():
        id_s[k] = colour_score(c, id_px, id_fl[1])
    out = {}
    for name, fl in ood_sets.items():
        o_s = stats.scores(*fl)
        ids = dict(id_s)
        for k, c in (colour or {}).items():
            o_s[k] = colour_score(c, ood_px[name], fl[1])
            ids[f"msp_{k}"], o_s[f"msp_{k}"] = robust.combined_max([id_s["msp"], id_s[k]], [o_s["msp"], o_s[k]])
        out[name] = {
            k: {
                "auroc": round(robust.auroc(ids[k], o_s[k]), 5),
                "flag_rate_at_1pct": round(robust.flag_rate(o_s[k], robust.threshold_at(ids[k], FALSE_FLAGS)), 4),
            }
            for k in ids
        }
    return out


def served_flags(id_logits, id_px, suite_fl: dict, suite: dict, vm, held_logits, held_px, colour) -> dict:
    """The left-out class flagged at thresholds calibrated as the served ones are (1 % false flags over the nine
    classes' clean and middle-severity corrupted validation images together; train.py): msp alone, and msp with
    the class-conditional colour distance (robust.joint_thresholds)."""

    def msp(z):
        return -robust.softmax(z.astype(np.float64)).max(1)

    ref_z = [id_logits] + [sl for _, sl in suite_fl.values()]
    ref_px = [id_px] + [suite[f"{k}/{augment.middle(k)}"][vm] for k in suite_fl]
    ref_msp = np.concatenate([msp(z) for z in ref_z])
    ref_col = np.concatenate([colour.score(p, z.argmax(1)) for p, z in zip(ref_px, ref_z)])
    h_msp, h_col = msp(held_logits), colour.score(held_px, held_logits.argmax(1))
    t = robust.threshold_at(ref_msp, FALSE_FLAGS)
    ta, tb = robust.joint_thresholds(ref_msp, ref_col, FALSE_FLAGS)
    return {
        "msp": round(float((h_msp > t).mean()), 4),
        "msp_class_colour_pool": round(float(((h_msp > ta) | (h_col > tb)).mean()), 4),
    }


def summarise(results: dict) -> dict:
    kinds = list(next(iter(results.values()))["scores"])
    out = {
        k: {
            "mean_auroc": round(float(np.mean([r["scores"][k]["auroc"] for r in results.values()])), 5),
            "min_auroc": round(float(np.min([r["scores"][k]["auroc"] for r in results.values()])), 5),
            "mean_flag_rate_at_1pct": round(
                float(np.mean([r["scores"][k]["flag_rate_at_1pct"] for r in results.values()])), 4
            ),
        }
        for k in kinds
    }
    for k in next(iter(results.values())).get("served_calibration", {}):
        out[k]["mean_flag_rate_served_calibration"] = round(
            float(np.mean([r["served_calibration"][k] for r in results.values()])), 4
        )
    return out


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
    from .fit import train_served
    from .networks import features_logits

    h, w = pre.height, pre.width
    pool = pools.training_pool(raw, train_items, hp.variants, h, w, cache)
    val_px = pools.clean_pixels(raw, val_items, h, w)
    y_val = np.array([y for _, y in val_items])
    suite = pools.suite_pixels(raw, val_items, h, w, cache)
    results = {}
    for c, cname in enumerate(classes):
        if only and cname not in only:
            continue
        t0 = time.time()
        keep = [k for k in range(len(classes)) if k != c]
        remap = {k: i for i, k in enumerate(keep)}
        m = pool["y"] != c
        px_in, y_in = pool["px"][m], np.array([remap[v] for v in pool["y"][m]])
        first = (np.arange(len(pool["y"])) % hp.variants == 0)[m]  # pool is ordered image by image
        tr9 = [it for it in train_items if it[1] != c]
        outl = pools.outlier_pool(raw, tr9, hp.outliers, pools.OUTLIER_TRAIN_SEED, h, w, cache)
        model, _ = train_served(hp, px_in, y_in, outl["px"], len(keep), pre)
        fit_f, fit_l = features_logits(model, px_in, pre)
        stats = robust.FeatureStats(fit_f, y_in, len(keep), bank_size=hp.bank, seed=1, bank_idx=np.where(first)[0])
        vm = y_val != c
        id_fl = features_logits(model, val_px[vm], pre)
        held = [it for it in train_items + val_items if it[1] == c]
        held_px = pools.clean_pixels(raw, held, h, w)
        acc9 = float((id_fl[1].argmax(1) == np.array([remap[v] for v in y_val[vm]])).mean())
        tr9_px = pools.clean_pixels(raw, tr9, h, w)
        st = CLASS_COLOUR_STRIDE
        colour = {
            "colour_knn": ColourKnn(tr9_px),
            "chroma_knn": ColourKnn(tr9_px, features=CHROMATICITY),
            "class_colour_pool": ClassColourKnn(px_in[::st], y_in[::st], k=CLASS_COLOUR_K),
        }
        held_fl = features_logits(model, held_px, pre)
        res = evaluate_scores(stats, id_fl, {"held_out": held_fl}, colour, val_px[vm], {"held_out": held_px})[
            "held_out"
        ]
        suite_fl = {k: features_logits(model, suite[f"{k}/{augment.middle(k)}"][vm], pre) for k in augment.SUITE}
        served = served_flags(
            id_fl[1], val_px[vm], suite_fl, suite, vm, held_fl[1], held_px, colour["class_colour_pool"]
        )
        if dump is not None:  # the raw logits, for scores studied after the run (no retraining)
            arrays = {
                "val_logits": id_fl[1],
                "held_logits": held_fl[1],
                "val_features": id_fl[0],
                "held_features": held_fl[0],
                "val_mask": vm,
                "held_index": np.array([i for i, it in enumerate(train_items + val_items) if it[1] == c]),
            }
            for k, (sf, sl) in suite_fl.items():
                arrays[f"suite_logits/{k}"], arrays[f"suite_features/{k}"] = sl, sf
            dump.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(dump / f"{cname}.npz", **arrays)
        results[cname] = {
            "accuracy_9": round(acc9, 4),
            "held_out_images": len(held),
            "scores": res,
            "served_calibration": served,
            "seconds": round(time.time() - t0, 1),
        }
        log(
            f"left out {cname}: 9-class val top-1 {acc9:.4f}; "
            + ", ".join(f"{k} {v['auroc']:.4f}/{v['flag_rate_at_1pct']:.2f}" for k, v in res.items())
        )
        if partial is not None:  # progress survives an interrupted run
            partial.write_text(json.dumps({"per_class": results, "summary": summarise(results)}, indent=1) + "\n")
    return {"per_class": results, "summary": summarise(results)}


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
    args = ap.parse_args(argv)
    raw = dataset_root(args.dataset)
    determinism()
    hp = Served(epochs=args.epochs) if args.epochs else Served()
    classes, split = split_dataset(raw, SPLIT_SEED)
    train_items, val_items = split.train, split.val
    pre = served_preprocessing(hp)
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
