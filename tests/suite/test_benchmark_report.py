"""`matbench benchmark` (suite of test runs → one table) and `matbench report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from matbench.cli import main
from matbench.report import build_report, published_rows
from matbench.results import write_run

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "core" / "toy.yaml"


def _suite(tmp_path: Path, runs: list[dict]) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "toy", "variables": {"n": "5"}, "runs": runs}))
    return path


def test_suite_runs_into_one_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    common = ["--trainer.logger", "false", "--data.init_args.num_samples"]
    suite = _suite(
        tmp_path,
        [
            {"name": "small", "config": str(TOY), "overrides": [*common, "{n}"]},
            {"name": "large", "config": str(TOY), "overrides": [*common, "{n}"]},
        ],
    )
    results = tmp_path / "res"
    assert main(["benchmark", "--config", str(suite), "--results_dir", str(results),
                 "--set", "n=7"]) == 0  # fmt: skip
    (table,) = results.glob("suite_toy-*.md")
    lines = [line for line in table.read_text().splitlines() if line.startswith("| 20")]
    assert len(lines) == 2 and all("| 7.0000 |" in line for line in lines)  # count column
    records = [json.loads(p.read_text()) for p in results.glob("2*.json")]
    assert len({r["tag"] for r in records}) == 1 and records[0]["tag"].startswith("toy-")


def test_suite_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["benchmark", "--config", str(tmp_path / "missing.yaml")])
    bad = _suite(tmp_path, [{"config": str(TOY), "overrides": ["{nope}"]}])
    with pytest.raises(SystemExit):
        main(["benchmark", "--config", str(bad)])


def test_suite_reports_failed_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    suite = _suite(
        tmp_path, [{"config": str(TOY), "overrides": ["--model.init_args.hidden", "oops"]}]
    )
    assert main(["benchmark", "--config", str(suite), "--results_dir", str(tmp_path)]) == 1


def _classification(acc: float) -> dict:
    return {
        "task": "TwoStreamTask",
        "model_name": "vit_small_patch14_dinov2",
        "data": {"datamodule": "FMDDataModule", "split": "test", "class_names": ["a", "b"]},
        "metrics": {
            "accuracy": acc,
            "per_class_accuracy": [acc, None],
            "confusion_matrix": [[3, 1], [0, 0]],
        },
    }


def _triplet(name: str, value: float) -> dict:
    keys = [f"{m}_{k}" for m in ("all", "soft") for k in ("by_point", "by_material")]
    return {
        "task": "MatSegTask",
        "model_name": name,
        "data": {"datamodule": "MatSegBenchmarkDataModule", "split": "test"},
        "metrics": dict.fromkeys(keys, value),
    }


def test_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path, _classification(0.75))
    write_run(tmp_path, _triplet("unet", 0.8))
    write_run(tmp_path, _triplet("rgb", 0.6))
    (tmp_path / "results.md").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (tmp_path / "results.md").is_file()  # rebuilt from the JSON files
    plots = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "triplet_accuracy.png" in plots
    assert any(p.endswith("_per_class.png") for p in plots)
    assert any(p.endswith("_confusion.png") for p in plots)
    report = (tmp_path / "report.md").read_text()
    measured, published = report.split("## Published numbers")
    assert "0.7500" in measured and "0.92" not in measured  # published never mixed in
    assert "0.920" in published and "0.890" in published  # MatSeg and FMD rows
    assert "lvis_materials" not in published  # only benchmarks that were run


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no results"):
        build_report(tmp_path)
    with pytest.raises(SystemExit):
        main(["report", str(tmp_path / "absent")])


def test_published_rows_are_well_formed() -> None:
    rows = published_rows()
    assert {r["benchmark"] for r in rows} == {
        "fmd",
        "dms_test21",
        "google_test",
        "matseg",
        "lvis_materials",
        "region_iou",
    }
    for row in rows:
        assert row["source"] and row["model"] and row["protocol"]
        assert all(0 <= v <= 1 for v in row["metrics"].values())
    clip = next(r for r in rows if r["model"].startswith("CLIP ViT"))
    assert clip["metrics"]["g64_mcs"] == 0.382
    # MatSeg paper: SAM with 1, 2, 4, 8 points (all / soft) and the IoU table, as printed
    sam = {r["model"]: r["metrics"] for r in rows if r["benchmark"] == "matseg"}
    assert sam["SAM, 1 point"] == {"all": 0.69, "soft": 0.63}
    assert sam["SAM, 2 points"] == {"all": 0.70, "soft": 0.62}
    assert sam["SAM, 4 points"] == {"all": 0.72, "soft": 0.64}
    assert sam["SAM, 8 points"] == {"all": 0.74, "soft": 0.65}
    iou = {r["model"]: r["metrics"] for r in rows if r["benchmark"] == "region_iou"}
    assert sorted(iou) == ["MatSeg", "Materialistic", "SAM, 8 points"]
    assert all(len(m) == 12 for m in iou.values())
    assert iou["SAM, 8 points"]["iou_cu"] == 0.69 and iou["MatSeg"]["iou_cryonuseg"] == 0.45


def test_two_stream_paper_benchmarks_are_recognised() -> None:
    from matbench.report import benchmark_of

    space = {"name": "classes21"}
    assert benchmark_of({"data": {"datamodule": "DMSDataModule", "label_space": space}}) == (
        "dms_test21"
    )
    assert benchmark_of({"data": {"datamodule": "DMSDataModule"}}) == "dms"
    assert benchmark_of({"data": {"dataset": "google_test", "datamodule": "X"}}) == "google_test"
    assert benchmark_of({"data": {"dataset": "fmd", "datamodule": "FMDDataModule"}}) == "fmd"
    rows = published_rows({"dms_test21"})
    both = [r for r in rows if r["model"] == "two-stream, both streams"]
    assert both[0]["metrics"] == {"miou": 0.50, "mean_class_accuracy": 0.64}
