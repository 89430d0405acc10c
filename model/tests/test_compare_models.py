"""model/tools/compare_models.py, the reproduction check: identical artifacts pass, a changed weight or golden
logit fails."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper


@pytest.fixture(scope="module")
def compare(model_dir):
    spec = importlib.util.spec_from_file_location("compare_models", model_dir / "tools" / "compare_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def copy(model_dir, tmp_path):
    for rel in [
        "celestial-bodies.onnx",
        "golden.json",
        "testdata/guide-recipe.onnx",
        "testdata/guide-recipe-golden.json",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_dir / rel, tmp_path / rel)
    return tmp_path


def test_identical_artifacts_are_reproduced(compare, model_dir, copy):
    assert compare.main([str(model_dir), str(copy)]) == 0


def test_training_time_and_model_hash_may_differ(compare, model_dir, copy):
    proto = onnx.load(str(copy / "celestial-bodies.onnx"))
    for p in proto.metadata_props:
        if p.key == "celestial.trained_at":
            p.value = "2030-01-01T00:00:00Z"
    onnx.save(proto, str(copy / "celestial-bodies.onnx"))
    golden = json.loads((copy / "golden.json").read_text())
    golden["model_sha256"] = "0" * 64
    (copy / "golden.json").write_text(json.dumps(golden))
    assert compare.main([str(model_dir), str(copy)]) == 0


def test_one_changed_weight_is_found(compare, model_dir, copy, capsys):
    proto = onnx.load(str(copy / "celestial-bodies.onnx"))
    init = proto.graph.initializer[-1]
    value = numpy_helper.to_array(init).copy()
    value.flat[0] = np.nextafter(value.flat[0], np.float32(np.inf))
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    onnx.save(proto, str(copy / "celestial-bodies.onnx"))
    assert compare.main([str(model_dir), str(copy)]) == 1
    assert "initializers differ" in capsys.readouterr().out


def test_one_changed_golden_logit_is_found(compare, model_dir, copy):
    golden = json.loads((copy / "golden.json").read_text())
    golden["images"][3]["logits"][2] += 1e-6
    (copy / "golden.json").write_text(json.dumps(golden))
    assert compare.main([str(model_dir), str(copy)]) == 1
