"""``matbench demo`` end to end at a tiny size: the table's rows and the check against rgb."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matbench.demo import MIN_MARGIN, main, table


@pytest.mark.slow
def test_demo_runs_and_checks_against_rgb(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    args = ["--out", str(out), "--train-scenes", "3", "--bench-images", "2", "--steps", "2"]
    args += ["--crop", "64", "--batch-size", "2", "--workers", "1", "--figure-images", "1"]
    args += ["--dense-backbone", "test_vit", "--dense-weights", "none"]
    code = main(args)
    summary = json.loads((out / "demo_results.json").read_text())
    rows = summary["metrics"]
    assert list(rows) == [
        "unet (trained)",
        "rgb",
        "random",
        "dense (random init)",
        "positions only",
    ]
    assert all(0.0 <= row["all_by_point"] <= 1.0 for row in rows.values())
    # The demo passes exactly when the U-Net beats rgb (not random) by the margin.
    unet, rgb = rows["unet (trained)"]["all_by_point"], rows["rgb"]["all_by_point"]
    assert code == (0 if unet > rgb + MIN_MARGIN else 1)
    printed = capsys.readouterr().out
    assert table(rows) in printed and "positions only" in printed
    assert Path(summary["figure"]).is_file()


@pytest.mark.slow
def test_default_demo_proves_learning(tmp_path: Path) -> None:
    """The demo as ``make demo`` runs it (about 2.5 min on 2 idle cores): the trained U-Net
    must beat rgb by the margin on the generated benchmark, which colour cannot segment."""
    out = tmp_path / "demo"
    code = main(["--out", str(out), "--dense-backbone", "test_vit", "--dense-weights", "none"])
    rows = json.loads((out / "demo_results.json").read_text())["metrics"]
    unet, rgb = rows["unet (trained)"]["all_by_point"], rows["rgb"]["all_by_point"]
    assert unet > rgb + MIN_MARGIN, rows
    assert code == 0
