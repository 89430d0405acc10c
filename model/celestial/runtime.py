"""ONNX Runtime sessions and batched inference over exported models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .config import OOD_OUTPUT


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_outputs(path: Path, x: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits, ood_score or None) of a model over a batch of input tensors."""
    sess = ort_session(path, threads=os.cpu_count() or 1)
    names = [o.name for o in sess.get_outputs()]
    outs = [sess.run(None, {"input": x[i : i + batch]}) for i in range(0, len(x), batch)]
    logits = np.concatenate([o[names.index("logits")] for o in outs])
    ood = np.concatenate([o[names.index(OOD_OUTPUT)] for o in outs]) if OOD_OUTPUT in names else None
    return logits, ood


def ort_logits(path: Path, x: np.ndarray, batch: int = 64) -> np.ndarray:
    sess = ort_session(path, threads=os.cpu_count() or 1)
    return np.concatenate([sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)])
