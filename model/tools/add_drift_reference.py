"""Add the drift reference (`celestial.drift`, celestial/drift_reference.py) to an exported model without retraining.

    python model/tools/add_drift_reference.py [DIR] [--dataset D]   (DIR: model/ (default) or a train.sh --out folder)
    python model/tools/add_drift_reference.py [DIR] --from FILE      (write a reference computed before, JSON)

Metadata only, like tools/add_golden_set.py: DIR/golden.json must name DIR/celestial-bodies.onnx by its sha256.
Computes the reference on the validation pictures at even positions of each class (DIR/validation-split.txt order;
the others stay out of it, for measuring false alarms: bench/drift.sh) with ONNX Runtime, from the model's metadata
alone, writes it into the model's metadata_props (the graph and weights stay byte for byte as they were: checked;
the golden set `celestial.golden` is kept as it is), then updates what names the file by its hash and size
(celestial/model_names.py). Needs numpy, pillow, onnx and onnxruntime (model/.venv/bin/python, or any environment
with model/requirements.txt's versions of those four); `--from` needs no ONNX Runtime and no dataset. Running it
again writes the same reference, so the file does not change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MODEL_DIR))

from celestial import drift_reference, model_names  # noqa: E402
from celestial.config import MODEL_FILE  # noqa: E402
from celestial.data import dataset_root  # noqa: E402
from celestial.metadata import add_key, read_metadata  # noqa: E402

DEFAULT_DATASET = Path(os.environ.get("CELESTIAL_DATASET", MODEL_DIR.parent.parent / "shared" / "dataset"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, nargs="?", default=MODEL_DIR, help="the artifacts' folder (default model/)")
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="the dataset (default %(default)s)")
    ap.add_argument("--from", dest="source", type=Path, help="write this reference (JSON) instead of computing one")
    args = ap.parse_args(argv)
    model = args.dir / MODEL_FILE
    before = model_names.sha256(model)
    why = model_names.names_it(args.dir, model)
    if why:
        print(f"{why}: the artifacts do not describe this file", file=sys.stderr)
        return 1
    if args.source:
        reference = drift_reference.decode(args.source.read_text())
    else:
        paths = [line for line in (args.dir / "validation-split.txt").read_text().splitlines() if line]
        reference = drift_reference.compute(model, dataset_root(args.dataset), paths)
    labels = json.loads(read_metadata(model)["celestial.labels"])
    if len(reference["labels"]) != len(labels):
        print(f"the reference has {len(reference['labels'])} labels, the model {len(labels)}", file=sys.stderr)
        return 1
    add_key(model, drift_reference.DRIFT_KEY, drift_reference.encode(reference))
    updated = model_names.rename(args.dir, model)
    print(
        f"{model}: {drift_reference.DRIFT_KEY} from {reference['pictures']} pictures; sha256 {before} -> "
        f"{model_names.sha256(model)} ({model.stat().st_size} bytes); {', '.join(updated)} updated"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
