"""Results JSON and the table rebuilt from them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from matbench.results import load_runs, write_run


def _record(acc: float, dataset: str = "FMD") -> dict:
    return {
        "task": "TwoStreamTask",
        "model_name": "vit_small_patch14_dinov2",
        "checkpoint": "last.ckpt",
        "data": {"dataset": dataset, "split": "test"},
        "metrics": {"accuracy": acc, "confusion_matrix": [[1, 0], [0, 1]], "miou": float("nan")},
    }


def test_write_and_extend(tmp_path: Path) -> None:
    first = write_run(tmp_path, _record(0.5))
    second = write_run(tmp_path, _record(0.75, "DMS"))
    assert first != second and first.is_file() and second.is_file()
    saved = json.loads(first.read_text())
    assert saved["metrics"]["miou"] is None  # NaN is stored as null: valid JSON
    assert saved["versions"]["torch"]
    md = (tmp_path / "results.md").read_text().splitlines()
    assert len(md) == 4
    assert "accuracy" in md[0] and "confusion_matrix" not in md[0]
    assert "0.5000" in md[2] and "0.7500" in md[3] and "DMS" in md[3]
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 3
    assert [r["metrics"]["accuracy"] for r in load_runs(tmp_path)] == [0.5, 0.75]
    assert not list(tmp_path.glob("*.tmp"))  # no leftovers of the atomic writes


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_runs(tmp_path)


def test_nan_in_table(tmp_path: Path) -> None:
    write_run(tmp_path, {"task": "T", "metrics": {"x": math.nan}})
    assert "| T |" in (tmp_path / "results.md").read_text()
