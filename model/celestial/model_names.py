"""What names the model file by its hash and size, kept true by the metadata-only steps (tools/add_golden_set.py,
tools/add_drift_reference.py): golden.json's `model_sha256`, metrics.json's `model.sha256` and `model.bytes`, and
the model card's results section (README.md, rendered from metrics.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import card


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, doc: dict) -> None:
    """As train.py writes its JSON files, so that only the changed values show in a diff."""
    path.write_text(json.dumps(doc, indent=1) + "\n")


def names_it(folder: Path, model: Path) -> str | None:
    """Why folder/golden.json does not name `model` by its sha256 (the step's input must be the file the
    artifacts describe), or None when it does."""
    golden = json.loads((folder / "golden.json").read_text())
    have = sha256(model)
    if golden.get("model_sha256") != have:
        return f"{folder / 'golden.json'} names a model with sha256 {golden.get('model_sha256')}, not {model} ({have})"
    return None


def rename(folder: Path, model: Path) -> list[str]:
    """Name the changed `model` by its new sha256 and size in the folder's artifacts; returns the files updated."""
    after = sha256(model)
    golden_path = folder / "golden.json"
    golden = json.loads(golden_path.read_text())
    golden["model_sha256"] = after
    write_json(golden_path, golden)
    updated = ["golden.json"]
    metrics_path = folder / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics["model"].update(sha256=after, bytes=model.stat().st_size)
        write_json(metrics_path, metrics)
        updated.append("metrics.json")
        if (folder / "README.md").exists():
            card.update(folder / "README.md", metrics)
            updated.append("README.md")
    return updated
