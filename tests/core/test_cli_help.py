"""Help of the Lightning subcommands without importing Lightning: shipped pages that equal the
live parser's output, and a cache for help with config files and ``--print_config``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matbench import cli_help
from matbench.cli import LIGHTNING_COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
TOY = Path(__file__).with_name("toy.yaml")
REGENERATE = "regenerate them: make cli-help (python -m matbench.cli_help --write)"

#: Runs matbench's main in a fresh interpreter and reports what it printed and imported.
PROBE = """
import contextlib, io, json, sys
from matbench.cli import main
out, codes = [], []
for argv in json.loads(sys.argv[1]):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            main(argv)
        except SystemExit as done:
            codes.append(done.code)
    out.append(buffer.getvalue())
heavy = [m for m in ("torch", "lightning", "jsonargparse") if m in sys.modules]
print(json.dumps({"out": out, "codes": codes, "heavy": heavy}))
"""


def _probe(commands: list[list[str]], cwd: Path) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def _live(argv: list[str]) -> tuple[str, int]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit) as done:
        main(argv)
    return buffer.getvalue(), int(done.value.code or 0)


def test_shipped_pages_are_the_live_help(tmp_path: Path) -> None:
    """Generated afresh in a clean process: in this one, the tests' own task and datamodule
    classes would join the pages' lists of known subclasses."""
    run = subprocess.run(
        [sys.executable, "-m", "matbench.cli_help", "--write", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert set(cli_help.SUBCOMMANDS) == set(LIGHTNING_COMMANDS)
    key = json.loads((cli_help.SHIPPED_DIR / "key.json").read_text())
    assert key == json.loads((tmp_path / "key.json").read_text()) == cli_help.versions(), (
        f"the shipped help pages are for {key}: {REGENERATE}"
    )
    for name in cli_help.SUBCOMMANDS:
        shipped = (cli_help.SHIPPED_DIR / f"{name}.txt").read_text()
        assert (tmp_path / f"{name}.txt").read_text() == shipped, f"{name}: {REGENERATE}"
        assert shipped.startswith(f"usage: matbench [options] {name} ")
        assert f"matbench {name}: " in shipped and "--print_config" in shipped
        assert max(len(line) for line in shipped.splitlines()) < 120


def test_subcommand_help_imports_no_lightning(tmp_path: Path) -> None:
    result = _probe([[name, "--help"] for name in cli_help.SUBCOMMANDS], tmp_path)
    assert result["heavy"] == [], f"imported by `matbench SUB --help`: {result['heavy']}"
    assert result["codes"] == [0] * len(cli_help.SUBCOMMANDS)
    for name, out in zip(cli_help.SUBCOMMANDS, result["out"], strict=True):
        assert out == (cli_help.SHIPPED_DIR / f"{name}.txt").read_text()


#: A run config of matbench's own classes (what the cache may keep).
CONFIG = """\
model:
  class_path: matbench.tasks.MatSegTask
  init_args:
    model: rgb
data:
  class_path: matbench.datamodules.FMDDataModule
  init_args:
    root: data/fmd
"""


def test_print_config_is_answered_from_the_cache_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "fmd").mkdir(parents=True)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    commands = [
        ["fit", "--config", str(config), "--print_config"],
        ["test", "--config", str(config), "--model.help", "MatSegTask"],
    ]
    live = [_live(argv) for argv in commands]
    assert [code for _, code in live] == [0, 0]
    assert "class_path: matbench.tasks.MatSegTask" in live[0][0]
    assert live[1][0].startswith("usage: matbench ") and "--model.descriptor_dim" in live[1][0]
    assert len(list(cli_help.cache_dir().glob("*.txt"))) == 2

    result = _probe(commands, tmp_path)
    assert result["heavy"] == []
    assert result["out"] == [text for text, _ in live] and result["codes"] == [0, 0]

    # another config content, another command line or another folder: not the kept text
    key = cli_help.cache_key(commands[0])
    config.write_text(CONFIG.replace("model: rgb", "model: random"))
    assert cli_help.cache_key(commands[0]) != key
    assert cli_help.cache_key([*commands[0], "--seed_everything=2"]) != key
    assert cli_help.lookup(commands[0]) is None


def test_classes_of_other_code_are_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's own task (here the tests' toy) can change under the same command line."""
    monkeypatch.chdir(ROOT)  # where `tests` is importable
    argv = ["fit", "--config", str(TOY), "--print_config"]
    assert cli_help.names_other_code(argv, [TOY])
    text, code = _live(argv)
    assert code == 0 and "tests.core.toy.ToyTask" in text
    assert not cli_help.cache_dir().exists() or not list(cli_help.cache_dir().glob("*.txt"))
    assert not cli_help.names_other_code(["fit", "--data.root=data/fmd"], [])


def test_failed_help_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    argv = ["fit", "--config", str(config), "--model.no_such_argument=1", "--print_config"]
    with contextlib.redirect_stderr(io.StringIO()):
        assert _live(argv)[1] == 2
    assert not cli_help.cache_dir().exists() or not list(cli_help.cache_dir().glob("*.txt"))


def test_help_requests() -> None:
    assert cli_help.is_help_request(["fit", "--help"])
    assert cli_help.is_help_request(["test", "-c", "x.yaml", "--print_config=skip_null"])
    assert cli_help.is_help_request(["fit", "--model.help", "TwoStreamTask"])
    assert cli_help.is_help_request(["fit", "--trainer.callbacks.help=ModelCheckpoint"])
    assert not cli_help.is_help_request(["fit", "--config", "help.yaml"])
    assert not cli_help.is_help_request(["report", "--help"])
