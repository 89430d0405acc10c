"""The model card's out-of-distribution sections: the served rule, the synthetic outliers, the false flags and
the leave-one-class-out results (rendered from metrics.json and loco.json by card.py)."""

from __future__ import annotations


def pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def ood_lines(mm: dict, loco: dict | None) -> list[str]:
    ood = mm.get("ood")
    if not ood:
        return []
    return [
        *rule_lines(ood, mm["metadata_added"]),
        *reliability_lines(ood["calibration"]),
        *synthetic_lines(ood),
        *(loco_lines(ood, loco) if loco else []),
    ]


def rule_lines(ood: dict, meta: dict) -> list[str]:
    """The served score, threshold, colour check and temperature."""
    return [
        "### Confidence and out-of-distribution signal",
        "",
        f"Score `{ood['score']}`: `{meta['celestial.ood_score_formula']}`; threshold `{ood['threshold']}`"
        + (
            f"; and the colour check `celestial.colour_ood` (`colour.ClassColourKnn`: distance `d` of the picture's "
            f"{ood['colour']['statistics']} standardised colour statistics to the k-th ({ood['colour']['k']}) "
            "nearest of "
            f"the {ood['colour']['bank_size']:,} bank pictures of the predicted class: the augmented training pool, "
            f"thinned so that a dropped picture has k kept ones within {ood['colour']['bank_radius']}), "
            f"threshold `{ood['colour']['threshold']}`; "
            "`known = s <= threshold and d <= colour threshold`"
            if "colour" in ood
            else "; `known = s <= threshold`"
        )
        + f" ({ood['threshold_rule']}). Temperature "
        f"`{ood['temperature']}` (fitted by negative log-likelihood on the validation split, clean and all "
        f"corruptions): NLL {ood['calibration']['nll_t1']} -> {ood['calibration']['nll']}, expected calibration "
        f"error {ood['calibration']['ece_t1']} -> {ood['calibration']['ece']}.",
        "",
    ]


def reliability_lines(cal: dict) -> list[str]:
    """The answer's probabilities are softmax(logits / T): their reliability on clean and corrupted pictures."""
    rel = cal.get("reliability")
    if not rel:
        return []
    head = "| validation pictures | pictures | ECE at T = 1 | ECE at the served T | " + " | ".join(
        f"{b[0]:.1f}-{b[1]:.1f}" for b in _all_bins(rel)
    )
    lines = [
        "The answer's `probabilities` are `softmax(logits / T)` and `confidence` is the largest of them, so one "
        "number says how sure the model is: among answers whose top probability is about p, about p are right. "
        "Reliability on the clean validation pictures and on the same pictures changed by every corruption "
        "family at its middle severity (photometric and framing), expected calibration error over 15 equal bins; "
        "the bins below: accuracy / mean top probability (pictures) at the served T "
        "([reliability diagram](plots/reliability.png)):",
        "",
        head + " |",
        "|---|---|---|---|" + "---|" * len(_all_bins(rel)),
    ]
    for name, r in rel.items():
        bins = {(b[0], b[1]): b for b in r["calibrated"]["bins"]}
        cells = [f"{bins[k][4]:.3f} / {bins[k][3]:.3f} ({bins[k][2]})" if k in bins else "" for k in _all_bins(rel)]
        n = sum(b[2] for b in r["calibrated"]["bins"])
        lines.append(
            f"| {name} | {n:,} | {r['t1']['ece']:.4f} | **{r['calibrated']['ece']:.4f}** | " + " | ".join(cells) + " |"
        )
    return [*lines, "", "![reliability](plots/reliability.png)", ""]


def _all_bins(rel: dict) -> list[tuple]:
    return sorted({(b[0], b[1]) for r in rel.values() for b in r["calibrated"]["bins"]})


def synthetic_lines(ood: dict) -> list[str]:
    """Synthetic outliers (AUROC, flag rates per kind), false flags, every score's AUROC."""
    syn = ood["synthetic"]
    return [
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
        f"(v2's max-softmax AUROC on the same pictures: {ood.get('previous_msp_auroc', '-')}, guide recipe's: "
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


def curve_rows(per: dict) -> list[str]:
    """The served checks' trade-off per left-out class: flagged at each false-flag rate (calibrated as served), and
    at 1 % with the zoom-out family left out of the reference."""
    if not all("served_curve" in v for v in per.values()):
        return []
    first = next(iter(per.values()))["served_curve"]
    rows = []
    for i, rate in enumerate(first["false_flags"]):
        cells = [v["served_curve"]["flagged"][i] for v in per.values()]
        rows.append(
            f"| served checks at {100 * rate:g} % false flags | "
            + " | ".join(pct(c) for c in cells)
            + f" | **{pct(sum(cells) / len(cells))}** | {pct(min(cells))} |"
        )
    cells = [v["served_curve"]["flagged_1pct_without_zoom_out"] for v in per.values()]
    rows.append(
        "| served checks at 1 % false flags, zoom-out family not in the reference | "
        + " | ".join(pct(c) for c in cells)
        + f" | {pct(sum(cells) / len(cells))} | {pct(min(cells))} |"
    )
    return rows


def loco_lines(ood: dict, loco: dict) -> list[str]:
    """The leave-one-class-out table of the served checks and every score's summary."""
    per, summ = loco["per_class"], loco["summary"]
    k = ood.get("loco_key", ood["score"])
    lines = [
        "### Leave-one-class-out (LOCO)",
        "",
        f"`model/loco.sh` ({loco['measured_at']}, {loco['seconds']:.0f} s): {loco['protocol']}."
        + (
            f" The colour check's measures recomputed for the current check from the same runs' logits "
            f"(`model/loco.sh --rescore DIR` after `--dump DIR`, {loco['rescored_at']})."
            if "rescored_at" in loco
            else ""
        )
        + f" Served checks `{k}`:",
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
                + f" | **{pct(summ[k]['mean_flag_rate_served_calibration'])}** | "
                + f"{pct(min(v['served_calibration'][k] for v in per.values()))} |"
            ]
            if "mean_flag_rate_served_calibration" in summ.get(k, {})
            else []
        ),
        *curve_rows(per),
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
