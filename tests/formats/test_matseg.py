"""The MatSeg format module: what the generators write is what the readers read, spelled once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matbench.errors import DatasetFormatError
from matbench.formats.matseg import (
    FINISHED,
    RELATIONS_FILE,
    finished_scenes,
    mark_finished,
    mask_name,
    parse_points,
    parse_relations,
    unmark_finished,
    write_points,
    write_relations,
)


def test_points_and_relations_round_trip(tmp_path: Path) -> None:
    groups = {1: [[3, 4, 2], [10, 11, 0]], 2: [[5, 6, 1]], 7: [[0, 0, 3]]}
    write_points(tmp_path, groups)
    write_relations(tmp_path, [((1, 2), 0.6), ((2, 7), 0.3)])
    read = parse_points(tmp_path / "data.json")
    assert sorted(read) == ["1", "2", "7"]
    np.testing.assert_array_equal(read["1"], np.array(groups[1]))
    # the official spelling of the lines: "[a,b]" is 0.6, "(a,b)" is 0.3
    assert (tmp_path / RELATIONS_FILE).read_text() == "[1,2]\n(2,7)\n"
    assert parse_relations(tmp_path / RELATIONS_FILE, ["1", "2", "7"]) == {
        ("1", "2"): 0.6,
        ("2", "1"): 0.6,
        ("2", "7"): 0.3,
        ("7", "2"): 0.3,
    }


def test_no_relations_no_file_and_bad_weight_refused(tmp_path: Path) -> None:
    write_relations(tmp_path, [])
    assert not (tmp_path / RELATIONS_FILE).exists()
    with pytest.raises(ValueError, match="0.6 or 0.3"):
        write_relations(tmp_path, [((1, 2), 0.5)])
    (tmp_path / "bad.txt").write_text("[1,9]\n")
    with pytest.raises(DatasetFormatError, match="line 1: unknown group id '9'"):
        parse_relations(tmp_path / "bad.txt", ["1", "2"])


def test_scene_names_and_the_finished_marker(tmp_path: Path) -> None:
    assert (mask_name(0), mask_name(1, digits=3)) == ("mask0.png", "mask001.png")
    for name in ("b", "a", "c"):
        (tmp_path / name).mkdir()
    mark_finished(tmp_path / "b")
    mark_finished(tmp_path / "a")
    assert (tmp_path / "a" / FINISHED).read_text() == ""
    assert [p.name for p in finished_scenes(tmp_path)] == ["a", "b"]
    unmark_finished(tmp_path / "a")
    unmark_finished(tmp_path / "c")  # no marker: nothing to do
    assert [p.name for p in finished_scenes(tmp_path)] == ["b"]


def test_the_format_module_does_not_import_torch() -> None:
    code = "import sys, matbench.formats.matseg, matbench.decoding; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
