"""Faults in the results directory (issue 21, items 7, 10, 11, 14): nothing lost, nothing
stale, files like any other."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from matbench import results
from matbench.benchmark import write_suite_table
from matbench.cli import main
from matbench.errors import ResultsWriteError
from matbench.results import load_runs, write_run
from tests.data.matseg.data import make_benchmark

RGB_BASELINE = Path(__file__).resolve().parents[2] / "configs" / "matseg" / "rgb_baseline.yaml"


def _baseline_test(bench: Path, results_dir: Path) -> list[str]:
    return [
        "test",
        "--debug",  # known errors raise (the command line prints them as one line)
        "--config",
        str(RGB_BASELINE),
        f"--data.root={bench}",
        f"--results_dir={results_dir}",
    ]


# -- 7. a full disk / unwritable results directory ---------------------------------------------
def test_unwritable_results_dir_fails_before_and_full_disk_after_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 7: a results directory that cannot be created fails before the evaluation; a
    write that fails after it (injected ENOSPC) prints the metrics and the failing path and
    exits non-zero."""
    monkeypatch.chdir(tmp_path)
    bench = make_benchmark(tmp_path / "bench")
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the results directory should be")
    with pytest.raises(ResultsWriteError, match=r"not_a_dir: cannot write results"):
        main(_baseline_test(bench, blocker))
    assert "triplet" not in capsys.readouterr().out  # nothing was evaluated

    def disk_full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(results, "atomic_write_text", disk_full)
    out_dir = tmp_path / "results"
    with pytest.raises(ResultsWriteError) as err:
        main(_baseline_test(bench, out_dir))
    assert "No space left on device" in str(err.value) and str(out_dir) in str(err.value)
    out = capsys.readouterr().out
    printed = json.loads(out[out.index("{") : out.rindex("}") + 1])
    assert 0.0 <= printed["metrics"]["all_by_point"] <= 1.0
    assert f"results: could not write {out_dir}" in out


# -- 10. foreign or corrupt JSON in the results directory ---------------------------------------
def test_foreign_json_is_skipped_with_a_warning_naming_it(tmp_path: Path) -> None:
    """Item 10: a later run's table rebuild does not break on files that are not records."""
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.warns(UserWarning) as record:
        path = write_run(tmp_path, {"task": "T", "metrics": {"accuracy": 0.5}})
    warned = " ".join(str(w.message) for w in record)
    for name in ("config.json", "broken.json", "list.json"):
        assert str(tmp_path / name) in warned
    table = (tmp_path / "results.csv").read_text().splitlines()
    assert len(table) == 2 and path.exists()
    with pytest.warns(UserWarning, match="config.json"):
        suite_table = write_suite_table(tmp_path, "suite-x")  # a benchmark suite's table too
    assert suite_table.is_file()
    with pytest.raises(ValueError, match="broken.json"):
        load_runs(tmp_path)  # strict by default (matbench report)


# -- 11. concurrent writers ---------------------------------------------------------------------
def _write_one(results_dir: str, index: int) -> None:
    record = {"task": f"T{index}", "metrics": {"accuracy": index / 10}, "versions": {}}
    write_run(results_dir, record)


def test_concurrent_writers_leave_complete_tables(tmp_path: Path) -> None:
    """Item 11: several runs writing into one directory at once; the last table lists every
    run (trials of 6 simultaneous writers)."""
    context = multiprocessing.get_context("fork")
    for trial in range(6):
        folder = tmp_path / f"trial{trial}"
        procs = [context.Process(target=_write_one, args=(str(folder), i)) for i in range(6)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert all(proc.exitcode == 0 for proc in procs)
        rows = (folder / "results.csv").read_text().splitlines()[1:]
        md_rows = (folder / "results.md").read_text().splitlines()[2:]
        assert len(list(folder.glob("*.json"))) == len(rows) == len(md_rows) == 6, trial


# -- 14. file modes and stale temporary files ---------------------------------------------------
def test_results_files_follow_the_umask_and_stale_tmp_files_go(tmp_path: Path) -> None:
    """Item 14: files are 0644 under umask 022 (not 0600); a killed writer's hidden .tmp is
    removed by the next write, a live writer's is left alone."""
    old = os.umask(0o022)
    try:
        path = write_run(tmp_path, {"task": "T", "metrics": {"accuracy": 0.5}})
    finally:
        os.umask(old)
    for file in (path, tmp_path / "results.csv", tmp_path / "results.md"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    killed = tmp_path / f".results.csv.{results._HOST}-{dead_pid}.k1ll3d.tmp"
    killed.write_text("half a tab")
    live = tmp_path / f".results.md.{results._HOST}-{os.getppid()}.l1ve.tmp"
    live.write_text("being written")
    old_foreign = tmp_path / ".x.json.otherhost-1.abc.tmp"
    old_foreign.write_text("left by another machine long ago")
    os.utime(old_foreign, (0, 0))
    write_run(tmp_path, {"task": "T", "metrics": {"accuracy": 0.75}})
    assert not killed.exists() and not old_foreign.exists()
    assert live.exists()
