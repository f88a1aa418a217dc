"""The matbench command: subcommands, version, config saving, results files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import matbench
from matbench.cli import main

TOY = Path(__file__).with_name("toy.yaml")


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"matbench {matbench.__version__}"


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "matbench", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"matbench {matbench.__version__}"


def _run(tmp_path: Path, *args: str) -> None:
    main(
        [*args, "--config", str(TOY), "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    )


def test_fit_test_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, "fit", "--run_name", "first")
    version = tmp_path / "logs" / "core" / "toy" / "first"
    config = yaml.safe_load((version / "config.yaml").read_text())
    assert config["seed_everything"] == 0  # a default seed, recorded
    assert config["model"]["class_path"].endswith("ToyTask")
    ckpt = version / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    results = tmp_path / "res"
    for _ in range(2):
        _run(tmp_path, "test", "--ckpt_path", str(ckpt), "--results_dir", str(results))
    runs = sorted(results.glob("*.json"))
    assert len(runs) == 2
    record = json.loads(runs[0].read_text())
    assert record["task"] == "ToyTask"
    assert record["checkpoint"] == str(ckpt)
    assert record["data"]["datamodule"] == "ToyDataModule"
    assert record["data"]["split"] == "test"
    assert record["metrics"]["count"] == 11 and record["metrics"]["index_sum"] == 55
    assert record["metrics"]["per_sample"] == [1.0, 2.0]
    assert record["versions"]["torch"] and record["versions"]["matbench"] == matbench.__version__
    table = (results / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2  # header, rule, one row per run
    assert "accuracy" in table[0]
    assert (results / "results.csv").read_text().count("\n") == 3

    _run(tmp_path, "predict", "--ckpt_path", str(ckpt))


def test_short_class_names_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.core.toy  # noqa: F401  (registers the subclasses)

    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(TOY.read_text())
    config["model"]["class_path"] = "ToyTask"
    config["data"]["class_path"] = "ToyDataModule"
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["validate", "--config", str(path), "--trainer.logger", "false"])


def test_bad_config_value_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(TOY), "--model.init_args.hidden", "many"])
    assert exit_info.value.code != 0
    assert "hidden" in capsys.readouterr().err


def test_console_exit_status(tmp_path: Path) -> None:
    """A successful Lightning run exits 0 from the command line (scripts rely on it)."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-m", "matbench", "validate", "--config", str(TOY),
         "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    bad = subprocess.run(
        [sys.executable, "-m", "matbench", "validate", "--config", str(tmp_path / "none.yaml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0


def test_tool_commands_import() -> None:
    """Every tool command's module imports on its own (no circular imports)."""
    from matbench.cli import TOOL_COMMANDS

    for name, (target, _) in TOOL_COMMANDS.items():
        module, func = target.split(":")
        code = f"import importlib; assert callable(getattr(importlib.import_module('{module}'), '{func}'))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stderr[-1500:]}"
