"""The training pipeline's progress lines."""

from __future__ import annotations

import datetime as dt


def log(msg: str) -> None:
    print(f"[train {dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {msg}", flush=True)
