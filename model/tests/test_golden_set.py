"""The golden set the model carries (`celestial.golden`): built from golden.json, written into an ONNX file without
touching anything but its metadata, read back, and the committed model's set (model/tools/add_golden_set.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import sys

import numpy as np
import onnx
import pytest
from celestial.drift_reference import DRIFT_KEY
from celestial.golden_set import (
    DECODED_LOGIT_MAX_ABS,
    GOLDEN_KEY,
    MAX_FILE_BYTES,
    add,
    build,
    decode,
    encode,
)
from celestial.metadata import _without_metadata, read_metadata, write_metadata
from PIL import Image
from test_metadata import served_metadata, tiny_model


def test_the_set_from_golden_json(golden):
    gs = build(golden)
    small = [c for c in golden["decode_cases"] if len(base64.b64decode(c["file_base64"])) <= MAX_FILE_BYTES]
    assert len(gs["images"]) == len(golden["images"]) + len(small) and len(small) < len(golden["decode_cases"])
    tol = golden["tolerance"]
    reframed = golden.get("resize_mode", "stretch") == "content_square"
    for entry, image in zip(golden["images"], gs["images"]):
        # The class image's PNG decodes to exactly its model-input pixels (the tensor is golden's bit for bit), or,
        # for a model that re-frames its pictures, to its decoded pixels (re-framed and resized by the server).
        with Image.open(io.BytesIO(base64.b64decode(image["file_base64"]))) as im:
            want = (entry["decoded_width"], entry["decoded_height"]) if reframed else (entry["width"], entry["height"])
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", want)
            px = entry["decoded_rgb8_base64"] if reframed else entry["pixels_rgb8_base64"]
            assert np.asarray(im).tobytes() == base64.b64decode(px)
        assert image["label"] == entry["prediction"] == entry["label"]
        assert image["logits"] == entry["logits"]
        assert image["logit_max_abs"] == (
            tol["logit_max_abs_reframed"] if reframed else tol["logit_max_abs_same_pixels"]
        )
    for case, image in zip(small, gs["images"][len(golden["images"]) :]):
        assert image["file_base64"] == case["file_base64"] and image["logits"] == case["logits"]
        assert image["label"] is None and image["logit_max_abs"] == DECODED_LOGIT_MAX_ABS < tol["logit_max_abs"]
    assert decode(encode(gs)) == gs and encode(build(golden)) == encode(gs)


def test_round_trip_through_an_onnx_file_changes_only_the_metadata(tmp_path, golden):
    proto = tiny_model()
    meta = served_metadata() | {"celestial.labels": json.dumps(golden["labels"])}
    write_metadata(proto, meta)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    before = path.read_bytes()
    written = add(path, golden)
    back = read_metadata(path)
    assert back == written and list(back) == [*meta, GOLDEN_KEY]
    assert {k: v for k, v in back.items() if k != GOLDEN_KEY} == meta
    assert decode(back[GOLDEN_KEY]) == build(golden)
    assert _without_metadata(onnx.load(str(path))) == _without_metadata(onnx.load_from_string(before))
    # Again: the key is replaced in place, the file is the same.
    once = path.read_bytes()
    add(path, golden)
    assert path.read_bytes() == once


def test_a_model_whose_labels_are_not_golden_json_s_is_refused(tmp_path, golden):
    proto = tiny_model()
    write_metadata(proto, {"celestial.labels": json.dumps(golden["labels"][::-1])})
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    before = path.read_bytes()
    with pytest.raises(SystemExit, match="celestial.labels"):
        add(path, golden)
    assert path.read_bytes() == before


def test_the_committed_model_carries_golden_json_s_set(model_dir, golden):
    path = model_dir / "celestial-bodies.onnx"
    assert read_metadata(path)[GOLDEN_KEY] == encode(build(golden))
    assert golden["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def golden_added(tmp_path, model_dir, golden):
    """The committed artifacts copied to tmp_path, the model stripped of its metadata-only keys, then the golden
    set added back by tools/add_golden_set.py (which first refuses a golden.json naming another file)."""
    sys.path.insert(0, str(model_dir / "tools"))
    import add_golden_set

    tmp_path.mkdir(exist_ok=True)
    for name in ["celestial-bodies.onnx", "golden.json", "metrics.json", "README.md", "loco.json"]:
        shutil.copy(model_dir / name, tmp_path / name)
    # The committed model as it was exported: without the golden set (nor the drift reference, which comes after
    # it: tests/test_drift_reference.py adds it back).
    proto = onnx.load(str(tmp_path / "celestial-bodies.onnx"))
    write_metadata(proto, {p.key: p.value for p in proto.metadata_props if p.key not in (GOLDEN_KEY, DRIFT_KEY)})
    onnx.save(proto, str(tmp_path / "celestial-bodies.onnx"))
    exported = hashlib.sha256((tmp_path / "celestial-bodies.onnx").read_bytes()).hexdigest()
    doc = json.loads((tmp_path / "golden.json").read_text())
    (tmp_path / "golden.json").write_text(json.dumps(doc | {"model_sha256": "0" * 64}, indent=1) + "\n")
    assert add_golden_set.main([str(tmp_path)]) == 1, "golden.json names another file"
    (tmp_path / "golden.json").write_text(json.dumps(doc | {"model_sha256": exported}, indent=1) + "\n")
    assert add_golden_set.main([str(tmp_path)]) == 0
    return tmp_path


def test_the_tool_adds_the_set_and_updates_what_names_the_file(tmp_path, model_dir, golden):
    folder = golden_added(tmp_path, model_dir, golden)
    meta = read_metadata(folder / "celestial-bodies.onnx")
    assert list(meta)[-1] == GOLDEN_KEY
    assert meta[GOLDEN_KEY] == encode(build(golden))
    # (tests/test_drift_reference.py adds the drift reference and finds every committed file byte for byte)
