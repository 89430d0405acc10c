"""The golden fixtures against a running server, for scripts/arm64-check (standard library only).

    arm64_golden.py HOST:PORT PLATFORM OUT.json   check one server, write its answers
    arm64_golden.py --compare A.json B.json       compare two servers' answers (amd64 vs arm64)

A server is checked the way the amd64 image is: its start-up self-check must have passed over the
whole golden set the model carries (`GET /model`: status passed), and every fixture of
model/golden.json sent to `POST /predict` must give the recorded prediction and logits within
golden.json's tolerances: the 10 class images as PNGs of their model-input pixels (the same input
tensor: `logit_max_abs_same_pixels`), or for a model that re-frames its pictures (resize mode
content_square) of their decoded pixels (re-framed and resized here: `logit_max_abs_reframed`), the
decode cases as their own files (JPEGs decoded and resized here: `logit_max_abs`). /predict answers
probabilities (softmax at the model's temperature T, 1 without one); their logarithms times T are the
logits up to a constant, so both are compared centred (mean 0).
"""

import base64
import json
import math
import struct
import sys
import urllib.request
import zlib
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent.parent / "model" / "golden.json"


def png_rgb8(width: int, height: int, pixels: bytes) -> bytes:
    """A PNG (8-bit RGB, no filter) of row-major HWC pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + pixels[y * width * 3 : (y + 1) * width * 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def centred(values: list[float]) -> list[float]:
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def class_tolerance(golden: dict) -> float:
    """The class images' tolerance: identical tensors, or re-framed and resized by the server."""
    if golden.get("resize_mode", "stretch") == "content_square":
        return golden["tolerance"]["logit_max_abs_reframed"]
    return golden["tolerance"]["logit_max_abs_same_pixels"]


def fixtures(golden: dict) -> list[tuple[str, bytes, str, list[float], str | None, float]]:
    """(name, file, content type, recorded logits, expected label or None, tolerance) of every fixture."""
    tol = golden["tolerance"]
    reframed = golden.get("resize_mode", "stretch") == "content_square"
    out = []
    for img in golden["images"]:
        if reframed:
            pixels = base64.b64decode(img["decoded_rgb8_base64"])
            png = png_rgb8(img["decoded_width"], img["decoded_height"], pixels)
        else:
            png = png_rgb8(img["width"], img["height"], base64.b64decode(img["pixels_rgb8_base64"]))
        out.append((img["image"], png, "image/png", img["logits"], img["prediction"], class_tolerance(golden)))
    for i, case in enumerate(golden["decode_cases"]):
        name = f"decode case {i} ({case['format']} {case['stored_width']}x{case['stored_height']} {case['mode']})"
        ctype = "image/png" if case["format"] == "png" else "image/jpeg"
        data = base64.b64decode(case["file_base64"])
        out.append((name, data, ctype, case["logits"], None, tol["logit_max_abs"]))
    return out


def get_json(url: str, data: bytes | None = None, ctype: str | None = None) -> dict:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype} if ctype else {})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def check(addr: str, platform: str, out: str) -> None:
    golden = json.loads(GOLDEN.read_text())
    labels = golden["labels"]
    temperature = float(golden["outputs"].get("temperature") or 1.0)
    model = get_json(f"http://{addr}/model")
    sc = model.get("self_check", {})
    # every class image and every decode case of at most 16 KiB (golden_set.MAX_FILE_BYTES)
    small = [c for c in golden["decode_cases"] if len(base64.b64decode(c["file_base64"])) <= 16 * 1024]
    want = len(golden["images"]) + len(small)
    if sc.get("status") != "passed" or sc.get("images") != want or sc.get("skipped") != 0:
        sys.exit(f"{platform}: the start-up self-check did not pass over the golden set: {sc}")
    failures, answers, worst = [], {}, 0.0
    for name, data, ctype, logits, expected, tol in fixtures(golden):
        got = get_json(f"http://{addr}/predict", data, ctype)
        probs = [got["probabilities"][label] for label in labels]
        # calibrated probabilities are softmax(logits / T): their logarithms times T are the logits
        served = centred([temperature * math.log(max(p, 1e-30)) for p in probs])
        diff = max(abs(a - b) for a, b in zip(served, centred(logits)))
        worst = max(worst, diff)
        recorded = labels[max(range(len(logits)), key=lambda k: logits[k])]
        if got["prediction"] != recorded or (expected is not None and got["prediction"] != expected):
            failures.append(f"{name}: prediction {got['prediction']}, expected {expected or recorded}")
        if diff > tol:
            failures.append(f"{name}: logits differ by {diff:.6f} > tolerance {tol}")
        answers[name] = {"prediction": got["prediction"], "logits": served, "confidence": got["confidence"]}
    print(
        f"arm64-check: {platform}: self-check passed ({sc['images']} images, max logit diff "
        f"{sc['max_logit_diff']:.6f}); {len(answers)} golden fixtures via /predict, max logit diff {worst:.6f}",
        file=sys.stderr,
    )
    if failures:
        sys.exit(f"{platform}: " + "; ".join(failures))
    Path(out).write_text(json.dumps(answers))


def compare(a_path: str, b_path: str) -> None:
    """The two platforms' answers: the same predictions, logits within the class images' tolerance
    of each other's for the PNGs (identical tensors) and within logit_max_abs for the JPEGs."""
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    golden = json.loads(GOLDEN.read_text())
    tol = golden["tolerance"]
    assert a.keys() == b.keys(), "different fixtures"
    worst, failures = 0.0, []
    for name in a:
        diff = max(abs(x - y) for x, y in zip(a[name]["logits"], b[name]["logits"]))
        worst = max(worst, diff)
        limit = tol["logit_max_abs"] if name.startswith("decode case") else class_tolerance(golden)
        if a[name]["prediction"] != b[name]["prediction"]:
            failures.append(f"{name}: {a[name]['prediction']} vs {b[name]['prediction']}")
        if diff > limit:
            failures.append(f"{name}: logits differ by {diff:.6f} > {limit}")
    print(f"arm64-check: amd64 vs arm64: same predictions, max logit diff {worst:.6f}", file=sys.stderr)
    if failures:
        sys.exit("amd64 vs arm64: " + "; ".join(failures))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4:
        check(*sys.argv[1:])
    else:
        sys.exit(__doc__)
