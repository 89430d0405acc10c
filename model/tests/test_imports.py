"""The pipeline's modules load without TensorFlow, Keras or ONNX Runtime: the pure ones never need them, the
others import them inside the functions that do."""

from __future__ import annotations

import importlib
import sys

import pytest

HEAVY = ("tensorflow", "keras", "tf2onnx", "onnxruntime", "matplotlib")
MODULES = [
    "config",
    "data",
    "preprocess",
    "augment",
    "robust",
    "pools",
    "colour",
    "log",
    "decode_cases",
    "card_ood",
    "loco_scores",
    "colour_ood",
    "checks",
    "metadata",
    "ood",
    "graph",
    "golden",
    "evaluation",
    "networks",
    "fit",
    "export",
    "runtime",
    "served",
    "baseline",
    "outcomes",
    "report",
    "train",
    "card",
    "bench",
    "loco",
]


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_without_the_training_environment(name):
    importlib.import_module(f"celestial.{name}")
    assert [m for m in HEAVY if m in sys.modules] == []
