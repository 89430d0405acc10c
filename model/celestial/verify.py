"""Check the committed artifacts of model/ against each other and the dataset, without training.

`model/.venv/bin/python -m celestial.verify [--dataset DIR]` (from model/) checks that:
  - the preprocessing handles the contract's edge cases (alpha onto black, grayscale and palette images,
    16-bit samples, EXIF orientation, the float32 formula) on synthetic images;
  - celestial-bodies.onnx loads in ONNX Runtime, has opset >= 17, a dynamic batch dimension, float32
    `input` [N,3,H,W] and `logits` [N,labels], every `celestial.*` metadata key, and is <= 1 MB;
  - golden.json names that file by sha256, and each golden image, preprocessed again from the dataset,
    gives exactly the recorded pixels and tensor sha256, logits within 1e-4 and the recorded prediction;
  - the validation accuracy over validation-split.txt equals `celestial.validation_accuracy`;
  - testdata/guide-recipe.onnx has no metadata, the guide's I/O contract and matches its golden file.
Prints one line per check and a closing "N passed, N failed" line; exits 1 on any failure.
Dataset-dependent checks are skipped with a message when the dataset is absent.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .preprocess import Preprocessing, guide_gray8, load_rgb8, resize_rgb8, tensor_sha256, to_tensor

REQUIRED_KEYS = [
    "celestial.labels", "celestial.input_name", "celestial.output_name", "celestial.input_layout",
    "celestial.input_height", "celestial.input_width", "celestial.color_mode", "celestial.alpha",
    "celestial.resize_filter", "celestial.resize_mode", "celestial.scale", "celestial.mean", "celestial.std",
    "celestial.output_kind", "celestial.model_name", "celestial.model_version", "celestial.trained_at",
    "celestial.validation_accuracy",
]


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok     {name}")
        else:
            self.failed += 1
            print(f"FAILED {name}: {detail}")

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        print(f"skip   {name}: {why}")


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def check_golden(c: Checks, name: str, golden: dict, sess, raw: Path | None, pre: Preprocessing, gray: bool) -> None:
    for g in golden["images"]:
        tag = f"{name} golden {g['image']}"
        key = "pixels_gray8_base64" if gray else "pixels_rgb8_base64"
        pix = np.frombuffer(base64.b64decode(g[key]), np.uint8).reshape(g["height"], g["width"], g["channels"])
        x = to_tensor(pix, pre)[None]
        c.check(f"{tag}: tensor sha256 from the recorded pixels", tensor_sha256(x) == g["tensor_sha256"])
        logits = sess.run(["logits"], {"input": x})[0][0]
        diff = float(np.abs(logits - np.array(g["logits"], np.float32)).max())
        c.check(f"{tag}: logits within 1e-4", diff <= 1e-4, f"max abs diff {diff}")
        labels = golden["labels"]
        c.check(f"{tag}: prediction {g['prediction']}", labels[int(logits.argmax())] == g["prediction"])
        if raw is None:
            c.skip(f"{tag}: dataset image preprocesses to the recorded pixels", "no dataset")
            continue
        im = load_rgb8(raw / g["image"])
        if gray:
            again = guide_gray8(im, g["height"], g["width"])
        else:
            again = resize_rgb8(im, g["height"], g["width"])
        c.check(f"{tag}: dataset image preprocesses to the recorded pixels", np.array_equal(again, pix))


def check_preprocessing(c: Checks) -> None:
    """Unit checks of the preprocessing definition on synthetic images (the contract's edge cases)."""
    import io

    from PIL import Image

    from .preprocess import parse_f32, to_rgb8

    rgba = Image.new("RGBA", (2, 1), (200, 100, 50, 128))
    rgba.putpixel((1, 0), (255, 255, 255, 0))
    got = np.asarray(to_rgb8(rgba))
    c.check("preprocess: alpha composited onto black, round(c*a/255)",
            got[0, 0].tolist() == [100, 50, 25] and got[0, 1].tolist() == [0, 0, 0], str(got.tolist()))
    la = Image.new("LA", (1, 1), (90, 255))
    c.check("preprocess: grayscale+alpha expanded", np.asarray(to_rgb8(la))[0, 0].tolist() == [90, 90, 90])
    gray = Image.new("L", (1, 1), 77)
    c.check("preprocess: grayscale expanded R=G=B", np.asarray(to_rgb8(gray))[0, 0].tolist() == [77, 77, 77])
    def palette_image(transparent: bool) -> Image.Image:
        pal = Image.new("P", (1, 1), 0)
        pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
        if transparent:
            pal.info["transparency"] = 0
        return pal

    c.check("preprocess: palette colours", np.asarray(to_rgb8(palette_image(False)))[0, 0].tolist() == [10, 20, 30])
    c.check("preprocess: palette with transparent index onto black",
            np.asarray(to_rgb8(palette_image(True)))[0, 0].tolist() == [0, 0, 0])
    v16 = np.array([[0, 128, 129, 32767, 65407, 65535]], dtype=np.uint16)
    got16 = np.asarray(to_rgb8(Image.fromarray(v16)))[0, :, 0]
    c.check("preprocess: 16-bit grayscale reduced by round(v*255/65535)",
            got16.tolist() == np.rint(v16[0].astype(np.float64) * 255 / 65535).astype(int).tolist(), str(got16.tolist()))
    # EXIF orientation 6 (rotate 90 degrees clockwise): a 4x2 image becomes 2x4.
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (4, 2), (255, 0, 0)).save(buf, "JPEG", exif=exif)
    buf.seek(0)
    c.check("preprocess: EXIF orientation applied", load_rgb8(buf).size == (2, 4), str(load_rgb8(buf).size))
    pre = Preprocessing(1, 1, "rgb", "NCHW", "0.00392156862745098", ("0.323", "0.319", "0.320"),
                        ("0.309", "0.297", "0.297"))
    px = np.arange(256, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)
    t = to_tensor(px, pre)
    want = (px.astype(np.float32) * np.float32(0.00392156862745098) - np.float32(0.319)) / np.float32(0.297)
    c.check("preprocess: float32 ((p*scale)-mean)/std, NCHW", np.array_equal(t[:, 1, 0, 0], want[:, 0, 0, 1]))
    c.check("preprocess: decimal constants parse to one float32", parse_f32("0.1") == np.float32(0.1))


def main(argv=None) -> int:
    model_dir = Path(__file__).resolve().parents[1]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", model_dir.parent.parent / "shared" / "dataset"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=default_ds)
    ap.add_argument("--dir", type=Path, default=model_dir, help="the artifacts' folder (default model/)")
    args = ap.parse_args(argv)
    d: Path = args.dir
    raw = args.dataset / "raw" if (args.dataset / "raw").is_dir() else args.dataset
    if not raw.is_dir():
        print(f"dataset not found at {raw}: dataset checks are skipped")
        raw = None
    c = Checks()
    check_preprocessing(c)

    # ---- the served model
    path = d / "celestial-bodies.onnx"
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
    c.check("served model: input", inp.name == meta["celestial.input_name"] == "input"
            and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            and dims(inp)[1:] == [3, h, w] and isinstance(dims(inp)[0], str), f"{inp.name} {dims(inp)}")
    c.check("served model: output", out.name == meta["celestial.output_name"] == "logits"
            and dims(out)[1:] == [len(labels)] and isinstance(dims(out)[0], str), f"{out.name} {dims(out)}")
    sess = session(path)
    c.check("served model: ONNX Runtime sees the metadata", sess.get_modelmeta().custom_metadata_map == meta)
    batch = sess.run(["logits"], {"input": np.zeros((3, 3, h, w), np.float32)})[0]
    c.check("served model: dynamic batch (3 images)", batch.shape == (3, len(labels)), str(batch.shape))
    pre = Preprocessing(h, w, meta["celestial.color_mode"], meta["celestial.input_layout"], meta["celestial.scale"],
                        tuple(meta["celestial.mean"].split(",")), tuple(meta["celestial.std"].split(",")))

    golden = json.loads((d / "golden.json").read_text())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    c.check("golden.json: names the committed model", golden["model_sha256"] == sha and golden["model"] == path.name)
    c.check("golden.json: one image per label", sorted(g["label"] for g in golden["images"]) == sorted(labels))
    check_golden(c, "served model", golden, sess, raw, pre, gray=False)

    split = [line for line in (d / "validation-split.txt").read_text().splitlines() if line]
    if raw is None:
        c.skip("served model: validation accuracy", "no dataset")
    else:
        x = to_tensor(np.stack([resize_rgb8(load_rgb8(raw / rel), h, w) for rel in split]), pre)
        pred = np.concatenate([sess.run(["logits"], {"input": x[i:i + 50]})[0] for i in range(0, len(x), 50)]).argmax(1)
        truth = np.array([labels.index(rel.split("/")[0]) for rel in split])
        acc = f"{(pred == truth).mean():.4f}"
        c.check(f"served model: validation accuracy {acc} == metadata", acc == meta["celestial.validation_accuracy"],
                f"metadata says {meta['celestial.validation_accuracy']}")

    # ---- the guide-recipe fixture
    gpath = d / "testdata" / "guide-recipe.onnx"
    gproto = onnx.load(str(gpath))
    c.check("guide recipe: no metadata_props", len(gproto.metadata_props) == 0)
    gin, gout = gproto.graph.input[0], gproto.graph.output[0]
    c.check("guide recipe: input [N,32,32,1] named input", gin.name == "input" and dims(gin)[1:] == [32, 32, 1])
    c.check("guide recipe: output [N,10] named logits", gout.name == "logits" and dims(gout)[1:] == [len(labels)])
    c.check("guide recipe: <= 2 MB", gpath.stat().st_size <= 2_000_000, f"{gpath.stat().st_size} bytes")
    ggolden = json.loads((d / "testdata" / "guide-recipe-golden.json").read_text())
    c.check("guide recipe golden: names the committed fixture",
            ggolden["model_sha256"] == hashlib.sha256(gpath.read_bytes()).hexdigest())
    gpre = Preprocessing(32, 32, "grayscale", "NHWC", ggolden["input"]["scale"], ("0",), ("1",))
    check_golden(c, "guide recipe", ggolden, session(gpath), raw, gpre, gray=True)

    print(f"verify: {c.passed} passed, {c.failed} failed, {c.skipped} skipped")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
