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

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def pct(v: float) -> str:
    return f"{100 * v:.2f} %"


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
        "corruption and severity. **Bold** = the middle severity (target >= 97 %). The previous model (v1, "
        "`testdata/v1-celestial-bodies.onnx`, 64x64, flips and rotations only) and the guide recipe are "
        "evaluated on the same pictures at their middle severity ([plot](plots/robustness.png)).",
        "",
        "| corruption | parameter: severities 1-5 | "
        + " | ".join(f"sev {i + 1}" for i in range(sev))
        + " | v1 (middle) | guide recipe (middle) |",
        "|---|---|" + "---|" * sev + "---|---|",
    ]
    for n, spec in rob["suite"].items():
        accs = rob["served"][n]
        mid = len(accs) // 2
        cells = []
        for i in range(sev):
            if len(accs) == 1:
                cells.append(f"**{pct(accs[0])}**" if i == sev // 2 else "")
            elif i < len(accs):
                cells.append(f"**{pct(accs[i])}**" if i == mid else pct(accs[i]))
        vals = ", ".join(str(v) for v in spec["values"]) if spec["values"] != [None] else "one level"
        v1 = pct(rob["v1"][n][mid]) if "v1" in rob else "-"
        gd = pct(rob["guide"][n][mid]) if "guide" in rob else "-"
        param = f"{spec['parameter']}: {vals}" if spec["values"] != [None] else "one level (ITU-R 601 luma)"
        lines.append(f"| {n} | {param} | " + " | ".join(cells) + f" | {v1} | {gd} |")
    lines += [
        "",
        f"Lowest top-1 at a middle severity: **{pct(rob['served_middle_min'])}**.",
        "",
        "![robustness](plots/robustness.png)",
        "",
    ]
    return lines


def ood_lines(mm: dict, loco: dict | None) -> list[str]:
    ood = mm.get("ood")
    if not ood:
        return []
    meta = mm["metadata_added"]
    syn = ood["synthetic"]
    lines = [
        "### Confidence and out-of-distribution signal",
        "",
        f"Score `{ood['score']}`: `{meta['celestial.ood_score_formula']}`; threshold `{ood['threshold']}`"
        + (
            f"; and the colour check `celestial.colour_ood` (`colour.ClassColourKnn`: distance `d` of the picture's "
            f"{ood['colour']['statistics']} standardised colour statistics to the k-th ({ood['colour']['k']}) "
            "nearest of "
            f"the {ood['colour']['bank_size']:,} bank pictures (every {ood['colour']['bank_pool_stride']}th of the "
            f"augmented training pool) of the predicted class), threshold `{ood['colour']['threshold']}`; "
            "`known = s <= threshold and d <= colour threshold`"
            if "colour" in ood
            else "; `known = s <= threshold`"
        )
        + f" ({ood['threshold_rule']}). Temperature "
        f"`{ood['temperature']}` (fitted by negative log-likelihood on the validation split, clean and all "
        f"corruptions): NLL {ood['calibration']['nll_t1']} -> {ood['calibration']['nll']}, expected calibration "
        f"error {ood['calibration']['ece_t1']} -> {ood['calibration']['ece']}.",
        "",
        f"Synthetic outliers ({syn['images']} pictures generated in code with a seed not used in training, "
        f"jigsaw/blend built from validation images, half of them also photometrically changed, sent as JPEG): "
        f"AUROC against the clean validation images **{syn['auroc_vs_clean_val']:.4f}**"
        + (
            f" (the two checks as one score, each calibrated on the clean validation images, the larger; "
            f"`{ood['score']}` alone {syn['auroc_vs_clean_val_score_alone']:.4f})"
            if "auroc_vs_clean_val_score_alone" in syn
            else ""
        )
        + ", flagged "
        f"**{pct(syn['flag_rate'])}** at the served threshold "
        f"(v1's max-softmax AUROC on the same pictures: {ood.get('v1_msp_auroc', '-')}, guide recipe's: "
        f"{ood.get('guide_msp_auroc', '-')}).",
        "",
        "| outlier kind | " + " | ".join(syn["per_kind"]) + " |",
        "|---|" + "---|" * len(syn["per_kind"]),
        "| AUROC | " + " | ".join(f"{v['auroc']:.4f}" for v in syn["per_kind"].values()) + " |",
        "| flagged | " + " | ".join(pct(v["flag_rate"]) for v in syn["per_kind"].values()) + " |",
        "",
        "False flags (`known = false`) on in-distribution validation images at the served threshold:",
        "",
        "| clean | " + " | ".join(k for k in ood["false_flags"] if k != "clean_validation") + " |",
        "|---|" + "---|" * (len(ood["false_flags"]) - 1),
        "| " + " | ".join(pct(v) for v in ood["false_flags"].values()) + " |",
        "",
        "Every score on the synthetic outliers (same model; the feature scores use the penultimate layer, "
        "fitted on the training pool): "
        + ", ".join(f"{k} {v:.4f}" for k, v in ood["all_scores_synthetic_auroc"].items())
        + ".",
        "",
    ]
    if loco:
        per, summ = loco["per_class"], loco["summary"]
        k = ood.get("loco_key", ood["score"])
        lines += [
            "### Leave-one-class-out (LOCO)",
            "",
            f"`model/loco.sh` ({loco['measured_at']}, {loco['seconds']:.0f} s): {loco['protocol']}. Served checks "
            f"`{k}`:",
            "",
            "| left out | " + " | ".join(per) + " | **mean** | min |",
            "|---|" + "---|" * (len(per) + 2),
            "| AUROC | "
            + " | ".join(f"{v['scores'][k]['auroc']:.4f}" for v in per.values())
            + f" | **{summ[k]['mean_auroc']:.4f}** | {summ[k]['min_auroc']:.4f} |",
            "| flagged at 1 % false flags | "
            + " | ".join(pct(v["scores"][k]["flag_rate_at_1pct"]) for v in per.values())
            + f" | **{pct(summ[k]['mean_flag_rate_at_1pct'])}** | |",
            *(
                [
                    "| flagged at the thresholds calibrated as served | "
                    + " | ".join(pct(v["served_calibration"][k]) for v in per.values())
                    + f" | **{pct(summ[k]['mean_flag_rate_served_calibration'])}** | |"
                ]
                if "mean_flag_rate_served_calibration" in summ.get(k, {})
                else []
            ),
            "| 9-class val top-1 | " + " | ".join(pct(v["accuracy_9"]) for v in per.values()) + " | | |",
            "",
            *(
                [
                    f'"Calibrated as served": 1 % false flags over the nine classes\' clean *and* middle-severity '
                    "corrupted validation images together, as `ood.calibrate` sets the served thresholds "
                    "(the row above it: 1 % of the clean ones only, the leave-one-class-out protocol); "
                    "msp alone flags "
                    f"{pct(summ['msp']['mean_flag_rate_served_calibration'])} of the left-out bodies that way.",
                    "",
                ]
                if "mean_flag_rate_served_calibration" in summ.get("msp", {})
                else []
            ),
            "All scores measured in the same runs (mean AUROC / min AUROC / mean flag rate at 1 % false flags):",
            "",
            "| score | mean AUROC | min AUROC | mean flagged |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {v['mean_auroc']:.4f} | {v['min_auroc']:.4f} | {pct(v['mean_flag_rate_at_1pct'])} |"
            for n, v in summ.items()
        ]
        lines.append("")
    return lines


def compute_lines(mm: dict) -> list[str]:
    if not mm.get("compute"):
        return []
    c, ab = mm["compute"], mm.get("ab_v1")
    v1c = mm.get("v1_compute") or {"macs": 0, "flops": 0}
    lines = [
        "### Compute",
        "",
        "| | served model (v2) | previous model (v1) |",
        "|---|---|---|",
        f"| multiply-adds per image (Conv + MatMul) | {c['macs']:,} | {v1c['macs']:,} |",
        f"| FLOPs per image (2 x MACs + element-wise outputs) | {c['flops']:,} | {v1c['flops']:,} |",
        f"| file size | {mm['bytes']:,} bytes | {mm.get('v1_bytes') or 0:,} bytes |",
    ]
    if ab:
        lines += [
            f"| A/B latency, batch 1, 1 thread (median of {ab['rounds']} alternating rounds of "
            f"{ab['iterations_per_round']:,} runs) | {ab['new_median_us']} us | {ab['old_median_us']} us |",
            "",
            f"Inference ratio v2 / v1: **{ab['ratio_median']}** (median of the per-round ratios; worst "
            f"round {ab['ratio_max']}; measured {ab['measured_at']}; rounds v2 {ab['new_round_medians_us']}, "
            f"v1 {ab['old_round_medians_us']} us).",
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
