"""Compare two training runs' artifacts: did a retrain reproduce the committed model?

    python model/tools/compare_models.py A B      (A, B: output folders of model/train.sh --out, or model/)

For the served model and the guide-recipe fixture: every ONNX initializer, matched by where the graph uses it (bit
for bit; the largest absolute difference otherwise), the graph's nodes (tensor names compared by position:
tf2onnx's generated names may differ) and the metadata (the training time may differ); for
golden.json and testdata/guide-recipe-golden.json: every logit of every golden image and decode case, and
every other field (the model file's sha256 may differ, since the metadata holds the training time).
Exit status 0 when everything else is identical, 1 otherwise. Needs numpy and onnx only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# What may differ between two runs of the same code on the same data: when they ran.
TIME_KEYS = {"celestial.trained_at"}
GOLDEN_TIME_KEYS = {"model_sha256"}
MODELS = ["celestial-bodies.onnx", "testdata/guide-recipe.onnx"]
GOLDENS = ["golden.json", "testdata/guide-recipe-golden.json"]


def canonical_names(graph) -> dict[str, str]:
    """Tensor names by the order of their first use in the graph (its inputs, then each node's inputs and
    outputs): tf2onnx names the constants it folds with a counter that depends on what it converted before in
    the same process, and of two equal constants it keeps one or the other, so two exports of identical
    weights may name (and order) their initializers differently."""
    names: dict[str, str] = {}
    seen = [i.name for i in graph.input]
    for node in graph.node:
        seen += list(node.input) + list(node.output)
    seen += sorted(i.name for i in graph.initializer)  # unused initializers last
    for name in seen:
        if name and name not in names:
            names[name] = f"t{len(names)}"
    return names


def node_signature(node, names: dict[str, str]) -> tuple:
    """A node without its own name and with canonical tensor names."""
    attrs = tuple(sorted((a.name, a.SerializeToString()) for a in node.attribute))
    inputs = tuple(names.get(n, n) for n in node.input)
    return node.op_type, node.domain, inputs, tuple(names.get(n, n) for n in node.output), attrs


def compare_initializers(ga, gb, na: dict, nb: dict) -> tuple[int, int, int, float, list]:
    """(count in A, bit-identical count, values, max abs difference, renamed pairs), initializers matched by
    their canonical name."""
    from onnx import numpy_helper

    ia = {na[i.name]: i for i in ga.initializer}
    ib = {nb[i.name]: i for i in gb.initializer}
    equal, worst, values, renamed = 0, 0.0, 0, []
    for key, x in ia.items():
        y = ib.get(key)
        va = numpy_helper.to_array(x)
        values += va.size
        if y is None:
            worst = float("inf")
            continue
        vb = numpy_helper.to_array(y)
        renamed += [(x.name, y.name)] if x.name != y.name else []
        if va.dtype == vb.dtype and va.shape == vb.shape and np.array_equal(va, vb):
            equal += 1
        else:
            worst = max(worst, float(np.max(np.abs(va.astype(np.float64) - vb))) if va.shape == vb.shape else np.inf)
    return len(ia), equal, values, worst, renamed


def compare_model(a: Path, b: Path) -> list[str]:
    """Differences between two ONNX files (empty: identical but for the training time and generated names)."""
    import onnx

    ma, mb = onnx.load(str(a)), onnx.load(str(b))
    na, nb = canonical_names(ma.graph), canonical_names(mb.graph)
    count, equal, values, worst, renamed = compare_initializers(ma.graph, mb.graph, na, nb)
    print(
        f"  {a.name}: {equal} of {count} initializers ({values} values) bit-identical, "
        f"max abs difference {worst:.3g}; generated names that differ: {renamed or 'none'}"
    )
    problems = [] if len(mb.graph.initializer) == count else [f"{count} vs {len(mb.graph.initializer)} initializers"]
    if equal != count:
        problems.append(f"{count - equal} initializers differ (max abs {worst:.3g})")
    if [node_signature(n, na) for n in ma.graph.node] != [node_signature(n, nb) for n in mb.graph.node]:
        problems.append("graph nodes differ")
    meta_a = {p.key: p.value for p in ma.metadata_props}
    meta_b = {p.key: p.value for p in mb.metadata_props}
    keys = sorted(k for k in set(meta_a) | set(meta_b) if meta_a.get(k) != meta_b.get(k))
    print(f"  {a.name}: metadata keys that differ: {keys or 'none'}")
    if set(keys) - TIME_KEYS:
        problems.append(f"metadata differs: {sorted(set(keys) - TIME_KEYS)}")
    return problems


def logits(doc: dict) -> np.ndarray:
    rows = [e["logits"] for e in doc.get("images", []) + doc.get("decode_cases", [])]
    return np.array(rows, np.float64)


def diff_paths(a, b, path: str = "") -> list[str]:
    """The JSON paths at which two documents differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in diff_paths(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in diff_paths(x, y, f"{path}/{i}")]
    return [] if a == b else [path]


def compare_golden(a: Path, b: Path) -> list[str]:
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    la, lb = logits(da), logits(db)
    same_shape = la.shape == lb.shape
    identical = same_shape and np.array_equal(la, lb)
    worst = float(np.max(np.abs(la - lb))) if same_shape and la.size else float("nan")
    print(
        f"  {a.name}: {la.size} golden logits ({len(la)} pictures) "
        f"{'bit-identical' if identical else 'DIFFER'}, max abs difference {worst:.3g}"
    )
    paths = diff_paths(
        {k: v for k, v in da.items() if k not in GOLDEN_TIME_KEYS},
        {k: v for k, v in db.items() if k not in GOLDEN_TIME_KEYS},
    )
    print(f"  {a.name}: other fields that differ: {paths[:10] or 'none'}{' ...' if len(paths) > 10 else ''}")
    problems = [] if identical else [f"golden logits differ (max abs {worst:.3g})"]
    return problems + ([f"{len(paths)} golden fields differ"] if paths else [])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="a folder with the artifacts (e.g. model/)")
    ap.add_argument("b", type=Path, help="another (e.g. the --out of a retrain)")
    args = ap.parse_args(argv)
    problems = []
    for rel in MODELS:
        print(rel)
        problems += [f"{rel}: {p}" for p in compare_model(args.a / rel, args.b / rel)]
    for rel in GOLDENS:
        print(rel)
        problems += [f"{rel}: {p}" for p in compare_golden(args.a / rel, args.b / rel)]
    for p in problems:
        print(f"DIFFERENT {p}")
    print("reproduced: identical but for the training time" if not problems else "not reproduced")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
