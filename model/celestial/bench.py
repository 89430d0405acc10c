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

from .config import PREVIOUS_FILE
from .metadata import preprocessing_from, read_metadata


def latency_us(path: Path, shape: list, iterations: int, warmup: int = 300, blocks: int = 10) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, *shape), dtype=np.float32)
    for _ in range(warmup):  # every output (v2 also has ood_score, which the server fetches too)
        sess.run(None, {"input": x})
    samples = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        samples[i] = time.perf_counter() - t0
    samples *= 1e6
    block_medians = [float(np.median(b)) for b in np.array_split(samples, blocks)]
    return {
        "batch": 1,
        "intra_op_threads": 1,
        "iterations": iterations,
        "warmup": warmup,
        "median_us": round(float(np.median(samples)), 1),
        "mean_us": round(float(samples.mean()), 1),
        "p99_us": round(float(np.percentile(samples, 99)), 1),
        "best_block_median_us": round(min(block_medians), 1),
        "blocks": blocks,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def ab_latency(new: Path, new_shape: list, old: Path, old_shape: list, rounds: int = 6, iterations: int = 4000) -> dict:
    """A/B: alternate the two models (new, old, new, old, ...) `rounds` times each, same process, same
    conditions; per round the median of `iterations` runs (batch 1, one thread). The ratio is the median
    over rounds of new/old round medians (each pair measured back to back)."""
    new_r, old_r = [], []
    for _ in range(rounds):
        new_r.append(latency_us(new, new_shape, iterations, warmup=200, blocks=4)["median_us"])
        old_r.append(latency_us(old, old_shape, iterations, warmup=200, blocks=4)["median_us"])
    ratios = [a / b for a, b in zip(new_r, old_r)]
    return {
        "rounds": rounds,
        "iterations_per_round": iterations,
        "new_round_medians_us": new_r,
        "old_round_medians_us": old_r,
        "ratio_median": round(float(np.median(ratios)), 3),
        "ratio_max": round(float(np.max(ratios)), 3),
        "new_median_us": round(float(np.median(new_r)), 1),
        "old_median_us": round(float(np.median(old_r)), 1),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def onnx_macs(path: Path) -> dict:
    """Multiply-accumulates per image of the Conv and MatMul/Gemm nodes (shape inference, batch 1), and
    the element-wise operations' output elements (counted once each)."""
    import onnx
    from onnx import shape_inference

    m = onnx.load(str(path))
    inp = m.graph.input[0]
    inp.type.tensor_type.shape.dim[0].dim_value = 1
    m = shape_inference.infer_shapes(m)
    shapes = {}
    for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    macs = other = 0
    for n in m.graph.node:
        out = shapes.get(n.output[0])
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            w = inits.get(n.input[1]) or shapes.get(n.input[1])
            macs += int(np.prod(out)) * int(w[0])
        elif out:
            other += int(np.prod(out))
    return {"macs": int(macs), "flops": int(2 * macs + other), "other_elementwise": int(other)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument(
        "--rounds", type=int, default=6, help=f"alternating A/B rounds against the previous model ({PREVIOUS_FILE})"
    )
    args = ap.parse_args(argv)
    metrics_path = args.dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    m, g = metrics["model"], metrics["guide_recipe"]
    hp, ghp = m["hyper_parameters"], g["hyper_parameters"]
    m["latency"] = latency_us(args.dir / m["file"], [3, hp["height"], hp["width"]], args.iterations)
    g["latency"] = latency_us(args.dir / g["file"], [ghp["height"], ghp["width"], 1], args.iterations // 4)
    print(f"celestial-bodies.onnx: {json.dumps(m['latency'])}")
    print(f"guide-recipe.onnx:     {json.dumps(g['latency'])}")
    previous = args.dir / PREVIOUS_FILE
    if previous.exists() and "ab_previous" in m:
        p = preprocessing_from(read_metadata(previous))
        shape = [3, hp["height"], hp["width"]]
        m["ab_previous"] = ab_latency(args.dir / m["file"], shape, previous, [3, p.height, p.width], rounds=args.rounds)
        print(f"A/B vs the previous model: {json.dumps(m['ab_previous'])}")
    metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
    if (args.dir / "README.md").exists():
        from . import card

        card.update(args.dir / "README.md", metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
