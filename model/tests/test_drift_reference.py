"""The drift reference the model carries (`celestial.drift`): the split of the validation pictures, the quantile
bins, the summary built from the answers, and the metadata-only step that wrote it into the committed model
(model/tools/add_drift_reference.py)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from celestial.colour import COLOUR_STATISTICS
from celestial.drift_reference import (
    DRIFT_KEY,
    FORMAT,
    bin_counts,
    build,
    confidence_edges,
    decode,
    encode,
    halves,
)
from celestial.metadata import read_metadata
from test_golden_set import golden_added


def test_halves_alternate_within_each_class_and_cover_every_picture():
    paths = ["A/1.jpg", "A/2.jpg", "A/3.jpg", "B/1.jpg", "B/2.jpg", "C/1.jpg"]
    ref, held = halves(paths)
    assert ref == ["A/1.jpg", "A/3.jpg", "B/1.jpg", "C/1.jpg"]
    assert held == ["A/2.jpg", "B/2.jpg"]


def test_the_committed_split_halves_the_validation_pictures(model_dir):
    paths = (model_dir / "validation-split.txt").read_text().split()
    ref, held = halves(paths)
    assert len(ref) == len(held) == 150 and not set(ref) & set(held)
    assert {p.split("/")[0] for p in ref} == {p.split("/")[0] for p in held}


def test_quantile_bins_are_increasing_and_count_as_the_server_bins():
    v = np.linspace(0.0, 1.0, 101)
    edges = confidence_edges(v, bins=4)
    assert edges == [0.25, 0.5, 0.75]
    # a value on an edge belongs to the bin above it (edges[i-1] <= v < edges[i])
    assert bin_counts(np.array([0.1, 0.25, 0.5, 0.99]), edges) == [1, 1, 1, 1]
    # ties merge bins instead of repeating an edge
    assert confidence_edges(np.array([0.9] * 8 + [1.0] * 2), bins=5) == [0.9, 0.92]


def test_build_summarises_the_answers():
    rng = np.random.default_rng(3)
    n = 40
    colours = rng.random((n, 10))
    predicted = np.array([0, 1, 1, 2] * 10)
    confidence = rng.random(n)
    known = np.arange(n) % 10 != 0
    ref = build(["a", "b", "c", "d"], predicted, confidence, known, colours)
    assert ref["format"] == FORMAT and ref["pictures"] == n
    assert ref["labels"] == [10, 20, 10, 0]
    assert sum(ref["confidence"]["counts"]) == n and len(ref["confidence"]["counts"]) == 5
    assert ref["unknown"] == 4
    assert ref["colour"]["statistics"] == list(COLOUR_STATISTICS)
    assert np.allclose(ref["colour"]["mean"], colours.mean(0), rtol=1e-5)
    assert np.allclose(ref["colour"]["std"], colours.std(0), rtol=1e-5)
    assert decode(encode(ref)) == ref and " " not in encode(ref).replace(ref["about"], "")
    with pytest.raises(ValueError):
        build(["a"], predicted, confidence[:3], known, colours)


def test_the_committed_model_carries_a_reference_of_its_validation_half(model_dir):
    meta = read_metadata(model_dir / "celestial-bodies.onnx")
    ref = decode(meta[DRIFT_KEY])
    labels = json.loads(meta["celestial.labels"])
    assert ref["pictures"] == 150 and len(ref["labels"]) == len(labels) and sum(ref["labels"]) == 150
    assert sum(ref["confidence"]["counts"]) == 150 and ref["unknown"] <= 150
    assert all(s > 0 for s in ref["colour"]["std"])


def test_the_tools_rebuild_the_committed_files(tmp_path, model_dir, golden):
    """Golden set then drift reference (the committed value, `--from`) onto the exported model: every file that
    names the model is the committed one, byte for byte."""
    sys.path.insert(0, str(model_dir / "tools"))
    import add_drift_reference

    folder = golden_added(tmp_path / "run", model_dir, golden)
    source = tmp_path / "reference.json"
    source.write_text(read_metadata(model_dir / "celestial-bodies.onnx")[DRIFT_KEY])
    assert add_drift_reference.main([str(folder), "--from", str(source)]) == 0
    for name in ["celestial-bodies.onnx", "golden.json", "metrics.json", "README.md"]:
        assert (folder / name).read_bytes() == (model_dir / name).read_bytes(), name
    # Its input must be the file golden.json names: now that the file changed, a second run from a stale
    # golden.json is refused.
    doc = json.loads((folder / "golden.json").read_text())
    (folder / "golden.json").write_text(json.dumps(doc | {"model_sha256": "0" * 64}, indent=1) + "\n")
    assert add_drift_reference.main([str(folder), "--from", str(source)]) == 1
