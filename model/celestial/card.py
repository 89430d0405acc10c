"""Render the measured part of the model card (model/README.md) from metrics.json.

`python -m celestial.card [--out DIR]` rewrites the text between the `<!-- results:begin -->` and
`<!-- results:end -->` markers of DIR/README.md; the training pipeline calls it at its end, so the
card always quotes the numbers of the artifacts next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .card_ood import ood_lines, pct

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def smoothing_floor(hp: dict, k: int) -> float:
    """Lowest reachable cross-entropy with label smoothing: the entropy of the smoothed target."""
    ls = hp["label_smoothing"]
    hi, lo = 1 - ls + ls / k, ls / k
    return -(hi * math.log(hi) + (k - 1) * lo * math.log(lo)) if ls > 0 else 0.0


def lat(d: dict) -> str:
    best = f"{d['best_block_median_us']}; " if "best_block_median_us" in d else ""
    return f"{d['median_us']} us ({best}{d['mean_us']}, {d['p99_us']})"


def robustness_lines(mm: dict) -> list[str]:
    rob = mm.get("robustness")
    if not rob:
        return []
    sev = max(len(v["values"]) for v in rob["suite"].values())
    lines = [
        "### Robustness: the corruption suite",
        "",
        f"Each of the 300 validation images, changed by one corruption at one severity (seeded, seed {rob['seed']}), "
        f"re-encoded as JPEG quality {rob['reencode_quality']} and sent through the model's decode path; top-1 per "
        "corruption and severity; photometric families at five severities, the framing families (`crop`, `zoom_out`, "
        "`shift`, `aspect_*`: a part of the frame at a random position, the body smaller on a black canvas, moved "
        "off centre, a wider or taller frame) at three, sharing the middle column. **Bold** = the middle severity "
        "(target >= 97 %). The previous model (v2, "
        "`testdata/v2-celestial-bodies.onnx`, the same network trained without framing changes) and the guide "
        "recipe are "
        "evaluated on the same pictures at their middle severity ([plot](plots/robustness.png)).",
        "",
        "| corruption | parameter: its severities | "
        + " | ".join(f"sev {i + 1}" for i in range(sev))
        + " | v2 (middle) | guide recipe (middle) |",
        "|---|---|" + "---|" * sev + "---|---|",
    ]
    for n, spec in rob["suite"].items():
        accs = rob["served"][n]
        mid = len(accs) // 2
        # Centred on the middle column: the geometric families' three severities sit in columns 2-4.
        first = sev // 2 - mid
        cells = [
            (
                ""
                if not 0 <= i - first < len(accs)
                else (f"**{pct(accs[i - first])}**" if i - first == mid else pct(accs[i - first]))
            )
            for i in range(sev)
        ]
        vals = ", ".join(str(v) for v in spec["values"]) if spec["values"] != [None] else "one level"
        prev = pct(rob["previous"][n][mid]) if "previous" in rob else "-"
        gd = pct(rob["guide"][n][mid]) if "guide" in rob else "-"
        param = f"{spec['parameter']}: {vals}" if spec["values"] != [None] else "one level (ITU-R 601 luma)"
        lines.append(f"| {n} | {param} | " + " | ".join(cells) + f" | {prev} | {gd} |")
    lines += [
        "",
        f"Lowest top-1 at a middle severity: **{pct(rob['served_middle_min'])}**.",
        "",
        "![robustness](plots/robustness.png)",
        "",
    ]
    return lines


def compute_lines(mm: dict) -> list[str]:
    if not mm.get("compute"):
        return []
    c, ab = mm["compute"], mm.get("ab_previous")
    pc = mm.get("previous_compute") or {"macs": 0, "flops": 0}
    lines = [
        "### Compute",
        "",
        "| | served model (v3) | previous model (v2) |",
        "|---|---|---|",
        f"| multiply-adds per image (Conv + MatMul) | {c['macs']:,} | {pc['macs']:,} |",
        f"| FLOPs per image (2 x MACs + element-wise outputs) | {c['flops']:,} | {pc['flops']:,} |",
        f"| file size | {mm['bytes']:,} bytes | {mm.get('previous_bytes') or 0:,} bytes |",
    ]
    if ab:
        lines += [
            f"| A/B latency, batch 1, 1 thread (median of {ab['rounds']} alternating rounds of "
            f"{ab['iterations_per_round']:,} runs) | {ab['new_median_us']} us | {ab['old_median_us']} us |",
            "",
            f"Inference ratio v3 / v2: **{ab['ratio_median']}** (median of the per-round ratios; worst "
            f"round {ab['ratio_max']}; measured {ab['measured_at']}; rounds v3 {ab['new_round_medians_us']}, "
            f"v2 {ab['old_round_medians_us']} us).",
        ]
    return lines + [""]


def render(m: dict, loco: dict | None = None) -> str:
    mm, g = m["model"], m["guide_recipe"]
    mv, gv = mm["validation"], g["validation"]
    hp, ghp = mm["hyper_parameters"], g["hyper_parameters"]
    classes = list(mv["per_class"])
    lines = [
        BEGIN,
        "<!-- Generated by `python -m celestial.card` from metrics.json; edit the code, not this block. -->",
        "",
        f"Trained {mm['trained_at']} on {m['environment']['machine']} with {m['environment']['cpus']} CPUs; "
        f"split: {m['split']['train']} training / {m['split']['validation']} validation images "
        f"(stratified, seed {m['split']['seed']}).",
        "",
        "| | served model (`celestial-bodies.onnx`) | guide-recipe baseline (`testdata/guide-recipe.onnx`) |",
        "|---|---|---|",
        f"| input | RGB {hp['height']}x{hp['width']}, NCHW, normalised (JPEG: DCT-scaled decode) | "
        f"grayscale {ghp['height']}x{ghp['width']}, "
        "NHWC, 0..1 |",
        f"| parameters | {mm['parameters']:,} | {g['parameters']:,} |",
        f"| file size | {mm['bytes']:,} bytes | {g['bytes']:,} bytes |",
        f"| **validation top-1** | **{pct(mv['accuracy'])}** ({mv['correct']}/{mv['total']}) | "
        f"{pct(gv['accuracy'])} ({gv['correct']}/{gv['total']}) |",
        f"| lowest per-class accuracy | {pct(mv['min_per_class'])} | {pct(gv['min_per_class'])} |",
        f"| ONNX Runtime latency, batch 1, 1 thread: median (best block median; mean, p99) | "
        f"{lat(mm['latency'])} | {lat(g['latency'])} |",
        f"| ONNX Runtime vs Keras on the validation split: max abs logit diff, same argmax | "
        f"{mm['parity']['max_abs_logit_diff']:.2g}, {mm['parity']['identical_argmax']} | "
        f"{g['parity']['max_abs_logit_diff']:.2g}, {g['parity']['identical_argmax']} |",
        f"| training time (2 shared cores) | {mm['train_seconds']} s, {hp['epochs']} epochs | "
        f"{g['train_seconds']} s, {ghp['epochs']} epochs |",
        "",
        f"Latency: ONNX Runtime {m['environment']['onnxruntime']} Python API, `intra_op_num_threads=1`, one "
        f"[1,...] float32 tensor, {mm['latency']['iterations']:,} timed runs in {mm['latency'].get('blocks', 1)} "
        f"blocks after {mm['latency'].get('warmup', 300)} warm-up runs, "
        f"measured {mm['latency'].get('measured_at', mm['trained_at'])}, "
        "on a machine whose 2 cores are shared with other work: the median over all runs is the figure to quote, "
        "the best block's median the uncontended cost, mean and p99 carry the neighbours' noise. Re-measure "
        "without retraining: `model/bench.sh`.",
        "",
        *compute_lines(mm),
        *robustness_lines(mm),
        *ood_lines(mm, loco),
        "Per-class validation accuracy:",
        "",
        "| class | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
        "| served model | " + " | ".join(pct(mv["per_class"][c]) for c in classes) + " |",
        "| guide recipe | " + " | ".join(pct(gv["per_class"][c]) for c in classes) + " |",
        "",
        "Confusion matrix of the served model on the validation split ([PNG](plots/confusion-matrix.png)):",
        "",
        "```text",
        mm["confusion_text"],
        "```",
        "",
        "Guide-recipe baseline ([PNG](plots/guide-recipe-confusion-matrix.png)):",
        "",
        "```text",
        g["confusion_text"],
        "```",
        "",
        "Training curves: [served model](plots/training-curves.png), "
        "[guide recipe](plots/guide-recipe-training-curves.png). The served model's loss is cross-entropy "
        f"against label-smoothed targets ({hp['label_smoothing']}), "
        f"whose floor is {smoothing_floor(hp, len(classes)):.2f}, not 0; its training "
        "accuracy is measured on augmented batches.",
        "",
        "![training curves](plots/training-curves.png)",
        "",
        f"Input normalisation (metadata, per channel R, G, B, after x/255): mean "
        f"{', '.join(mm['mean'])}; std {', '.join(mm['std'])} (the network standardises each image itself).",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in m["environment"].items()) + ".",
        "",
        f"`celestial-bodies.onnx` sha256 `{mm['sha256']}`.",
        END,
    ]
    return "\n".join(lines)


def update(readme: Path, metrics: dict) -> None:
    text = readme.read_text()
    loco_path = readme.parent / "loco.json"
    loco = json.loads(loco_path.read_text()) if loco_path.exists() else None
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + render(metrics, loco) + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args(argv)
    update(args.out / "README.md", json.loads((args.out / "metrics.json").read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
