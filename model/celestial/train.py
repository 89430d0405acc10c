"""Train, export and check the celestial-bodies classifier (and the guide-recipe baseline).

Run through `model/train.sh` (creates the pinned venv first). Outputs, all under --out (default model/):
  celestial-bodies.onnx        the served model, metadata_props describe its I/O and preprocessing
  testdata/guide-recipe.onnx   the guide's architecture/hyper-parameters, guide I/O contract, no metadata
  validation-split.txt         the stratified validation split (dataset-relative paths)
  golden.json                  golden fixtures for the server's preprocessing/inference tests
  metrics.json                 every number the model card quotes
  plots/*.png                  training curves and confusion matrices
Everything is written to <out>/.staging first and moved into place at the end; the pipeline exits
non-zero, leaving the previous artifacts untouched, when the ONNX Runtime/Keras parity check fails or
the validation top-1 is below --min-accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import baseline, drift_reference, golden, golden_set, report, served  # noqa: E402
from .config import ARCHS, MODEL_FILE, MODEL_NAME, Run, Served  # noqa: E402
from .data import dataset_root, served_preprocessing, split_dataset  # noqa: E402
from .fit import determinism  # noqa: E402
from .log import log  # noqa: E402
from .metadata import add_key  # noqa: E402
from .outcomes import Outcomes, evaluate_outcomes, latency, metrics  # noqa: E402


def parse_args(argv=None) -> Run:
    repo = Path(__file__).resolve().parents[2]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", repo.parent / "shared" / "dataset"))
    d = Served()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--dataset",
        type=Path,
        default=default_ds,
        help="dataset root containing raw/<Class>/*.jpg (env CELESTIAL_DATASET; default ../shared/dataset)",
    )
    ap.add_argument("--out", type=Path, default=repo / "model", help="where artifacts are written (default model/)")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="epochs for the served model")
    ap.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="training seed of the served model (initialisation, batch order, augmentation)",
    )
    ap.add_argument("--arch", choices=sorted(ARCHS), default=d.arch, help="served model architecture")
    ap.add_argument("--split-seed", type=int, default=Run.split_seed, help="seed of the stratified validation split")
    ap.add_argument(
        "--min-accuracy",
        type=float,
        default=Run.min_accuracy,
        help="refuse to replace the artifacts when validation top-1 is below this (default 0.996: one of 300 wrong)",
    )
    ap.add_argument(
        "--latency-iterations", type=int, default=Run.latency_iterations, help="timed ONNX Runtime runs (batch 1)"
    )
    args = ap.parse_args(argv)
    return Run(
        raw=dataset_root(args.dataset),
        out=args.out,
        served=dataclasses.replace(d, epochs=args.epochs, seed=args.seed, arch=args.arch),
        split_seed=args.split_seed,
        min_accuracy=args.min_accuracy,
        latency_iterations=args.latency_iterations,
    )


def fresh_staging(run: Run) -> Path:
    """Everything is written to a staging folder first and moved into place at the very end, so that a
    failed run (e.g. the parity check) leaves the previous artifacts untouched and readers never see
    a new model next to old golden fixtures."""
    out = run.staging
    shutil.rmtree(out, ignore_errors=True)
    (out / "plots").mkdir(parents=True)
    (out / "testdata").mkdir(parents=True)
    return out


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def write_plots(o: Outcomes, out: Path) -> None:
    p, ev, gev = out / "plots", o.exported.evaluation, o.guide.evaluation
    report.plot_curves({"served model": o.trained.history}, p / "training-curves.png")
    report.plot_curves({"guide recipe": o.guide.history}, p / "guide-recipe-training-curves.png")
    report.plot_confusion(
        ev["confusion"],
        o.classes,
        f"{MODEL_NAME}: validation confusion ({ev['accuracy']:.2%})",
        p / "confusion-matrix.png",
    )
    report.plot_confusion(
        gev["confusion"],
        o.classes,
        f"guide recipe: validation confusion ({gev['accuracy']:.2%})",
        p / "guide-recipe-confusion-matrix.png",
    )
    report.plot_robustness(o.robustness["served"], ev["accuracy"], p / "robustness.png", o.robustness.get("previous"))
    report.plot_reliability(o.ood["calibration"]["reliability"], p / "reliability.png")


def move_into_place(run: Run, out: Path) -> list[Path]:
    staged = sorted(p for p in out.rglob("*") if p.is_file())
    for p in staged:
        dest = run.out / p.relative_to(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
    shutil.rmtree(out)
    log(f"wrote {len(staged)} files to {run.out}: " + ", ".join(str(p.relative_to(out)) for p in staged))
    return staged


def main(argv=None) -> int:
    run = parse_args(argv)
    if not run.raw.is_dir():
        print(f"dataset not found at {run.raw} (set --dataset or CELESTIAL_DATASET)", file=sys.stderr)
        return 2
    out, t_start = fresh_staging(run), time.time()
    determinism()
    classes, split = split_dataset(run.raw, run.split_seed)
    (out / "validation-split.txt").write_text("".join(f"{rel}\n" for rel, _ in split.val))
    log(f"{len(classes)} classes, {len(split.train)} train / {len(split.val)} validation images from {run.raw}")
    guide = baseline.run_guide(run, split, classes, out)
    pre = served_preprocessing(run.served)
    trained = served.train(run, split, pre, classes)
    exported = served.export(run, trained, split, pre, classes, out)
    o = evaluate_outcomes(run, split, classes, pre, guide, trained, exported, out)
    served.check_self_description(exported, run.graph_ood)
    golden_doc = golden.served_golden(
        exported.path, pre, exported.cal, classes, split.val, trained.px_va, exported.val_out, run.raw
    )
    # The model carries the golden set the server checks itself with at start (metadata only: the logits above
    # stay the model's); golden.json, metrics.json and the card name the file with it.
    exported.metadata = golden_set.add(exported.path, golden_doc)
    # ... and the drift reference the server's drift monitor compares live answers with (after the golden set,
    # as tools/add_drift_reference.py writes it into an exported model).
    reference = drift_reference.compute(exported.path, run.raw, [rel for rel, _ in split.val])
    exported.metadata = add_key(exported.path, drift_reference.DRIFT_KEY, drift_reference.encode(reference))
    golden_doc["model_sha256"] = golden.sha256_file(exported.path)
    served.check_self_description(exported, run.graph_ood)
    write_json(out / "golden.json", golden_doc)
    write_json(
        out / "testdata" / "guide-recipe-golden.json",
        golden.guide_golden(guide.path, guide.pre, classes, split.val, guide.px_va, guide.logits),
    )
    write_plots(o, out)
    m = metrics(run, o, latency(run, o), pre, time.time() - t_start)
    write_json(out / "metrics.json", m)
    report.update_card(run.out, out, m)
    ev = exported.evaluation
    if ev["accuracy"] < run.min_accuracy:
        raise SystemExit(
            f"validation top-1 {ev['accuracy']:.4f} is below --min-accuracy {run.min_accuracy}: "
            f"the artifacts in {run.out} are unchanged; this run's are in {out}"
        )
    move_into_place(run, out)
    log(
        f"done in {m['pipeline_seconds']} s: {MODEL_FILE} {m['model']['bytes']} bytes, "
        f"val top-1 {ev['accuracy']:.4f}, baseline {guide.evaluation['accuracy']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
