"""The artifact checks' runner (one line per check, counts) and the ONNX helpers they share."""

from __future__ import annotations

from pathlib import Path


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"ok     {name}")
        else:
            self.failed += 1
            print(f"FAILED {name}: {detail}")

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        print(f"skip   {name}: {why}")


def session(path: Path):
    """An ONNX Runtime session on one thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
