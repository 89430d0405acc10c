"""Check the committed artifacts of model/ against each other and the dataset, without training.

`model/.venv/bin/python -m celestial.verify [--dataset DIR]` (from model/) checks that:
  - the preprocessing handles the contract's edge cases (alpha onto black, grayscale and palette images,
    16-bit samples, EXIF orientation, the float32 formula) on synthetic images;
  - celestial-bodies.onnx loads in ONNX Runtime, has opset >= 17, a dynamic batch dimension, float32
    `input` [N,3,H,W] and `logits` [N,labels], every `celestial.*` metadata key, and is <= 1 MB;
  - golden.json names that file by sha256, and each golden image, preprocessed again from the dataset,
    gives exactly the recorded pixels and tensor sha256, logits within 1e-4 and the recorded prediction;
  - celestial.golden is the golden set golden.json gives, and each of its files, decoded and run here, gives its
    logits within its tolerance and its label;
  - the validation accuracy over validation-split.txt equals `celestial.validation_accuracy`;
  - testdata/guide-recipe.onnx has no metadata, the guide's I/O contract and matches its golden file.
Prints one line per check and a closing "N passed, N failed" line; exits 1 on any failure.
Dataset-dependent checks are skipped with a message when the dataset is absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx

from .checks import Checks, dims, session
from .data import dataset_root
from .preprocess import Preprocessing, load_model_pixels, to_tensor
from .verify_inputs import check_preprocessing, check_robustness
from .verify_outputs import check_decode_cases, check_golden, check_golden_set

REQUIRED_KEYS = [
    "celestial.labels",
    "celestial.input_name",
    "celestial.output_name",
    "celestial.input_layout",
    "celestial.input_height",
    "celestial.input_width",
    "celestial.color_mode",
    "celestial.alpha",
    "celestial.resize_filter",
    "celestial.resize_mode",
    "celestial.scale",
    "celestial.mean",
    "celestial.std",
    "celestial.output_kind",
    "celestial.model_name",
    "celestial.model_version",
    "celestial.trained_at",
    "celestial.validation_accuracy",
    "celestial.jpeg_dct_scaling",
    "celestial.temperature",
    "celestial.confidence",
    "celestial.ood_score",
    "celestial.ood_score_formula",
    "celestial.ood_threshold",
    "celestial.known",
    "celestial.ood_false_flag_rate",
    "celestial.golden",
]


def parse_args(argv=None) -> argparse.Namespace:
    model_dir = Path(__file__).resolve().parents[1]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", model_dir.parent.parent / "shared" / "dataset"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=default_ds)
    ap.add_argument("--dir", type=Path, default=model_dir, help="the artifacts' folder (default model/)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="skip the corruption suite and the synthetic outliers (about a minute without model/.cache)",
    )
    return ap.parse_args(argv)


def check_served_file(c: Checks, path: Path) -> tuple[dict, object, Preprocessing]:
    """The served model's file: opset, size, metadata keys, I/O, dynamic batch. Returns (metadata, session,
    preprocessing)."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    c.check("served model: opset >= 17", opset >= 17, f"opset {opset}")
    c.check("served model: <= 1 MB", path.stat().st_size <= 1_000_000, f"{path.stat().st_size} bytes")
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    c.check("served model: every celestial.* metadata key", not missing, f"missing {missing}")
    labels = json.loads(meta["celestial.labels"])
    h, w = int(meta["celestial.input_height"]), int(meta["celestial.input_width"])
    inp, out = proto.graph.input[0], proto.graph.output[0]
    c.check(
        "served model: input",
        inp.name == meta["celestial.input_name"] == "input"
        and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        and dims(inp)[1:] == [3, h, w]
        and isinstance(dims(inp)[0], str),
        f"{inp.name} {dims(inp)}",
    )
    c.check(
        "served model: output",
        out.name == meta["celestial.output_name"] == "logits"
        and dims(out)[1:] == [len(labels)]
        and isinstance(dims(out)[0], str),
        f"{out.name} {dims(out)}",
    )
    sess = session(path)
    c.check("served model: ONNX Runtime sees the metadata", sess.get_modelmeta().custom_metadata_map == meta)
    batch = sess.run(["logits"], {"input": np.zeros((3, 3, h, w), np.float32)})[0]
    c.check("served model: dynamic batch (3 images)", batch.shape == (3, len(labels)), str(batch.shape))
    pre = Preprocessing(
        h,
        w,
        meta["celestial.color_mode"],
        meta["celestial.input_layout"],
        meta["celestial.scale"],
        tuple(meta["celestial.mean"].split(",")),
        tuple(meta["celestial.std"].split(",")),
        resize_mode=meta["celestial.resize_mode"],
    )
    return meta, sess, pre


def check_validation(c: Checks, d: Path, raw: Path | None, sess, pre: Preprocessing, meta: dict, quick: bool) -> None:
    """Validation accuracy over validation-split.txt (equal to the metadata's, >= 0.997), then the corruption
    suite and the synthetic outliers unless `quick`."""
    labels = json.loads(meta["celestial.labels"])
    split = [line for line in (d / "validation-split.txt").read_text().splitlines() if line]
    if raw is None:
        c.skip("served model: validation accuracy", "no dataset")
        return
    x = to_tensor(
        np.stack([load_model_pixels(raw / rel, pre.height, pre.width, pre.resize_mode) for rel in split]), pre
    )
    logits = np.concatenate([sess.run(["logits"], {"input": x[i : i + 50]})[0] for i in range(0, len(x), 50)])
    truth = np.array([labels.index(rel.split("/")[0]) for rel in split])
    acc = f"{(logits.argmax(1) == truth).mean():.4f}"
    c.check(
        f"served model: validation accuracy {acc} == metadata",
        acc == meta["celestial.validation_accuracy"],
        f"metadata says {meta['celestial.validation_accuracy']}",
    )
    c.check(f"served model: validation top-1 {acc} >= 0.997 (the accuracy target)", float(acc) >= 0.997)
    if quick:
        c.skip("served model: corruption suite and synthetic outliers", "--quick")
    else:
        check_robustness(c, d, raw, split, labels, sess, pre, meta)


def check_served(c: Checks, d: Path, raw: Path | None, quick: bool) -> list[str]:
    """The served model, its golden fixtures and its figures; returns its labels."""
    path = d / "celestial-bodies.onnx"
    meta, sess, pre = check_served_file(c, path)
    labels = json.loads(meta["celestial.labels"])
    golden = json.loads((d / "golden.json").read_text())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    c.check("golden.json: names the committed model", golden["model_sha256"] == sha and golden["model"] == path.name)
    c.check("golden.json: one image per label", sorted(g["label"] for g in golden["images"]) == sorted(labels))
    check_golden(c, "served model", golden, sess, raw, pre, gray=False, meta=meta)
    check_decode_cases(c, golden, sess, pre, meta)
    check_golden_set(c, golden, meta, sess, pre)
    want_out = ["logits"] + ([meta["celestial.ood_score_output"]] if "celestial.ood_score_output" in meta else [])
    c.check(f"served model: output names {want_out}", [o.name for o in sess.get_outputs()] == want_out)
    check_validation(c, d, raw, sess, pre, meta, quick)
    return labels


def check_guide(c: Checks, d: Path, raw: Path | None, labels: list[str]) -> None:
    """The guide-recipe fixture: no metadata, the guide's I/O contract, its golden file."""
    gpath = d / "testdata" / "guide-recipe.onnx"
    gproto = onnx.load(str(gpath))
    c.check("guide recipe: no metadata_props", len(gproto.metadata_props) == 0)
    gin, gout = gproto.graph.input[0], gproto.graph.output[0]
    c.check("guide recipe: input [N,32,32,1] named input", gin.name == "input" and dims(gin)[1:] == [32, 32, 1])
    c.check("guide recipe: output [N,10] named logits", gout.name == "logits" and dims(gout)[1:] == [len(labels)])
    c.check("guide recipe: <= 2 MB", gpath.stat().st_size <= 2_000_000, f"{gpath.stat().st_size} bytes")
    ggolden = json.loads((d / "testdata" / "guide-recipe-golden.json").read_text())
    c.check(
        "guide recipe golden: names the committed fixture",
        ggolden["model_sha256"] == hashlib.sha256(gpath.read_bytes()).hexdigest(),
    )
    gpre = Preprocessing(32, 32, "grayscale", "NHWC", ggolden["input"]["scale"], ("0",), ("1",))
    check_golden(c, "guide recipe", ggolden, session(gpath), raw, gpre, gray=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    raw = dataset_root(args.dataset)
    if not raw.is_dir():
        print(f"dataset not found at {raw}: dataset checks are skipped")
        raw = None
    c = Checks()
    check_preprocessing(c)
    labels = check_served(c, args.dir, raw, args.quick)
    check_guide(c, args.dir, raw, labels)
    print(f"verify: {c.passed} passed, {c.failed} failed, {c.skipped} skipped")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
