"""The ONNX metadata the server reads, written by celestial.metadata and round-tripped with the onnx package on
a tiny model built here."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from celestial.colour import ClassColourKnn
from celestial.config import Served
from celestial.data import served_preprocessing
from celestial.drift_reference import DRIFT_KEY
from celestial.golden_set import GOLDEN_KEY
from celestial.metadata import (
    base_metadata,
    ood_metadata,
    preprocessing_from,
    read_metadata,
    utc_now,
    write_metadata,
)
from celestial.preprocess import parse_f32
from onnx import TensorProto, helper

CLASSES = ["Earth", "Jupiter", "Mars"]
# The keys the server's model resolution reads (server/src/model/resolve.rs).
SERVER_KEYS = [
    "celestial.labels",
    "celestial.input_layout",
    "celestial.input_height",
    "celestial.input_width",
    "celestial.color_mode",
    "celestial.scale",
    "celestial.mean",
    "celestial.std",
    "celestial.model_version",
    "celestial.validation_accuracy",
    "celestial.jpeg_dct_scaling",
    "celestial.temperature",
    "celestial.ood_score",
    "celestial.ood_threshold",
    "celestial.colour_ood",
]


def tiny_model() -> onnx.ModelProto:
    """input [N, 3, 32, 32] -> ReduceMean over H, W -> logits [N, 3]."""
    node = helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def colour_check() -> tuple:
    rng = np.random.default_rng(3)
    px = rng.integers(0, 256, (9, 4, 4, 3)).astype(np.uint8)
    return ClassColourKnn(px, np.arange(9) % 3, k=2).rounded(), 2.5


def served_metadata(score: str = "msp") -> dict[str, str]:
    pre = served_preprocessing(Served())
    meta = base_metadata(CLASSES, pre, 0.99667, "2026-12-01T10:00:00Z")
    return meta | ood_metadata(score, 0.551, -0.436603, colour_check(), len(CLASSES))


def test_metadata_round_trips_through_an_onnx_file(tmp_path):
    proto = tiny_model()
    write_metadata(proto, {"celestial.stale": "from an earlier export"})
    meta = served_metadata()
    write_metadata(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    path = tmp_path / "tiny.onnx"
    onnx.save(proto, str(path))
    back = read_metadata(path)
    assert back == meta and list(back) == list(meta)
    assert "celestial.stale" not in back


def test_the_keys_the_server_reads_are_there_and_parse(tmp_path):
    proto = tiny_model()
    write_metadata(proto, served_metadata())
    onnx.save(proto, str(tmp_path / "m.onnx"))
    meta = read_metadata(tmp_path / "m.onnx")
    assert [k for k in SERVER_KEYS if k not in meta] == []
    assert json.loads(meta["celestial.labels"]) == CLASSES
    assert (meta["celestial.input_layout"], meta["celestial.color_mode"]) == ("NCHW", "rgb")
    assert (int(meta["celestial.input_height"]), int(meta["celestial.input_width"])) == (32, 32)
    assert parse_f32(meta["celestial.scale"]) == np.float32(1 / 255)
    assert [parse_f32(v) for v in meta["celestial.mean"].split(",")] == [0, 0, 0]
    assert meta["celestial.validation_accuracy"] == "0.9967"
    assert (float(meta["celestial.temperature"]), float(meta["celestial.ood_threshold"])) == (0.551, -0.436603)
    assert meta["celestial.ood_score"] == "msp" and "celestial.ood_score_output" not in meta
    colour = json.loads(meta["celestial.colour_ood"])
    assert colour["threshold"] == 2.5 and [len(b) for b in colour["bank"]] == [3, 3, 3]
    assert preprocessing_from(meta) == served_preprocessing(Served())


def test_a_graph_score_names_its_output():
    meta = served_metadata("knn_cosine")
    assert meta["celestial.ood_score_output"] == "ood_score"


def test_same_keys_as_the_committed_model(model_dir):
    committed = read_metadata(model_dir / "celestial-bodies.onnx")
    # The golden set comes after the rest: it is added once golden.json is written (celestial/golden_set.py);
    # the drift reference last, by its metadata-only step (tools/add_drift_reference.py).
    assert [*served_metadata(), GOLDEN_KEY, DRIFT_KEY] == list(committed)
    for key in (
        "celestial.confidence",
        "celestial.known",
        "celestial.ood_score_formula",
        "celestial.input_name",
        "celestial.output_name",
        "celestial.alpha",
        "celestial.resize_filter",
        "celestial.resize_mode",
    ):
        assert served_metadata()[key] == committed[key], key


def test_trained_at_is_rfc3339_utc():
    stamp = utc_now()
    assert len(stamp) == 20 and stamp.endswith("Z") and stamp[10] == "T"


@pytest.mark.parametrize("accuracy, text", [(1.0, "1.0000"), (0.99666, "0.9967"), (0.5, "0.5000")])
def test_validation_accuracy_has_four_decimals(accuracy, text):
    pre = served_preprocessing(Served())
    assert base_metadata(CLASSES, pre, accuracy, "t")["celestial.validation_accuracy"] == text
