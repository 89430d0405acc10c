"""What a run reports: plots, confusion text, the environment, metrics.json and the model card's results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from . import augment


def confusion_text(cm: list[list[int]], classes: list[str]) -> str:
    w = max(len(c) for c in classes)
    head = " " * (w + 2) + " ".join(f"{c[:4]:>4}" for c in classes)
    rows = [f"{c:<{w}}  " + " ".join(f"{v:>4}" for v in row) for c, row in zip(classes, cm)]
    return "\n".join(["rows: true class, columns: predicted (first 4 letters)", head, *rows])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm, classes, title, path: Path):
    plt = _pyplot()
    cm = np.array(cm)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(
                    j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(histories: dict[str, dict], path: Path):
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name, h in histories.items():
        ep = np.arange(1, len(h["loss"]) + 1)
        a1.plot(ep, h["loss"], label=f"{name} train")
        a1.plot(ep, h["val_loss"], "--", label=f"{name} validation")
        a2.plot(ep, h["acc"], label=f"{name} train")
        a2.plot(ep, h["val_acc"], "--", label=f"{name} validation")
    a1.set_xlabel("epoch"), a1.set_ylabel("cross-entropy loss"), a1.set_yscale("log"), a1.legend(fontsize=8)
    a2.set_xlabel("epoch"), a2.set_ylabel("top-1 accuracy"), a2.set_ylim(0, 1.01), a2.legend(fontsize=8)
    a1.grid(alpha=0.3), a2.grid(alpha=0.3)
    fig.suptitle("training curves (train: augmented batches; validation: held-out split)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def environment(opset: int) -> dict:
    """The versions that produced the artifacts."""
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "opset": opset,
    }


def history(h: dict) -> dict:
    return {k: [round(float(v), 5) for v in vs] for k, vs in h.items()}


def update_card(final: Path, out: Path, metrics: dict) -> None:
    """The model card's results section, rendered from metrics (when the output folder has a README.md)."""
    import shutil

    from . import card

    if (final / "README.md").exists():
        shutil.copy2(final / "README.md", out / "README.md")
        card.update(out / "README.md", metrics)


def plot_robustness(table: dict, clean: float, path: Path, baseline: dict | None = None) -> None:
    """Top-1 per corruption and severity (one line per corruption)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for name, accs in table.items():
        # Centred on the middle severity: five severities at 1-5, the geometric families' three at 2-4.
        xs = np.arange(len(accs)) + 3 - len(accs) // 2
        style = "--" if name in augment.GEOMETRIC else "-"
        (line,) = ax.plot(xs, [100 * a for a in accs], style, marker="o", label=name)
        if baseline and name in baseline:
            ax.plot(xs, [100 * a for a in baseline[name]], ":", color=line.get_color(), alpha=0.6)
    ax.axhline(100 * clean, color="k", lw=0.8, label=f"clean ({100 * clean:.2f} %)")
    ax.axhline(97, color="r", lw=0.8, ls="--", label="target at middle severity (97 %)")
    ax.set_xlabel("severity (3 = middle)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_xticks([1, 2, 3, 4, 5])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    title = "corruption suite on the validation split (JPEG q92 after each change; dashed: framing changes)"
    if baseline:
        title += "\nsolid: served model; dotted: previous model (v2)"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(reliability: dict, path: Path) -> None:
    """Reliability diagrams (ood.reliability_sets): accuracy against mean top probability per confidence bin, on
    the clean and on the corrupted validation pictures, at temperature 1 and at the fitted temperature."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(reliability), figsize=(5.2 * len(reliability), 4.8), dpi=100)
    for ax, (name, curves) in zip(np.atleast_1d(axes), reliability.items()):
        ax.plot([0, 1], [0, 1], color="k", lw=0.8, label="perfectly calibrated")
        for key, style in (("t1", ":"), ("calibrated", "-")):
            r = curves[key]
            conf = [b[3] for b in r["bins"]]
            acc = [b[4] for b in r["bins"]]
            total = sum(b[2] for b in r["bins"])
            sizes = [10 + 300 * b[2] / total for b in r["bins"]]
            (line,) = ax.plot(conf, acc, style, label=f"T = {r['temperature']:g}: ECE {r['ece']:.4f}")
            ax.scatter(conf, acc, s=sizes, alpha=0.6, color=line.get_color())
        ax.set_title(f"{name} validation pictures ({total:,})", fontsize=10)
        ax.set_xlabel("top probability (bin mean)")
        ax.set_ylabel("accuracy in the bin")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("reliability of the answer's probabilities (markers: bins, larger = more pictures)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
