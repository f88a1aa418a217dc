"""Every task fits and tests with 2 CPU processes (ddp_spawn, gloo); its test metrics equal
those of a single-process test of the same checkpoint."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.golden.cases import CASES, common_args, fit_case, run_test

DDP = ("--trainer.strategy=ddp_spawn", "--trainer.devices=2")


def _validation_for_every_rank(tmp: Path, common: list[str]) -> list[str]:
    """A monitored checkpoint needs a validation loss on every rank, so every rank needs a
    validation sample: the fake MatSeg set has two usable scenes; copy them to have four."""
    scenes = tmp / "data" / "scenes"
    for scene in [p for p in scenes.iterdir() if (p / "Finished.txt").is_file()]:
        shutil.copytree(scene, scenes / f"{scene.name}_copy")
    return [*common, "--data.val_fraction=0.5"]


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_ddp_equals_single_process(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    common = common_args(case, tmp_path)
    if name == "matseg_unet":
        common = _validation_for_every_rank(tmp_path, common)
    ckpt = fit_case(case, tmp_path, common, *DDP)
    single = run_test(case, tmp_path, common, ckpt)
    ddp = run_test(case, tmp_path, common, ckpt, *DDP)
    assert single.keys() == ddp.keys()
    for key, value in single.items():
        if math.isnan(value):
            assert math.isnan(ddp[key]), key
        else:
            assert ddp[key] == pytest.approx(value, abs=1e-6), key
