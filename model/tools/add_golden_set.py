"""Add the golden set (`celestial.golden`, celestial/golden_set.py) to an exported model without retraining.

    python model/tools/add_golden_set.py [DIR]     (DIR: model/ (default) or an output folder of train.sh --out)

Metadata only: reads DIR/golden.json, which must name DIR/celestial-bodies.onnx by its sha256 (the file as the run
exported it, or as this tool already wrote it: running it again changes nothing), writes the golden set built from
it into the model's metadata_props (the graph and weights stay byte for byte as they were: checked), then updates
what names the file by its hash and size (celestial/model_names.py): golden.json's `model_sha256`, metrics.json's
`model.sha256` and `model.bytes`, and the model card's results section (DIR/README.md, rendered from metrics.json).
Needs numpy, pillow and onnx only: `$(scripts/python-tools.sh)/bin/python model/tools/add_golden_set.py` (or
model/.venv/bin/python). A run of model/train.sh writes the same key at export, so this is only for a model exported
before it did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MODEL_DIR))

from celestial import golden_set, model_names  # noqa: E402
from celestial.config import MODEL_FILE  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path, nargs="?", default=MODEL_DIR, help="the artifacts' folder (default model/)")
    args = ap.parse_args(argv)
    model = args.dir / MODEL_FILE
    before = model_names.sha256(model)
    why = model_names.names_it(args.dir, model)
    if why:
        print(f"{why}: its logits may not be this model's", file=sys.stderr)
        return 1
    golden = json.loads((args.dir / "golden.json").read_text())
    meta = golden_set.add(model, golden)
    images = len(golden_set.decode(meta[golden_set.GOLDEN_KEY])["images"])
    updated = model_names.rename(args.dir, model)
    print(
        f"{model}: {golden_set.GOLDEN_KEY} with {images} images; sha256 {before} -> {model_names.sha256(model)} "
        f"({model.stat().st_size} bytes); {', '.join(updated)} updated"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
