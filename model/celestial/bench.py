"""ONNX Runtime latency of the committed models: batch 1, one intra-op thread, many iterations.

`python -m celestial.bench [--iterations N]` (from model/, or model/bench.sh) measures
celestial-bodies.onnx and testdata/guide-recipe.onnx, writes the figures into metrics.json and
re-renders the model card's results section. The training pipeline uses the same function.

The 2 cores of the development machines are shared, so the runs are split into blocks: the median
over all runs is the quoted figure, the best block's median shows the uncontended cost, and the
mean and p99 show the neighbours' noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def latency_us(path: Path, shape: list, iterations: int, warmup: int = 300, blocks: int = 10) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    for _ in range(warmup):
        sess.run(["logits"], {"input": x})
    samples = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        sess.run(["logits"], {"input": x})
        samples[i] = time.perf_counter() - t0
    samples *= 1e6
    block_medians = [float(np.median(b)) for b in np.array_split(samples, blocks)]
    return {"batch": 1, "intra_op_threads": 1, "iterations": iterations, "warmup": warmup,
            "median_us": round(float(np.median(samples)), 1), "mean_us": round(float(samples.mean()), 1),
            "p99_us": round(float(np.percentile(samples, 99)), 1),
            "best_block_median_us": round(min(block_medians), 1), "blocks": blocks,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--iterations", type=int, default=20000)
    args = ap.parse_args(argv)
    metrics_path = args.dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    m, g = metrics["model"], metrics["guide_recipe"]
    hp, ghp = m["hyper_parameters"], g["hyper_parameters"]
    m["latency"] = latency_us(args.dir / m["file"], [3, hp["height"], hp["width"]], args.iterations)
    g["latency"] = latency_us(args.dir / g["file"], [ghp["height"], ghp["width"], 1], args.iterations // 4)
    print(f"celestial-bodies.onnx: {json.dumps(m['latency'])}")
    print(f"guide-recipe.onnx:     {json.dumps(g['latency'])}")
    metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
    if (args.dir / "README.md").exists():
        from . import card
        card.update(args.dir / "README.md", metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
