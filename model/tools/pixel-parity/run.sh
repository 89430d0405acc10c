#!/usr/bin/env bash
# Measure image-rs (the server's decoder and resizer) against the training pipeline's preprocessing on
# the validation split, and the effect on the committed model's logits. The source of golden.json's
# tolerances. Needs model/.venv (model/train.sh creates it) and the dataset; builds a small Rust binary.
#   model/tools/pixel-parity/run.sh [DATASET_ROOT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model=$(cd "$here/../.." && pwd)
ds=${1:-${CELESTIAL_DATASET:-$model/../../shared/dataset}}
raw=$ds/raw; [ -d "$raw" ] || raw=$ds
[ -d "$raw" ] || { echo "pixel-parity: dataset not found at $raw" >&2; exit 2; }
raw=$(cd "$raw" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cd "$model"
.venv/bin/python - "$raw" "$work" <<'PY'
import sys, numpy as np
from celestial.preprocess import guide_gray8, load_rgb8, resize_rgb8
raw, work = sys.argv[1:]
items = [l.strip() for l in open("validation-split.txt") if l.strip()]
with open(f"{work}/ref128.bin", "wb") as a, open(f"{work}/ref64.bin", "wb") as b, open(f"{work}/refg32.bin", "wb") as g:
    for rel in items:
        im = load_rgb8(f"{raw}/{rel}")
        a.write(np.asarray(im).tobytes()) if im.size == (128, 128) else None
        b.write(resize_rgb8(im, 64, 64).tobytes())
        g.write(guide_gray8(im, 32, 32).tobytes())
PY
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target} cargo run --quiet --release --manifest-path "$here/Cargo.toml" -- \
  "$raw" validation-split.txt "$work/ref128.bin" "$work/ref64.bin" 64 64 "$work/rust64.bin" \
  "$work/refg32.bin" "$work/rustg32.bin"
.venv/bin/python - "$work" <<'PY'
import sys, json, numpy as np, onnxruntime as ort
from celestial.preprocess import Preprocessing, to_tensor
work = sys.argv[1]
sess = ort.InferenceSession("celestial-bodies.onnx")
meta = sess.get_modelmeta().custom_metadata_map
labels = json.loads(meta["celestial.labels"])
pre = Preprocessing(64, 64, "rgb", "NCHW", meta["celestial.scale"], tuple(meta["celestial.mean"].split(",")),
                    tuple(meta["celestial.std"].split(",")))
a = np.fromfile(f"{work}/ref64.bin", np.uint8).reshape(-1, 64, 64, 3)
b = np.fromfile(f"{work}/rust64.bin", np.uint8).reshape(-1, 64, 64, 3)
la = sess.run(["logits"], {"input": to_tensor(a, pre)})[0]
lb = sess.run(["logits"], {"input": to_tensor(b, pre)})[0]
truth = np.array([labels.index(l.split("/")[0]) for l in open("validation-split.txt") if l.strip()])
print(f"logits, pipeline pixels vs image-rs pixels: max abs diff {np.abs(la - lb).max():.4f}; "
      f"identical predictions {(la.argmax(1) == lb.argmax(1)).sum()}/{len(la)}; "
      f"accuracy with image-rs pixels {(lb.argmax(1) == truth).mean():.4f}")
guide = ort.InferenceSession("testdata/guide-recipe.onnx")
gpre = Preprocessing(32, 32, "grayscale", "NHWC", "0.00392156862745098", ("0",), ("1",))
ga = np.fromfile(f"{work}/refg32.bin", np.uint8).reshape(-1, 32, 32, 1)
gb = np.fromfile(f"{work}/rustg32.bin", np.uint8).reshape(-1, 32, 32, 1)
la = guide.run(["logits"], {"input": to_tensor(ga, gpre)})[0]
lb = guide.run(["logits"], {"input": to_tensor(gb, gpre)})[0]
print(f"guide recipe logits, pipeline pixels vs image-rs pixels: max abs diff {np.abs(la - lb).max():.4f}; "
      f"identical predictions {(la.argmax(1) == lb.argmax(1)).sum()}/{len(la)}")
PY
