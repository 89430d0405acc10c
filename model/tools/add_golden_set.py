"""Add the golden set (`celestial.golden`, celestial/golden_set.py) to an exported model without retraining.

    python model/tools/add_golden_set.py [DIR]     (DIR: model/ (default) or an output folder of train.sh --out)

Metadata only: reads DIR/golden.json, which must name DIR/celestial-bodies.onnx by its sha256 (the file as the run
exported it, or as this tool already wrote it: running it again changes nothing), writes the golden set built from
it into the model's metadata_props (the graph and weights stay byte for byte as they were: checked), then updates
what names the file by its hash and size: golden.json's `model_sha256`, metrics.json's `model.sha256` and
`model.bytes`, and the model card's results section (DIR/README.md, rendered from metrics.json). Needs numpy, pillow
and onnx only: `$(scripts/python-tools.sh)/bin/python model/tools/add_golden_set.py` (or model/.venv/bin/python).
A run of model/train.sh writes the same key at export, so this is only for a model exported before it did.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MODEL_DIR))

from celestial import card, golden_set  # noqa: E402
from celestial.config import MODEL_FILE  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, doc: dict) -> None:
    """As train.py writes its JSON files, so that only the changed values show in a diff."""
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, nargs="?", default=MODEL_DIR, help="the artifacts' folder (default model/)")
    args = ap.parse_args(argv)
    model, golden_path = args.dir / MODEL_FILE, args.dir / "golden.json"
    golden = json.loads(golden_path.read_text())
    before = sha256(model)
    if golden.get("model_sha256") != before:
        print(
            f"{golden_path} names a model with sha256 {golden.get('model_sha256')}, not {model} ({before}): "
            "its logits may not be this model's",
            file=sys.stderr,
        )
        return 1
    meta = golden_set.add(model, golden)
    after = sha256(model)
    images = len(golden_set.decode(meta[golden_set.GOLDEN_KEY])["images"])
    golden["model_sha256"] = after
    write_json(golden_path, golden)
    metrics_path = args.dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics["model"].update(sha256=after, bytes=model.stat().st_size)
        write_json(metrics_path, metrics)
        if (args.dir / "README.md").exists():
            card.update(args.dir / "README.md", metrics)
    print(
        f"{model}: {golden_set.GOLDEN_KEY} with {images} images; sha256 {before} -> {after} "
        f"({model.stat().st_size} bytes); golden.json{' and metrics.json' if metrics_path.exists() else ''} updated"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
