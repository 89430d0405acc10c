"""Shared fixtures of the pipeline's unit tests: the committed artifacts and the dataset (when present).

The tests import only modules that load without TensorFlow (the CI environment, scripts/python-tools.txt,
has numpy, pillow and onnx, nothing of the training environment).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

MODEL_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(MODEL_DIR))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return MODEL_DIR


@pytest.fixture(scope="session")
def golden() -> dict:
    return json.loads((MODEL_DIR / "golden.json").read_text())


@pytest.fixture(scope="session")
def raw() -> Path:
    """The dataset's raw/<Class>/*.jpg folder; the test is skipped when the dataset is absent."""
    default = MODEL_DIR.parent.parent / "shared" / "dataset"
    root = Path(os.environ.get("CELESTIAL_DATASET", default))
    raw = root / "raw" if (root / "raw").is_dir() else root
    if not raw.is_dir():
        pytest.skip(f"dataset not found at {raw} (set CELESTIAL_DATASET to run the tests that read it)")
    return raw
