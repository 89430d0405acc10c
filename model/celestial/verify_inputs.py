"""Checks of the preprocessing on synthetic edge cases, and of the corruption suite and synthetic-outlier
figures recomputed from the committed model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .checks import Checks
from .preprocess import Preprocessing, load_model_pixels, load_rgb8, to_tensor
from .verify_outputs import served_outputs


def check_preprocessing(c: Checks) -> None:
    """Unit checks of the preprocessing definition on synthetic images (the contract's edge cases)."""

    from PIL import Image

    from .preprocess import parse_f32, to_rgb8

    rgba = Image.new("RGBA", (2, 1), (200, 100, 50, 128))
    rgba.putpixel((1, 0), (255, 255, 255, 0))
    got = np.asarray(to_rgb8(rgba))
    c.check(
        "preprocess: alpha composited onto black, round(c*a/255)",
        got[0, 0].tolist() == [100, 50, 25] and got[0, 1].tolist() == [0, 0, 0],
        str(got.tolist()),
    )
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
    c.check(
        "preprocess: palette with transparent index onto black",
        np.asarray(to_rgb8(palette_image(True)))[0, 0].tolist() == [0, 0, 0],
    )
    v16 = np.array([[0, 128, 129, 32767, 65407, 65535]], dtype=np.uint16)
    got16 = np.asarray(to_rgb8(Image.fromarray(v16)))[0, :, 0]
    c.check(
        "preprocess: 16-bit grayscale reduced by round(v*255/65535)",
        got16.tolist() == np.rint(v16[0].astype(np.float64) * 255 / 65535).astype(int).tolist(),
        str(got16.tolist()),
    )
    # EXIF orientation 6 (rotate 90 degrees clockwise): a 4x2 image becomes 2x4.
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (4, 2), (255, 0, 0)).save(buf, "JPEG", exif=exif)
    buf.seek(0)
    c.check("preprocess: EXIF orientation applied", load_rgb8(buf).size == (2, 4), str(load_rgb8(buf).size))
    pre = Preprocessing(
        1, 1, "rgb", "NCHW", "0.00392156862745098", ("0.323", "0.319", "0.320"), ("0.309", "0.297", "0.297")
    )
    px = np.arange(256, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)
    t = to_tensor(px, pre)
    want = (px.astype(np.float32) * np.float32(0.00392156862745098) - np.float32(0.319)) / np.float32(0.297)
    c.check("preprocess: float32 ((p*scale)-mean)/std, NCHW", np.array_equal(t[:, 1, 0, 0], want[:, 0, 0, 1]))
    c.check("preprocess: decimal constants parse to one float32", parse_f32("0.1") == np.float32(0.1))


def check_robustness(
    c: Checks, d: Path, raw: Path, split: list, labels: list, sess, pre: Preprocessing, meta: dict
) -> None:
    """Re-run the fixed corruption suite and the synthetic outliers; the figures must equal metrics.json's."""
    from . import augment, pools

    metrics = json.loads((d / "metrics.json").read_text())
    rob, ood = metrics["model"]["robustness"], metrics["model"]["ood"]
    items = [(rel, labels.index(rel.split("/")[0])) for rel in split]
    y = np.array([t for _, t in items])
    cache = d / ".cache"
    suite = pools.suite_pixels(raw, items, pre.height, pre.width, cache)

    def outputs_of(px):
        x = to_tensor(px, pre)
        outs = [sess.run(None, {"input": x[i : i + 100]}) for i in range(0, len(x), 100)]
        return (
            np.concatenate([o[0] for o in outs]),
            np.concatenate([o[1] for o in outs]) if len(outs[0]) > 1 else None,
        )

    got = {
        n: [
            round(float((outputs_of(suite[f"{n}/{s}"])[0].argmax(1) == y).mean()), 4)
            for s in range(len(augment.SUITE[n][1]))
        ]
        for n in augment.SUITE
    }
    c.check(
        "corruption suite: top-1 per corruption and severity equal metrics.json", got == rob["served"], json.dumps(got)
    )
    low = {n: v[augment.middle(n)] for n, v in got.items() if v[augment.middle(n)] < 0.97}
    c.check(
        "corruption suite: every corruption >= 97 % at its middle severity (the robustness target)",
        not low,
        json.dumps(low),
    )
    ev = pools.outlier_pool(
        raw, items, ood["synthetic"]["images"], pools.OUTLIER_EVAL_SEED, pre.height, pre.width, cache
    )
    clean = np.stack([load_model_pixels(raw / rel, pre.height, pre.width, pre.resize_mode) for rel, _ in items])
    lc, oc = outputs_of(clean)
    _, known_id = served_outputs(lc, meta, oc, clean)
    lo, oo = outputs_of(ev["px"])
    _, known_out = served_outputs(lo, meta, oo, ev["px"])
    fr = round(float((~known_out).mean()), 4)
    c.check(
        f"synthetic outliers: flagged {fr} equals metrics.json",
        fr == ood["synthetic"]["flag_rate"],
        f"metrics.json says {ood['synthetic']['flag_rate']}",
    )
    c.check(
        f"clean validation: false flags {float((~known_id).mean()):.4f} equal metrics.json",
        round(float((~known_id).mean()), 4) == ood["false_flags"]["clean_validation"],
    )
    loco = d / "loco.json"
    if loco.exists():
        lj = json.loads(loco.read_text())
        k = ood.get("loco_key", meta["celestial.ood_score"])
        c.check(
            f"loco.json: ten left-out classes, {k} mean AUROC {lj['summary'][k]['mean_auroc']}",
            len(lj["per_class"]) == len(labels),
        )
    else:
        c.skip("loco.json", "absent")
