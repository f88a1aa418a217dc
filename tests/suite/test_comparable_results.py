"""Results tables that can be compared: suite tag, weights, dataset name, sample count, failed
runs with their error, arguments for every run, soft MatSeg metrics without relations."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from matbench.cli import main
from matbench.plots import non_empty
from matbench.results import NO_RELATIONS, table_rows

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "core" / "toy.yaml"
FMD = ROOT / "configs" / "two_stream" / "fmd.yaml"


def test_suite_table_columns_failures_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "suite.yaml"
    runs = [
        {"name": "toy", "config": str(TOY), "overrides": ["--data.init_args.num_samples", "7"]},
        {"name": "fmd", "config": str(FMD), "overrides": [f"--data.root={tmp_path / 'none'}"]},
    ]
    suite.write_text(yaml.safe_dump({"name": "s", "runs": runs}))
    results = tmp_path / "res"
    argv = ["benchmark", "--config", str(suite), "--results_dir", str(results)]
    # one argument for every run: no logs at all
    argv += ["--override", "trainer.logger=false", "--override=--trainer.enable_progress_bar=false"]
    assert main(argv) == 1  # a run failed
    assert not (tmp_path / "logs").exists()
    out = capfd.readouterr()
    assert "args parameter is intended" not in out.out + out.err  # no "args and argv" warning
    (table,) = results.glob("suite_s-*.csv")
    rows = list(csv.DictReader(table.open()))
    toy, failed = rows
    assert toy["tag"].startswith("s-") and toy["dataset"] == "Toy" and toy["samples"] == "7"
    assert toy["weights"] == "random" and toy["error"] == ""
    assert failed["task"] == "fmd" and "FMD: no usable dataset found in root" in failed["error"]


def test_soft_metrics_without_relations_say_why() -> None:
    run = {
        "task": "MatSegTask",
        "metrics": {"all_by_point": 0.8, "soft_by_point": None},
        "data": {"dataset": "MatSegBenchmark", "has_relations": False, "num_samples": 2},
    }
    _, (row,) = table_rows([run])
    assert row["soft_by_point"] == NO_RELATIONS and row["samples"] == 2
    _, (row,) = table_rows([{**run, "data": {**run["data"], "has_relations": True}}])
    assert row["soft_by_point"] is None  # relations exist: a real missing value


def test_plots_leave_out_empty_series() -> None:
    series = {"all": [0.7, 0.8], "soft": [None, None], "mixed": [None, 0.5]}
    assert list(non_empty(series)) == ["all", "mixed"]
