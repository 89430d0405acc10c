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

from .preprocess import (Preprocessing, guide_gray8, jpeg_draft_size, load_model_pixels, load_rgb8, tensor_sha256,
                         to_tensor)

REQUIRED_KEYS = [
    "celestial.labels", "celestial.input_name", "celestial.output_name", "celestial.input_layout",
    "celestial.input_height", "celestial.input_width", "celestial.color_mode", "celestial.alpha",
    "celestial.resize_filter", "celestial.resize_mode", "celestial.scale", "celestial.mean", "celestial.std",
    "celestial.output_kind", "celestial.model_name", "celestial.model_version", "celestial.trained_at",
    "celestial.validation_accuracy", "celestial.jpeg_dct_scaling", "celestial.temperature", "celestial.confidence",
    "celestial.ood_score", "celestial.ood_score_formula", "celestial.ood_threshold", "celestial.known",
    "celestial.ood_false_flag_rate",
]


def colour_passes(px: np.ndarray, logits: np.ndarray, rule: dict) -> np.ndarray:
    """`celestial.colour_ood`'s check as its formula describes it (independent of robust.py): the ten
    statistics of each picture (HWC uint8), standardised, to the k-th nearest bank picture of the argmax class."""
    p = px.astype(np.float64).reshape(len(px), -1, 3) / 255.0
    r, g, b = p[..., 0], p[..., 1], p[..., 2]
    s, w = r + g + b + 0.001, (r + g + b) / 3
    big_w = w.sum(1) + 1e-6
    cr, cg = r / s, g / s
    mr, mg = (cr * w).sum(1) / big_w, (cg * w).sum(1) / big_w
    sr = np.sqrt(((cr - mr[:, None]) ** 2 * w).sum(1) / big_w)
    sg = np.sqrt(((cg - mg[:, None]) ** 2 * w).sum(1) / big_w)
    f = np.stack([r.mean(1), g.mean(1), b.mean(1), r.std(1), g.std(1), b.std(1), mr, mg, sr, sg], 1)
    mu, sd = np.array(rule["mean"]), np.array(rule["std"])
    z = (f - mu) / sd
    d = [np.sort(np.sqrt((((np.array(rule["bank"][c]) - mu) / sd - z[i]) ** 2).sum(1)))[rule["k"] - 1]
         for i, c in enumerate(logits.argmax(1))]
    return np.array(d) <= rule["threshold"]


def served_outputs(logits: np.ndarray, meta: dict, ood: np.ndarray | None = None,
                   px: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """confidence and known exactly as the metadata defines them (independent of train.py); `px`, the
    model-input pictures, for the colour check of `celestial.colour_ood`."""
    z = logits.astype(np.float64)
    t = float(meta["celestial.temperature"])
    zt = z / t
    e = np.exp(zt - zt.max(1, keepdims=True))
    conf = (e / e.sum(1, keepdims=True)).max(1)
    formula = meta["celestial.ood_score_formula"]
    if "celestial.ood_score_output" in meta:
        s = np.asarray(ood, np.float64)
    elif formula == "s = -max_k logits[k]":
        s = -z.max(1)
    elif formula == "s = -max_k softmax(logits)[k]":
        e1 = np.exp(z - z.max(1, keepdims=True))
        s = -(e1 / e1.sum(1, keepdims=True)).max(1)
    elif formula == "s = -log(sum_k exp(logits[k]))":
        m = z.max(1)
        s = -(m + np.log(np.exp(z - m[:, None]).sum(1)))
    else:
        raise SystemExit(f"unknown celestial.ood_score_formula {formula!r}")
    known = s <= float(meta["celestial.ood_threshold"])
    if "celestial.colour_ood" in meta:
        known &= colour_passes(px, z, json.loads(meta["celestial.colour_ood"]))
    return conf, known


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


def check_golden(c: Checks, name: str, golden: dict, sess, raw: Path | None, pre: Preprocessing, gray: bool,
                 meta: dict | None = None) -> None:
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
        if meta is not None:
            conf, known = served_outputs(np.array([g["logits"]]), meta, np.array([g.get("ood_score", np.nan)]),
                                         pix[None])
            if "celestial.ood_score_output" in meta:
                o = sess.run([meta["celestial.ood_score_output"]], {"input": x})[0]
                c.check(f"{tag}: ood_score output within 1e-4", abs(float(o[0]) - g["ood_score"]) <= 1e-4)
            c.check(f"{tag}: confidence and known from the metadata's rules",
                    abs(conf[0] - g["confidence"]) < 1e-9 and bool(known[0]) == g["known"])
        if raw is None:
            c.skip(f"{tag}: dataset image preprocesses to the recorded pixels", "no dataset")
            continue
        if gray:
            again = guide_gray8(load_rgb8(raw / g["image"]), g["height"], g["width"])
        else:
            again = load_model_pixels(raw / g["image"], g["height"], g["width"])
            dec = np.asarray(load_rgb8(raw / g["image"], draft=(g["width"], g["height"])))
            want = np.frombuffer(base64.b64decode(g["decoded_rgb8_base64"]), np.uint8)
            c.check(f"{tag}: DCT-scaled decode {g['decoded_width']}x{g['decoded_height']} reproduces",
                    dec.shape[:2] == (g["decoded_height"], g["decoded_width"])
                    and (g["decoded_width"], g["decoded_height"]) == jpeg_draft_size(
                        g["stored_width"], g["stored_height"], g["width"], g["height"])
                    and np.array_equal(dec.ravel(), want))
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


def check_decode_cases(c: Checks, golden: dict, sess, pre: Preprocessing, meta: dict) -> None:
    import io
    for k, case in enumerate(golden.get("decode_cases", [])):
        tag = (f"decode case {k} ({case['format']} {case['mode']} {case['stored_width']}x{case['stored_height']}, "
               f"EXIF {case['exif_orientation']})")
        data = base64.b64decode(case["file_base64"])
        im = load_rgb8(io.BytesIO(data), draft=(pre.width, pre.height))
        want_dec = (jpeg_draft_size(case["stored_width"], case["stored_height"], pre.width, pre.height)
                    if case["format"] == "jpeg" else (case["stored_width"], case["stored_height"]))
        if case["exif_orientation"] in (5, 6, 7, 8):
            want_dec = want_dec[::-1]
        c.check(f"{tag}: decoded size {want_dec[0]}x{want_dec[1]}", im.size == want_dec and
                (case["decoded_width"], case["decoded_height"]) == jpeg_draft_size(
                    case["stored_width"], case["stored_height"], pre.width, pre.height)
                if case["format"] == "jpeg" else im.size == want_dec, f"{im.size}")
        pix = load_model_pixels(io.BytesIO(data), pre.height, pre.width)
        want = np.frombuffer(base64.b64decode(case["pixels_rgb8_base64"]), np.uint8).reshape(pix.shape)
        c.check(f"{tag}: pixels", np.array_equal(pix, want))
        x = to_tensor(pix, pre)[None]
        c.check(f"{tag}: tensor sha256", tensor_sha256(x) == case["tensor_sha256"])
        outs = sess.run(None, {"input": x})
        logits, ood = outs[0], (outs[1] if len(outs) > 1 else None)
        conf, known = served_outputs(logits, meta, ood, pix[None])
        c.check(f"{tag}: logits, confidence, known", float(np.abs(logits[0] - np.array(case["logits"])).max()) <= 1e-4
                and abs(conf[0] - case["confidence"]) < 1e-5 and bool(known[0]) == case["known"]
                and (ood is None or abs(float(ood[0]) - case["ood_score"]) <= 1e-4))


def check_robustness(c: Checks, d: Path, raw: Path, split: list, labels: list, sess, pre: Preprocessing,
                     meta: dict) -> None:
    """Re-run the fixed corruption suite and the synthetic outliers; the figures must equal metrics.json's."""
    from . import augment, robust
    metrics = json.loads((d / "metrics.json").read_text())
    rob, ood = metrics["model"]["robustness"], metrics["model"]["ood"]
    items = [(rel, labels.index(rel.split("/")[0])) for rel in split]
    y = np.array([t for _, t in items])
    cache = d / ".cache"
    suite = robust.suite_pixels(raw, items, pre.height, pre.width, cache)

    def outputs_of(px):
        x = to_tensor(px, pre)
        outs = [sess.run(None, {"input": x[i:i + 100]}) for i in range(0, len(x), 100)]
        return (np.concatenate([o[0] for o in outs]),
                np.concatenate([o[1] for o in outs]) if len(outs[0]) > 1 else None)

    got = {n: [round(float((outputs_of(suite[f"{n}/{s}"])[0].argmax(1) == y).mean()), 4)
               for s in range(len(augment.SUITE[n][1]))] for n in augment.SUITE}
    c.check("corruption suite: top-1 per corruption and severity equal metrics.json", got == rob["served"],
            json.dumps(got))
    low = {n: v[augment.middle(n)] for n, v in got.items() if v[augment.middle(n)] < 0.97}
    c.check("corruption suite: every corruption >= 97 % at its middle severity (issue 14)", not low, json.dumps(low))
    ev = robust.outlier_pool(raw, items, ood["synthetic"]["images"], robust.OUTLIER_EVAL_SEED, pre.height, pre.width,
                             cache)
    clean = np.stack([load_model_pixels(raw / rel, pre.height, pre.width) for rel, _ in items])
    lc, oc = outputs_of(clean)
    _, known_id = served_outputs(lc, meta, oc, clean)
    lo, oo = outputs_of(ev["px"])
    _, known_out = served_outputs(lo, meta, oo, ev["px"])
    fr = round(float((~known_out).mean()), 4)
    c.check(f"synthetic outliers: flagged {fr} equals metrics.json", fr == ood["synthetic"]["flag_rate"],
            f"metrics.json says {ood['synthetic']['flag_rate']}")
    c.check(f"clean validation: false flags {float((~known_id).mean()):.4f} equal metrics.json",
            round(float((~known_id).mean()), 4) == ood["false_flags"]["clean_validation"])
    loco = d / "loco.json"
    if loco.exists():
        lj = json.loads(loco.read_text())
        k = ood.get("loco_key", meta["celestial.ood_score"])
        c.check(f"loco.json: ten left-out classes, {k} mean AUROC {lj['summary'][k]['mean_auroc']}",
                len(lj["per_class"]) == len(labels))
    else:
        c.skip("loco.json", "absent")


def main(argv=None) -> int:
    model_dir = Path(__file__).resolve().parents[1]
    default_ds = Path(os.environ.get("CELESTIAL_DATASET", model_dir.parent.parent / "shared" / "dataset"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=default_ds)
    ap.add_argument("--dir", type=Path, default=model_dir, help="the artifacts' folder (default model/)")
    ap.add_argument("--quick", action="store_true", help="skip the corruption suite and the synthetic outliers "
                    "(about a minute without model/.cache)")
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
    check_golden(c, "served model", golden, sess, raw, pre, gray=False, meta=meta)
    check_decode_cases(c, golden, sess, pre, meta)
    want_out = ["logits"] + ([meta["celestial.ood_score_output"]] if "celestial.ood_score_output" in meta else [])
    c.check(f"served model: output names {want_out}", [o.name for o in sess.get_outputs()] == want_out)

    split = [line for line in (d / "validation-split.txt").read_text().splitlines() if line]
    if raw is None:
        c.skip("served model: validation accuracy", "no dataset")
    else:
        x = to_tensor(np.stack([load_model_pixels(raw / rel, h, w) for rel in split]), pre)
        pred = np.concatenate([sess.run(["logits"], {"input": x[i:i + 50]})[0] for i in range(0, len(x), 50)]).argmax(1)
        truth = np.array([labels.index(rel.split("/")[0]) for rel in split])
        acc = f"{(pred == truth).mean():.4f}"
        c.check(f"served model: validation accuracy {acc} == metadata", acc == meta["celestial.validation_accuracy"],
                f"metadata says {meta['celestial.validation_accuracy']}")
        c.check(f"served model: validation top-1 {acc} >= 0.997 (issue 14)", float(acc) >= 0.997)
        if args.quick:
            c.skip("served model: corruption suite and synthetic outliers", "--quick")
        else:
            check_robustness(c, d, raw, split, labels, sess, pre, meta)

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
