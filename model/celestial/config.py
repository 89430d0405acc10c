"""The pipeline's configuration: fixed constants, and the run's choices as frozen dataclasses.

Every step receives the configuration it needs as an argument; nothing here changes while a run goes
on (command-line options make a new `Served`/`Run` with `dataclasses.replace`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL_NAME = "celestial-bodies"
MODEL_VERSION = "3.0.0"
MODEL_FILE = "celestial-bodies.onnx"
GUIDE_FILE = "testdata/guide-recipe.onnx"
# The previous served model (v2: the same network, trained without framing changes): the A/B and robustness
# baseline of this one.
PREVIOUS_FILE = "testdata/v2-celestial-bodies.onnx"
SPLIT_SEED = 77
VAL_FRACTION = 0.2
OPSET = 17
PARITY_MAX_ABS = 1e-4
# The epsilon of the network's first operation, the per-image standardisation (networks.py, export.py).
STANDARDIZE_EPS = 1e-4

# The served model's architectures: per conv block (filters, stride, 2x2 max-pool after it[, "separable"]): a
# 3x3 convolution, or with "separable" a 3x3 depthwise convolution (+ BN, ReLU) then a 1x1 convolution to
# `filters`; then global average pooling and one dense layer to the logits. c4e is served (model card, "Models").
ARCHS = {
    "b4": ((8, 1, True), (16, 1, True), (32, 1, True), (64, 1, False)),
    "s3": ((16, 2, True), (32, 1, True), (64, 1, False)),
    "c4": ((16, 2, False), (32, 2, False), (64, 2, False), (64, 1, False)),
    "c3": ((16, 2, False), (32, 2, False), (48, 1, False)),
    "c4w": ((16, 2, False), (32, 2, False), (64, 2, False), (96, 1, False)),
    "c4s": ((16, 2, False), (32, 2, False), (64, 2, False), (128, 2, False)),
    "c4d": ((16, 2, False), (32, 2, False), (64, 2, False), (192, 1, False, "separable")),
    "c4e": ((16, 2, False), (32, 2, False), (64, 2, False), (256, 1, False, "separable")),
}


@dataclass(frozen=True)
class Guide:
    """The guide recipe ("A guide to MLOps" params.yaml + src/train.py): grayscale 32x32, Conv2D(32, 3x3,
    relu), MaxPool(3x3), Flatten, Dense(64, relu), Dense(classes); Adam(1e-4), 10 epochs, batch 32, seed 77."""

    height: int = 32
    width: int = 32
    conv: int = 32
    dense: int = 64
    lr: float = 1e-4
    epochs: int = 10
    batch: int = 32
    seed: int = 77

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Served:
    """The served model's hyper-parameters: network, training, augmented pool and outlier exposure."""

    height: int = 32
    width: int = 32
    arch: str = "c4e"
    lr: float = 3e-3
    epochs: int = 30
    batch: int = 64
    seed: int = 77
    label_smoothing: float = 0.05
    variants: int = 20  # augmented variants per training image (the training pool)
    outliers: int = 2000  # synthetic outliers mixed in with the uniform distribution as target
    oe_weight: float = 0.5
    ema: float = 0.999  # momentum of the weights' exponential moving average (0 = the last weights)
    bank: int = 0  # feature bank size of robust.FeatureStats (0 = the whole pool)

    @property
    def blocks(self) -> tuple:
        return ARCHS[self.arch]

    def as_dict(self) -> dict:
        """The hyper-parameters as metrics.json and loco.json record them (with the architecture's blocks)."""
        return {**asdict(self), "blocks": [list(b) for b in self.blocks]}


# Out-of-distribution signal, chosen by the leave-one-class-out measurement (loco.json, model card).
OOD_SCORES = ("msp", "max_logit", "energy", "knn_cosine", "centroid_cosine")
GRAPH_OOD_SCORES = ("knn_cosine", "centroid_cosine")  # computed in the graph, as a second output
OOD_OUTPUT = "ood_score"
OOD_BANK_STRIDE = 4  # knn_cosine's bank: every 4th training image (LOCO key knn_cosine_quarter)
OOD_FALSE_FLAGS = 0.01
OOD_EVAL_OUTLIERS = 900


@dataclass(frozen=True)
class Run:
    """One run of the pipeline: where the data is, where the artifacts go and what is trained."""

    raw: Path  # the dataset's raw/<Class>/*.jpg folder
    out: Path  # the artifacts' final folder (model/ by default)
    served: Served = field(default_factory=Served)
    guide: Guide = field(default_factory=Guide)
    split_seed: int = SPLIT_SEED
    # At most one of the 300 validation pictures wrong: v3 trades one clean picture (a Moon) for the framing
    # changes (model card, "v3's changes").
    min_accuracy: float = 0.996
    latency_iterations: int = 20000
    # "msp" is served (leave-one-class-out mean AUROC, loco.json); "knn_cosine" adds a graph output
    ood_score: str = "msp"

    @property
    def staging(self) -> Path:
        """Everything is written here first and moved into `out` only at the end."""
        return self.out / ".staging"

    @property
    def cache(self) -> Path:
        return self.out / ".cache"

    @property
    def previous(self) -> Path:
        return self.out / PREVIOUS_FILE

    @property
    def graph_ood(self) -> bool:
        return self.ood_score in GRAPH_OOD_SCORES
