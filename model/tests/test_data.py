"""The dataset split and the configuration's records (celestial.data, celestial.config)."""

from __future__ import annotations

import json

from celestial.config import SPLIT_SEED, Guide, Served
from celestial.data import list_dataset, split_dataset, stratified_split


def items(per_class: int, classes: int) -> list[tuple[str, int]]:
    return [(f"C{c}/img_{i:03d}.jpg", c) for c in range(classes) for i in range(per_class)]


def test_stratified_split_sizes_and_determinism():
    it = items(10, 3)
    train, val = stratified_split(it, 3, seed=77, fraction=0.2)
    assert len(val) == 6 and len(train) == 24
    assert sorted(train + val) == sorted(it)
    assert [sum(1 for _, y in val if y == c) for c in range(3)] == [2, 2, 2]
    assert stratified_split(it, 3, seed=77, fraction=0.2) == (train, val)
    assert stratified_split(it, 3, seed=78, fraction=0.2)[1] != val


def test_list_dataset_reads_class_folders(tmp_path):
    for c in ("Mars", "Earth"):
        (tmp_path / c).mkdir()
        for name in ("b.jpg", "a.JPG", "notes.txt"):
            (tmp_path / c / name).write_bytes(b"")
    classes, found = list_dataset(tmp_path)
    assert classes == ["Earth", "Mars"]
    assert found == [("Earth/a.JPG", 0), ("Earth/b.jpg", 0), ("Mars/a.JPG", 1), ("Mars/b.jpg", 1)]


def test_split_reproduces_the_committed_validation_split(raw, model_dir):
    classes, split = split_dataset(raw, SPLIT_SEED)
    assert len(classes) == 10 and len(split.train) == 1200
    committed = (model_dir / "validation-split.txt").read_text().splitlines()
    assert [rel for rel, _ in split.val] == committed


def test_hyper_parameters_as_metrics_json_records_them(model_dir):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert Served().as_dict() == metrics["model"]["hyper_parameters"]
    assert list(Served().as_dict()) == list(metrics["model"]["hyper_parameters"])
    assert Guide().as_dict() == metrics["guide_recipe"]["hyper_parameters"]
